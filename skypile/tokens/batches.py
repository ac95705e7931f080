"""Training batches from token shards, drawn by mixture weights, deterministic and resumable.

Batch ``k`` depends only on (seed, k, the weights at k): each row picks a domain by
weight, a shard in proportion to its tokens, and a random window of ``seq_len + 1``
tokens. The loader's whole state is the step counter, so a checkpoint that stores it
resumes the exact stream. Weights may change with the step (Stage-2's STEM ramp).
Shards are opened lazily, only this process's rows are read, and a background thread can
make the next batches ahead (``prefetch``). ``planned_epochs`` and ``epochs()`` count the
passes over each source, so the trainer can hold a mixture to its ``max_repeat`` cap.
"""

from __future__ import annotations

import math
import queue
import threading
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
    """Batch ``k`` of a mixture, for every ``k``; ``next()`` serves them in order.

    Shards are opened when a row first picks them (their token counts come from the
    manifest), so start-up reads nothing. ``rows`` = (first, stop) is the part of the global
    batch this process trains on: every row's draws are made (the stream does not depend on
    how it is split) but only these rows' tokens are read. With ``prefetch`` > 0 a
    background thread makes the next batches while the model trains on this one. The
    state is the step; ``epochs()`` says how many passes over each source's tokens the
    batches served so far have made.
    """

    def __init__(self, shard_set: ShardSet, weights: Weights, seq_len: int, batch_size: int,
                 seed: int = 0, split: str = "train", rows: tuple[int, int] | None = None,
                 prefetch: int = 0):
        self.shard_set, self.seq_len, self.batch_size = shard_set, seq_len, batch_size
        self.seed, self.weights, self.split = seed, weights, split
        self.rows = rows or (0, batch_size)
        self.prefetch = prefetch
        self._entries: dict[str, list[dict]] = {}
        self._probs: dict[str, np.ndarray] = {}
        self.available: dict[str, int] = {}
        need = seq_len + 1
        for domain in shard_set.domains():
            entries = [e for e in shard_set.entries(domain, split) if e["tokens"] >= need]
            if entries:
                sizes = np.array([e["tokens"] - need + 1 for e in entries], dtype=np.float64)
                self._entries[domain], self._probs[domain] = entries, sizes / sizes.sum()
                self.available[domain] = sum(e["tokens"] for e in entries)
        self._step = 0
        self.drawn: dict[str, int] = {}
        self._thread: _Ahead | None = None

    def domains(self) -> list[str]:
        return sorted(self._entries)

    def _names(self, step: int) -> tuple[list[str], np.ndarray]:
        weights = {k: v for k, v in self.weights(step).items() if v > 0}
        missing = [k for k in weights if k not in self._entries]
        if missing:
            raise ValueError(f"no {self.seq_len + 1}-token windows for source {missing[0]!r} "
                             f"(have: {', '.join(self.domains())})")
        names = sorted(weights)
        p = np.array([weights[n] for n in names], dtype=np.float64)
        return names, p / p.sum()

    def picks(self, step: int) -> list[str]:
        """The source of each row of batch ``step`` (no tokens read)."""
        names, p = self._names(step)
        rng = np.random.default_rng([self.seed, step])
        return [names[k] for k in rng.choice(len(names), size=self.batch_size, p=p)]

    def batch(self, step: int) -> tuple[np.ndarray, list[str]]:
        """(rows, seq_len + 1) int64 tokens of this process's rows of batch ``step``, and
        the source of every row of the global batch."""
        names, p = self._names(step)
        rng = np.random.default_rng([self.seed, step])
        first, stop = self.rows
        out = np.empty((stop - first, self.seq_len + 1), dtype=np.int64)
        picked = []
        for r, k in enumerate(rng.choice(len(names), size=self.batch_size, p=p)):
            domain = names[k]
            entries = self._entries[domain]
            entry = entries[rng.choice(len(entries), p=self._probs[domain])]
            start = int(rng.integers(0, entry["tokens"] - self.seq_len))
            if first <= r < stop:
                out[r - first] = self.shard_set.load(entry)[0][start:start + self.seq_len + 1]
            picked.append(domain)
        return out, picked

    @property
    def step(self) -> int:
        return self._step

    @step.setter
    def step(self, value: int) -> None:
        """Jump to batch ``value`` (a resumed run): the sources of the batches before it
        are replayed for ``epochs()`` (cheap: no tokens are read)."""
        self.close()
        self._step, self.drawn = int(value), {}
        for k in range(self._step):
            self._count(self.picks(k))

    def _count(self, picked: list[str]) -> None:
        for d in picked:
            self.drawn[d] = self.drawn.get(d, 0) + self.seq_len

    def epochs(self) -> dict[str, float]:
        """Passes over each source's training tokens made by the batches served so far."""
        return {d: n / self.available[d] for d, n in sorted(self.drawn.items())}

    def __next__(self) -> tuple[np.ndarray, list[str]]:
        if self.prefetch > 0:
            if self._thread is None:
                self._thread = _Ahead(self.batch, self._step, self.prefetch)
            out = self._thread.get(self._step)
        else:
            out = self.batch(self._step)
        self._step += 1
        self._count(out[1])
        return out

    def __iter__(self):
        return self

    def close(self) -> None:
        """Stop the prefetch thread (a new one starts at the next ``next()``)."""
        if self._thread is not None:
            self._thread.stop()
            self._thread = None

    def state_dict(self) -> dict:
        return {"step": self.step, "seed": self.seed}

    def load_state_dict(self, state: dict) -> None:
        if state.get("seed", self.seed) != self.seed:
            raise ValueError(f"checkpoint sampler seed {state['seed']} differs from {self.seed}")
        self.step = int(state["step"])


class _Ahead:
    """A daemon thread that makes batches ``start``, ``start + 1``, ... ahead of their use,
    at most ``depth`` at a time; a failure is raised where the batch is taken."""

    def __init__(self, make: Callable[[int], tuple], start: int, depth: int):
        self._make, self._queue = make, queue.Queue(maxsize=depth)
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(start,), daemon=True,
                                        name="skypile-prefetch")
        self._thread.start()

    def _run(self, step: int) -> None:
        while not self._stopped.is_set():
            try:
                item = (step, self._make(step), None)
            except Exception as e:  # noqa: BLE001 - handed to the consumer, raised there
                item = (step, None, e)
            while not self._stopped.is_set():
                try:
                    self._queue.put(item, timeout=0.1)
                    break
                except queue.Full:
                    continue
            if item[2] is not None:
                return
            step += 1

    def get(self, step: int) -> tuple:
        got, value, error = self._queue.get()
        if error is not None:
            raise error
        assert got == step, (got, step)
        return value

    def stop(self) -> None:
        self._stopped.set()
        self._thread.join()


def planned_epochs(weights: Weights, steps: int, rows: int, seq_len: int,
                   available: dict[str, int]) -> dict[str, float]:
    """Expected passes over each source's training tokens after ``steps`` batches of
    ``rows`` sequences of ``seq_len`` tokens (the mixture plan's repeat, for the trainer)."""
    drawn: dict[str, float] = {}
    for step in range(steps):
        w = {k: v for k, v in weights(step).items() if v > 0}
        total = sum(w.values())
        for k, v in w.items():
            drawn[k] = drawn.get(k, 0.0) + v / total * rows * seq_len
    return {k: n / available[k] if available.get(k) else math.inf for k, n in sorted(drawn.items())}
