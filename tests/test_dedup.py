"""Dedup maths on hand-built text, and each dedup transform under a real Beam runner."""

import functools
import json

import apache_beam as beam
import numpy as np
import pytest
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline
from apache_beam.testing.util import assert_that, equal_to

from skypile.text import dedup
from skypile.document import Document
from skypile.pipelines.common import local_runner
from skypile.pipelines.dedup import ConnectedComponents, ExactDedup, MinHashDedup, RecurringBlocks
from skypile.text.dedup import ExactConfig
from skypile.text.semantic import cluster_pairs, kmeans


def test_normalize_full_width_punctuation_case_whitespace():
    assert dedup.normalize("Ｈｅｌｌｏ，　Ｗｏｒｌｄ！\n\tＡＢＣ １２３") == "hello world abc 123"
    assert dedup.normalize("你好，世界。“引号”") == "你好 世界 引号"
    assert dedup.normalize("Hello,   world!!") == dedup.normalize("hello world")


@functools.lru_cache(maxsize=1)
def _definition_table() -> dict[int, str]:
    import sys
    import unicodedata

    return {cp: " " for cp in range(sys.maxunicode + 1)
            if (c := unicodedata.category(chr(cp)))[0] in "PSZ" or c in ("Cc", "Cf")}


def _normalize_by_definition(text: str) -> str:
    """normalize() as first written: a translate table built from the Unicode database
    for every code point, a regex for private use and surrogates, a regex for runs of
    whitespace."""
    import re
    import unicodedata

    text = unicodedata.normalize("NFKC", text).lower().translate(_definition_table())
    text = re.sub("[\ud800-\uf8ff\U000f0000-\U0010ffff]", " ", text)
    return re.sub(r"\s+", " ", text).strip()


def test_normalize_keeps_its_definition_on_every_code_point():
    """Each block of 1,024 code points, separated by a letter, normalises as the
    definition says (the faster table must not change a dedup key)."""
    texts = ["x".join(chr(cp) for cp in range(start, start + 1024))
             for start in range(0, 0x110000, 1024)]
    texts += ["  Ｈｅｌｌｏ，\u3000Ｗｏｒｌｄ！\n\t\x85ＡＢＣ\u2028１２３\ue000end  ", "", " \t\n"]
    for t in texts:
        assert dedup.normalize(t) == _normalize_by_definition(t), repr(t[:3])
    assert dedup.normalize(texts[-3]) == "hello world abc 123 end"


def test_signatures_are_datasketchs_minhash_of_the_shingle_set():
    from datasketch import MinHash

    cfg = dedup.MinHashConfig()
    hasher = dedup.MinHasher(cfg)
    for text in ["The quick brown fox jumps over the lazy dog again and again and again",
                 "今天天气很好，我们去公园散步吧。明天也许会下雨。",
                 "short", "repeated words " * 300]:
        reference = MinHash(num_perm=cfg.num_perm, seed=cfg.seed)  # datasketch's own sha1_hash32
        reference.update_batch(sorted(dedup.shingles(text, cfg)))
        assert (hasher.signature(text) == reference.hashvalues.astype(np.uint32)).all()


def test_long_texts_are_shingled_as_a_stream_the_same_way(monkeypatch):
    cfg = dedup.MinHashConfig(ngram_words=3, ngram_chars=2)
    texts = ["one two three four five six seven", "一二三四五六七八九十 mixed words", "a b",
             "中文", "solo", ""]
    listed = [list(dedup.iter_shingles(t, cfg)) for t in texts]
    monkeypatch.setattr(dedup, "SHINGLE_LIST_CHARS", 0)
    assert [list(dedup.iter_shingles(t, cfg)) for t in texts] == listed
    assert listed[0][0] == b"one two three" and listed[1][0] == "一 二".encode()


def test_tokens_split_cjk_into_characters():
    assert dedup.tokens("Python 3 文档。Read it") == ["python", "3", "文", "档", "read", "it"]
    assert dedup.is_cjk(dedup.tokens("这是一段中文 with a few words"))
    assert not dedup.is_cjk(dedup.tokens("This is English with 两个 characters"))


