"""Per-stage counts: records in, kept, dropped by reason, skipped by kind.

Counts travel as flat ``(stage, field, key)`` tuples so that any engine can sum them
(Beam combines them per key); ``nest`` turns the sums into the shape of ``stats.json``.
Every dropped record is also a line in ``rejects/``, so ``in == kept + sum(dropped)``
(plus ``routed``, records sent to another output such as ``other/``).
"""

from __future__ import annotations

import collections
from typing import Iterable

Key = tuple[str, str, str]


class Tally:
    """Counts for one worker; ``items()`` yields what the engine sums."""

    def __init__(self) -> None:
        self.counts: collections.Counter[Key] = collections.Counter()

    def kept(self, stage: str, n: int = 1) -> None:
        self.counts[(stage, "in", "")] += n
        self.counts[(stage, "kept", "")] += n

    def dropped(self, stage: str, reason: str, n: int = 1) -> None:
        self.counts[(stage, "in", "")] += n
        self.counts[(stage, "dropped", reason)] += n

    def routed(self, stage: str, n: int = 1) -> None:
        """Records sent to another output (e.g. other languages): counted in ``in``."""
        self.counts[(stage, "in", "")] += n
        self.counts[(stage, "routed", "")] += n

    def skipped(self, stage: str, kind: str, n: int = 1) -> None:
        """Records that are not documents (WARC request, metadata...): counted, not in ``in``."""
        self.counts[(stage, "skipped", kind)] += n

    def note(self, stage: str, field: str, n: int = 1) -> None:
        self.counts[(stage, field, "")] += n

    def items(self) -> list[tuple[Key, int]]:
        out = list(self.counts.items())
        self.counts.clear()
        return out


def nest(items: Iterable[tuple[Key, int]], order: Iterable[str] = ()) -> dict:
    """Summed counts -> {stage: {in, kept, dropped: {reason: n}, skipped: {...}, ...}}."""
    stages: dict[str, dict] = {}
    for (stage, field, key), n in sorted(items):
        s = stages.setdefault(stage, {"in": 0, "kept": 0, "dropped": {}})
        if key:
            s.setdefault(field, {})[key] = s.setdefault(field, {}).get(key, 0) + n
        else:
            s[field] = s.get(field, 0) + n
    ranked = list(order) + sorted(set(stages) - set(order))
    return {name: stages[name] for name in ranked if name in stages}


def check_balanced(stages: dict) -> list[str]:
    """Stages whose records in differ from kept plus dropped (should be none)."""
    bad = []
    for name, s in stages.items():
        if "in" in s and s["in"] != s.get("kept", 0) + sum(s.get("dropped", {}).values()) \
                + s.get("routed", 0):
            bad.append(name)
    return bad


def check_chain(stages: dict, order: Iterable[str]) -> list[str]:
    """Stages that did not receive exactly what the previous stage kept (should be none)."""
    names = [n for n in order if n in stages]
    return [f"{b}: in={stages[b]['in']} but {a} kept {stages[a]['kept']}"
            for a, b in zip(names, names[1:]) if stages[b]["in"] != stages[a]["kept"]]
