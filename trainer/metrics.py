"""Where a training run's numbers go (rank 0 only): the log lines, TensorBoard
(OUTPUT/tensorboard) while it runs, and at the end OUTPUT/metrics.csv, validation.csv
(appended to on resume, keeping the first header) and the validation curves per domain
(validation.png)."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Callable


class RunLog:
    """The outputs of one run; every method is a no-op on ranks other than 0."""

    def __init__(self, out: Path, rank: int, log: Callable[[str], None] = print):
        self.out, self.active, self.log = out, rank == 0, log
        self.board = _board(out) if self.active else None

    def step(self, row: dict) -> None:
        if not self.active:
            return
        for k, v in row.items():
            if k != "step":
                self.board.add_scalar(f"train/{k}", v, row["step"])
        self.log(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                          for k, v in row.items()))

    def validation(self, step: int, losses: dict[str, float]) -> None:
        if not self.active or not losses:
            return
        self.log("validation " + " ".join(f"{d}={l:.4f}" for d, l in losses.items()))
        for d, l in losses.items():
            self.board.add_scalar(f"validation/{d}", l, step)

    def close(self, rows: list[dict], validations: list[dict]) -> None:
        if not self.active:
            return
        self.board.close()
        append_csv(self.out / "metrics.csv", rows)
        append_csv(self.out / "validation.csv", validations)
        plot_validation(self.out)


def _board(out: Path):
    from torch.utils.tensorboard import SummaryWriter

    return SummaryWriter(log_dir=str(out / "tensorboard"))


def append_csv(path: Path, rows: list[dict]) -> None:
    """Append rows; a new file gets a header (``step`` first), an old one keeps its own."""
    if not rows:
        return
    fields = sorted({k for r in rows for k in r}, key=lambda k: (k != "step", k))
    new = not path.exists()
    if not new:
        with open(path, newline="") as f:
            fields = next(csv.reader(f), fields)
    with open(path, "a", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
        if new:
            w.writeheader()
        w.writerows(rows)


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
