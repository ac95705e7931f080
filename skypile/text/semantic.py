"""Semantic deduplication maths (SemDeDup-like): k-means, cluster splits, bounded pair search.

Everything works on unit-length embeddings, so a dot product is a cosine similarity. The
corpus steps around these functions (embedding, sampling, the recursive split, grouping,
connected components) are Beam transforms in ``skypile.pipelines.dedup``
(:class:`~skypile.pipelines.dedup.SemanticDedup` explains the plan); the settings are
:class:`skypile.text.dedup.SemanticConfig`.

Memory is bounded by one number, the pair-search budget ``B`` (``max_cluster_size``): a
search block holds at most ``B`` vectors, so its similarity matrix has at most ``B x B``
floats whatever the corpus size. Samples are the ``n`` members with the smallest
:func:`sample_key`, a hash of the id, so they do not depend on arrival order.
"""

from __future__ import annotations

import hashlib
import heapq
import math
from typing import Iterable, Iterator

import numpy as np


def kmeans(vectors: list[np.ndarray], k: int, iterations: int, seed: int) -> np.ndarray:
    """Spherical k-means on unit vectors; returns (k, d) unit centroids.

    ``k`` is capped at the number of vectors; the seed fixes the initial centroids, so the
    same sample always gives the same clusters.
    """
    x = np.stack(vectors)
    k = max(1, min(k, len(x)))
    rng = np.random.default_rng(seed)
    centroids = x[rng.choice(len(x), size=k, replace=False)]
    for _ in range(iterations):
        assign = np.argmax(x @ centroids.T, axis=1)
        for c in range(k):
            members = x[assign == c]
            if len(members):
                mean = members.sum(0)
                centroids[c] = mean / max(float(np.linalg.norm(mean)), 1e-9)
    return centroids


def nearest(centroids: np.ndarray, vector: np.ndarray) -> int:
    """Index of the centroid most similar to ``vector`` (ties: the smallest index)."""
    return int(np.argmax(centroids @ vector))


def sample_key(doc_id: str, seed: int, salt: str = "sample") -> int:
    """A stable 64-bit hash of an id: samples keep the smallest keys, blocks take it modulo."""
    digest = hashlib.blake2b(f"{salt}:{seed}:{doc_id}".encode("utf-8", "surrogatepass"),
                             digest_size=8).digest()
    return int.from_bytes(digest, "big")


def split_k(count: int, budget: int, max_split: int) -> int:
    """Sub-clusters for a cluster of ``count`` members above the budget: enough for the
    average to fit (at least 2), at most ``max_split`` so the sub-centroids stay small."""
    return max(2, min(max_split, math.ceil(count / budget)))


def hash_blocks(count: int, budget: int) -> int:
    """Hash blocks for a leaf still above the budget after the last split: about half the
    budget each on average, so that few need :func:`bounded_chunks` to cut them again."""
    return max(1, math.ceil(2 * count / max(budget, 1)))


def bounded_chunks(items: Iterable, budget: int, skip: str | None = None) -> Iterator[list]:
    """(id, vector) items of a re-iterable, in chunks of at most ``budget``, by id.

    Each chunk is the ``budget`` smallest ids above the previous chunk's last id, found by
    one more pass over ``items`` with a heap of ``budget``: memory stays one chunk however
    long ``items`` is, and the chunks do not depend on its order. ``skip`` leaves one id
    out (the anchor, which the caller adds to every chunk). Ids are unique in a stage.
    """
    if budget < 1:
        raise ValueError(f"pair-search budget must be at least 1, got {budget}")
    after = None
    while True:
        chunk = heapq.nsmallest(budget, (it for it in items if it[0] != skip
                                         and (after is None or it[0] > after)),
                                key=lambda it: it[0])
        if chunk:
            yield chunk
        if len(chunk) < budget:
            return
        after = chunk[-1][0]


def cluster_pairs(cluster, items, epsilon: float,
                  budget: int | None = None) -> tuple[list[tuple[str, str]], dict]:
    """Pairs of one search block's (id, unit vector) items with cosine >= epsilon, and the
    block's density figures for the report.

    Items are sorted by id first, so the pairs (smaller id first) and figures do not
    depend on the order the items arrived in. A block above ``budget`` is an error: the
    caller must cut it first (:func:`bounded_chunks`), so no matrix exceeds budget².
    """
    items = sorted(items, key=lambda item: item[0])
    if budget is not None and len(items) > budget:
        raise ValueError(f"semantic pair search over {len(items)} documents in {cluster}, "
                         f"above the budget of {budget}")
    ids = [i for i, _ in items]
    x = np.stack([v for _, v in items])
    iu = np.triu_indices(len(ids), k=1)
    pair_sims = (x @ x.T)[iu]
    dup = pair_sims >= epsilon
    pairs = [(ids[a], ids[b]) for a, b in zip(iu[0][dup], iu[1][dup])]
    density = {"cluster": cluster if isinstance(cluster, str) else int(cluster),
               "size": len(ids),
               "mean_similarity": round(float(pair_sims.mean()), 4) if len(pair_sims) else 1.0,
               "duplicate_pairs": int(dup.sum()),
               "docs_in_duplicate_pairs": len({i for pair in pairs for i in pair})}
    return pairs, density


class BottomSample:
    """A mergeable sample: the ``size`` (id, vector) members with the smallest
    :func:`sample_key`, and how many were offered. The same members, whatever the order
    and the bundling, and never more than ``size`` vectors held."""

    def __init__(self, size: int, seed: int):
        self.size, self.seed = size, seed
        self.count = 0
        self._heap: list = []  # (-key, id, _Payload): heap[0] is the largest key, first out

    def add(self, doc_id: str, vector) -> "BottomSample":
        self.count += 1
        self._push((-sample_key(doc_id, self.seed), doc_id, _Payload(vector)))
        return self

    def merge(self, other: "BottomSample") -> "BottomSample":
        self.count += other.count
        for entry in other._heap:
            self._push(entry)
        return self

    def items(self) -> list:
        """The sampled (id, vector) pairs, by key."""
        return [(i, p.value) for _, i, p in sorted(self._heap, key=lambda e: (-e[0], e[1]))]

    def _push(self, entry) -> None:
        if len(self._heap) < self.size:
            heapq.heappush(self._heap, entry)
        elif self.size and entry[:2] > self._heap[0][:2]:
            heapq.heapreplace(self._heap, entry)


class _Payload:
    """A vector riding in a heap entry: equal to any other, so ties fall to the id."""

    __slots__ = ("value",)

    def __init__(self, value):
        self.value = value

    def __lt__(self, other):
        return False

    def __eq__(self, other):
        return True

    def __getstate__(self):
        return (self.value,)

    def __setstate__(self, state):
        self.value = state[0]