def test_shingles_are_language_aware():
    cfg = dedup.MinHashConfig(ngram_words=3, ngram_chars=2)
    assert dedup.shingles("The cat sat on the mat", cfg) == {
        b"the cat sat", b"cat sat on", b"sat on the", b"on the mat"}
    assert dedup.shingles("今天天气", cfg) == {"今 天".encode(), "天 天".encode(), "天 气".encode()}
    # full-width and half-width forms give the same shingles
    assert dedup.shingles("ＡＢＣ def ghi", cfg) == dedup.shingles("abc, def; ghi", cfg)
    assert dedup.shingles("", cfg) == set()


def test_url_key():
    assert dedup.url_key("HTTPS://www.Example.com:443/a/b/?utm_source=x&b=2&a=1#frag") == \
        dedup.url_key("http://example.com/a/b?a=1&b=2")
    assert dedup.url_key("http://example.com/a?id=1") != dedup.url_key("http://example.com/a?id=2")


def test_content_hash_ignores_formatting():
    assert dedup.content_hash("Hello,  World!") == dedup.content_hash("hello world")
    assert dedup.content_hash("hello world") != dedup.content_hash("hello there")


def test_keep_key_prefers_longest_then_smallest_id():
    cands = [dedup.keep_key("b", 10), dedup.keep_key("a", 10), dedup.keep_key("c", 5)]
    assert max(cands) == dedup.keep_key("a", 10)
    assert max(dedup.keep_key("z", 11), dedup.keep_key("a", 10)) == dedup.keep_key("z", 11)
    # an id before its extensions, and any id (a lone surrogate too) is a valid key
    assert max(dedup.keep_key("doc10", 3), dedup.keep_key("doc1", 3)) == dedup.keep_key("doc1", 3)
    ids = ["b", "a", "doc1", "doc10", "doc2", "\u4e2d", "\U00102100", "x\udc80"]
    ranked = sorted(ids, key=lambda i: dedup.keep_key(i, 1), reverse=True)
    assert ranked == sorted(ids, key=lambda i: i.encode("utf-8", "surrogatepass"))


@pytest.mark.parametrize("threshold", [0.3, 0.5, 0.7, 0.9])
def test_lsh_params_put_the_s_curve_at_the_threshold(threshold):
    b, r = dedup.lsh_params(threshold, 256, 0.5)
    assert b * r <= 256
    knee = (1 / b) ** (1 / r)  # where the band-collision probability rises steeply
    assert abs(knee - threshold) < 0.1


def test_signatures_estimate_jaccard():
    cfg = dedup.MinHashConfig()
    h = dedup.MinHasher(cfg)
    base = " ".join(f"word{i}" for i in range(400))
    edited = base.replace("word10 ", "other ").replace("word200 ", "x ")
    other = " ".join(f"term{i}" for i in range(400))
    assert dedup.similarity(h.signature(base), h.signature(edited)) > 0.9
    assert dedup.similarity(h.signature(base), h.signature(other)) < 0.05
    assert len(h.band_keys(h.signature(base))) == h.bands


def test_cut_blocks():
    cfg = dedup.BlocksConfig(min_block_chars=5)
    frequent = {dedup.block_hash("Share this article on Facebook", cfg)}
    text, removed = dedup.cut_blocks("Real content here.\nShare this article on facebook!\nEnd.", frequent, cfg)
    assert text == "Real content here.\nEnd." and removed == len("Share this article on facebook!") + 1


def test_kmeans_separates_clear_groups():
    rng = np.random.default_rng(0)
    a = rng.normal([1, 0, 0], 0.05, (20, 3))
    b = rng.normal([0, 1, 0], 0.05, (20, 3))
    x = [v / np.linalg.norm(v) for v in np.vstack([a, b])]
    c = kmeans(x, 2, 10, 0)
    assign = np.argmax(np.stack(x) @ c.T, axis=1)
    assert len(set(assign[:20])) == 1 and len(set(assign[20:])) == 1 and assign[0] != assign[20]


# ---- Beam transforms -------------------------------------------------------------------------

def pipeline():
    return BeamTestPipeline(runner=local_runner())


def doc(i, text, url=""):
    return Document(id=i, text=text, url=url, source="t")


ARTICLE = " ".join(f"sentence {i} of a long article about rivers and mountains." for i in range(60))


