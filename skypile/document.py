"""The one document type every stage passes around, and the reject record for drops."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Any, NamedTuple


def stable_id(*parts: str) -> str:
    """A short content-independent id: the same inputs give the same id on every run."""
    h = hashlib.sha1("\x1f".join(parts).encode("utf-8", "surrogatepass"))
    return h.hexdigest()[:24]


@dataclasses.dataclass(slots=True)
class Document:
    """A text document. Stages add their scores to ``metadata`` under documented keys."""

    id: str
    text: str
    url: str = ""
    source: str = ""
    metadata: dict[str, Any] = dataclasses.field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(
            {"id": self.id, "url": self.url, "text": self.text, "source": self.source,
             "metadata": self.metadata},
            ensure_ascii=False,
        )

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
        return json.dumps(
            {"id": self.id, "url": self.url, "stage": self.stage, "reason": self.reason,
             "text": self.text, "source": self.source, "detail": self.detail},
            ensure_ascii=False,
        )

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
