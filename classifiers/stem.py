"""The STEM / Main split: a fastText classifier for exercises and solutions.

Trained by ``skypile classifiers train`` (its recipe names the data). Positives are math
word problems with worked solutions (GSM8K train) and exam questions (C-Eval and CMMLU dev
sets, question + options + explanation); negatives are general text (Wikipedia paragraphs
and news articles, English and Chinese). Applying it tags ``metadata.corpus`` as ``stem``
or ``main``, which routes a document into SkyPile-STEM or SkyPile-Main (the default label
rules map corpus=stem to the ``stem`` domain).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

from skypile.classifiers.quality import Classifier
from skypile.jobs.scoring import StemConfig

STEM, MAIN = "__label__stem", "__label__main"


def exam_questions(folder: Path) -> list[str]:
    texts = []
    for path in sorted(folder.glob("*.csv")):
        with open(path, newline="", encoding="utf-8") as f:
            for row in csv.DictReader(f):
                options = "\n".join(f"{k}. {row[k]}" for k in "ABCD" if row.get(k))
                texts.append("\n".join(x for x in (row.get("question", ""), options,
                                                   row.get("explanation", "")) if x))
    return texts


def gsm8k(path: Path) -> list[str]:
    rows = [json.loads(line) for line in open(path, encoding="utf-8")]
    return [f"{r['question']}\n{r['answer']}" for r in rows]


class Tagger:
    def __init__(self, cfg: StemConfig):
        self.cfg = cfg
        self.clf = Classifier.of(cfg, STEM)

    def tag(self, text: str) -> tuple[float, str]:
        score = self.clf.score(text)
        return score, "stem" if score >= self.cfg.threshold else "main"
