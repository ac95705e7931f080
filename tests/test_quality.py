"""Quality stages: scorers and the threshold step on hand-built documents, then Beam."""

import json

import apache_beam as beam
import pytest
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline
from apache_beam.testing.util import assert_that, equal_to

from skypile import config as cfglib
from skypile.jobs.web import WebConfig
from skypile.text import heuristics
from skypile.classifiers import perplexity as ppl
from skypile.text import cutoffs
from skypile.classifiers.langid import LangId
from skypile.document import Document
from skypile.pipelines.common import local_runner
from skypile.pipelines.quality import QualityStages
from skypile.text.thresholds import FilterConfig, decide, quality_group
from skypile.jobs.scoring import LangIdConfig, PerplexityConfig, QualityConfig

EN = ("The committee met on Tuesday to discuss the budget for the coming year, and the "
      "members agreed that the new library should be built before the end of the summer. ") * 3
ZH = ("委员会周二开会讨论了明年的预算，成员们一致认为新图书馆应该在夏天结束前建成。"
      "这个决定得到了市民的广泛支持，许多家长表示孩子们终于有了安静读书的地方。"
      "图书馆的设计方案由本地建筑师完成，外墙采用再生材料，屋顶将安装太阳能板。"
      "馆内计划设置儿童阅读区、自习室和展览厅，预计每年接待读者超过十万人次。")


def doc(text, **meta):
    return Document(id="d", text=text, url="http://x", source="t", metadata=dict(meta))


def test_langid_on_hand_built_text():
    lid = LangId()
    assert lid.predict(EN).lang == "en" and lid.predict(ZH).lang == "zh"
    mixed = lid.predict(EN + "\n" + ZH)
    assert set(mixed.shares) == {"en", "zh"} and abs(sum(mixed.shares.values()) - 1) < 0.01
    assert lid.predict("   ").lang == "unknown"


def test_t2s_conversion():
    assert LangId(LangIdConfig(t2s=True)).to_simplified("漢字與臺灣") == "汉字与台湾"


def test_ccnet_normalisation():
    assert ppl.normalize("  Café 2023，東京！ ") == "cafe 0000,東京!"


def test_cutoff_csv_roundtrip(tmp_path, data_dir):
    table = cutoffs.read_cutoffs(str(data_dir / "ccnet/cutoff.csv"))
    # CCNet's file has percentiles 0-99: no p100 is invented, none is written back
    assert table["en"][30] < table["en"][60] and len(table["zh"]) == 100
    assert table["zh"][99] > table["zh"][98] > 0
    cutoffs.write_cutoffs(str(tmp_path / "c.csv"), {"en": table["en"], "zh": table["zh"]})
    lines = (tmp_path / "c.csv").read_text().splitlines()
    assert len(lines) == 101 and lines[-1].startswith("99,")
    assert cutoffs.read_cutoffs(str(tmp_path / "c.csv"))["zh"] == table["zh"]
    p = cutoffs.percentiles([5.0, 1.0, 3.0])
    assert len(p) == 100 and p[0] == 1.0 and p[99] == 5.0


def test_bad_cutoff_tables_are_one_line_errors(tmp_path, data_dir):
    bad = tmp_path / "bad.csv"
    bad.write_text(",en\n0,10\n2,30\n")
    with pytest.raises(cutoffs.CutoffError, match="row 3 should be percentile 1"):
        cutoffs.read_cutoffs(str(bad))
    bad.write_text(",en\n0,ten\n")
    with pytest.raises(cutoffs.CutoffError, match="'ten', not a number"):
        cutoffs.read_cutoffs(str(bad))
    table = cutoffs.read_cutoffs(str(data_dir / "ccnet/cutoff.csv"))
    with pytest.raises(cutoffs.CutoffError, match="head=30, middle=100"):
        cutoffs.check_percentiles(table, 30, 100)
    with pytest.raises(cutoffs.CutoffError, match="head=30, middle=100"):
        ppl.Scorer(PerplexityConfig(cutoffs=str(data_dir / "ccnet/cutoff.csv"),
                                    middle_percentile=100))


