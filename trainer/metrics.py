"""Where a training run's numbers go (rank 0 only): the log lines, TensorBoard
(OUTPUT/tensorboard), OUTPUT/metrics.csv (a row per step) and validation.csv (a row per
validation), each row appended and flushed as it comes, so a killed run keeps every row
it logged; at the end, the validation curves per domain (validation.png).

A resumed run first drops the rows of steps after its checkpoint (they are trained again),
so each step has one row: the one of the run that the checkpoints continue."""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Callable


class RunLog:
    """The outputs of one run; every method is a no-op on ranks other than 0."""

    def __init__(self, out: Path, rank: int, log: Callable[[str], None] = print,
                 resumed_at: int = 0):
        self.out, self.active, self.log = out, rank == 0, log
        self.board = _board(out) if self.active else None
        if self.active:
            for name in ("metrics.csv", "validation.csv"):
                dropped = drop_after(out / name, resumed_at)
                if dropped:
                    log(f"{name}: dropped {dropped} rows after step {resumed_at} (the "
                        f"checkpoint this run resumes from)")

    def step(self, row: dict) -> None:
        if not self.active:
            return
        for k, v in row.items():
            if k != "step":
                self.board.add_scalar(f"train/{k}", v, row["step"])
        self.log(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                          for k, v in row.items()))
        append_csv(self.out / "metrics.csv", [row])

    def validation(self, step: int, losses: dict[str, float]) -> None:
        if not self.active or not losses:
            return
        self.log("validation " + " ".join(f"{d}={l:.4f}" for d, l in losses.items()))
        for d, l in losses.items():
            self.board.add_scalar(f"validation/{d}", l, step)
        append_csv(self.out / "validation.csv", [{"step": step, **losses}])
        self.board.flush()

    def close(self) -> None:
        if not self.active:
            return
        self.board.close()
        plot_validation(self.out)


def _board(out: Path):
    from torch.utils.tensorboard import SummaryWriter

    return SummaryWriter(log_dir=str(out / "tensorboard"))


def append_csv(path: Path, rows: list[dict]) -> None:
    """Append rows and flush them to the file; a new (or empty) file gets a header
    (``step`` first), an old one keeps its own."""
    if not rows:
        return
    fields = sorted({k for r in rows for k in r}, key=lambda k: (k != "step", k))
    new = not path.exists() or path.stat().st_size == 0
    if not new:
        with open(path, newline="") as f:
            fields = next(csv.reader(f), fields)
    with open(path, "a", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
        if new:
            w.writeheader()
        w.writerows(rows)
        f.flush()
        os.fsync(f.fileno())


def drop_after(path: Path, step: int) -> int:
    """Remove the rows of steps after ``step`` (rewritten whole, then renamed); returns
    how many were dropped."""
    if not path.exists() or path.stat().st_size == 0:
        return 0
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    keep = [rows[0]] + [r for r in rows[1:] if r and int(r[0]) <= step]
    if len(keep) == len(rows):
        return 0
    tmp = path.with_suffix(".csv.tmp")
    with open(tmp, "w", newline="") as f:
        csv.writer(f).writerows(keep)
    os.replace(tmp, path)
    return len(rows) - len(keep)


def plot_validation(out: Path) -> None:
    """validation.png: one validation-loss curve per domain, from validation.csv."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = out / "validation.csv"
    if not path.exists():
        return
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    fig, ax = plt.subplots(figsize=(7, 4))
    for domain in [k for k in rows[0] if k != "step"]:
        pts = [(int(r["step"]), float(r[domain])) for r in rows if r.get(domain)]
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=domain)
    ax.set_xlabel("step")
    ax.set_ylabel("validation loss")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "validation.png", dpi=110)
    plt.close(fig)
