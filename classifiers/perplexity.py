"""CCNet-style perplexity: SentencePiece + a KenLM n-gram model per language.

``train`` (as CCNet does from Wikipedia): normalise the reference text, train a
SentencePiece unigram model on it, then an n-gram model on the pieces with KenLM's
``lmplz`` and ``build_binary`` (built by ``scripts/build_kenlm.sh``, never downloaded).
``Scorer`` gives a document's perplexity: paragraphs are normalised and scored one by one,
and the document's perplexity is 10^(-sum of log10 probabilities / sum of tokens), each
paragraph counting its pieces plus the end of sentence. Buckets come from per-language
percentile cutoffs in CCNet's ``cutoff.csv`` format (rows 0-99, one column per language),
with CCNet's strict bounds (``skypile.text.cutoffs.bucket``).
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import shutil
import subprocess
import tempfile
import unicodedata
from pathlib import Path
from typing import Iterable

from skypile.jobs import scoring
from skypile.jobs.scoring import PerplexityConfig
from skypile.text import cutoffs

# ---- CCNet's normalisation -----------------------------------------------------------

_DIGITS = re.compile(r"\d")
_UNICODE_PUNCT = {
    "，": ",", "。": ".", "、": ",", "„": '"', "”": '"', "“": '"', "«": '"', "»": '"', "１": '"',
    "」": '"', "「": '"', "《": '"', "》": '"', "´": "'", "∶": ":", "：": ":", "？": "?",
    "！": "!", "（": "(", "）": ")", "；": ";", "–": "-", "—": " - ", "．": ". ", "～": "~",
    "’": "'", "…": "...", "━": "-", "〈": "<", "〉": ">", "【": "[", "】": "]", "％": "%",
    "►": "-",
}
_PUNCT_RE = re.compile(f"[{''.join(_UNICODE_PUNCT)}]")
_NON_PRINTING = re.compile(f"[{''.join(map(chr, list(range(0, 32)) + list(range(127, 160))))}]")


def normalize(line: str) -> str:
    """Lower case, accents stripped, digits to 0, Unicode punctuation to ASCII, no controls."""
    line = line.strip().lower()
    if not line:
        return line
    line = "".join(c for c in unicodedata.normalize("NFD", line) if unicodedata.category(c) != "Mn")
    line = _DIGITS.sub("0", line)
    line = _PUNCT_RE.sub(lambda m: _UNICODE_PUNCT[m.group()], line)
    return _NON_PRINTING.sub("", line)


# ---- tools ---------------------------------------------------------------------------------

class KenLMError(RuntimeError):
    pass


def find_tool(name: str, bin_dir: str | None) -> str:
    for candidate in ([os.path.join(bin_dir, name)] if bin_dir else []) + [shutil.which(name) or ""]:
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    raise KenLMError(f"KenLM's {name} not found (looked in {bin_dir or 'PATH'}); build it with "
                     f"scripts/build_kenlm.sh .cache/kenlm (make does this) and pass --kenlm-bin")


# ---- training --------------------------------------------------------------------------------

@dataclasses.dataclass
class KenLMTrainConfig:
    order: int = 5
    """n-gram order."""
    spm_vocab: int = 16000
    """SentencePiece vocabulary of the tokenizer the n-grams are counted over (an upper bound)."""
    memory: str = "20%"
    """lmplz's -S: memory for sorting."""


