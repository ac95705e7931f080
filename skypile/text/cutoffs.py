"""Perplexity cutoffs in CCNet's ``cutoff.csv`` format: rows 0-99, one column per language.

Plain CSV and percentiles, no model: ``skypile classifiers`` writes the table from scored
web text, the perplexity scorer buckets documents with it, and ``skypile report`` draws it,
so the one parser lives here in the core. A table holds the rows its file has, no more
(CCNet's stops at 99: there is no p100 to invent), and is written back the same way.
Buckets follow CCNet's ``PerplexityBucket``: strictly below the head cutoff is head,
strictly below the middle one middle, the rest tail.
"""

from __future__ import annotations

import csv
import math
import numbers

PERCENTILES = range(100)
"""The rows of CCNet's cutoff.csv, and of the tables ``percentiles`` makes."""


class CutoffError(ValueError):
    """A cutoff.csv this code cannot read, or percentiles it does not hold."""


def read_cutoffs(path: str) -> dict[str, list[float]]:
    """{lang: [perplexity at percentile 0, 1, ...]} from a CCNet-format cutoff.csv; rows
    must be the percentiles 0, 1, 2, ... in order."""
    with open(path, newline="", encoding="utf-8") as f:
        rows = [row for row in csv.reader(f) if row]
    if len(rows) < 2:
        raise CutoffError(f"{path}: no percentile rows (CCNet's cutoff.csv format)")
    header = rows[0][1:]
    table: dict[str, list[float]] = {lang: [] for lang in header}
    for expected, row in enumerate(rows[1:]):
        if row[0].strip() != str(expected) or len(row) != len(header) + 1:
            raise CutoffError(f"{path}: row {expected + 2} should be percentile {expected} "
                              f"with {len(header)} values (CCNet's cutoff.csv format)")
        for lang, value in zip(header, row[1:]):
            try:
                table[lang].append(float(value))
            except ValueError:
                raise CutoffError(f"{path}: {lang} at percentile {expected} is {value!r}, "
                                  f"not a number") from None
    return table


def percentiles(values: list[float]) -> list[float]:
    """The 0th..99th percentiles (nearest rank), CCNet's rows."""
    ordered = sorted(values)
    n = len(ordered)
    return [ordered[min(n - 1, max(0, math.ceil(p / 100 * n) - 1))] for p in PERCENTILES]


def write_cutoffs(path: str, table: dict[str, list[float]]) -> None:
    """The table's rows as they are: as many percentiles as it holds, none added."""
    langs = sorted(table)
    rows = {len(table[lang]) for lang in langs}
    if len(rows) > 1:
        raise CutoffError(f"cutoff table for {path}: languages hold different numbers of "
                          f"percentiles ({sorted(rows)})")
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow([""] + langs)
        for p in range(rows.pop() if rows else 0):
            w.writerow([p] + [round(table[lang][p], 1) for lang in langs])


def check_percentiles(table: dict[str, list[float]], head: int, middle: int) -> None:
    """CutoffError unless 0 <= head < middle < every language's number of rows."""
    n = min((len(row) for row in table.values()), default=0)
    if not 0 <= head < middle < n:
        raise CutoffError(f"perplexity percentiles head={head}, middle={middle} do not fit "
                          f"the cutoff table (0 <= head < middle <= {n - 1})")


def valid_perplexity(value) -> bool:
    """A perplexity a bucket can be given: a finite number, not negative."""
    return (isinstance(value, numbers.Real) and not isinstance(value, bool)
            and math.isfinite(value) and value >= 0)


def bucket(ppl: float, cut: list[float], head: int, middle: int) -> str | None:
    """CCNet's bucket: head below ``cut[head]``, middle below ``cut[middle]``, else tail;
    None for a perplexity that is not valid (NaN, infinite, negative)."""
    if not valid_perplexity(ppl):
        return None
    if ppl < cut[head]:
        return "head"
    if ppl < cut[middle]:
        return "middle"
    return "tail"
