"""Connected components converge for any graph shape, or the run fails and says why."""

import gzip
import json
import random

import apache_beam as beam
import pytest
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline
from apache_beam.testing.util import assert_that, equal_to

from skypile.document import Document
from skypile.pipelines.common import local_runner
from skypile.pipelines.dedup import ComponentsNotConverged, ConnectedComponents, MinHashDedup
from skypile.pipelines.web import run_dedup
from skypile.text import dedup


def pipeline():
    return BeamTestPipeline(runner=local_runner())


def shuffled_ids(n, seed):
    """n ids in an order unrelated to their sort order, so no chain is already sorted."""
    ids = [f"n{i:05d}" for i in range(n)]
    random.Random(seed).shuffle(ids)
    return ids


def chain(ids):
    return [(ids[i], ids[i + 1]) for i in range(len(ids) - 1)]


def run_components(edges, want_labels, check_stats=None, max_rounds=20):
    """ConnectedComponents on ``edges``: its labels must be ``want_labels`` (a dict), and
    ``check_stats`` holds for its stats items (a dict field -> count)."""
    with pipeline() as p:
        cc = ConnectedComponents(max_rounds, stage="t")
        labels = p | beam.Create(edges) | cc
        if want_labels is not None:
            assert_that(labels, equal_to(sorted(want_labels.items())), label="labels")
        if check_stats is not None:
            assert_that(cc.stats, lambda items: check_stats({k[1]: n for k, n in items}),
                        label="stats")


def stats_are(**want):
    """A check that the stats have these values, or for a range (lo, hi), lie in it."""
    def check(stats):
        for key, value in want.items():
            ok = value[0] <= stats[key] <= value[1] if isinstance(value, tuple) \
                else stats[key] == value
            assert ok, (key, stats)
    return check


def test_a_200_document_chain_converges_to_one_label():
    ids = shuffled_ids(200, seed=1)
    # about log2(200) rounds, far below the cap
    run_components(chain(ids), {i: min(ids) for i in ids},
                   stats_are(edges=199, components=1, rounds=(1, 12)))


def test_a_10000_member_star_converges():
    members = shuffled_ids(10_001, seed=2)
    hub = sorted(members)[5000]  # not the smallest: every label must move to the smallest
    edges = [(hub, m) for m in members if m != hub]
    run_components(edges, {m: min(members) for m in members},
                   stats_are(edges=10_000, components=1, rounds=(1, 3)), max_rounds=4)


def test_two_chains_joined_by_one_edge_and_a_separate_pair():
    ids = shuffled_ids(150, seed=3)
    left, right = ids[:70], ids[70:148]
    edges = chain(left) + chain(right) + [(left[35], right[40]), (ids[148], ids[149])]
    random.Random(4).shuffle(edges)
    joined = min(left + right)
    run_components(edges, {**{i: joined for i in left + right},
                           ids[148]: min(ids[148:]), ids[149]: min(ids[148:])},
                   stats_are(components=2, edges=69 + 77 + 2))


def test_too_few_rounds_fail_loudly_with_the_count():
    with pytest.raises(ComponentsNotConverged,
                       match=r"did not converge in 2 rounds: \d+ edges still"):
        run_components(chain(shuffled_ids(200, seed=5)), None, max_rounds=2)


def test_repeated_and_reversed_edges_and_self_loops_are_one_edge():
    edges = [("b", "a"), ("a", "b"), ("a", "b"), ("c", "c"), ("c", "b")]
    run_components(edges, {"a": "a", "b": "a", "c": "a"}, stats_are(edges=2, components=1))


# ---- a chain of verified near duplicates through MinHashDedup --------------------------------

WORDS = [f"w{j}" for j in range(2000)]


def chain_texts(n=30, width=100, shift=30):
    """Document i is a window of ``width`` words starting at i * shift: neighbours share
    70% of their words (Jaccard of 5-gram shingles about 0.52), documents two apart 40%
    (about 0.23): near duplicates only along the chain, above and below the 0.4 default."""
    return [" ".join(WORDS[i * shift:i * shift + width]) for i in range(n)]


def test_chain_texts_are_a_chain_of_near_duplicates():
    cfg = dedup.MinHashConfig()
    h = dedup.MinHasher(cfg)
    sigs = [h.signature(t) for t in chain_texts()]
    near = [dedup.similarity(sigs[i], sigs[i + 1]) for i in range(len(sigs) - 1)]
    skip = [dedup.similarity(sigs[i], sigs[i + 2]) for i in range(len(sigs) - 2)]
    assert min(near) >= cfg.threshold + 0.03 and max(skip) < cfg.threshold - 0.05


def test_a_30_document_chain_keeps_exactly_one_document():
    texts = chain_texts()
    ids = shuffled_ids(30, seed=6)  # chain order is not id order
    docs = [Document(id=ids[i], text=t, url="", source="t") for i, t in enumerate(texts)]
    with pipeline() as p:
        out = p | beam.Create(docs) | MinHashDedup(dedup.MinHashConfig())
        kept = out["docs"] | "Kept" >> beam.Map(lambda d: (d.id, d.metadata["minhash_cluster"]))
        winner = max(docs, key=lambda d: dedup.keep_key(d.id, len(d.text))).id
        assert_that(kept, equal_to([(winner, min(ids))]), label="one-kept")
        assert_that(out["rejects"] | beam.Map(lambda r: (r.reason, r.detail["kept_id"],
                                                         r.detail["cluster"])),
                    equal_to([("minhash:near-duplicate", winner, min(ids))] * 29),
                    label="all-others-to-it")


def test_dedup_command_reports_edges_components_and_rounds(tmp_path):
    texts = chain_texts()
    ids = shuffled_ids(30, seed=7)
    other = " ".join(f"x{j}" for j in range(80))
    path = tmp_path / "chain.jsonl"
    path.write_text("".join(json.dumps({"id": i, "text": t}) + "\n"
                            for i, t in zip(ids + ["other"], texts + [other])))
    out = tmp_path / "out"
    assert run_dedup(["--input", str(path), "--output", str(out),
                      "--stages", "exact,minhash"]) == 0
    kept = [json.loads(line)["id"] for f in (out / "docs").glob("*.jsonl.gz")
            for line in gzip.open(f, "rt", encoding="utf-8")]
    assert len(kept) == 2 and "other" in kept
    s = json.loads((out / "stats.json").read_text())["stages"]["minhash"]
    assert (s["in"], s["kept"], s["dropped"]) == (31, 2, {"minhash:near-duplicate": 29})
    assert s["edges"] >= 29 and s["components"] == 1 and 1 <= s["rounds"] <= 10
    assert s["largest_cluster"] == 30 and s["largest_bucket"] >= 2
