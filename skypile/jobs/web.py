"""The web and dedup jobs' config: what ``skypile web`` and ``skypile dedup`` can be told,
their stages in the report's order, and the checks a config must pass before a run.

Plain data and checks, no Beam: the pipeline in ``skypile.pipelines.web`` builds the graph
from a checked :class:`WebConfig`; ``skypile report`` and ``skypile classifiers`` read and
write the same type.
"""

from __future__ import annotations

import dataclasses

from skypile.config import ConfigError
from skypile.files.readers import ReaderOptions
from skypile.jobs.scoring import LangIdConfig, PerplexityConfig, QualityConfig, StemConfig
from skypile.text.dedup import DedupConfig
from skypile.text.extract import ExtractConfig
from skypile.text.thresholds import CHECKS, FilterConfig

DEDUP_STAGES = ("exact", "minhash", "semantic", "blocks")
"""Distribution filtering and dedup, in the order they run: copies collapse first, then
``blocks`` counts recurrence over the documents dedup kept (a copy is never boilerplate)."""
STAGES = ("extract", *DEDUP_STAGES, "langid", "perplexity", "quality", "stem")
"""Stages this pipeline knows, in the order they run."""
SCORERS = ("langid", "perplexity", "quality", "stem")
STATS_ORDER = ("read", "url", "extract", *DEDUP_STAGES, *CHECKS)
DEFAULT_STAGES = ["extract", "exact", "minhash", "blocks"]


@dataclasses.dataclass
class WebConfig:
    """Everything ``skypile web`` can be told, by file (--config) or --section.key=value."""

    stages: list[str] = dataclasses.field(default_factory=lambda: list(DEFAULT_STAGES))
    """Stages to run (they always run in this order, whatever the order listed): extract,
    exact, minhash, semantic, blocks, langid, perplexity, quality, stem. semantic and the
    quality stages run only when listed (they need models: skypile classifiers train)."""
    read: ReaderOptions = dataclasses.field(default_factory=ReaderOptions)
    extract: ExtractConfig = dataclasses.field(default_factory=ExtractConfig)
    dedup: DedupConfig = dataclasses.field(default_factory=DedupConfig)
    langid: LangIdConfig = dataclasses.field(default_factory=LangIdConfig)
    perplexity: PerplexityConfig = dataclasses.field(default_factory=PerplexityConfig)
    quality: QualityConfig = dataclasses.field(default_factory=QualityConfig)
    filter: FilterConfig = dataclasses.field(default_factory=FilterConfig)
    stem: StemConfig = dataclasses.field(default_factory=StemConfig)
    storage_options: dict = dataclasses.field(default_factory=dict)
    """fsspec options for remote inputs and outputs (e.g. {endpoint_url: ...} for S3)."""


@dataclasses.dataclass(frozen=True)
class Command:
    """What distinguishes ``skypile web`` from ``skypile dedup``: the same engine."""

    prog: str
    description: str
    stages: tuple[str, ...]          # allowed stages
    default_stages: tuple[str, ...]
    text_only: bool                  # inputs must already be text documents


WEB = Command(
    "skypile web",
    "Turn Common Crawl WARC/WET files (or JSONL/Parquet documents) into clean, deduplicated "
    "documents, on Apache Beam.",
    STAGES, tuple(DEFAULT_STAGES), False)
DEDUP = Command(
    "skypile dedup",
    "Deduplicate a JSONL/Parquet document set (fields id, text, optional url and lang; "
    "--read.text_field etc. to rename): exact, MinHash LSH, semantic, then recurring blocks "
    "counted over the documents dedup kept. "
    "Nothing is extracted: a text that is an HTML page is rejected (extract:markup).",
    STAGES[1:], ("exact", "minhash"), True)


def check(cfg: WebConfig, cmd: Command = WEB) -> list[str]:
    """Refuse (ConfigError) a config this command cannot run; return warnings to log."""
    warnings: list[str] = []
    unknown = [s for s in cfg.stages if s not in cmd.stages]
    if unknown:
        raise ConfigError(f"unknown stage {unknown[0]!r} (known: {', '.join(cmd.stages)})")
    if not cmd.text_only and "extract" not in cfg.stages:
        raise ConfigError("the web pipeline needs the extract stage "
                          "(use skypile dedup for documents that are already text)")
    if cfg.extract.metadata not in ("fast", "full"):
        raise ConfigError(f"extract.metadata={cfg.extract.metadata!r}: use fast or full")
    if cmd.text_only:
        cfg.read.text_only = True
        if cfg.read.content == "html":
            raise ConfigError(f"read.content=html: {cmd.prog} does not extract HTML; "
                              "run skypile web on these documents")
    if ("perplexity" in cfg.stages or "quality" in cfg.stages) and "langid" not in cfg.stages:
        raise ConfigError("the perplexity and quality stages need the langid stage")
    if "perplexity" in cfg.stages and not cfg.perplexity.models:
        raise ConfigError("the perplexity stage needs models (perplexity.models); "
                          "make them with: skypile classifiers train, then --config "
                          "MODELS_DIR/web.yaml")
    if "stem" in cfg.stages and not cfg.stem.model:
        raise ConfigError("the stem stage needs stem.model; make it with: "
                          "skypile classifiers train, then --config MODELS_DIR/web.yaml")
    if "quality" in cfg.stages and not cfg.quality.model:
        warnings.append("quality.model is not set: the quality stage applies the Gopher-style "
                        "heuristics only (make the classifier with: skypile classifiers train)")
    from skypile.jobs.scoring import check_models

    used = [s for s in SCORERS if s in cfg.stages]
    if "langid" not in used and "extract" in cfg.stages and gate_languages(cfg):
        used.append("langid")  # the extract stage's language gate uses the langid model
    check_models([getattr(cfg, s) for s in used], cfg.storage_options)  # before any worker
    return warnings


def gate_languages(cfg: WebConfig) -> tuple[str, ...]:
    """The languages of the pre-extraction language gate (empty: no gate)."""
    gate = cfg.extract.lang_gate.strip()
    if gate == "auto":
        run = "langid" in cfg.stages and not cfg.filter.route_other
        return tuple(cfg.filter.keep_langs) if run else ()
    if gate in ("off", ""):
        return ()
    return tuple(x.strip() for x in gate.split(",") if x.strip())
