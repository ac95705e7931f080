"""``skypile tokenize``: documents to versioned token shards, per domain, with held-out sets.

    skypile tokenize --input DOCS_GLOB --tokenizer MODEL --output URL [--config FILE]

Documents (the web pipeline's docs/*.jsonl.gz, or any JSONL/Parquet) are labelled with a
source/domain, split into train / validation by a hash of their id, encoded with EOS
appended, and written as ``OUTPUT/<domain>/<split>-NNNNN-of-MMMMM.bin`` shards plus
``OUTPUT/manifest.json``. The tokens never cross the runner's shuffle: the encoding
workers leave them in piece files in the run folder, and each shard writer reads its
slice of each piece (only the pieces' small index is shuffled).

Shard contents depend only on the input, so a re-run after a crash writes only the
missing shards and leaves complete ones untouched; each shard is written once under its
final name (locally as a hidden temporary, then renamed). Afterwards only what a run owns
is removed: shard files (and their temporaries) of this or the previous manifest's
domains that this manifest does not list, never other files under the output.
"""

from __future__ import annotations

import argparse
import itertools
import math
import posixpath
import re
import uuid
import zlib
from typing import NamedTuple

import apache_beam as beam
import numpy as np
from apache_beam import pvalue
from fsspec.implementations.local import LocalFileSystem

from skypile import config as cfglib
from skypile.files import output
from skypile.jobs.tokenize import Encoder, TokenizeConfig, check
from skypile.pipelines.common import (REJECTS, STATS, InputFiles, ReadFile,
                                      as_document, in_global_window, list_inputs, run_command,
                                      split_file, write_outputs)
from skypile.tokens import datacard, shards
from skypile.tokens.domains import bad_domain, hash_fraction, is_held_out
from skypile.tokens.manifest import TOKENIZER_FILE, build_manifest, copy_tokenizer, source_roots
from skypile.tokens.tokenizer import Tokenizer


class Piece(NamedTuple):
    """Where one worker left some documents of one domain: ``path``, a file of their
    tokens (EOS included) one after the other in the order of ``crc`` (CRC-32 of each id,
    ascending), ``lengths`` each one's token count, and ``candidates`` the (position, id)
    of those that may be held out. Only this crosses the shuffle, never the tokens."""

    path: str
    crc: np.ndarray
    lengths: np.ndarray
    candidates: tuple


class ReadEncode(ReadFile):
    """Reading and the ``tokenize`` stage in one step, so that no document crosses Beam on
    its own: a file's records are encoded a batch at a time (at most BATCH_DOCS documents
    or BATCH_CHARS characters, one SentencePiece batch call). The tokens stay with the
    worker until PIECE_TOKENS of them (or the bundle's end): then each domain's go to one
    piece file under ``pieces`` (a folder or URL every worker can read, in the run
    folder), sorted by the CRC-32 of their ids, and a :class:`Piece` leaves as ``(domain,
    piece)``. Since a shard takes a range of CRCs (:func:`shard_segments`), each shard
    reads one contiguous slice of each piece.

    Small side outputs: ``held``, the held-out candidates ``(domain, (hash, id,
    tokens))``; ``sizes``, tokens per domain; ``breakdown``, ``((source, lang), (docs,
    tokens))`` summed per batch; and, as every stage, rejects and counts."""

    BATCH_DOCS = 1024
    BATCH_CHARS = 1 << 22
    PIECE_TOKENS = 1 << 24

    def __init__(self, model: str, cfg: TokenizeConfig, roots: tuple[str, ...], pieces: str):
        super().__init__(cfg.read, cfg.storage_options)
        self.model, self.cfg, self.roots, self.pieces = model, cfg, roots, pieces

    def setup(self):
        self._encoder = Encoder(self.model, self.cfg, self.roots)

    def start_bundle(self):
        super().start_bundle()
        self._docs, self._chars = [], 0
        self._waiting: dict[str, list] = {}  # domain -> encoded batches not yet in a piece
        self._waiting_tokens = 0

    def process(self, path):
        for out in super().process(path):
            if isinstance(out, pvalue.TaggedOutput):
                yield out
                continue
            doc = as_document(out)
            self._docs.append(doc)
            self._chars += len(doc.text)
            if len(self._docs) >= self.BATCH_DOCS or self._chars >= self.BATCH_CHARS:
                yield from self._flush()
                if self._waiting_tokens >= self.PIECE_TOKENS:
                    yield from self._write_pieces()

    def finish_bundle(self):
        for out in itertools.chain(self._flush(), self._write_pieces()):
            if isinstance(out, pvalue.TaggedOutput):
                yield pvalue.TaggedOutput(out.tag, in_global_window(out.value))
            else:
                yield in_global_window(out)
        yield from super().finish_bundle()

    def _flush(self):
        docs, self._docs, self._chars = self._docs, [], 0
        if not docs:
            return
        encoded, rejects = self._encoder.encode_many(docs)
        for rej in rejects:
            yield self.drop(rej)
        self.kept_many(STAGE, len(docs) - len(rejects))
        per_source_lang: dict = {}
        for e in encoded:
            candidate = [is_held_out(doc_id, self.cfg.held_out) for doc_id in e.ids]
            self._waiting.setdefault(e.domain, []).append((e, candidate))
            self._waiting_tokens += len(e.tokens)
            yield pvalue.TaggedOutput(SIZES, (e.domain, int(e.lengths.sum())))
            for doc_id, n, key, held in zip(e.ids, e.lengths.tolist(), e.source_langs, candidate):
                if held:
                    yield pvalue.TaggedOutput(HELD, (e.domain, (hash_fraction(doc_id), doc_id, n)))
                docs_n, tokens_n = per_source_lang.get(key, (0, 0))
                per_source_lang[key] = (docs_n + 1, tokens_n + n)
        for key, counts in sorted(per_source_lang.items()):
            yield pvalue.TaggedOutput(BREAKDOWN, (key, counts))

    def _write_pieces(self):
        waiting, self._waiting, self._waiting_tokens = self._waiting, {}, 0
        for domain, batches in sorted(waiting.items()):
            yield domain, write_piece(self.pieces, domain, batches, self.cfg.storage_options)


