"""CCNet-style quality stages: score (never drop), then one threshold step.

Scorers: ``langid`` (metadata.lang, lang_score, lang_shares), ``perplexity``
(metadata.perplexity, bucket), ``quality`` (metadata.quality_score, heuristics); after
the threshold step, ``stem`` tags the kept documents' metadata.corpus (stem / main). The
threshold step applies the config to the scores, in this order, each under its own
stage name in stats and reasons: ``lang`` (lang:unsupported, lang:low-score, or routed
to OUTPUT/other), ``heuristic`` (heuristic:<name>), ``perplexity`` (perplexity:tail),
``quality`` (quality:low). Thresholds can be re-tuned without re-scoring.
"""

from __future__ import annotations

import apache_beam as beam
from apache_beam import pvalue

from skypile.classifiers.stages import LangIdStage, PerplexityStage, QualityStage, StemStage
from skypile.document import Document, Reject
from skypile.jobs.scoring import LangIdConfig, PerplexityConfig, QualityConfig, StemConfig
from skypile.pipelines.common import REJECTS, STATS, ApplyStage, StageFn
from skypile.text.thresholds import FilterConfig, decide

OTHER = "other"


class FilterFn(StageFn):
    """Applies the thresholds; tallies each check as its own stage so counts chain up."""

    def __init__(self, cfg: FilterConfig, checks: tuple[str, ...]):
        self.cfg, self.checks = cfg, checks

    def process(self, doc: Document):
        check, outcome, detail = decide(doc, self.cfg, self.checks)
        passed = self.checks[: self.checks.index(check) + (outcome == "keep")]
        for name in passed:
            self.keep(name)
        if outcome == "keep":
            yield doc
            return
        reason = detail.pop("reason")
        if outcome == "route":
            self._tally.routed(check)
            yield pvalue.TaggedOutput(OTHER, doc)
            return
        for k in ("lang", "lang_score", "perplexity", "bucket", "quality_score"):
            if k in doc.metadata:  # what decide() put in detail (JSON-safe) stays
                detail.setdefault(k, doc.metadata[k])
        yield self.drop(Reject.of(doc, check, reason, **detail))


class QualityStages(beam.PTransform):
    """Scorers for the listed stages, then the threshold step."""

    def __init__(self, stages: list[str], langid: LangIdConfig, perplexity: PerplexityConfig,
                 quality: QualityConfig, filt: FilterConfig, stem: StemConfig | None = None):
        super().__init__()
        self.stages, self.langid, self.perplexity = stages, langid, perplexity
        self.quality, self.filt, self.stem = quality, filt, stem or StemConfig()

    def expand(self, docs):
        checks = []
        if "langid" in self.stages:
            docs = docs | "LangId" >> beam.ParDo(ApplyStage(LangIdStage, self.langid))
            checks.append("lang")
        if "quality" in self.stages:
            checks.append("heuristic")
        if "perplexity" in self.stages:
            docs = docs | "Perplexity" >> beam.ParDo(ApplyStage(PerplexityStage, self.perplexity))
            checks.append("perplexity")
        if "quality" in self.stages:
            docs = docs | "Quality" >> beam.ParDo(ApplyStage(QualityStage, self.quality))
            checks.append("quality")
        if checks:
            out = docs | "Filter" >> beam.ParDo(FilterFn(self.filt, tuple(checks))).with_outputs(
                REJECTS, STATS, OTHER, main="docs")
            kept, rejects, stats, other = out.docs, out[REJECTS], out[STATS], out[OTHER]
        else:  # only tagging: nothing to threshold
            kept = docs
            rejects, stats, other = (docs.pipeline | f"No{name}" >> beam.Create([])
                                     for name in ("Rejects", "Stats", "Other"))
        if "stem" in self.stages:
            kept = kept | "Stem" >> beam.ParDo(ApplyStage(StemStage, self.stem))
        return {"docs": kept, "rejects": rejects, "stats": stats, OTHER: other}
