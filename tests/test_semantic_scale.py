"""Semantic dedup at scale: clusters split until each fits the pair-search budget.

Pure maths on hand-built vectors first (bounded chunks, bottom-k samples, the budget check),
then SemanticDedup under the real FnApiRunner with the real USE embeddings on real articles
(``neardup/dev.jsonl``, one article per labelled cluster) with a small budget.
"""

import json
import random

import apache_beam as beam
import numpy as np
import pytest
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline

from skypile.config import ConfigError
from skypile.document import Document
from skypile.pipelines.common import local_runner
from skypile.pipelines.dedup import SemanticDedup
from skypile.text.dedup import SemanticConfig
from skypile.text.semantic import BottomSample, bounded_chunks, cluster_pairs, hash_blocks, split_k


def unit_vectors(n, d=8, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


# ---- pure -----------------------------------------------------------------------------------

def test_bounded_chunks_cover_everything_by_id_within_the_budget_in_any_order():
    items = [(f"d{i:03d}", v) for i, v in enumerate(unit_vectors(47))]
    shuffled = items[:]
    random.Random(3).shuffle(shuffled)
    chunks = list(bounded_chunks(shuffled, 10))
    assert [len(c) for c in chunks] == [10, 10, 10, 10, 7]
    assert [i for c in chunks for i, _ in c] == [i for i, _ in items]  # all, once, by id
    again = list(bounded_chunks(list(reversed(shuffled)), 10))
    assert [[i for i, _ in c] for c in again] == [[i for i, _ in c] for c in chunks]
    # the anchor is left out (the caller adds it to every chunk); an exact fit ends cleanly
    rest = list(bounded_chunks(items[:20], 10, skip="d004"))
    assert [len(c) for c in rest] == [10, 9] and "d004" not in {i for c in rest for i, _ in c}
    with pytest.raises(ValueError, match="at least 1"):
        next(bounded_chunks(items, 0))


def test_bottom_sample_is_the_same_for_any_order_and_bundling():
    items = [(f"id{i}", v) for i, v in enumerate(unit_vectors(200))]
    whole = BottomSample(16, seed=5)
    for i, v in items:
        whole.add(i, v)
    parts = [BottomSample(16, seed=5) for _ in range(3)]
    for n, (i, v) in enumerate(reversed(items)):
        parts[n % 3].add(i, v)
    merged = BottomSample(16, seed=5)
    for part in parts:
        merged.merge(part)
    assert merged.count == whole.count == 200
    assert [i for i, _ in merged.items()] == [i for i, _ in whole.items()]
    assert len(whole.items()) == 16
    assert all(np.array_equal(a, b) for (_, a), (_, b) in zip(merged.items(), whole.items()))
    other_seed = BottomSample(16, seed=6)
    for i, v in items:
        other_seed.add(i, v)
    assert [i for i, _ in other_seed.items()] != [i for i, _ in whole.items()]


def test_split_sizes_and_the_budget_check():
    assert split_k(45, 20, 32) == 3 and split_k(21, 20, 32) == 2 and split_k(10**9, 20, 32) == 32
    assert hash_blocks(100, 20) == 10 and hash_blocks(1, 20) == 1
    v = unit_vectors(5)
    items = [(str(i), x) for i, x in enumerate(v)]
    edges, row = cluster_pairs("1.2", items, 0.99, budget=5)
    assert edges == [] and row["cluster"] == "1.2" and row["size"] == 5
    with pytest.raises(ValueError, match="above the budget of 4"):
        cluster_pairs("1.2", items, 0.99, budget=4)


def test_semantic_config_refuses_bad_values_in_one_line():
    with pytest.raises(ConfigError, match=r"dedup.semantic.max_cluster_size=1: must be at least 2"):
        SemanticConfig(max_cluster_size=1)
    with pytest.raises(ConfigError, match="epsilon"):
        SemanticConfig(epsilon=1.5)
    assert SemanticConfig().max_cluster_size == 2000


# ---- under Beam (integration: real pipelines on ../shared/data) ------------------------------

@pytest.fixture(scope="module")
def articles(data_dir):
    """Distinct real articles (English and Chinese): the first of each labelled cluster."""
    labels = json.loads((data_dir / "neardup/dev-labels.json").read_text())
    seen, out = set(), []
    for line in open(data_dir / "neardup/dev.jsonl", encoding="utf-8"):
        d = json.loads(line)
        if labels[d["id"]] not in seen:
            seen.add(labels[d["id"]])
            out.append(Document(id=d["id"], text=d["text"], url="", source="neardup"))
    return out


def near_copy(doc: Document) -> Document:
    """The same article as another site serves it: a changed first word and a trailing line."""
    head, _, rest = doc.text.partition(" ")
    return Document(id=doc.id + "-copy", text=f"Update: {rest or head}\nShare this page.",
                    url="", source="neardup")


def run_semantic(docs, cfg, out_dir):
    """Kept ids, rejects {id: (reason, detail)}, the report, the summed stats and the largest
    search block that the ``semantic/search_block`` distribution saw."""
    out_dir.mkdir(parents=True, exist_ok=True)
    p = BeamTestPipeline(runner=local_runner())
    out = p | beam.Create(docs) | SemanticDedup(cfg, 3, str(out_dir), {})
    kept_path, rej_path, stats_path = (str(out_dir / n) for n in ("kept", "rejects", "stats"))
    (out["docs"] | "Ids" >> beam.Map(lambda d: d.id)
     | "WriteKept" >> beam.io.WriteToText(kept_path, shard_name_template=""))
    (out["rejects"] | "Rej" >> beam.Map(lambda r: json.dumps([r.id, r.reason, r.detail]))
     | "WriteRej" >> beam.io.WriteToText(rej_path, shard_name_template=""))
    (out["stats"] | "Sum" >> beam.CombinePerKey(sum)
     | "Stat" >> beam.Map(lambda kv: json.dumps([kv[0][1], kv[0][2], kv[1]]))
     | "WriteStats" >> beam.io.WriteToText(stats_path, shard_name_template=""))
    result = p.run()
    result.wait_until_finish()
    dist = result.metrics().query(MetricsFilter().with_name("semantic/search_block"))
    largest = max(d.committed.max for d in dist["distributions"])
    kept = set(open(kept_path).read().split())
    rejects = {r[0]: (r[1], r[2]) for r in map(json.loads, open(rej_path).read().splitlines())}
    stats = {(f, k): n for f, k, n in map(json.loads, open(stats_path).read().splitlines())}
    report = json.loads((out_dir / "reports" / "semantic_clusters.json").read_text())
    return kept, rejects, report, stats, largest


SMALL = dict(max_cluster_size=20, clusters=4, max_levels=3, split_sample_size=64)
PLANTED = (3, 77, 210)  # an English and two Chinese articles, each given a near copy


@pytest.fixture(scope="module")
def runs(articles, tmp_path_factory):
    """100 and 400 articles with the planted copies among them, and the 100 once more in
    another order: {name: run_semantic(...)}."""
    assert len(articles) >= 400
    copies = {i: near_copy(articles[i]) for i in PLANTED}
    out = {}
    for name, n in (("100", 100), ("400", 400), ("100-shuffled", 100)):
        docs = articles[:n] + [c for i, c in copies.items() if i < n]
        if name.endswith("shuffled"):
            random.Random(1).shuffle(docs)
        out[name] = run_semantic(docs, SemanticConfig(**SMALL), tmp_path_factory.mktemp(name))
    return out


@pytest.mark.integration
def test_clusters_grow_with_the_corpus_within_the_budget(runs):
    small, big = runs["100"][2], runs["400"][2]
    # the number of clusters grows with n; none searched is above the budget of 20
    assert small["leaf_clusters"] >= 100 // 20 and big["leaf_clusters"] >= 400 // 20
    assert big["leaf_clusters"] >= 3 * small["leaf_clusters"]
    assert big["deepest_level"] >= 2
    for kept, rejects, report, stats, largest in runs.values():
        assert largest <= 20 and report["largest_search_block"] <= 20
        assert all(r["size"] <= 20 for r in report["clusters"])
        assert report["documents"] == len(kept) + len(rejects)
        assert stats[("leaf_clusters", "")] == report["leaf_clusters"]
        assert stats[("search_blocks", "")] == report["search_blocks"]
        assert stats[("in", "")] == stats[("kept", "")] + len(rejects)
        # a leaf k-means left above the budget (if any) is listed and was searched in blocks
        assert sum(r["size"] for r in report["split_clusters"]) <= report["documents"]
        assert all(r["blocks"] >= 2 for r in report["split_clusters"])


@pytest.mark.integration
def test_the_near_copies_are_found_and_one_of_each_pair_kept(runs, articles):
    kept, rejects, report, _, _ = runs["400"]
    for i in PLANTED:
        pair = {articles[i].id, articles[i].id + "-copy"}
        assert len(pair & kept) == 1, (pair, pair & kept)
        (lost,) = pair - kept
        reason, detail = rejects[lost]
        assert reason == "semantic:duplicate" and detail["kept_id"] in pair & kept
    assert report["duplicate_pairs"] >= len(PLANTED)
    assert report["clusters"][0]["duplicate_pairs"] >= 1  # most duplicate pairs first


@pytest.mark.integration
def test_same_output_for_the_same_documents_in_another_order(runs):
    first, second = runs["100"], runs["100-shuffled"]
    assert first[0] == second[0] and first[1] == second[1]  # kept ids, rejects with detail
    assert first[2] == second[2] and first[3] == second[3]  # report, stats
    assert first[1]  # the planted copies among the first 100 were found


@pytest.mark.integration
def test_a_cluster_k_means_cannot_split_is_searched_in_blocks_through_an_anchor(articles,
                                                                                  tmp_path):
    # 70 near-identical pages (one template, a different number each) and 30 distinct
    # articles, with no split levels: the one cluster of 100 is cut into hash blocks
    base = articles[3].text[:600]
    mass = [Document(id=f"tpl{i:02d}", text=f"{base}\nPage {i}", url="", source="t")
            for i in range(70)]
    docs = mass + articles[300:330]
    cfg = SemanticConfig(max_cluster_size=20, clusters=1, max_levels=0, epsilon=0.9)
    kept, rejects, report, stats, largest = run_semantic(docs, cfg, tmp_path / "blocks")
    assert largest <= 20 and report["largest_search_block"] <= 20
    (split,) = report["split_clusters"]
    assert split["cluster"] == "0" and split["size"] == 100 and split["blocks"] == 10
    assert stats[("split_clusters", "")] == 1 and report["search_blocks"] >= 10
    # the mass is one component through the anchor: one page of it kept
    assert len(kept & {d.id for d in mass}) == 1
    assert all(rejects[d.id][0] == "semantic:duplicate" for d in mass if d.id not in kept)