def test_exact_dedup_by_url_and_content():
    docs = [doc("a", "Same text, here!", "http://x.com/1"), doc("b", "same text here", "http://y.com/2"),
            doc("c", "longer text of the page", "https://www.x.com/1/"), doc("d", "unique", "")]
    with pipeline() as p:
        out = p | beam.Create(docs) | ExactDedup(ExactConfig())
        # a loses on its URL to the longer c; b then has no other copy left, so it stays
        assert_that(out["docs"] | beam.Map(lambda d: d.id), equal_to(["b", "c", "d"]), label="docs")
        assert_that(out["rejects"] | beam.Map(lambda r: (r.id, r.reason, r.detail["kept_id"])),
                    equal_to([("a", "exact:url", "c")]), label="rejects")


def test_exact_dedup_by_content_keeps_the_longest_copy():
    docs = [doc("a", "Same text, here"), doc("b", "same text here!!"), doc("c", "SAME TEXT HERE")]
    with pipeline() as p:
        out = p | beam.Create(docs) | ExactDedup(ExactConfig())
        assert_that(out["docs"] | beam.Map(lambda d: d.id), equal_to(["b"]), label="docs")
        assert_that(out["rejects"] | beam.Map(lambda r: (r.id, r.reason, r.detail["kept_id"])),
                    equal_to([("a", "exact:content", "b"), ("c", "exact:content", "b")]),
                    label="rejects")


