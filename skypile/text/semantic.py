"""Semantic deduplication maths (SemDeDup-like): k-means centroids and duplicate pairs.

Both work on unit-length embeddings, so a dot product is a cosine similarity. The corpus
steps around them (embedding, sampling for the fit, grouping by cluster, connected
components) are Beam transforms in ``skypile.pipelines.dedup``; the settings are
:class:`skypile.text.dedup.SemanticConfig`.
"""

from __future__ import annotations

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


def cluster_pairs(cluster: int, items, epsilon: float) -> tuple[list[tuple[str, str]], dict]:
    """Pairs of one cluster's (id, unit vector) items with cosine >= epsilon, and the
    cluster's density figures for the report.

    Items are sorted by id first, so the pairs (smaller id first) and figures do not
    depend on the order the items arrived in.
    """
    items = sorted(items, key=lambda item: item[0])
    ids = [i for i, _ in items]
    x = np.stack([v for _, v in items])
    iu = np.triu_indices(len(ids), k=1)
    pair_sims = (x @ x.T)[iu]
    dup = pair_sims >= epsilon
    pairs = [(ids[a], ids[b]) for a, b in zip(iu[0][dup], iu[1][dup])]
    density = {"cluster": int(cluster), "size": len(ids),
               "mean_similarity": round(float(pair_sims.mean()), 4) if len(pair_sims) else 1.0,
               "duplicate_pairs": int(dup.sum()),
               "docs_in_duplicate_pairs": len({i for pair in pairs for i in pair})}
    return pairs, density
