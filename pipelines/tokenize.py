"""``skypile tokenize``: documents to versioned token shards, per domain, with held-out sets.

    skypile tokenize --input DOCS_GLOB --tokenizer MODEL --output URL [--config FILE]

Documents (the web pipeline's docs/*.jsonl.gz, or any JSONL/Parquet) are labelled with a
source/domain, split into train / validation by a hash of their id, encoded with EOS
appended, and written as ``OUTPUT/<domain>/<split>-NNNNN-of-MMMMM.bin`` shards plus
``OUTPUT/manifest.json``. Shard contents depend only on the input, so a re-run after a
crash writes only the missing shards and leaves complete ones untouched; each shard is
written under a temporary name and renamed when complete. Afterwards only what a run owns
is removed: shard files (and their temporaries) of this or the previous manifest's
domains that this manifest does not list, never other files under the output.
"""

from __future__ import annotations

import argparse
import hashlib
import math
import re
import uuid
import zlib

import apache_beam as beam
from apache_beam import pvalue

from skypile import config as cfglib
from skypile.document import Document
from skypile.files import output
from skypile.jobs.tokenize import Encoder, TokenizeConfig, check
from skypile.pipelines.common import (ApplyStage, ReadFile, as_document, chain, run_command,
                                      with_rejects, write_outputs)
from skypile.tokens import datacard, shards
from skypile.tokens.domains import bad_domain, hash_fraction, is_held_out, label
from skypile.tokens.manifest import TOKENIZER_FILE, build_manifest, copy_tokenizer, source_roots
from skypile.tokens.tokenizer import Tokenizer


def _held_out_candidates(doc: Document, cfg: TokenizeConfig):
    """A bad label is no candidate: the Encoder rejects its document (tokenize:bad-domain)."""
    if is_held_out(doc.id, cfg.held_out):
        domain = label(doc, cfg.labels)
        if not bad_domain(domain):
            yield domain, (hash_fraction(doc.id), doc.id)


class WriteShards(beam.DoFn):
    """((domain, split, index, count), docs) -> one shard file, skipped when already there."""

    def __init__(self, out: str, vocab_size: int, storage_options: dict):
        self.out, self.vocab_size, self.so = out, vocab_size, storage_options

    def process(self, element):
        (domain, split, index, count), docs = element
        # by id (then, for a repeated id, by tokens): the same bytes on every run
        docs = sorted(docs, key=lambda d: (d[0], hashlib.sha1(d[1]).digest()))
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
    (domain, split), (doc_id, tokens), _source_lang = kv  # the breakdown's key stays here
    count = max(1, math.ceil(totals[(domain, split)] / shard_tokens))
    index = zlib.crc32(doc_id.encode("utf-8")) % count
    return (domain, split, index, count), (doc_id, tokens)


def _add_counts(pairs) -> tuple[int, int]:
    """(docs, tokens) pairs summed: a combiner, so no key ever lists its documents."""
    docs = tokens = 0
    for d, t in pairs:
        docs += d
        tokens += t
    return docs, tokens


def build(p, files: list[str], model: str, cfg: TokenizeConfig, out: str, staging: str):
    tok = Tokenizer(model)
    so = cfg.storage_options
    names = p | "Inputs" >> beam.Create(files) | "SpreadFiles" >> beam.Reshuffle()
    read = chain(names, [("Read", with_rejects(ReadFile(cfg.read, so))),
                         ("AsDocuments", beam.Map(as_document))])
    held = (read.docs
            | "HeldOutCandidates" >> beam.FlatMap(_held_out_candidates, cfg)
            | "SmallestHashes" >> beam.combiners.Top.PerKey(cfg.held_out.max_docs, reverse=True)
            | "HeldOutIds" >> beam.FlatMap(lambda kv: [(i, True) for _h, i in kv[1]]))
    encoded = chain(read.docs, [(  # a dict side input: O(1) membership per document
        "Encode", with_rejects(ApplyStage(Encoder, model, cfg, source_roots(files),
                                          stage="tokenize"), pvalue.AsDict(held)))])
    tokens = encoded.docs  # ((domain, split), (id, tokens), (source, lang))
    per_source_lang = (  # at most MAX_SOURCES x languages keys, whatever the corpus
        tokens | "SourceLang" >> beam.Map(lambda kv: (kv[2], (1, len(kv[1][1]))))
        | "SumSourceLang" >> beam.CombinePerKey(_add_counts))
    totals = (tokens | "Lengths" >> beam.Map(lambda kv: (kv[0], len(kv[1][1])))
              | "Totals" >> beam.CombinePerKey(sum))
    written = (tokens
               | "ShardKey" >> beam.Map(_shard_key, pvalue.AsDict(totals), cfg.shards.target_tokens)
               | "ByShard" >> beam.GroupByKey()
               | "WriteShards" >> beam.ParDo(WriteShards(out, tok.vocab_size, so)))
    (written | "AllShards" >> beam.combiners.ToList()
     | "Manifest" >> beam.Map(lambda rows, counts: output.write_json(
         output.join(staging, "manifest.json"), build_manifest(rows, tok, cfg, files, counts),
         so), pvalue.AsList(per_source_lang)))
    write_outputs(staging, None, read.rejects + encoded.rejects, read.counts + encoded.counts,
                  ("read", "tokenize"), {"inputs": files}, so)


