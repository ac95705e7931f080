"""The one document type every stage passes around, and the reject record for drops."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Any


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
