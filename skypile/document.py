"""The one document type every stage passes around, and the reject record for drops."""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import json
import math
import numbers
import re
from typing import Any, NamedTuple

MAX_DEPTH = 32
"""Nesting depth of metadata kept; a list or object deeper down becomes null (``too_deep``)."""

_SURROGATE = re.compile("[\ud800-\udfff]")


def stable_id(*parts: str) -> str:
    """A short content-independent id: the same inputs give the same id on every run."""
    h = hashlib.sha1("\x1f".join(parts).encode("utf-8", "surrogatepass"))
    return h.hexdigest()[:24]


def clean_str(s: str) -> tuple[str, int]:
    """``s`` as valid Unicode, and how many surrogate code points were repaired.

    A surrogate pair left as two code points is joined into its character; a lone
    surrogate (a JSON ``\\ud800`` escape) becomes U+FFFD. Anything else is untouched.
    """
    if s.isascii() or not _SURROGATE.search(s):
        return s, 0
    n = len(_SURROGATE.findall(s))
    return s.encode("utf-16", "surrogatepass").decode("utf-16", "replace"), n


def json_safe(value: Any, fixes: collections.Counter, depth: int = 0) -> Any:
    """``value`` as strict JSON data (no NaN / Infinity, valid Unicode, plain types).

    What had to change is counted in ``fixes``: ``surrogates`` (code points repaired),
    ``non_finite`` (NaN / Infinity -> null), ``not_json`` (another type -> its ``str``)
    and ``too_deep`` (a list or object below :data:`MAX_DEPTH` levels -> null).
    """
    if isinstance(value, str):
        text, n = clean_str(value)
        if n:
            fixes["surrogates"] += n
        return text
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        if math.isfinite(value):
            return float(value)
        fixes["non_finite"] += 1
        return None
    if isinstance(value, (dict, list, tuple)):
        if depth >= MAX_DEPTH:
            fixes["too_deep"] += 1
            return None
        if isinstance(value, dict):
            return {json_safe(k if isinstance(k, str) else str(k), fixes, depth + 1):
                    json_safe(v, fixes, depth + 1) for k, v in value.items()}
        return [json_safe(v, fixes, depth + 1) for v in value]
    fixes["not_json"] += 1
    return json_safe(str(value), fixes, depth)


def _strict_json(data: dict[str, Any], notes: str) -> str:
    """One strict JSON line: any change :func:`json_safe` makes is recorded under
    ``data[notes]["repaired"]["on_write"]``, so a repair is never silent."""
    fixes: collections.Counter = collections.Counter()
    data = json_safe(data, fixes)
    if fixes:
        box = data[notes] if isinstance(data.get(notes), dict) else {}
        repaired = box.get("repaired") if isinstance(box.get("repaired"), dict) else {}
        box["repaired"] = {**repaired, "on_write": dict(sorted(fixes.items()))}
        data[notes] = box
    return json.dumps(data, ensure_ascii=False, allow_nan=False)


@dataclasses.dataclass(slots=True)
class Document:
    """A text document. Stages add their scores to ``metadata`` under documented keys."""

    id: str
    text: str
    url: str = ""
    source: str = ""
    metadata: dict[str, Any] = dataclasses.field(default_factory=dict)

    def to_json(self) -> str:
        """One line any strict JSON parser reads: the id is a string, NaN / Infinity are
        null, invalid Unicode is repaired (see :func:`json_safe`; noted in metadata)."""
        return _strict_json(
            {"id": str(self.id), "url": self.url, "text": self.text, "source": self.source,
             "metadata": self.metadata}, "metadata")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Document":
        return cls(id=str(d["id"]), text=d.get("text") or "", url=d.get("url") or "",
                   source=d.get("source") or "", metadata=dict(d.get("metadata") or {}))


class Origin(NamedTuple):
    """Where a record came from, for a reject made before any Document exists (readers)."""

    id: str
    url: str = ""
    source: str = ""


@dataclasses.dataclass(slots=True)
class Reject:
    """A dropped record: where it came from, which stage dropped it and why.

    ``reason`` always starts with the stage name (``read:truncated-gzip``,
    ``extract:http-status``). ``text`` holds whatever text there was, so nothing is lost.
    """

    id: str
    url: str
    stage: str
    reason: str
    text: str = ""
    source: str = ""
    detail: dict[str, Any] = dataclasses.field(default_factory=dict)

    def to_json(self) -> str:
        """Strict JSON, as :meth:`Document.to_json` (repairs noted in ``detail``)."""
        return _strict_json(
            {"id": str(self.id), "url": self.url, "stage": self.stage, "reason": self.reason,
             "text": self.text, "source": self.source, "detail": self.detail}, "detail")

    @classmethod
    def of(cls, doc: Any, stage: str, reason: str, /, *, text: str | None = None,
           **detail: Any) -> "Reject":
        """The one way to reject: ``doc`` (a Document, RawRecord or Origin) by ``stage``.

        ``reason`` is the short cause (``too-large``) and is stored as ``stage:reason``; an
        already-prefixed reason is kept as it is. ``text`` defaults to the document's text
        (a RawRecord's body is not text, so it gives none); ``detail`` holds the rest.
        """
        if text is None:
            body = getattr(doc, "text", "")
            text = body if isinstance(body, str) else ""
        full = reason if reason.startswith(f"{stage}:") else f"{stage}:{reason}"
        return cls(id=doc.id, url=doc.url or "", stage=stage, reason=full, text=text,
                   source=doc.source or "", detail=detail)
