"""The threshold step of CCNet-style quality filtering: scores in, keep / drop / route out.

The scorers (language id, perplexity, quality classifier, heuristics) only write
metadata; this module decides, in a fixed order of checks, each with its own reason:
``lang`` (lang:unsupported, lang:low-score, or routed to OUTPUT/other), ``heuristic``
(heuristic:<name>), ``perplexity`` (perplexity:invalid for a NaN, infinite, negative or
non-numeric perplexity, whatever its bucket says; perplexity:tail) and ``quality``
(quality:low). Thresholds can therefore be re-tuned without re-scoring.
"""

from __future__ import annotations

import dataclasses
import math

from skypile.document import Document
from skypile.text import heuristics
from skypile.text.cutoffs import valid_perplexity

CHECKS = ("lang", "heuristic", "perplexity", "quality")
"""The checks in the order they run; each is a stage of its own in stats.json."""


@dataclasses.dataclass
class FilterConfig:
    """The threshold step (``filter``): what to keep, given the scores."""

    keep_langs: list[str] = dataclasses.field(default_factory=lambda: ["en", "zh"])
    """Languages kept."""
    min_lang_score: float = 0.5
    """Documents whose language probability is lower are rejected (lang:low-score)."""
    route_other: bool = False
    """Send other languages to OUTPUT/other instead of the rejects."""
    heuristics: heuristics.HeuristicThresholds = dataclasses.field(
        default_factory=heuristics.HeuristicThresholds)
    keep_buckets: list[str] = dataclasses.field(default_factory=lambda: ["head", "middle"])
    """Perplexity buckets kept (head / middle / tail)."""
    quality_groups: dict = dataclasses.field(default_factory=lambda: {"high": 0.5, "medium": 0.1})
    """Group name -> lowest quality_score in it; below every group is 'low'."""
    keep_quality_groups: list[str] = dataclasses.field(default_factory=lambda: ["high", "medium"])
    """Quality groups kept."""


def quality_group(score: float, groups: dict) -> str:
    for name, lowest in sorted(groups.items(), key=lambda kv: -kv[1]):
        if score >= lowest:
            return name
    return "low"


def _bad_perplexity(m: dict) -> bool:
    """A perplexity is there (not None) and is not one a bucket can be given."""
    return m.get("perplexity") is not None and not valid_perplexity(m["perplexity"])


def _json_safe(value):
    """NaN and infinities as text (strict JSON has no such numbers); the rest as it is."""
    return str(value) if isinstance(value, float) and not math.isfinite(value) else value


def decide(doc: Document, cfg: FilterConfig, checks: tuple[str, ...]) -> tuple[str, str, dict]:
    """(check, outcome, detail): outcome is 'keep' (passed every check), 'drop' or 'route'."""
    m = doc.metadata
    for check in checks:
        if check == "lang":
            lang = m.get("lang", "unknown")
            if lang not in cfg.keep_langs:
                return check, ("route" if cfg.route_other else "drop"), {"reason": "lang:unsupported"}
            if m.get("lang_score", 0.0) < cfg.min_lang_score:
                return check, "drop", {"reason": "lang:low-score"}
        elif check == "heuristic" and "heuristics" in m:
            failed = heuristics.failures(m["heuristics"], m.get("lang", ""), cfg.heuristics)
            if failed:
                return check, "drop", {"reason": f"heuristic:{failed[0]}", "failed": failed}
        elif check == "perplexity" and _bad_perplexity(m):
            return check, "drop", {"reason": "perplexity:invalid",
                                   "perplexity": _json_safe(m["perplexity"])}
        elif check == "perplexity" and m.get("bucket") and m["bucket"] not in cfg.keep_buckets:
            return check, "drop", {"reason": f"perplexity:{m['bucket']}"}
        elif check == "quality" and "quality_score" in m:
            group = quality_group(m["quality_score"], cfg.quality_groups)
            m["quality_group"] = group
            if group not in cfg.keep_quality_groups:
                return check, "drop", {"reason": f"quality:{group}"}
    return checks[-1], "keep", {}