def write_piece(folder: str, domain: str, batches: list, storage_options: dict) -> Piece:
    """One domain's encoded batches, each with a flag per document (whether it may be
    held out), as a piece file under ``folder``/``domain`` (a fresh name: a retried
    bundle's piece is simply never referenced), sorted by CRC-32 of id."""
    ids = [i for e, _ in batches for i in e.ids]
    lengths = np.concatenate([e.lengths for e, _ in batches]).astype(np.int64)
    tokens = np.concatenate([e.tokens for e, _ in batches])
    candidate = np.fromiter((c for _, flags in batches for c in flags), bool, len(ids))
    crc = np.fromiter((zlib.crc32(i.encode("utf-8")) for i in ids), np.uint32, len(ids))
    order = np.argsort(crc, kind="stable")
    starts = shards.doc_starts(lengths)
    url = output.join(folder, domain, f"{uuid.uuid4().hex}.tokens")
    fs, path = output.fs_and_path(url, storage_options)
    if isinstance(fs, LocalFileSystem):  # object stores have no folders
        fs.makedirs(posixpath.dirname(path), exist_ok=True)
    with fs.open(path, "wb") as f:
        docs = (tokens[s:s + n] for s, n in zip(starts[order].tolist(), lengths[order].tolist()))
        for chunk in shards.joined(docs, 1 << 20):
            f.write(memoryview(chunk).cast("B"))
    at = np.flatnonzero(candidate[order])
    candidates = tuple((pos, ids[i]) for pos, i in zip(at.tolist(), order[at].tolist()))
    return Piece(url, crc[order], lengths[order], candidates)


STAGE, HELD, SIZES, BREAKDOWN = "tokenize", "held", "sizes", "breakdown"
PIECES = "pieces"
"""In the run folder: the piece files that workers write and shard writers read."""


def _held_tokens(candidate, held: dict):
    """A held-out candidate's tokens count under its domain's validation split when its id
    is held out (in any domain: the split goes by id)."""
    domain, (_hash, doc_id, n) = candidate
    if doc_id in held:
        yield domain, n


def shard_index(crc: np.ndarray, count: int) -> np.ndarray:
    """The shard of each CRC-32 among ``count``: floor(crc * count / 2**32), so a shard
    takes one range of CRCs and, in a piece sorted by CRC, one contiguous slice."""
    return (crc.astype(np.uint64) * np.uint64(count)) >> np.uint64(32)


