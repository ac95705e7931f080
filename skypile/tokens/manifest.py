"""``manifest.json`` of a token shard set (see docs/shard-format.md): what ``ShardSet``
reads back and checks, written once every shard is complete.

The tokenizer travels with the shards: its model is copied into the set as
``tokenizer.model`` (``copy_tokenizer``), the manifest names that copy (the file it came
from is kept as ``source``), and ``tokenizer_file`` finds it again from anywhere, local or
on object storage."""

from __future__ import annotations

import posixpath
import re
from typing import Any

from skypile import config as cfglib
from skypile.tokens import shards
from skypile.tokens.tokenizer import Tokenizer


def build_manifest(rows: list[dict], tokenizer: Tokenizer, cfg: Any, inputs: list[str],
                   counts: list | tuple = ()) -> dict:
    """The manifest of a shard set: per domain and split, its shards (path, sha256, tokens,
    docs, bytes) in path order, the tokenizer that made them, the inputs and the config;
    ``counts``, ((source, lang), (docs, tokens)) pairs, give the ``breakdown``."""
    domains: dict = {}
    for r in sorted(rows, key=lambda r: r["path"]):
        d = domains.setdefault(r["domain"], {}).setdefault(
            r["split"], {"tokens": 0, "docs": 0, "shards": []})
        d["tokens"] += r["tokens"]
        d["docs"] += r["docs"]
        d["shards"].append({k: r[k] for k in ("path", "sha256", "tokens", "docs", "bytes")})
    return {"format": "skypile-token-shards", "version": shards.VERSION,
            "tokenizer": {"path": TOKENIZER_FILE, "source": str(tokenizer.path),
                          "sha256": tokenizer.sha256,
                          "vocab_size": tokenizer.vocab_size, "eos_id": tokenizer.eos_id},
            "dtype": str(shards.DTYPES[shards.dtype_code(tokenizer.vocab_size)]),
            "domains": domains, "breakdown": breakdown(counts), "inputs": inputs,
            "config": cfglib.to_dict(cfg)}


# ---- documents and tokens per source and per language --------------------------------------

MAX_SOURCES = 64
"""Sources a shard set is counted under, at most: the key stays bounded however many files."""
UNKNOWN_LANG = "unknown"
"""The language of a document whose metadata names none (code, text that skipped langid)."""
_LANG = re.compile(r"[A-Za-z]{2,3}([_-][A-Za-z0-9]{2,8}){0,2}")


def output_of(path: str) -> str | None:
    """The output folder an input file belongs to (``X`` for ``X/docs/part-0.jsonl.gz``)."""
    parent = posixpath.dirname(path.rstrip("/"))
    if posixpath.basename(parent) in ("docs", "other"):
        return posixpath.dirname(parent)
    return None


def _parent(path: str) -> str:
    return posixpath.dirname(path) or "."


def source_roots(files: list[str], limit: int = MAX_SOURCES) -> tuple[str, ...]:
    """The folders documents are counted under: the earlier output each input belongs to
    (``X`` for ``X/docs/part-*.jsonl.gz``, one run however many parts), else the input's
    folder. Over ``limit``, the deepest folders give way to their parents until it fits."""
    roots = {output_of(f) or _parent(f) for f in files}
    while len(roots) > limit:
        deepest = max(r.count("/") for r in roots)
        up = {_parent(r) if r.count("/") == deepest else r for r in roots}
        if up == roots:
            break
        roots = up
    return tuple(sorted(roots))


def source_of(path: str, roots: tuple[str, ...] | frozenset) -> str:
    """The nearest of ``roots`` above ``path`` (a document's input file); ``other`` when
    none is."""
    while True:
        parent = _parent(path)
        if parent in roots:
            return parent
        if parent == path:
            return "other"
        path = parent


def lang_of(metadata: dict) -> str:
    """The document's ``lang`` when it looks like a language code, else ``unknown``:
    a free-form value from the data cannot make the key unbounded."""
    lang = metadata.get("lang")
    return lang if isinstance(lang, str) and _LANG.fullmatch(lang) else UNKNOWN_LANG


def breakdown(counts) -> dict:
    """((source, lang), (docs, tokens)) pairs -> documents and tokens per source and per
    language, both splits together (EOS counted, as in ``domains``)."""
    out: dict[str, dict] = {"sources": {}, "languages": {}}
    for (source, lang), (docs, tokens) in sorted(counts):
        for table, key in (("sources", source), ("languages", lang)):
            row = out[table].setdefault(key, {"docs": 0, "tokens": 0})
            row["docs"] += docs
            row["tokens"] += tokens
    return out


TOKENIZER_FILE = "tokenizer.model"
"""The tokenizer model's name inside a shard set."""


def copy_tokenizer(model_path: str, out: str, storage_options: dict | None = None) -> str:
    """Copy the SentencePiece model into ``out`` (a shard set or its staging folder, any
    fsspec URL) as ``tokenizer.model``; returns its URL."""
    import fsspec

    url = out.rstrip("/") + "/" + TOKENIZER_FILE
    so = storage_options or {}
    with fsspec.open(model_path, "rb", **so) as src, fsspec.open(url, "wb", **so) as dst:
        dst.write(src.read())
    return url


def tokenizer_file(shard_set: shards.ShardSet, cache_dir: str | None = None) -> str:
    """A local path of the set's tokenizer model: its copy in the set (fetched once into
    ``cache_dir``, by sha256, when the set is remote), or for sets written before the copy,
    the path the manifest recorded. FileNotFoundError when neither exists."""
    import os
    import tempfile

    entry = shard_set.manifest["tokenizer"]
    path = entry["path"]
    if path == TOKENIZER_FILE:
        if shard_set.local:
            return shard_set.url(path)
        folder = cache_dir or os.path.join(tempfile.gettempdir(), "skypile-tokenizers")
        local = os.path.join(folder, f"{entry['sha256']}.model")
        if not os.path.exists(local):
            os.makedirs(folder, exist_ok=True)
            shard_set.fs.get_file(shard_set.url(path), local + ".tmp")
            os.replace(local + ".tmp", local)
        return local
    if not os.path.exists(path):
        raise FileNotFoundError(f"the shard set's tokenizer {path} is gone (a set written "
                                "before tokenizer.model was copied into it)")
    return path
