"""The code job: what ``skypile code`` can be told, its stages, the checks a config must
pass, and the per-file ``code`` stage (keep the file as a Document, or reject it).

Plain data and functions, no Beam: ``skypile.pipelines.code`` builds the graph from a
checked :class:`CodeConfig` and runs :class:`CodeFilter` on each file.
"""

from __future__ import annotations

import dataclasses

from skypile.config import ConfigError
from skypile.document import Document, Reject
from skypile.files.readers import RawRecord
from skypile.files import archives
from skypile.text import code_filters as codelib
from skypile.text.dedup import ExactConfig, MinHashConfig

STAGES = ("code", "exact", "minhash")
"""Stages of the code pipeline, in the order they run."""
STATS_ORDER = ("read", *STAGES)


@dataclasses.dataclass
class CodeDedupConfig:
    """Deduplication of code files (``dedup``)."""

    exact: ExactConfig = dataclasses.field(default_factory=lambda: ExactConfig(by_url=False))
    minhash: MinHashConfig = dataclasses.field(default_factory=lambda: MinHashConfig(threshold=0.7))


@dataclasses.dataclass
class CodeConfig:
    """Everything ``skypile code`` can be told (--config FILE, --section.key=value)."""

    stages: list[str] = dataclasses.field(default_factory=lambda: list(STAGES))
    """Stages to run: code, exact, minhash."""
    read: archives.CodeReadOptions = dataclasses.field(default_factory=archives.CodeReadOptions)
    filter: codelib.CodeFilterConfig = dataclasses.field(default_factory=codelib.CodeFilterConfig)
    dedup: CodeDedupConfig = dataclasses.field(default_factory=CodeDedupConfig)
    storage_options: dict = dataclasses.field(default_factory=dict)
    """fsspec options for remote inputs and outputs."""


def check(cfg: CodeConfig) -> None:
    """Refuse (ConfigError) a config naming a stage this pipeline does not have."""
    unknown = [s for s in cfg.stages if s not in STAGES]
    if unknown:
        raise ConfigError(f"unknown stage {unknown[0]!r} (known: {', '.join(STAGES)})")


class CodeFilter:
    """The ``code`` stage: a source file's record in; its Document, or a Reject whose
    reason names the heuristic that failed (``code:minified``) and the file."""

    def __init__(self, cfg: codelib.CodeFilterConfig):
        self.cfg = cfg

    def __call__(self, rec: RawRecord) -> Document | Reject:
        meta = dict(rec.metadata)
        reason = codelib.check(meta, rec.body, self.cfg)
        if reason:
            notes = {k: meta[k] for k in ("repaired", "encoding") if k in meta}
            return Reject.of(rec, "code", reason, text=rec.body,
                             **{k: meta.get(k, "") for k in ("repo", "path", "language")}, **notes)
        return Document(id=rec.id, text=rec.body, url=rec.url, source=rec.source, metadata=meta)

