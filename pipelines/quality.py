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

import dataclasses

import apache_beam as beam
from apache_beam import pvalue

from skypile.text import heuristics
from skypile.classifiers.langid import LangId, LangIdConfig
from skypile.classifiers.perplexity import PerplexityConfig, Scorer
from skypile.classifiers.quality import Classifier, QualityConfig
from skypile.classifiers.stem import StemConfig, Tagger
from skypile.document import Document, Reject
from skypile.text.thresholds import CHECKS, FilterConfig, decide
from skypile.pipelines.common import REJECTS, STATS, StageFn

OTHER = "other"


class LangIdFn(beam.DoFn):
    def __init__(self, cfg: LangIdConfig):
        self.cfg = cfg

    def setup(self):
        self._lid = LangId(self.cfg)

    def process(self, doc: Document):
        r = self._lid.predict(doc.text)
        doc.metadata.update(lang=r.lang, lang_score=r.score)
        if r.shares:
            doc.metadata["lang_shares"] = r.shares
        if self.cfg.t2s and r.lang == "zh":
            simplified = self._lid.to_simplified(doc.text)
            if simplified != doc.text:
                doc.text = simplified
                doc.metadata["opencc"] = "t2s"
        yield doc


class PerplexityFn(beam.DoFn):
    def __init__(self, cfg: PerplexityConfig):
        self.cfg = cfg

    def setup(self):
        self._scorer = Scorer(self.cfg)

    def process(self, doc: Document):
        lang = doc.metadata.get("lang", "")
        ppl = self._scorer.perplexity(doc.text, lang)
        if ppl is not None:
            doc.metadata["perplexity"] = ppl
            bucket = self._scorer.bucket(ppl, lang)
            if bucket:
                doc.metadata["bucket"] = bucket
        yield doc


class QualityFn(beam.DoFn):
    def __init__(self, cfg: QualityConfig):
        self.cfg = cfg

    def setup(self):
        self._clf = Classifier(self.cfg.model) if self.cfg.model else None

    def process(self, doc: Document):
        if self._clf is not None:
            doc.metadata["quality_score"] = self._clf.score(doc.text)
        doc.metadata["heuristics"] = heuristics.score(doc.text, doc.metadata.get("lang", ""))
        yield doc


class StemFn(beam.DoFn):
    """Tags metadata.corpus as stem or main (SkyPile-STEM / SkyPile-Main); never drops."""

    def __init__(self, cfg: StemConfig):
        self.cfg = cfg

    def setup(self):
        self._tagger = Tagger(self.cfg)

    def process(self, doc: Document):
        score, corpus = self._tagger.tag(doc.text)
        doc.metadata.update(stem_score=score, corpus=corpus)
        yield doc


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
        detail.update({k: doc.metadata[k] for k in ("lang", "lang_score", "perplexity", "bucket",
                                                     "quality_score") if k in doc.metadata})
        yield self.drop(Reject(id=doc.id, url=doc.url, stage=check, reason=reason, text=doc.text,
                               source=doc.source, detail=detail))


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
            docs = docs | "LangId" >> beam.ParDo(LangIdFn(self.langid))
            checks.append("lang")
        if "quality" in self.stages:
            checks.append("heuristic")
        if "perplexity" in self.stages:
            docs = docs | "Perplexity" >> beam.ParDo(PerplexityFn(self.perplexity))
            checks.append("perplexity")
        if "quality" in self.stages:
            docs = docs | "Quality" >> beam.ParDo(QualityFn(self.quality))
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
            kept = kept | "Stem" >> beam.ParDo(StemFn(self.stem))
        return {"docs": kept, "rejects": rejects, "stats": stats, OTHER: other}
