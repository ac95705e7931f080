"""``manifest.json`` of a token shard set (see docs/shard-format.md): what ``ShardSet``
reads back and checks, written once every shard is complete."""

from __future__ import annotations

from typing import Any

from skypile import config as cfglib
from skypile.tokens import shards
from skypile.tokens.tokenizer import Tokenizer, model_hash


def build_manifest(rows: list[dict], tokenizer: Tokenizer, cfg: Any, inputs: list[str]) -> dict:
    """The manifest of a shard set: per domain and split, its shards (path, sha256, tokens,
    docs, bytes) in path order, the tokenizer that made them, the inputs and the config."""
    domains: dict = {}
    for r in sorted(rows, key=lambda r: r["path"]):
        d = domains.setdefault(r["domain"], {}).setdefault(
            r["split"], {"tokens": 0, "docs": 0, "shards": []})
        d["tokens"] += r["tokens"]
        d["docs"] += r["docs"]
        d["shards"].append({k: r[k] for k in ("path", "sha256", "tokens", "docs", "bytes")})
    return {"format": "skypile-token-shards", "version": shards.VERSION,
            "tokenizer": {"path": tokenizer.path, "sha256": model_hash(tokenizer.path),
                          "vocab_size": tokenizer.vocab_size, "eos_id": tokenizer.eos_id},
            "dtype": str(shards.DTYPES[shards.dtype_code(tokenizer.vocab_size)]),
            "domains": domains, "inputs": inputs, "config": cfglib.to_dict(cfg)}