def _ccnet_records(data_dir):
    """CCNet's own output records: (language, perplexity, the bucket CCNet gave)."""
    wq = data_dir / "web-quality"
    for line in open(wq / "ccnet_zh_2021-43_cleared1.jsonl", encoding="utf-8"):
        r = json.loads(line)
        yield r["language"], r["perplexity"], r["bucket"]
    for f in sorted(wq.glob("multiple_files_cc_en_head-*.jsonl")):
        for line in open(f, encoding="utf-8"):
            m = json.loads(line)["metadata"]
            yield m["language"], m["perplexity"], m["bucket"]


def test_buckets_equal_ccnets_own_labels(data_dir):
    scorer = ppl.Scorer(PerplexityConfig(cutoffs=str(data_dir / "ccnet/cutoff.csv")))
    records = list(_ccnet_records(data_dir))
    assert len(records) == 120 and {b for _l, _p, b in records} == {"head", "middle"}
    assert [scorer.bucket(p, lang) for lang, p, _b in records] == [b for _l, _p, b in records]
    # CCNet's strict bounds: a perplexity equal to a cutoff belongs to the bucket above it
    zh = cutoffs.read_cutoffs(str(data_dir / "ccnet/cutoff.csv"))["zh"]
    assert [scorer.bucket(v, "zh") for v in (zh[30] - 0.1, zh[30], zh[60] - 0.1, zh[60])] == \
        ["head", "middle", "middle", "tail"]
    for bad in (float("nan"), -1.0, float("inf")):
        assert scorer.bucket(bad, "zh") is None
    assert scorer.bucket(100.0, "xx") is None  # no cutoffs for the language


@pytest.mark.parametrize("value,shown", [(float("nan"), "nan"), (-3.5, -3.5),
                                         (float("inf"), "inf"), ("12", "12")])
def test_invalid_perplexity_is_a_reject_not_head(value, shown):
    meta = {"lang": "en", "lang_score": 0.9, "perplexity": value, "bucket": "head"}
    check, outcome, detail = decide(doc(EN, **meta), FilterConfig(), CHECKS)
    assert (check, outcome, detail) == ("perplexity", "drop",
                                        {"reason": "perplexity:invalid", "perplexity": shown})
    # no perplexity at all is no reason to drop
    meta = {"lang": "en", "lang_score": 0.9, "perplexity": None}
    assert decide(doc(EN, **meta), FilterConfig(), ("lang", "perplexity"))[1] == "keep"


def _strict(line: str) -> dict:
    def refuse(name):
        raise ValueError(f"not strict JSON: {name}")
    return json.loads(line, parse_constant=refuse)


def test_invalid_perplexity_rejects_under_beam(data_dir):
    """Scored records from elsewhere (CCNet's fields): the threshold step rejects a NaN or
    negative perplexity whatever its bucket says, and the reject is strict JSON."""
    docs = [doc(EN, lang="en", perplexity=float("nan"), bucket="head"),
            doc(EN, lang="en", perplexity=-1.0, bucket="head"),
            doc(EN, lang="en", perplexity=300.0, bucket="head"),
            doc(EN, lang="en", perplexity=900.0, bucket="tail")]
    for i, d in enumerate(docs):
        d.id = f"d{i}"
    cfg = PerplexityConfig(cutoffs=str(data_dir / "ccnet/cutoff.csv"))
    with BeamTestPipeline(runner=local_runner()) as p:
        out = p | beam.Create(docs) | QualityStages(["perplexity"], LangIdConfig(), cfg,
                                                    QualityConfig(), FilterConfig())
        assert_that(out["docs"] | beam.Map(lambda d: d.id), equal_to(["d2"]), label="kept")
        assert_that(out["rejects"] | beam.Map(lambda r: _strict(r.to_json()))
                    | beam.Map(lambda r: (r["id"], r["reason"], r["detail"]["perplexity"])),
                    equal_to([("d0", "perplexity:invalid", "nan"),
                              ("d1", "perplexity:invalid", -1.0),
                              ("d3", "perplexity:tail", 900.0)]), label="rejects")