def train(texts: Iterable[str], lang: str, out_dir: str, cfg: KenLMTrainConfig,
          bin_dir: str | None = None) -> dict[str, str]:
    """Train ``{lang}.sp.model`` and ``{lang}.arpa.bin`` in out_dir from reference texts."""
    import sentencepiece as spm

    lmplz, build_binary = find_tool("lmplz", bin_dir), find_tool("build_binary", bin_dir)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        norm = Path(tmp) / "norm.txt"
        n = 0
        with open(norm, "w", encoding="utf-8") as f:
            for text in texts:
                for para in text.split("\n"):
                    para = normalize(para)
                    if para:
                        f.write(para + "\n")
                        n += 1
        if n == 0:
            raise KenLMError(f"no reference text for {lang}")
        sp_prefix = out / f"{lang}.sp"
        with open(Path(tmp) / "spm.log", "w") as log:
            spm.SentencePieceTrainer.train(
                input=str(norm), model_prefix=str(sp_prefix), vocab_size=cfg.spm_vocab,
                model_type="unigram", character_coverage=0.9999, hard_vocab_limit=False,
                input_sentence_size=2_000_000, shuffle_input_sentence=False, logstream=log)
        sp = spm.SentencePieceProcessor(model_file=str(sp_prefix) + ".model")
        pieces = Path(tmp) / "pieces.txt"
        with open(norm, encoding="utf-8") as src, open(pieces, "w", encoding="utf-8") as dst:
            for line in src:
                dst.write(" ".join(sp.encode(line.rstrip("\n"), out_type=str)) + "\n")
        arpa = Path(tmp) / "lm.arpa"
        with open(pieces, "rb") as stdin, open(arpa, "wb") as stdout:
            _run([lmplz, "-o", str(cfg.order), "-S", cfg.memory, "-T", tmp, "--discount_fallback"],
                 stdin, stdout)
        binary = out / f"{lang}.arpa.bin"
        _run([build_binary, str(arpa), str(binary)])
    return {"sp": str(sp_prefix) + ".model", "lm": str(binary)}


def _run(cmd: list[str], stdin=None, stdout=None) -> None:
    proc = subprocess.run(cmd, stdin=stdin, stdout=stdout or subprocess.PIPE,
                          stderr=subprocess.PIPE)
    if proc.returncode:
        tail = proc.stderr.decode("utf-8", "replace").strip().splitlines()[-3:]
        raise KenLMError(f"{Path(cmd[0]).name} failed: {' | '.join(tail)}")


# ---- scoring ---------------------------------------------------------------------------------

class Scorer:
    """Loads each language's models once (per worker) and scores documents. Models at a
    URL are fetched when the scorer is built (once per machine); each language's models
    load on its first document."""

    def __init__(self, cfg: PerplexityConfig):
        self.cfg = cfg
        self._models: dict[str, tuple] = {}
        local = {f.name: scoring.fetch(cfg, f) for f in cfg.files()}
        self._paths = {lang: {k: local[f"perplexity.models.{lang}.{k}"] for k in ("sp", "lm")}
                       for lang in cfg.models}
        self._cutoffs = cutoffs.read_cutoffs(local["perplexity.cutoffs"]) if cfg.cutoffs else {}
        if self._cutoffs:
            cutoffs.check_percentiles(self._cutoffs, cfg.head_percentile, cfg.middle_percentile)

    def _load(self, lang: str):
        if lang not in self._models:
            import kenlm
            import sentencepiece as spm

            paths = self._paths[lang]
            self._models[lang] = (spm.SentencePieceProcessor(model_file=paths["sp"]),
                                  kenlm.Model(paths["lm"]))
        return self._models[lang]

    def perplexity(self, text: str, lang: str) -> float | None:
        if lang not in self.cfg.models:
            return None
        sp, lm = self._load(lang)
        log_score, length = 0.0, 0
        for para in text.split("\n"):
            para = normalize(para)
            if not para:
                continue
            pieces = sp.encode(para, out_type=str)
            log_score += lm.score(" ".join(pieces))
            length += len(pieces) + 1
        if length == 0:
            return None
        exponent = -log_score / length
        return math.inf if exponent > 300 else round(10.0 ** exponent, 1)  # no OverflowError

    def bucket(self, ppl: float | None, lang: str) -> str | None:
        """CCNet's bucket of ``ppl`` for ``lang``; None without cutoffs for the language or
        for a perplexity that is not valid (the threshold step rejects it)."""
        cut = self._cutoffs.get(lang)
        if ppl is None or cut is None:
            return None
        return cutoffs.bucket(ppl, cut, self.cfg.head_percentile, self.cfg.middle_percentile)

    def __getstate__(self):
        return {"cfg": self.cfg}

    def __setstate__(self, state):
        self.__init__(state["cfg"])
