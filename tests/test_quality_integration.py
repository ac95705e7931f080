"""``skypile web`` with every quality stage on the real WARCs, models trained by our command."""

import gzip
import json

import pytest

from skypile.pipelines.web import run

pytestmark = pytest.mark.integration


def rows(folder):
    return [json.loads(line) for f in sorted(folder.glob("*.jsonl.gz"))
            for line in gzip.open(f, "rt", encoding="utf-8")]


def test_train_report(trained_models):
    models, report = trained_models
    assert report["quality"]["precision"] > 0.9 and report["quality"]["recall"] > 0.9
    for lang in ("en", "zh"):
        c = report["cutoffs"][lang]
        assert c["p30"] < c["p60"]
    assert (models / "web.yaml").exists() and (models / "cutoff.csv").exists()


def test_spam_is_caught_and_articles_survive(trained_models, data_dir, tmp_path):
    models, _ = trained_models
    out = tmp_path / "out"
    rc = run(["--config", str(models / "web.yaml"),
              "--stages", "extract,langid,perplexity,quality",
              "--input", str(data_dir / "warc/resiliparse-cc-warc/*.warc.gz"),
              "--input", str(data_dir / "extraction-*/pages.warc.gz"),
              "--output", str(out)])
    assert rc == 0
    docs, rejects = rows(out / "docs"), rows(out / "rejects")
    stats = json.loads((out / "stats.json").read_text())
    for name in ("lang", "heuristic", "perplexity", "quality"):
        s = stats["stages"][name]
        assert s["in"] == s["kept"] + sum(s["dropped"].values())

    spam_kept = [d for d in docs if "CC-MAIN-2020-34" in d["source"]
                 and d["metadata"].get("bucket") != "tail"
                 and d["metadata"].get("quality_group") != "low"]
    assert spam_kept == [], [d["url"] for d in spam_kept]
    spam_rejected = [r for r in rejects if "CC-MAIN-2020-34" in r["source"]]
    assert len(spam_rejected) >= 10

    for lang in ("en", "zh"):
        articles_in = [d for d in docs if f"extraction-{lang}" in d["source"]]
        articles_out = [r for r in rejects if f"extraction-{lang}" in r["source"]
                        and r["reason"] != "lang:unsupported"]  # a few en pages are not English
        assert len(articles_in) / (len(articles_in) + len(articles_out)) >= 0.6, \
            (lang, len(articles_in), len(articles_out))
    for d in docs:
        m = d["metadata"]
        assert m["lang"] in ("en", "zh") and "perplexity" in m and "quality_score" in m
