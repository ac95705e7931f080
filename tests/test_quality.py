"""Quality stages: scorers and the threshold step on hand-built documents, then Beam."""

import apache_beam as beam
import pytest
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline
from apache_beam.testing.util import assert_that, equal_to

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
    assert table["en"][30] < table["en"][60] and len(table["zh"]) == 101
    cutoffs.write_cutoffs(str(tmp_path / "c.csv"), {"en": table["en"], "zh": table["zh"]})
    assert cutoffs.read_cutoffs(str(tmp_path / "c.csv"))["zh"] == table["zh"]
    assert cutoffs.percentiles([5.0, 1.0, 3.0])[0] == 1.0 and cutoffs.percentiles([5.0, 1.0, 3.0])[100] == 5.0


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
    import yaml
    cfg = yaml.safe_load((models / "web.yaml").read_text())
    spam = "澳门威尼斯人娱乐 百家乐 真人 娱乐 官网 注册 送 彩金\n" * 8
    docs = [Document("en", EN, "http://e", "t"), Document("zh", ZH, "http://z", "t"),
            Document("fr", "Le comité s'est réuni mardi pour discuter du budget de l'année.",
                     "http://f", "t"), Document("spam", spam, "http://s", "t")]
    stages = ["langid", "perplexity", "quality"]
    with BeamTestPipeline(runner=local_runner()) as p:
        out = p | beam.Create(docs) | QualityStages(
            stages, LangIdConfig(), PerplexityConfig(**cfg["perplexity"]),
            QualityConfig(**cfg["quality"]), FilterConfig(route_other=True))
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
