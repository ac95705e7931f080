"""Per-language quality heuristics: scores only; thresholds live in the filter config.

English follows the Gopher rules (word count, mean word length, symbol / bullet /
ellipsis ratios, stop words); Chinese uses character-level equivalents (CJK share,
punctuation per character, repeated lines and character n-grams, short lines).
"""

from __future__ import annotations

import collections
import dataclasses
import re
from skypile.text.chars import HAN

_CJK = HAN
_ZH_PUNCT = set("，。！？；：、“”‘’（）《》【】…—")
_WORDS = re.compile(r"\S+")
_BULLETS = ("•", "-", "*", "·", "‣", "●", "◦", "▪")
_STOP_EN = {"the", "be", "to", "of", "and", "that", "have", "with"}


def _lines(text: str) -> list[str]:
    return [line.strip() for line in text.split("\n") if line.strip()]


def _dup_line_fraction(lines: list[str]) -> float:
    """Share of characters in lines that occur more than once (Gopher's line repetition)."""
    if not lines:
        return 0.0
    counts = collections.Counter(lines)
    dup = sum(len(line) for line in lines if counts[line] > 1)
    return dup / max(sum(map(len, lines)), 1)


def _dup_ngram_fraction(chars: str, n: int) -> float:
    """Share of characters covered by character n-grams that occur more than once."""
    if len(chars) < n + 1:
        return 0.0
    grams = [chars[i:i + n] for i in range(len(chars) - n + 1)]
    counts = collections.Counter(grams)
    covered = bytearray(len(chars))
    for i, g in enumerate(grams):
        if counts[g] > 1:
            covered[i:i + n] = b"\x01" * n
    return sum(covered) / len(chars)


def english(text: str) -> dict[str, float]:
    words = _WORDS.findall(text)
    lines = _lines(text)
    n = max(len(words), 1)
    lowered = {w.lower().strip(".,;:!?\"'()") for w in words}
    return {
        "word_count": len(words),
        "mean_word_length": round(sum(map(len, words)) / n, 3),
        "symbol_word_ratio": round((text.count("#") + text.count("...") + text.count("…")) / n, 4),
        "bullet_line_ratio": round(sum(1 for l in lines if l.startswith(_BULLETS)) / max(len(lines), 1), 4),
        "ellipsis_line_ratio": round(sum(1 for l in lines if l.endswith(("...", "…")))
                                     / max(len(lines), 1), 4),
        "alpha_word_ratio": round(sum(1 for w in words if any(map(str.isalpha, w))) / n, 4),
        "stop_words": len(_STOP_EN & lowered),
        "dup_line_fraction": round(_dup_line_fraction(lines), 4),
    }


def chinese(text: str) -> dict[str, float]:
    chars = "".join(text.split())
    cjk = _CJK.findall(chars)
    lines = _lines(text)
    n_cjk = max(len(cjk), 1)
    return {
        "char_count": len(chars),
        "cjk_ratio": round(len(cjk) / max(len(chars), 1), 4),
        "punct_ratio": round(sum(1 for c in chars if c in _ZH_PUNCT) / n_cjk, 4),
        "dup_line_fraction": round(_dup_line_fraction(lines), 4),
        "dup_5gram_fraction": round(_dup_ngram_fraction(chars[:20000], 5), 4),
        "short_line_ratio": round(sum(1 for l in lines if len(l) < 10) / max(len(lines), 1), 4),
    }


def score(text: str, lang: str) -> dict[str, float]:
    """The heuristic values for a document's language (Chinese rules for ``zh``)."""
    return chinese(text) if lang == "zh" else english(text)


@dataclasses.dataclass
class HeuristicThresholds:
    """Bounds of the heuristic filter (``filter.heuristics``); a value outside is a reject."""

    en_min_words: int = 50
    """Fewer words than this: too short to be a document."""
    en_max_words: int = 100_000
    """More words than this: a dump, not a document."""
    en_mean_word_length: tuple[float, float] = (3.0, 10.0)
    """Allowed mean word length (Gopher)."""
    en_max_symbol_word_ratio: float = 0.1
    """Most '#' and ellipses per word."""
    en_max_bullet_line_ratio: float = 0.9
    """Most lines starting with a bullet."""
    en_max_ellipsis_line_ratio: float = 0.3
    """Most lines ending in an ellipsis."""
    en_min_alpha_word_ratio: float = 0.8
    """Fewest words with a letter."""
    en_min_stop_words: int = 2
    """Fewest distinct English stop words (the, be, to, of, and, that, have, with)."""
    max_dup_line_fraction: float = 0.3
    """Most characters in repeated lines (both languages)."""
    zh_min_chars: int = 100
    """Fewer characters than this: too short."""
    zh_min_cjk_ratio: float = 0.3
    """Fewest Chinese characters among all characters."""
    zh_punct_ratio: tuple[float, float] = (0.01, 0.4)
    """Allowed Chinese punctuation per Chinese character (no sentences / only symbols)."""
    zh_max_dup_5gram_fraction: float = 0.5
    """Most characters covered by repeated character 5-grams."""
    zh_max_short_line_ratio: float = 0.7
    """Most lines shorter than 10 characters (lists, menus)."""


def failures(values: dict[str, float], lang: str, t: HeuristicThresholds) -> list[str]:
    """Names of the heuristics a document fails, in a fixed order."""
    bad = []
    if lang == "zh":
        checks = [
            ("too-short", values["char_count"] < t.zh_min_chars),
            ("cjk-ratio", values["cjk_ratio"] < t.zh_min_cjk_ratio),
            ("punct-ratio", not t.zh_punct_ratio[0] <= values["punct_ratio"] <= t.zh_punct_ratio[1]),
            ("dup-lines", values["dup_line_fraction"] > t.max_dup_line_fraction),
            ("dup-ngrams", values["dup_5gram_fraction"] > t.zh_max_dup_5gram_fraction),
            ("short-lines", values["short_line_ratio"] > t.zh_max_short_line_ratio),
        ]
    else:
        lo, hi = t.en_mean_word_length
        checks = [
            ("too-short", values["word_count"] < t.en_min_words),
            ("too-long", values["word_count"] > t.en_max_words),
            ("word-length", not lo <= values["mean_word_length"] <= hi),
            ("symbols", values["symbol_word_ratio"] > t.en_max_symbol_word_ratio),
            ("bullets", values["bullet_line_ratio"] > t.en_max_bullet_line_ratio),
            ("ellipsis", values["ellipsis_line_ratio"] > t.en_max_ellipsis_line_ratio),
            ("alpha-words", values["alpha_word_ratio"] < t.en_min_alpha_word_ratio),
            ("stop-words", values["stop_words"] < t.en_min_stop_words),
            ("dup-lines", values["dup_line_fraction"] > t.max_dup_line_fraction),
        ]
    bad += [name for name, failed in checks if failed]
    return bad
