"""``skypile tokenize``: documents to versioned token shards, per domain, with held-out sets.

    skypile tokenize --input DOCS_GLOB --tokenizer MODEL --output URL [--config FILE]

Documents (the web pipeline's docs/*.jsonl.gz, or any JSONL/Parquet) are labelled with a
source/domain, split into train / validation by a hash of their id, encoded with EOS
appended, and written as ``OUTPUT/<domain>/<split>-NNNNN-of-MMMMM.bin`` shards plus
``OUTPUT/manifest.json``. Shard contents depend only on the input, so a re-run after a
crash writes only the missing shards and leaves complete ones untouched; each shard is
written under a temporary name and renamed when complete.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
import time
import uuid
import zlib

import apache_beam as beam
from apache_beam import pvalue

from skypile import config as cfglib
from skypile.files import output
from skypile.tokens import shards
from skypile.document import Document, Reject
from skypile.tokens.domains import HeldOutConfig, LabelConfig, hash_fraction, is_held_out, label
from skypile.pipelines.common import (REJECTS, STATS, StageFn, WriteJsonl, WriteStats,
                                      run_pipeline, staged)
from skypile.pipelines.web import ReadFile, as_document, split_overrides
from skypile.files.readers import ReaderOptions
from skypile.tokens.tokenizer import Tokenizer, TokenizerError, model_hash

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


class Encode(StageFn):
    """Document -> ((domain, split), (id, tokens)); a reject when nothing is left."""

    def __init__(self, model: str, cfg: TokenizeConfig):
        self.model, self.cfg = model, cfg

    def setup(self):
        self._tok = Tokenizer(self.model)

    def process(self, doc: Document, held_out_ids):
        ids = self._tok.encode(doc.text)
        if len(ids) < self.cfg.shards.min_doc_tokens:
            yield self.drop(Reject(id=doc.id, url=doc.url, stage="tokenize",
                                   reason="tokenize:too-short", text=doc.text, source=doc.source))
            return
        self.keep("tokenize")
        domain = label(doc, self.cfg.labels)
        split = "validation" if doc.id in held_out_ids else "train"
        yield (domain, split), (doc.id, ids + [self._tok.eos_id])


def _held_out_candidates(doc: Document, cfg: TokenizeConfig):
    if is_held_out(doc.id, cfg.held_out):
        yield label(doc, cfg.labels), (hash_fraction(doc.id), doc.id)


class WriteShards(beam.DoFn):
    """((domain, split, index, count), docs) -> one shard file, skipped when already there."""

    def __init__(self, out: str, vocab_size: int, storage_options: dict):
        self.out, self.vocab_size, self.so = out, vocab_size, storage_options

    def process(self, element):
        (domain, split, index, count), docs = element
        docs = sorted(docs)  # by id: the same bytes on every run
        data = shards.encode([tokens for _id, tokens in docs], self.vocab_size)
        digest = shards.sha256(data)
        rel = f"{domain}/{split}-{index:05d}-of-{count:05d}.bin"
        fs, path = output.fs_and_path(output.join(self.out, rel), self.so)
        status = "written"
        if fs.exists(path) and fs.size(path) == len(data) and \
                shards.sha256(fs.cat_file(path)) == digest:
            status = "kept"  # a complete shard from an earlier, interrupted run
        else:
            tmp = f"{path}.tmp-{uuid.uuid4().hex[:8]}"
            fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
            with fs.open(tmp, "wb") as f:
                f.write(data)
            fs.mv(tmp, path)
        n_tokens = sum(len(t) for _i, t in docs)
        yield {"domain": domain, "split": split, "path": rel, "sha256": digest,
               "tokens": n_tokens, "docs": len(docs), "bytes": len(data), "status": status}


def _shard_key(kv, totals: dict, shard_tokens: int):
    (domain, split), (doc_id, tokens) = kv
    count = max(1, math.ceil(totals[(domain, split)] / shard_tokens))
    index = zlib.crc32(doc_id.encode("utf-8")) % count
    return (domain, split, index, count), (doc_id, tokens)


def build_manifest(rows: list[dict], tokenizer: Tokenizer, cfg: TokenizeConfig,
                   inputs: list[str]) -> dict:
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


def build(p, files: list[str], model: str, cfg: TokenizeConfig, out: str, staging: str):
    tok = Tokenizer(model)
    read = (p | "Inputs" >> beam.Create(files) | "SpreadFiles" >> beam.Reshuffle()
            | "Read" >> beam.ParDo(ReadFile(cfg.read, cfg.storage_options)).with_outputs(
                REJECTS, STATS, main="records"))
    docs = read.records | "AsDocuments" >> beam.Map(as_document)
    held = (docs
            | "HeldOutCandidates" >> beam.FlatMap(_held_out_candidates, cfg)
            | "SmallestHashes" >> beam.combiners.Top.PerKey(cfg.held_out.max_docs, reverse=True)
            | "HeldOutIds" >> beam.FlatMap(lambda kv: [(i, True) for _h, i in kv[1]]))
    encoded = docs | "Encode" >> beam.ParDo(  # a dict side input: O(1) membership per document
        Encode(model, cfg), pvalue.AsDict(held)).with_outputs(REJECTS, STATS, main="tokens")
    tokens = encoded.tokens
    totals = (tokens | "Lengths" >> beam.Map(lambda kv: (kv[0], len(kv[1][1])))
              | "Totals" >> beam.CombinePerKey(sum))
    written = (tokens
               | "ShardKey" >> beam.Map(_shard_key, pvalue.AsDict(totals), cfg.shards.target_tokens)
               | "ByShard" >> beam.GroupByKey()
               | "WriteShards" >> beam.ParDo(WriteShards(out, tok.vocab_size, cfg.storage_options)))
    so = cfg.storage_options
    (written | "AllShards" >> beam.combiners.ToList()
     | "Manifest" >> beam.Map(lambda rows: output.write_json(
         output.join(staging, "manifest.json"), build_manifest(rows, tok, cfg, files), so)))
    rejects = (read[REJECTS], encoded[REJECTS]) | "AllRejects" >> beam.Flatten()
    rejects | "WriteRejects" >> WriteJsonl(staging, "rejects", so)
    ((read[STATS], encoded[STATS]) | "AllCounts" >> beam.Flatten()
     | "WriteStats" >> WriteStats(staging, ("read", "tokenize"), {"inputs": files}, so))


def run(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="skypile tokenize",
        description="Encode documents into versioned token shards per source/domain, with "
                    "held-out validation sets and a manifest (Apache Beam; DirectRunner by "
                    "default, any other flag goes to Beam).",
        epilog="Output: OUTPUT/<domain>/<train|validation>-NNNNN-of-MMMMM.bin, "
               "OUTPUT/manifest.json (per domain tokens, docs, shard sha256, tokenizer hash, "
               "config), OUTPUT/rejects/. Format: docs/shard-format.md. Settings: --config "
               "FILE and --section.key=value, e.g. --shards.target_tokens=50000000 "
               "--held_out.fraction=0.005 --labels.default=web_{lang}.")
    ap.add_argument("--input", action="append", required=True, metavar="GLOB",
                    help="documents: JSONL/Parquet (id, text, url, metadata), local or fsspec URL")
    ap.add_argument("--tokenizer", required=True, metavar="MODEL", help="SentencePiece model")
    ap.add_argument("--output", required=True, metavar="URL", help="output folder or fsspec URL")
    ap.add_argument("--config", default=None, metavar="FILE")
    args, rest = ap.parse_known_args(argv)
    try:
        overrides, beam_args = split_overrides(rest)
        cfg = cfglib.load(TokenizeConfig, args.config, overrides)
        cfg.read.text_only = True
        files = output.expand_inputs(args.input, cfg.storage_options)
        Tokenizer(args.tokenizer)
    except (cfglib.ConfigError, FileNotFoundError, ValueError, TokenizerError) as e:
        print(f"skypile tokenize: error: {e}", file=sys.stderr)
        return 2
    so = cfg.storage_options
    t0 = time.monotonic()
    with staged(args.output, so) as staging:
        run_pipeline(beam_args, lambda p: build(p, files, args.tokenizer, cfg, args.output, staging))
        manifest = output.read_json(output.join(staging, "manifest.json"), so)
        output.commit(staging, args.output, so, ("manifest.json", "stats.json", "rejects"))
        remove_stale_shards(args.output, manifest, so)
    print(f"skypile tokenize: {time.monotonic() - t0:.1f}s, output in {args.output}")
    for domain, splits in manifest["domains"].items():
        for split, s in splits.items():
            print(f"  {domain:<14}{split:<11} docs={s['docs']:<8} tokens={s['tokens']:<10} "
                  f"shards={len(s['shards'])}")
    return 0


def remove_stale_shards(out: str, manifest: dict, storage_options: dict) -> None:
    """Shard files of an earlier run that this run's manifest does not list."""
    fs, root = output.fs_and_path(out, storage_options)
    listed = {f"{root}/{s['path']}" for splits in manifest["domains"].values()
              for split in splits.values() for s in split["shards"]}
    for path in fs.glob(f"{root}/*/*.bin*"):
        if path not in listed:
            fs.rm(path)
