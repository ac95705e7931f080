"""Bounded, one-pass summaries of a stream: samples, heavy hitters and histograms.

Each holds a fixed amount of memory whatever the corpus size, and gives the same answer
for the same records in any order (what a re-run or a different file order must not change).
"""

from __future__ import annotations

import hashlib
import heapq
import math
from typing import Any


def rank(seed: int, key: str) -> int:
    """A 64-bit pseudo-random rank of ``key`` under ``seed``: the sampling order."""
    digest = hashlib.blake2b(key.encode("utf-8"), digest_size=8,
                             key=str(seed).encode("ascii")).digest()
    return int.from_bytes(digest, "big")


class BottomK:
    """The ``k`` items of smallest rank (a hash of their key): a uniform sample without
    replacement that does not depend on the order the items arrive in (bottom-k sketch).

    ``seen`` counts every offered item, so a sample can say what it was drawn from.
    """

    def __init__(self, k: int, seed: int = 0):
        self.k, self.seed = k, seed
        self.seen = 0
        # (-rank, key, -arrival, item): the largest rank on top; arrival only separates
        # items that share a key (a record rejected twice)
        self._heap: list[tuple[int, str, int, Any]] = []

    def wants(self, key: str) -> int | None:
        """The key's rank if an item with it would enter the sample now, else None.

        Lets a caller skip building an item (trimming text) that would be thrown away.
        """
        self.seen += 1
        r = rank(self.seed, key)
        if len(self._heap) < self.k:
            return r
        top_rank, top_key = -self._heap[0][0], self._heap[0][1]
        return r if (r, key) < (top_rank, top_key) else None

    def put(self, r: int, key: str, item: Any) -> None:
        """Adds an item ``wants`` accepted (with the rank it returned)."""
        entry = (-r, key, -self.seen, item)
        if len(self._heap) < self.k:
            heapq.heappush(self._heap, entry)
        else:
            heapq.heapreplace(self._heap, entry)

    def offer(self, key: str, item: Any) -> None:
        r = self.wants(key)
        if r is not None:
            self.put(r, key, item)

    def items(self) -> list[Any]:
        """The sample, by rank (the same order on every run)."""
        return [t[3] for t in sorted(self._heap, key=lambda t: (-t[0], t[1], -t[2]))]


class TopCounter:
    """Heavy hitters in at most ``capacity`` counters (Misra-Gries).

    While there are no more distinct keys than counters the counts are exact. Past that,
    a newcomer finding every counter taken lowers them all by one and drops those at
    zero, so a count is short by at most total / (capacity + 1) and any key seen more
    often than that is still held. Each counter carries a small payload, a ``BottomK`` of
    its members, which starts afresh if the key is dropped and comes back.
    """

    def __init__(self, capacity: int, members: int = 3, seed: int = 0):
        self.capacity, self.members, self.seed = capacity, members, seed
        self.counts: dict[str, list] = {}  # key -> [count, BottomK]
        self.total = 0
        self.shortfall = 0  # how much any count may be short by

    def add(self, key: str, member_key: str, member: Any) -> None:
        self.total += 1
        entry = self.counts.get(key)
        if entry is None:
            if len(self.counts) >= self.capacity:
                self.shortfall += 1
                for k in list(self.counts):
                    self.counts[k][0] -= 1
                    if self.counts[k][0] == 0:
                        del self.counts[k]
                return
            entry = self.counts[key] = [0, BottomK(self.members, self.seed)]
        entry[0] += 1
        entry[1].offer(member_key, member)

    def top(self, n: int) -> list[tuple[str, int, list]]:
        """(key, count, members) of the ``n`` largest counts, ties by key."""
        rows = sorted(self.counts.items(), key=lambda kv: (-kv[1][0], kv[0]))[:n]
        return [(k, c, b.items()) for k, (c, b) in rows]


class Histogram:
    """Fixed bins over [lo, hi) (values outside go to the end bins), counted per series
    (e.g. kept and rejected); ``log`` bins log10 of the value."""

    def __init__(self, lo: float, hi: float, bins: int = 40, log: bool = False):
        self.lo, self.hi, self.bins, self.log = lo, hi, bins, log
        self.counts: dict[str, list[int]] = {}

    def position(self, value: float) -> float:
        """Where a value (or a threshold) falls, in bins from the left edge."""
        v = math.log10(max(value, 1e-12)) if self.log else value
        return (v - self.lo) / (self.hi - self.lo) * self.bins

    def add(self, value: float, series: str = "all") -> None:
        if not isinstance(value, (int, float)) or math.isnan(value):
            return
        i = min(max(int(self.position(value)), 0), self.bins - 1)
        self.counts.setdefault(series, [0] * self.bins)[i] += 1

    def add_many(self, values, series: str = "all") -> None:
        """Many values at once (a numpy array), as ``add`` would count them one by one."""
        import numpy as np

        v = np.asarray(values, dtype=np.float64)
        if self.log:
            v = np.log10(np.maximum(v, 1e-12))
        idx = np.clip(((v - self.lo) / (self.hi - self.lo) * self.bins).astype(np.int64),
                      0, self.bins - 1)
        counts = np.bincount(idx, minlength=self.bins)
        row = self.counts.setdefault(series, [0] * self.bins)
        for i, n in enumerate(counts.tolist()):
            row[i] += n

    def total(self) -> int:
        return sum(sum(c) for c in self.counts.values())

    def crop(self, keep: list[float] = (), most: int = 48) -> "Histogram":
        """The populated range only (widened to show the values in ``keep``), in at most
        ``most`` bins: fine bins collected once, drawn at the scale the data has."""
        used = [i for i in range(self.bins) if any(c[i] for c in self.counts.values())]
        if not used:
            return self
        first, last = used[0], used[-1] + 1
        for v in keep:
            pos = self.position(v)
            if 0 <= pos <= self.bins:
                first, last = min(first, int(pos)), max(last, math.ceil(pos))
        merge = max(1, math.ceil((last - first) / most))
        last = min(self.bins, first + math.ceil((last - first) / merge) * merge)
        width = (self.hi - self.lo) / self.bins
        out = Histogram(self.lo + first * width, self.lo + last * width, (last - first) // merge,
                        self.log)
        for series, counts in self.counts.items():
            out.counts[series] = [sum(counts[first + j * merge: first + (j + 1) * merge])
                                  for j in range(out.bins)]
        return out

    def edge(self, i: int) -> float:
        """The value at the left edge of bin ``i``."""
        v = self.lo + (self.hi - self.lo) * i / self.bins
        return 10 ** v if self.log else v