def test_heuristics_values_and_failures():
    t = heuristics.HeuristicThresholds()
    good = heuristics.english(EN)
    assert good["stop_words"] >= 2 and heuristics.failures(good, "en", t) == []
    assert heuristics.failures(heuristics.english("buy now " * 5), "en", t)[0] == "too-short"
    menu = "\n".join(["首页", "新闻", "体育", "财经", "娱乐", "关于我们"] * 20)
    assert "short-lines" in heuristics.failures(heuristics.chinese(menu), "zh", t)
    assert heuristics.failures(heuristics.chinese(ZH * 4), "zh", t) == ["dup-ngrams"]
    assert heuristics.failures(heuristics.chinese(ZH), "zh", t) == []


CHECKS = ("lang", "heuristic", "perplexity", "quality")


@pytest.mark.parametrize("meta,expected", [
    ({"lang": "fr", "lang_score": 0.99}, ("lang", "drop", "lang:unsupported")),
    ({"lang": "en", "lang_score": 0.2}, ("lang", "drop", "lang:low-score")),
    ({"lang": "en", "lang_score": 0.9, "heuristics": heuristics.english("spam " * 10)},
     ("heuristic", "drop", "heuristic:too-short")),
    ({"lang": "en", "lang_score": 0.9, "bucket": "tail"}, ("perplexity", "drop", "perplexity:tail")),
    ({"lang": "en", "lang_score": 0.9, "bucket": "head", "quality_score": 0.01},
     ("quality", "drop", "quality:low")),
    ({"lang": "zh", "lang_score": 0.9, "bucket": "middle", "quality_score": 0.7},
     ("quality", "keep", None)),
])
def test_threshold_step_reasons(meta, expected):
    check, outcome, detail = decide(doc(EN, **meta), FilterConfig(), CHECKS)
    assert (check, outcome, detail.get("reason")) == expected


def test_other_languages_can_be_routed():
    check, outcome, _ = decide(doc(EN, lang="fr", lang_score=0.99), FilterConfig(route_other=True), CHECKS)
    assert (check, outcome) == ("lang", "route")


def test_quality_groups_from_config():
    groups = {"high": 0.8, "medium": 0.3}
    assert [quality_group(s, groups) for s in (0.9, 0.5, 0.1)] == ["high", "medium", "low"]


def test_quality_stages_under_beam(trained_models):
    models, _ = trained_models
    cfg = cfglib.load(WebConfig, str(models / "web.yaml"))  # its paths: relative to the file
    spam = "澳门威尼斯人娱乐 百家乐 真人 娱乐 官网 注册 送 彩金\n" * 8
    docs = [Document("en", EN, "http://e", "t"), Document("zh", ZH, "http://z", "t"),
            Document("fr", "Le comité s'est réuni mardi pour discuter du budget de l'année.",
                     "http://f", "t"), Document("spam", spam, "http://s", "t")]
    stages = ["langid", "perplexity", "quality"]
    with BeamTestPipeline(runner=local_runner()) as p:
        out = p | beam.Create(docs) | QualityStages(
            stages, LangIdConfig(), cfg.perplexity, cfg.quality, FilterConfig(route_other=True))
        assert_that(out["other"] | beam.Map(lambda d: d.id), equal_to(["fr"]), label="other")
        # every document lands in exactly one output
        everything = ((out["docs"] | "DocIds" >> beam.Map(lambda d: d.id),
                       out["rejects"] | "RejectIds" >> beam.Map(lambda r: r.id),
                       out["other"] | "OtherIds" >> beam.Map(lambda d: d.id)) | beam.Flatten())
        assert_that(everything, equal_to(["en", "zh", "fr", "spam"]), label="all")
        assert_that(out["rejects"] | beam.Filter(lambda r: r.id == "spam")
                    | beam.Map(lambda r: r.stage), equal_to(["heuristic"]), label="spam")
        # kept documents carry every score; rejects carry theirs in detail
        keys = {"lang", "lang_score", "perplexity", "bucket", "quality_score", "quality_group",
                "heuristics"}
        assert_that(out["docs"] | beam.Filter(lambda d: not keys <= set(d.metadata)),
                    equal_to([]), label="scores")