def make_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="skypile tokenize",
        description="Encode documents into versioned token shards per source/domain, with "
                    "held-out validation sets and a manifest (Apache Beam; DirectRunner by "
                    "default, any other flag goes to Beam).",
        epilog="Output: OUTPUT/<domain>/<train|validation>-NNNNN-of-MMMMM.bin, "
               "OUTPUT/manifest.json (per domain tokens, docs, shard sha256, tokenizer hash, "
               "config; documents and tokens per source and language), OUTPUT/DATACARD.md, "
               "OUTPUT/rejects/. Format: docs/shard-format.md. Settings: --config "
               "FILE and --section.key=value, e.g. --shards.target_tokens=50000000 "
               "--held_out.fraction=0.005 --labels.default=web_{lang}.")
    ap.add_argument("--input", action="append", required=True, metavar="GLOB",
                    help="documents: JSONL/Parquet (id, text, url, metadata), local or fsspec URL")
    ap.add_argument("--tokenizer", required=True, metavar="MODEL", help="SentencePiece model")
    ap.add_argument("--output", required=True, metavar="URL", help="output folder or fsspec URL")
    ap.add_argument("--config", default=None, metavar="FILE")
    return ap


def _resolve(args: argparse.Namespace, overrides: list[str]) -> TokenizeConfig:
    cfg = cfglib.load(TokenizeConfig, args.config, overrides)
    check(cfg)
    return cfg


def _inputs(args: argparse.Namespace, cfg: TokenizeConfig) -> list[str]:
    """The input files, once the tokenizer is known to load (TokenizerError otherwise)."""
    files = output.expand_inputs(args.input, cfg.storage_options)
    Tokenizer(args.tokenizer)
    return files


def _publish(staging: str, args: argparse.Namespace, cfg: TokenizeConfig) -> dict:
    """Shards are written in place; the rest is committed, then old shards are removed
    (the previous manifest, read before the commit replaces it, says which domains)."""
    so = cfg.storage_options
    manifest = output.read_json(output.join(staging, "manifest.json"), so)
    previous = previous_manifest(args.output, so)
    datacard.write(staging, args.output, so)  # DATACARD.md, committed with the manifest
    copy_tokenizer(args.tokenizer, staging, so)  # tokenizer.model travels with the shards
    output.commit(staging, args.output, so,
                  ("manifest.json", "stats.json", "rejects", "DATACARD.md", TOKENIZER_FILE))
    remove_stale_shards(args.output, manifest, so, previous)
    return manifest


def _summary(manifest: dict, args: argparse.Namespace, seconds: float) -> int:
    print(f"skypile tokenize: {seconds:.1f}s, output in {args.output}")
    for domain, splits in manifest["domains"].items():
        for split, s in splits.items():
            print(f"  {domain:<14}{split:<11} docs={s['docs']:<8} tokens={s['tokens']:<10} "
                  f"shards={len(s['shards'])}")
    return 0


def run(argv: list[str] | None = None) -> int:
    return run_command(
        argv, TokenizeConfig,
        lambda p, args, files, cfg, staging: build(p, files, args.tokenizer, cfg, args.output,
                                                   staging),
        parser=make_parser(), resolve=_resolve, inputs=_inputs, publish=_publish,
        summary=_summary)


OWNED_NAME = re.compile(shards.SHARD_NAME.pattern + r"(\.tmp-[0-9a-f]{8})?")
"""A shard's file name in its domain folder, or the temporary one it is written under."""


def previous_manifest(out: str, storage_options: dict) -> dict | None:
    """The manifest an earlier run left in ``out``; None when there is none, or it is not
    a token-shard manifest (then nothing of it is trusted)."""
    try:
        m = output.read_json(output.join(out, "manifest.json"), storage_options)
    except (OSError, ValueError):  # none, unreadable or not JSON
        return None
    if not isinstance(m, dict) or m.get("format") != "skypile-token-shards" \
            or not isinstance(m.get("domains"), dict):
        return None
    return m


def remove_stale_shards(out: str, manifest: dict, storage_options: dict,
                        previous: dict | None = None) -> None:
    """Shard files that this run's manifest does not list: in the folder of a domain of
    this or the previous manifest (a safe name), with a shard's exact file name. A
    Megatron export, notes or any other folder under the output are left alone."""
    fs, root = output.fs_and_path(out, storage_options)
    listed = {f"{root}/{s['path']}" for splits in manifest["domains"].values()
              for split in splits.values() for s in split["shards"]}
    domains = set(manifest["domains"]) | set((previous or {}).get("domains", {}))
    for domain in sorted(d for d in domains if not bad_domain(d)):
        for path in fs.glob(f"{root}/{domain}/*"):
            if OWNED_NAME.fullmatch(path.rsplit("/", 1)[-1]) and path not in listed:
                fs.rm(path)
