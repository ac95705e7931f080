"""The scoring stages of CCNet-style quality filtering: a Document in, the same Document
out with its scores in metadata. They never drop (score, then filter: the threshold step
is ``skypile.text.thresholds.decide``), so thresholds can be re-tuned without re-scoring.

Each stage is built from its config (``skypile.jobs.scoring``) once per worker (the
pipelines' ``ApplyStage``, in ``setup()``): a model named by URL is fetched then, once per
machine, into the local model cache and checked against its sha256
(``skypile.files.models``); models load on the first document.
"""

from __future__ import annotations

from skypile.classifiers.langid import LangId
from skypile.classifiers.perplexity import Scorer
from skypile.classifiers.quality import Classifier
from skypile.classifiers.stem import Tagger
from skypile.document import Document
from skypile.jobs.scoring import LangIdConfig, PerplexityConfig, QualityConfig, StemConfig
from skypile.text import heuristics


class LangIdStage:
    """``lang``, ``lang_score`` and, for mixed documents, ``lang_shares``; with ``t2s``,
    Chinese text is converted to simplified characters (``opencc: t2s``)."""

    def __init__(self, cfg: LangIdConfig):
        self.cfg = cfg
        self._lid = LangId(cfg)

    def __call__(self, doc: Document) -> Document:
        r = self._lid.predict(doc.text)
        doc.metadata.update(lang=r.lang, lang_score=r.score)
        if r.shares:
            doc.metadata["lang_shares"] = r.shares
        if self.cfg.t2s and r.lang == "zh":
            simplified = self._lid.to_simplified(doc.text)
            if simplified != doc.text:
                doc.text = simplified
                doc.metadata["opencc"] = "t2s"
        return doc


class PerplexityStage:
    """``perplexity`` under the document's language model, and its ``bucket`` (head,
    middle, tail: CCNet's strict bounds) when the language has cutoffs; nothing for other
    languages. A perplexity that is not valid (NaN, infinite, negative) gets no bucket, and
    the threshold step rejects it (perplexity:invalid), as it does one from the input."""

    def __init__(self, cfg: PerplexityConfig):
        self._scorer = Scorer(cfg)

    def __call__(self, doc: Document) -> Document:
        lang = doc.metadata.get("lang", "")
        ppl = self._scorer.perplexity(doc.text, lang)
        if ppl is not None:
            doc.metadata["perplexity"] = ppl
            bucket = self._scorer.bucket(ppl, lang)
            if bucket:
                doc.metadata["bucket"] = bucket
            else:  # a bucket left in the input belongs to another perplexity
                doc.metadata.pop("bucket", None)
        return doc


class QualityStage:
    """``quality_score`` from the classifier (when ``quality.model`` is set) and the
    Gopher-style ``heuristics`` values."""

    def __init__(self, cfg: QualityConfig):
        self._clf = Classifier.of(cfg) if cfg.model else None

    def __call__(self, doc: Document) -> Document:
        if self._clf is not None:
            doc.metadata["quality_score"] = self._clf.score(doc.text)
        doc.metadata["heuristics"] = heuristics.score(doc.text, doc.metadata.get("lang", ""))
        return doc


class StemStage:
    """``stem_score`` and ``corpus`` (stem or main: SkyPile-STEM or SkyPile-Main)."""

    def __init__(self, cfg: StemConfig):
        self._tagger = Tagger(cfg)

    def __call__(self, doc: Document) -> Document:
        score, corpus = self._tagger.tag(doc.text)
        doc.metadata.update(stem_score=score, corpus=corpus)
        return doc
