"""The result tables the eval commands print and write: Markdown for people, CSV for tools."""

from __future__ import annotations

import csv
from pathlib import Path


def markdown(header: list[str], rows: list[list], fmt: str = "{:.2f}") -> str:
    """A Markdown table; floats through ``fmt``, None as an empty cell."""
    def cell(v):
        return "" if v is None else fmt.format(v) if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in r) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def write_csv(path: Path, rows: list[list]) -> None:
    """Rows (the header first) to ``path``, UTF-8 (subject and model names may be Chinese)."""
    with open(path, "w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows(rows)
