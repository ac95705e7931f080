"""The Wikipedia-reference quality classifier: fastText, positives vs random web text.

Text is prepared the same way for training and scoring: lower case, one line, CJK
characters separated by spaces (fastText splits on whitespace), cut to ``max_chars``.
The score is the probability of the positive label.
"""

from __future__ import annotations

import dataclasses
import random
import re
import tempfile
from pathlib import Path
from typing import Iterable

from skypile.files import models
from skypile.jobs.scoring import QualityConfig, StemConfig
from skypile.text.chars import HAN_CHARS

_CJK = re.compile(f"([{HAN_CHARS}])")
_SPACE = re.compile(r"\s+")
POSITIVE, NEGATIVE = "__label__wiki", "__label__web"


def prepare(text: str, max_chars: int = 2000) -> str:
    text = _CJK.sub(r" \1 ", text[:max_chars].lower())
    return _SPACE.sub(" ", text).strip()


@dataclasses.dataclass
class QualityTrainConfig:
    epochs: int = 10
    """fastText epochs."""
    lr: float = 0.5
    """Learning rate."""
    word_ngrams: int = 2
    """Word n-grams as features."""
    dim: int = 64
    """Embedding size."""
    held_out: float = 0.1
    """Share of each class kept out of training to measure precision and recall."""
    seed: int = 0
    """Seed of the split and of fastText (which then runs on one thread)."""


def train(positives: Iterable[str], negatives: Iterable[str], out_path: str,
          cfg: QualityTrainConfig, labels: tuple[str, str] = (POSITIVE, NEGATIVE)) -> dict:
    """Train and save a binary classifier; returns precision / recall on the held-out split.

    ``labels`` names the positive and the negative class (the STEM classifier uses its own).
    """
    import fasttext

    pos_label, neg_label = labels
    rng = random.Random(cfg.seed)
    rows = [(pos_label, prepare(t)) for t in positives] + [(neg_label, prepare(t)) for t in negatives]
    rows = [(label, text) for label, text in rows if text]
    rng.shuffle(rows)
    n_test = int(len(rows) * cfg.held_out)
    test, train_rows = rows[:n_test], rows[n_test:]
    if not any(l == pos_label for l, _ in train_rows) or not any(l == neg_label for l, _ in train_rows):
        raise ValueError("a classifier needs both positive and negative examples")
    with tempfile.NamedTemporaryFile("w", suffix=".txt", encoding="utf-8", delete=False) as f:
        f.writelines(f"{label} {text}\n" for label, text in train_rows)
        train_file = f.name
    try:
        model = fasttext.train_supervised(input=train_file, epoch=cfg.epochs, lr=cfg.lr,
                                          wordNgrams=cfg.word_ngrams, dim=cfg.dim, seed=cfg.seed,
                                          thread=1, verbose=0, minCount=2)
    finally:
        Path(train_file).unlink()
    Path(out_path).parent.mkdir(parents=True, exist_ok=True)
    model.save_model(out_path)
    scorer = Classifier(out_path, pos_label)
    tp = fp = fn = 0
    for label, text in test:
        predicted = scorer.score_prepared(text) >= 0.5
        tp += predicted and label == pos_label
        fp += predicted and label == neg_label
        fn += (not predicted) and label == pos_label
    return {"train": len(train_rows), "held_out": len(test),
            "precision": round(tp / (tp + fp), 4) if tp + fp else 0.0,
            "recall": round(tp / (tp + fn), 4) if tp + fn else 0.0}


class Classifier:
    """A trained binary fastText model; ``score`` is the positive label's probability.

    ``path`` is a local path or any fsspec URL: built in a worker's setup(), the file is
    fetched then (once per machine, checked against ``sha256`` when given), and loaded on
    first use. ``name`` is its config key, for errors."""

    def __init__(self, path: str, positive: str = POSITIVE, sha256: str = "",
                 storage_options: dict | None = None, name: str = "quality.model"):
        self.path, self.positive, self.sha256 = path, positive, sha256
        self.storage_options, self.name = storage_options or {}, name
        self._local = models.fetch(path, self.storage_options, sha256, name)
        self._model = None

    @classmethod
    def of(cls, cfg: QualityConfig | StemConfig, positive: str = POSITIVE) -> "Classifier":
        """The classifier a config section names (``quality`` or ``stem``)."""
        name = "stem.model" if isinstance(cfg, StemConfig) else "quality.model"
        return cls(cfg.model, positive, cfg.model_sha256, cfg.storage_options, name)

    @property
    def model(self):
        if self._model is None:
            import fasttext

            fasttext.FastText.eprint = lambda *a, **k: None
            self._model = fasttext.load_model(self._local)
        return self._model

    def score_prepared(self, prepared: str) -> float:
        labels, probs = self.model.predict(prepared, k=2)
        for label, p in zip(labels, probs):
            if label == self.positive:
                return round(float(min(p, 1.0)), 4)
        return 0.0

    def score(self, text: str) -> float:
        return self.score_prepared(prepare(text))

    def __getstate__(self):
        return {"path": self.path, "positive": self.positive, "sha256": self.sha256,
                "storage_options": self.storage_options, "name": self.name}

    def __setstate__(self, state):
        self.__init__(**state)
