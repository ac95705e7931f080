"""Quality-stage measurements: language id, perplexity ordering, classifier, speed.

    python benchmarks/quality.py --models MODELS_DIR [--data DIR]

MODELS_DIR comes from ``skypile classifiers train --data DIR --output MODELS_DIR``.
- language-id accuracy on the extraction ground-truth texts (expected en / zh; a few
  pages of the English benchmark are in other languages, so en is a lower bound) and on
  the Skywork domain texts (all zh);
- median perplexity per language of: held-out Wikipedia paragraphs (not used to train the
  LM), real news (extraction ground truths, Skywork domains), spam (the Chinese Common
  Crawl spam pages, CCNet's Chinese SEO/casino records);
- the quality classifier's precision / recall on its held-out split (from train_report.json);
- documents per second of each scorer on one process.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import statistics
import sys
import time
from pathlib import Path

from skypile import config as cfglib
from skypile.classifiers import recipe
from skypile.classifiers.langid import LangId
from skypile.classifiers.perplexity import Scorer
from skypile.classifiers.quality import Classifier
from skypile.jobs.web import WebConfig
from skypile.text import heuristics

REPO = Path(__file__).resolve().parents[1]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", required=True)
    ap.add_argument("--data", default=os.environ.get("SKYPILE_DATA", str(REPO.parent / "shared/data")))
    args = ap.parse_args(argv)
    logging.disable(logging.WARNING)
    data, models = Path(args.data), Path(args.models)
    cfg = cfglib.load(WebConfig, str(models / "web.yaml"))
    rcp = recipe.load()  # the sources the models were trained on (the shipped recipe)
    src = recipe.DataFolder(data, rcp)

    def held_out_wiki(lang: str) -> list[str]:
        """The Wikipedia paragraphs the KenLM and quality models never saw."""
        return src.read(dataclasses.replace(rcp.source(f"wiki_{lang}"), split="held_out"))

    gt = {lang: [v["articleBody"] for v in json.loads(
        (data / f"extraction-{lang}/ground-truth.json").read_text(encoding="utf-8")).values()]
        for lang in ("en", "zh")}
    skywork = [json.loads(line)["text"] for f in sorted((data / "skywork-eval").glob("zh_*.jsonl"))
               if f.name != "zh_news.jsonl" for line in open(f, encoding="utf-8")]

    lid = LangId()
    print("## language id (lid.176)")
    for name, texts, want in (("extraction-en ground truth", gt["en"], "en"),
                              ("extraction-zh ground truth", gt["zh"], "zh"),
                              ("Skywork domain texts", skywork, "zh")):
        t0 = time.perf_counter()
        preds = [lid.predict(t).lang for t in texts]
        rate = len(texts) / (time.perf_counter() - t0)
        print(f"{name:<30} {sum(p == want for p in preds) / len(preds):.3f} "
              f"({len(texts)} docs, {rate:.0f} docs/s)")

    scorer = Scorer(cfg.perplexity)
    sets = {
        "en": [("Wikipedia (held out)", held_out_wiki("en")), ("news (extraction-en)", gt["en"])],
        "zh": [("Wikipedia (held out)", held_out_wiki("zh")),
               ("news (extraction-zh)", gt["zh"]), ("Skywork domains", skywork),
               ("CC spam pages", src.texts(["spam_pages_zh"])),
               ("CCNet SEO/casino records", src.texts(["ccnet_zh"]))],
    }
    print("\n## median perplexity (our KenLM, trained on the rest of the Wikipedia text)")
    speed = {}
    for lang, rows in sets.items():
        for name, texts in rows:
            t0 = time.perf_counter()
            values = [v for v in (scorer.perplexity(t, lang) for t in texts) if v is not None]
            speed.setdefault("perplexity", []).append(len(texts) / (time.perf_counter() - t0))
            print(f"{lang} {name:<28} {statistics.median(values):>9.1f}  ({len(values)} docs)")

    report = json.loads((models / "train_report.json").read_text())
    q = report["quality"]
    print(f"\n## quality classifier, held-out split: precision {q['precision']:.3f}, "
          f"recall {q['recall']:.3f} ({q['held_out']} examples, trained on {q['train']})")

    clf = Classifier(cfg.quality.model)
    sample = gt["en"] + gt["zh"] + skywork[:300]
    t0 = time.perf_counter()
    for t in sample:
        clf.score(t)
    q_rate = len(sample) / (time.perf_counter() - t0)
    t0 = time.perf_counter()
    for t in sample:
        heuristics.score(t, "zh" if t in gt["zh"] else "en")
    h_rate = len(sample) / (time.perf_counter() - t0)
    print("\n## speed, one process (docs/s)")
    print(f"perplexity {statistics.mean(speed['perplexity']):.0f}, quality classifier "
          f"{q_rate:.0f}, heuristics {h_rate:.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
