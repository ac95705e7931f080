"""The tokenize job: what ``skypile tokenize`` can be told, its checks, and the
per-document ``tokenize`` stage (a document's tokens under its domain and split, or a
reject). Plain data and functions, no Beam: ``skypile.pipelines.tokenize`` runs them."""

from __future__ import annotations

import dataclasses

import numpy as np

from skypile.config import ConfigError
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
    folders, and ``read.split_mb`` must not be negative (ConfigError otherwise)."""
    cfg.read.text_only = True
    if cfg.read.split_mb < 0:
        raise ConfigError(f"read.split_mb={cfg.read.split_mb}: use a size in MB, or 0 to "
                          "read every file whole")
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
        self._tok = Tokenizer(model, cfg.storage_options)  # a URL: fetched once per machine
        self._dtype = shards.DTYPES[shards.dtype_code(self._tok.vocab_size)]

    def __call__(self, doc: Document, held_out_ids) -> tuple | Reject:
        encoded, rejects = self.encode_many([doc])
        if rejects:
            return rejects[0]
        (batch,) = encoded
        split = "validation" if doc.id in held_out_ids else "train"
        return (batch.domain, split), (doc.id, batch.tokens), batch.source_langs[0]

    def encode_many(self, docs: list[Document]) -> tuple[list["Encoded"], list[Reject]]:
        """Many documents at once (one batch call of the encoder): the kept ones packed
        per domain, in domain order, and the rejects. Each document's tokens are exactly
        what ``__call__`` gives it."""
        kept, domains, rejects = [], [], []
        checked: dict[str, str | None] = {}  # a batch's documents have few labels
        for doc in docs:
            domain = label(doc, self.cfg.labels)
            if domain not in checked:
                checked[domain] = bad_domain(domain)
            why = checked[domain]
            if why:
                rejects.append(Reject.of(doc, "tokenize", "bad-domain", domain=domain[:200],
                                         why=why))
            else:
                kept.append(doc)
                domains.append(domain)
        # compact arrays in the shard's dtype: Python lists would take ~8x the memory
        tokens, lengths = self._tok.encode_packed([d.text for d in kept], self._dtype,
                                                  end=self._tok.eos_id)
        long_enough = lengths - 1 >= self.cfg.shards.min_doc_tokens
        rejects += [Reject.of(d, "tokenize", "too-short")
                    for d, ok in zip(kept, long_enough.tolist()) if not ok]
        out, roots = [], {}  # a batch's documents come from few files
        for domain in sorted(set(domains)):
            mine = long_enough & np.fromiter((d == domain for d in domains), bool, len(domains))
            if not mine.any():
                continue
            docs_in = [d for d, m in zip(kept, mine.tolist()) if m]
            for d in docs_in:
                if d.source not in roots:
                    roots[d.source] = source_of(d.source, self.roots)
            out.append(Encoded(domain, [d.id for d in docs_in],
                               tokens if mine.all() else tokens[np.repeat(mine, lengths)],
                               lengths[mine],
                               [(roots[d.source], lang_of(d.metadata)) for d in docs_in]))
        return out, rejects


@dataclasses.dataclass
class Encoded:
    """Documents of one domain, encoded: ``tokens`` holds each one's tokens and EOS, one
    after the other, ``lengths`` how many each has (EOS included); ``ids`` and
    ``source_langs`` (the breakdown's keys) are theirs, in the same order."""

    domain: str
    ids: list[str]
    tokens: np.ndarray
    lengths: np.ndarray
    source_langs: list[tuple[str, str]]
