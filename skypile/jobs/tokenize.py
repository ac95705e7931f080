"""The tokenize job: what ``skypile tokenize`` can be told, its checks, and the
per-document ``tokenize`` stage (a document's tokens under its domain and split, or a
reject). Plain data and functions, no Beam: ``skypile.pipelines.tokenize`` runs them."""

from __future__ import annotations

import dataclasses

import numpy as np

from skypile.document import Document, Reject
from skypile.files.readers import ReaderOptions
from skypile.tokens.domains import HeldOutConfig, LabelConfig, bad_domain, check_labels, label
from skypile.tokens import shards
from skypile.tokens.manifest import lang_of, source_of
from skypile.tokens.tokenizer import Tokenizer


@dataclasses.dataclass
class ShardConfig:
    """Shard sizes (``shards``)."""

    target_tokens: int = 100_000_000
    """Target tokens per shard; a domain/split gets ceil(tokens / this) shards."""
    min_doc_tokens: int = 1
    """Documents with fewer tokens (EOS excluded) are rejected (tokenize:too-short)."""


@dataclasses.dataclass
class TokenizeConfig:
    """Everything ``skypile tokenize`` can be told (--config FILE, --section.key=value)."""

    shards: ShardConfig = dataclasses.field(default_factory=ShardConfig)
    labels: LabelConfig = dataclasses.field(default_factory=LabelConfig)
    held_out: HeldOutConfig = dataclasses.field(default_factory=HeldOutConfig)
    read: ReaderOptions = dataclasses.field(default_factory=lambda: ReaderOptions(text_only=True))
    storage_options: dict = dataclasses.field(default_factory=dict)
    """fsspec options for inputs and the output URL."""


def check(cfg: TokenizeConfig) -> None:
    """Make ``cfg`` one this job can run: its inputs are documents already, so the reader
    accepts text records only, whatever the config says; the label rules must name safe
    folders (ConfigError otherwise)."""
    cfg.read.text_only = True
    check_labels(cfg.labels)


class Encoder:
    """The ``tokenize`` stage: a Document and the held-out ids in; ``((domain, split),
    (id, tokens + [EOS]), (source, lang))``, or a Reject: tokenize:bad-domain when its
    label (filled from its metadata) is not a safe folder name, tokenize:too-short when
    fewer than ``shards.min_doc_tokens`` tokens are left.

    ``(source, lang)`` is what the manifest's breakdown counts it under: the nearest of
    ``roots`` (:func:`~skypile.tokens.manifest.source_roots` of the inputs) above the
    file it was read from, and its metadata's ``lang``; both come from small sets."""

    def __init__(self, model: str, cfg: TokenizeConfig, roots: tuple[str, ...] = ()):
        self.cfg, self.roots = cfg, frozenset(roots)
        self._tok = Tokenizer(model)
        self._dtype = shards.DTYPES[shards.dtype_code(self._tok.vocab_size)]

    def __call__(self, doc: Document, held_out_ids) -> tuple | Reject:
        domain = label(doc, self.cfg.labels)
        why = bad_domain(domain)
        if why:
            return Reject.of(doc, "tokenize", "bad-domain", domain=domain[:200], why=why)
        # a compact array in the shard's dtype: a Python list would take ~8x the memory
        ids = self._tok.encode_array(doc.text, self._dtype)
        if len(ids) < self.cfg.shards.min_doc_tokens:
            return Reject.of(doc, "tokenize", "too-short")
        split = "validation" if doc.id in held_out_ids else "train"
        tokens = np.append(ids, np.asarray(self._tok.eos_id, dtype=self._dtype))
        return ((domain, split), (doc.id, tokens),
                (source_of(doc.source, self.roots), lang_of(doc.metadata)))