def shard_segments(kv, held: dict, sizes: dict, held_sizes: dict, shard_tokens: int):
    """``(domain, piece)`` -> ``((domain, split, index, count), (path, first token,
    lengths, drop))``: for each shard that the piece's documents go to, the slice of the
    piece it reads (``drop``: positions in the slice to leave out, the held-out documents
    amid a training range). Split by id (held out or not); ``count`` = ceil(the split's
    tokens / ``shard_tokens``); index from :func:`shard_index`."""
    domain, piece = kv
    n_val = held_sizes.get(domain, 0)
    counts = {"train": max(1, math.ceil((sizes[domain] - n_val) / shard_tokens)),
              "validation": max(1, math.ceil(n_val / shard_tokens))}
    starts = np.zeros(len(piece.lengths) + 1, dtype=np.int64)
    np.cumsum(piece.lengths, out=starts[1:])
    held_pos = np.array([pos for pos, doc_id in piece.candidates if doc_id in held], np.int64)
    index = shard_index(piece.crc, counts["train"])
    first = np.flatnonzero(np.r_[True, index[1:] != index[:-1]]) if len(index) else index
    ends = np.r_[first[1:], len(index)].astype(np.int64)
    for lo, hi in zip(first.tolist(), ends.tolist()):
        drop = held_pos[(held_pos >= lo) & (held_pos < hi)] - lo
        if len(drop) < hi - lo:
            yield ((domain, "train", int(index[lo]), counts["train"]),
                   (piece.path, int(starts[lo]), piece.lengths[lo:hi], tuple(drop.tolist())))
    val_index = shard_index(piece.crc[held_pos], counts["validation"])
    for pos, k in zip(held_pos.tolist(), val_index.tolist()):
        yield ((domain, "validation", int(k), counts["validation"]),
               (piece.path, int(starts[pos]), piece.lengths[pos:pos + 1], ()))


class WriteShards(beam.DoFn):
    """((domain, split, index, count), segments) -> one shard file, skipped when already
    there. Each segment is a slice of a piece file: memory-mapped where the file is local
    (the tokens stay in it), else read in one ranged read; its documents go through a
    :class:`~skypile.tokens.shards.ShardWriter` (a local spill file or the piece itself,
    and an index entry per document in memory, never the shard's tokens), and are ordered
    by a hash of their tokens: the same bytes whatever order and grouping the runner hands
    them in."""

    def __init__(self, out: str, vocab_size: int, storage_options: dict):
        self.out, self.vocab_size, self.so = out, vocab_size, storage_options

    def process(self, element):
        (domain, split, index, count), segments = element
        dtype = shards.DTYPES[shards.dtype_code(self.vocab_size)]
        with shards.ShardWriter(self.vocab_size) as shard:
            for path, first, lengths, drop in segments:
                keep = None
                if drop:
                    keep = np.ones(len(lengths), bool)
                    keep[list(drop)] = False
                tokens = _read_segment(path, first, int(lengths.sum()), dtype, self.so)
                if isinstance(tokens, np.memmap):  # a local piece: read where it lies
                    shard.add_view(tokens, lengths, keep)
                elif keep is None:
                    shard.add(tokens, lengths)
                else:
                    shard.add(tokens[np.repeat(keep, lengths)], lengths[keep])
            rel = f"{domain}/{split}-{index:05d}-of-{count:05d}.bin"
            fs, path = output.fs_and_path(output.join(self.out, rel), self.so)
            status = "written"
            if fs.exists(path) and fs.size(path) == shard.size_bytes and \
                    shards.file_sha256(fs, path) == (digest := shard.write()):
                status = "kept"  # a complete shard from an earlier, interrupted run
            else:
                # written once: one upload on object storage, a renamed hidden temporary locally
                with output.open_final(output.join(self.out, rel), self.so) as f:
                    digest = shard.write(f)
        yield {"domain": domain, "split": split, "path": rel, "sha256": digest,
               "tokens": shard.n_tokens, "docs": shard.n_docs, "bytes": shard.size_bytes,
               "status": status}


def _read_segment(path: str, first: int, n: int, dtype: np.dtype, storage_options: dict):
    """Tokens ``first`` to ``first + n`` of a piece file: a read-only memory map of a local
    file, one ranged read elsewhere; OSError when the file holds fewer."""
    fs, local = output.fs_and_path(path, storage_options)
    if isinstance(fs, LocalFileSystem):
        try:
            return np.memmap(local, dtype=dtype, mode="r", offset=first * dtype.itemsize,
                             shape=(n,))
        except ValueError:  # numpy's word for a file shorter than the map
            raise OSError(f"{path}: holds fewer than the {first + n} tokens written to it") from None
    tokens = np.frombuffer(fs.cat_file(local, start=first * dtype.itemsize,
                                       end=(first + n) * dtype.itemsize), dtype)
    if len(tokens) != n:
        raise OSError(f"{path}: {len(tokens)} tokens where {n} were written")
    return tokens


