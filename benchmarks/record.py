"""One row of the standing ratio table: each benchmark records its headline figure here.

    from record import record
    record("dedup-vs-datatrove", "datatrove MinHash docs/s per core", 812.0,
           "skypile dedup docs/s per core", 1020.0, higher_is_better=True)

A row is written to ``benchmarks/results/<name>.json`` with the date, the commit and the
command that produced it; ``benchmarks/table.py`` turns every row into the table at the
top of BENCHMARKS.md (``make bench`` runs both). A benchmark that did not run keeps its
last row, with its old date and commit, so the table always says how old a figure is.
"""

from __future__ import annotations

import datetime
import json
import math
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"


def commit() -> str:
    """The commit the figures were measured on, marked ``+dirty`` with local changes
    (other than the records themselves: a second run is not dirty for the first's)."""
    def git(*args):
        return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True).stdout.strip()

    head = git("rev-parse", "--short=10", "HEAD") or "unknown"
    changed = git("status", "--porcelain", "--untracked-files=no", "--", ".",
                  ":!benchmarks/results", ":!BENCHMARKS.md")
    return head + ("+dirty" if changed else "")


def record(name: str, baseline: str, baseline_value: float, ours: str, ours_value: float,
           unit: str, higher_is_better: bool = True, note: str = "") -> dict:
    """Write the row ``name``; the ratio is ours / baseline (baseline / ours when lower is
    better), so a ratio above 1 always means SkyPile is ahead."""
    if not (baseline_value > 0 and ours_value > 0 and math.isfinite(baseline_value)
            and math.isfinite(ours_value)):
        raise ValueError(f"{name}: figures must be positive ({baseline_value}, {ours_value})")
    ratio = ours_value / baseline_value if higher_is_better else baseline_value / ours_value
    row = {"name": name, "baseline": baseline, "baseline_value": baseline_value,
           "ours": ours, "ours_value": ours_value, "unit": unit,
           "higher_is_better": higher_is_better, "ratio": round(ratio, 3), "note": note,
           "date": datetime.date.today().isoformat(), "commit": commit(),
           "command": " ".join(["python", *[Path(sys.argv[0]).as_posix().split("/main/")[-1],
                                            *sys.argv[1:]]])}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(row, indent=1, ensure_ascii=False) + "\n")
    print(f"recorded {name}: ratio {row['ratio']:.2f}x ({ours_value:g} vs {baseline_value:g} {unit})")
    return row
