"""Perplexity cutoffs in CCNet's ``cutoff.csv`` format: rows 0-100, one column per language.

Plain CSV and percentiles, no model: ``skypile classifiers`` writes the table from scored
web text, the perplexity scorer buckets documents with it, and ``skypile report`` draws it,
so the one parser lives here in the core.
"""

from __future__ import annotations

import csv
import math


def read_cutoffs(path: str) -> dict[str, list[float]]:
    """{lang: [perplexity at percentile 0, 1, ..., 100]} from CCNet's cutoff.csv."""
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    header = rows[0][1:]
    table = {lang: [0.0] * 101 for lang in header}
    for row in rows[1:]:
        pct = int(row[0])
        for lang, value in zip(header, row[1:]):
            table[lang][pct] = float(value)
    return table


def percentiles(values: list[float]) -> list[float]:
    """The 0th..100th percentiles (nearest rank)."""
    ordered = sorted(values)
    n = len(ordered)
    return [ordered[min(n - 1, max(0, math.ceil(p / 100 * n) - 1))] for p in range(101)]


def write_cutoffs(path: str, table: dict[str, list[float]]) -> None:
    langs = sorted(table)
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow([""] + langs)
        for p in range(101):
            w.writerow([p] + [round(table[lang][p], 1) for lang in langs])