def _add_counts(pairs) -> tuple[int, int]:
    """(docs, tokens) pairs summed: a combiner, so no key ever lists its documents."""
    docs = tokens = 0
    for d, t in pairs:
        docs += d
        tokens += t
    return docs, tokens


def build(p, files: list[str], model: str, cfg: TokenizeConfig, out: str, staging: str):
    so = cfg.storage_options
    tok = Tokenizer(model, so)
    names = (p | "Inputs" >> InputFiles(files, cfg.read, so)
             | "SplitFiles" >> beam.FlatMap(split_file, cfg.read, so)  # large JSONL: ranges
             | "SpreadFiles" >> beam.Reshuffle())
    enc = names | "ReadEncode" >> beam.ParDo(
        ReadEncode(model, cfg, source_roots(files), output.join(staging, PIECES))).with_outputs(
        REJECTS, STATS, HELD, SIZES, BREAKDOWN, main="pieces")
    # small side inputs only: max_docs ids per domain, one number per domain
    held = (enc[HELD]
            | "SmallestHashes" >> beam.combiners.Top.PerKey(cfg.held_out.max_docs, reverse=True)
            | "HeldOutIds" >> beam.FlatMap(lambda kv: [(c[1], True) for c in kv[1]]))
    held_sizes = (enc[HELD] | "HeldTokens" >> beam.FlatMap(_held_tokens, pvalue.AsDict(held))
                  | "SumHeldTokens" >> beam.CombinePerKey(sum))
    sizes = enc[SIZES] | "SumSizes" >> beam.CombinePerKey(sum)
    per_source_lang = (  # at most MAX_SOURCES x languages keys, whatever the corpus
        enc[BREAKDOWN] | "SumSourceLang" >> beam.CombinePerKey(_add_counts))
    written = (enc.pieces
               | "ShardSegments" >> beam.FlatMap(shard_segments, pvalue.AsDict(held),
                                               pvalue.AsDict(sizes), pvalue.AsDict(held_sizes),
                                               cfg.shards.target_tokens)
               | "ByShard" >> beam.GroupByKey()
               | "WriteShards" >> beam.ParDo(WriteShards(out, tok.vocab_size, so)))
    (written | "AllShards" >> beam.combiners.ToList()
     | "Manifest" >> beam.Map(lambda rows, counts: output.write_json(
         output.join(staging, "manifest.json"), build_manifest(rows, tok, cfg, files, counts),
         so), pvalue.AsList(per_source_lang)))
    write_outputs(staging, None, [enc[REJECTS]], [enc[STATS]], ("read", "tokenize"),
                  {"inputs": files}, so)


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
    files = list_inputs(args.input, cfg.read, cfg.storage_options)  # patterns: workers list
    Tokenizer(args.tokenizer, cfg.storage_options)
    return files


def _publish(staging: str, args: argparse.Namespace, cfg: TokenizeConfig) -> dict:
    """Shards are written in place; the piece files go; the rest is committed (manifest, stats, datacard and
    tokenizer to their places, then the marker, then the previous run's rejects go), then
    old shards are removed (the previous manifest, read before the commit replaces it,
    says which domains)."""
    so = cfg.storage_options
    manifest = output.read_json(output.join(staging, "manifest.json"), so)
    fs, pieces = output.fs_and_path(output.join(staging, PIECES), so)
    if fs.exists(pieces):  # read by every shard writer by now; the commit need not list them
        fs.rm(pieces, recursive=True)
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


OWNED_NAME = re.compile(rf"(?:{shards.SHARD_NAME.pattern})(?:\.tmp-[0-9a-f]{{8}})?"
                        rf"|\.(?:{shards.SHARD_NAME.pattern})\.tmp-[0-9a-f]{{8}}")
"""A shard's file name in its domain folder, or a temporary one it was written under
(``.NAME.tmp-xxxxxxxx`` now, ``NAME.tmp-xxxxxxxx`` by older versions)."""


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
