"""Training batches from token shards, drawn by mixture weights, deterministic and resumable.

Batch ``k`` depends only on (seed, k, the weights at k): each row picks a domain by
weight, a shard in proportion to its tokens, and a random window of ``seq_len + 1``
tokens. The loader's whole state is the step counter, so a checkpoint that stores it
resumes the exact stream. Weights may change with the step (Stage-2's STEM ramp).
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from skypile.tokens.shards import ShardSet

Weights = Callable[[int], dict[str, float]]


def constant(weights: dict[str, float]) -> Weights:
    return lambda _step: weights


def ramp(weights: dict[str, float], source: str, start: float, end: float, steps: int) -> Weights:
    """``source``'s share goes linearly from ``start`` to ``end`` over ``steps``; the other
    sources share the rest in their given proportions (the report's Stage-2 STEM ramp)."""
    others = {k: v for k, v in weights.items() if k != source}
    total = sum(others.values())
    if total <= 0:
        raise ValueError(f"the ramp of {source!r} needs other sources with weight")

    def at(step: int) -> dict[str, float]:
        frac = min(max(step / max(steps - 1, 1), 0.0), 1.0)
        share = start + (end - start) * frac
        return {source: share, **{k: (1 - share) * v / total for k, v in others.items()}}
    return at


class MixtureSampler:
    def __init__(self, shard_set: ShardSet, weights: Weights, seq_len: int, batch_size: int,
                 seed: int = 0, split: str = "train"):
        self.seq_len, self.batch_size, self.seed, self.weights = seq_len, batch_size, seed, weights
        self.step = 0
        self._shards: dict[str, list[np.ndarray]] = {}
        self._probs: dict[str, np.ndarray] = {}
        need = seq_len + 1
        for domain in shard_set.domains():
            arrays = [shard_set.load(e)[0] for e in shard_set.entries(domain, split)]
            arrays = [a for a in arrays if len(a) >= need]
            if arrays:
                sizes = np.array([len(a) - need + 1 for a in arrays], dtype=np.float64)
                self._shards[domain], self._probs[domain] = arrays, sizes / sizes.sum()

    def domains(self) -> list[str]:
        return sorted(self._shards)

    def batch(self, step: int) -> tuple[np.ndarray, list[str]]:
        """(batch_size, seq_len + 1) int64 tokens and each row's domain, for ``step``."""
        weights = {k: v for k, v in self.weights(step).items() if v > 0}
        missing = [k for k in weights if k not in self._shards]
        if missing:
            raise ValueError(f"no {self.seq_len + 1}-token windows for source {missing[0]!r} "
                             f"(have: {', '.join(self.domains())})")
        names = sorted(weights)
        p = np.array([weights[n] for n in names], dtype=np.float64)
        rng = np.random.default_rng([self.seed, step])
        rows = np.empty((self.batch_size, self.seq_len + 1), dtype=np.int64)
        picked = []
        for r, k in enumerate(rng.choice(len(names), size=self.batch_size, p=p / p.sum())):
            domain = names[k]
            arrays = self._shards[domain]
            a = arrays[rng.choice(len(arrays), p=self._probs[domain])]
            start = int(rng.integers(0, len(a) - self.seq_len))
            rows[r] = a[start:start + self.seq_len + 1]
            picked.append(domain)
        return rows, picked

    def __next__(self) -> tuple[np.ndarray, list[str]]:
        out = self.batch(self.step)
        self.step += 1
        return out

    def __iter__(self):
        return self

    def state_dict(self) -> dict:
        return {"step": self.step, "seed": self.seed}

    def load_state_dict(self, state: dict) -> None:
        if state.get("seed", self.seed) != self.seed:
            raise ValueError(f"checkpoint sampler seed {state['seed']} differs from {self.seed}")
        self.step = int(state["step"])