def test_minhash_dedup_keeps_one_per_cluster_with_cluster_ids():
    copy1 = ARTICLE.replace("sentence 3 ", "sentence three ")
    copy2 = "Home | News\n" + ARTICLE[: len(ARTICLE) * 3 // 4]
    other = " ".join(f"line {i} about cooking pasta with tomatoes and basil." for i in range(60))
    docs = [doc("orig", ARTICLE), doc("copy1", copy1), doc("copy2", copy2), doc("other", other)]
    with pipeline() as p:
        out = p | beam.Create(docs) | MinHashDedup(dedup.MinHashConfig())
        assert_that(out["docs"] | beam.Map(lambda d: (d.id, d.metadata.get("minhash_cluster"))),
                    equal_to([("copy1", "copy1"), ("other", None)]), label="docs")
        assert_that(out["rejects"] | beam.Map(lambda r: (r.id, r.reason, r.detail["kept_id"],
                                                         r.detail["cluster"])),
                    equal_to([("orig", "minhash:near-duplicate", "copy1", "copy1"),
                              ("copy2", "minhash:near-duplicate", "copy1", "copy1")]),
                    label="rejects")


def test_connected_components_follow_chains():
    edges = [("d", "e"), ("c", "d"), ("b", "c"), ("a", "b"), ("x", "y")]
    with pipeline() as p:
        labels = p | beam.Create(edges) | ConnectedComponents(max_rounds=5)
        assert_that(labels, equal_to([("a", "a"), ("b", "a"), ("c", "a"), ("d", "a"), ("e", "a"),
                                      ("x", "x"), ("y", "x")]))


def test_recurring_blocks_are_cut_and_reported(tmp_path):
    footer = "Copyright 2024 Example Media, all rights reserved worldwide."
    notice = "This page quotes a licence text that many other sites quote as well."
    body = "Article {0} has its own text, two long lines of it.\nAnd a second line, {0}, of its own."
    # site chrome: one host, five pages; shared text: one line on three hosts
    docs = [doc(f"d{i}", body.format(i) + "\n" + footer, f"https://news.example/{i}")
            for i in range(5)]
    docs.append(doc("only", footer, "https://news.example/empty"))
    shared = [body.format(f"s{i}") + " more" * i for i in range(3)]
    docs += [doc(f"s{i}", shared[i] + "\n" + notice, f"https://s{i}.example/") for i in range(3)]
    cfg = dedup.BlocksConfig(min_site_documents=3, min_hosts=3)
    with pipeline() as p:
        out = p | beam.Create(docs) | RecurringBlocks(cfg, str(tmp_path), {})
        assert_that(out["docs"] | beam.Map(lambda d: (d.id, d.text)),
                    equal_to([(f"d{i}", body.format(i)) for i in range(5)]
                             + [("s0", shared[0]), ("s1", shared[1]),
                                # the longest document that has the shared line keeps it
                                ("s2", shared[2] + "\n" + notice)]),
                    label="docs")
        assert_that(out["rejects"] | beam.Map(lambda r: (r.id, r.reason)),
                    equal_to([("only", "blocks:mostly-boilerplate")]), label="rejects")
    report = json.loads((tmp_path / "reports" / "recurring_blocks.json").read_text())
    assert report["top"] == [{"documents": 6, "hosts": 1, "site_documents": 6,
                              "verdict": "chrome", "block": footer},
                             {"documents": 3, "hosts": 3, "site_documents": 1,
                              "verdict": "shared", "block": notice}]
    assert (report["min_site_documents"], report["min_hosts"]) == (3, 3)


def test_block_verdicts_count_hosts_and_documents():
    cfg = dedup.BlocksConfig(min_site_documents=20, min_hosts=10)
    assert dedup.block_verdict((40, 1, 40, "nav"), cfg) == "chrome"
    assert dedup.block_verdict((40, 12, 20, "nav"), cfg) == "chrome"
    assert dedup.block_verdict((15, 12, 3, "cookie notice"), cfg) == "shared"
    assert dedup.block_verdict((19, 1, 19, "untranslated line"), cfg) is None
    assert dedup.merge_block_counts([(3, 1, 3, "b"), (2, 1, 2, "a")]) == (5, 2, 3, "a")
    assert dedup.host_of(doc("x", "t", "https://WWW.Example.com/a")) == "example.com"
    assert dedup.host_of(doc("x", "t")) == "#x"


def test_block_counts_combine_into_one_partial_per_key():
    """The workers' pre-combining table holds up to 100,000 keys per bundle; each holds one
    partial count, where Beam's wrapper of a plain function buffers up to ten lines."""
    from skypile.pipelines.dedup import Folded, _sum_with_line

    counts = [(1, 1, 1, f"line {i % 7}") for i in range(50)]
    fold = Folded(dedup.merge_block_counts)
    acc = fold.create_accumulator()
    for c in counts:
        acc = fold.add_input(acc, c)
    assert acc == dedup.merge_block_counts(counts) == (50, 50, 1, "line 0")
    halves = [fold.create_accumulator(), fold.create_accumulator()]
    for i, c in enumerate(counts):
        halves[i % 2] = fold.add_input(halves[i % 2], c)
    assert fold.merge_accumulators(halves + [fold.create_accumulator()]) == acc
    assert beam.CombineFn.maybe_from_callable(_sum_with_line).add_input(
        [], (1, "a")) == [(1, "a")]  # Beam's wrapper: a list that grows to ten values
    pairs = [(("h", "site"), (1, "b")), (("h", "site"), (2, "a")), (("g", "site"), (1, "c"))]
    with pipeline() as p:
        out = p | beam.Create(pairs) | beam.CombinePerKey(Folded(_sum_with_line))
        assert_that(out, equal_to([(("h", "site"), (3, "a")), (("g", "site"), (1, "c"))]))


def test_repeated_ids_are_never_both_lost():
    docs = [doc("same", "one and the same text"), doc("same", "one and the same text"),
            doc("other", "different words entirely")]
    with pipeline() as p:
        out = p | beam.Create(docs) | ExactDedup(ExactConfig())
        assert_that(out["docs"] | beam.Map(lambda d: d.id), equal_to(["same", "other"]), label="docs")
        assert_that(out["rejects"] | beam.Map(lambda r: (r.id, r.reason)),
                    equal_to([("same", "exact:duplicate-id")]), label="rejects")


def test_cluster_pairs_finds_duplicates_and_density_without_beam():
    v = np.array([1.0, 0.0])
    w = np.array([0.6, 0.8])
    edges, density = cluster_pairs(3, [("b", v), ("a", v), ("c", w)], epsilon=0.95)
    assert edges == [("a", "b")]
    assert density == {"cluster": 3, "size": 3, "mean_similarity": round((1 + 0.6 + 0.6) / 3, 4),
                       "duplicate_pairs": 1, "docs_in_duplicate_pairs": 2}



def test_cut_blocks_stage_cuts_or_rejects_with_the_reason():
    cfg = dedup.BlocksConfig(max_removed_fraction=0.5)
    footer = "Copyright 2024 Example Media, all rights reserved worldwide."
    frequent = {dedup.block_hash(footer, cfg)}
    cut = dedup.CutBlocks(cfg)
    body = "A long line of the article's own text that stays where it is, unchanged."
    kept = cut(doc("a", body + "\n" + footer), frequent)
    assert kept.text == body and kept.metadata["blocks_removed_chars"] == len(footer) + 1
    gone = cut(doc("b", footer), frequent)
    assert (gone.stage, gone.reason, gone.text) == ("blocks", "blocks:mostly-boilerplate", footer)
    assert gone.detail == {"removed_fraction": 1.0}
    untouched = cut(doc("c", body), frequent)
    assert untouched.text == body and "blocks_removed_chars" not in untouched.metadata


def test_kmeans_is_deterministic_for_a_seed():
    rng = np.random.default_rng(1)
    x = [v / np.linalg.norm(v) for v in rng.normal(size=(20, 4))]
    assert np.array_equal(kmeans(x, 3, 5, seed=7), kmeans(x, 3, 5, seed=7))
    assert kmeans(x[:2], 5, 5, seed=0).shape == (2, 4)  # k is capped at the sample size


# ---- one verdict per document; hot keys -------------------------------------------------------

def test_a_document_without_a_verdict_stops_the_run():
    from skypile.pipelines.dedup import MissingVerdict, join_verdicts

    docs = [doc("a", "first text"), doc("b", "second text")]
    with pytest.raises(Exception, match="'b' has 1 document\\(s\\) and 0 verdict"):
        with pipeline() as p:
            verdicts = p | "Verdicts" >> beam.Create([("a", ("keep", None, None))])
            join_verdicts(p | "Docs" >> beam.Create(docs), verdicts, "exact", "Exact")
    assert issubclass(MissingVerdict, RuntimeError)


def test_a_hot_url_and_a_hot_text_keep_one_copy_each():
    # 600 copies of one URL (one longer), 600 of one text under different URLs (the odd
    # ones are longer: the smallest odd id keeps the text)
    on_url = [doc(f"u{i:03d}", f"page text {i}", "http://hot.example/") for i in range(600)]
    on_url.append(doc("u-long", "the longest page text of all", "https://www.hot.example"))
    same = [doc(f"t{i:03d}", "Same TEXT, everywhere!" if i % 2 else "same text everywhere",
                f"http://site{i}.example/") for i in range(600)]
    with pipeline() as p:
        out = p | beam.Create(on_url + same) | ExactDedup(ExactConfig())
        assert_that(out["docs"] | beam.Map(lambda d: d.id), equal_to(["u-long", "t001"]),
                    label="docs")
        assert_that(out["rejects"] | beam.Map(lambda r: (r.reason, r.detail["kept_id"]))
                    | beam.combiners.Count.PerElement(),
                    equal_to([(("exact:url", "u-long"), 600), (("exact:content", "t001"), 599)]),
                    label="rejects")
        assert_that(out["stats"] | beam.Filter(lambda kv: kv[0][1].startswith("largest")),
                    equal_to([(("exact", "largest_url_group", ""), 601),
                              (("exact", "largest_content_group", ""), 600)]), label="stats")


def test_oversized_buckets_are_capped_and_counted(tmp_path):
    from skypile.pipelines.web import run_dedup

    words = [f"word{j}" for j in range(300)]
    rows = []
    for i in range(40):  # 40 near copies: one word of each replaced
        w = list(words)
        w[i * 7] = f"edit{i}"
        rows.append({"id": f"d{i:02d}", "text": " ".join(w)})
    path = tmp_path / "near.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "out"
    assert run_dedup(["--input", str(path), "--output", str(out), "--stages", "minhash",
                      "--dedup.minhash.max_bucket_size=5"]) == 0
    s = json.loads((out / "stats.json").read_text())["stages"]["minhash"]
    # each capped bucket links about 5 of its 40 members; over 58 bands, all are linked
    assert s["kept"] == 1 and s["dropped"] == {"minhash:near-duplicate": 39}
    assert 5 < s["largest_bucket"] <= 40 and s["capped_buckets"] > 0
    assert 0 < s["capped_members"] < s["capped_buckets"] * 39
    assert s["components"] == 1 and s["rounds"] >= 1
