"""Data mixtures: a weight per source, a repetition cap, and a composition report.

A mixture asks for ``total_tokens`` drawn from sources in proportion to their weights
(the report's Table 1). A source with fewer tokens than its share is repeated (upsampled);
more than ``max_repeat`` passes over it is an error naming the source, because it would
overfit (the report caps repetition at five epochs).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path


class MixtureError(ValueError):
    pass


@dataclasses.dataclass
class MixtureSpec:
    """A mixture (``mixture`` section / file): what share of the tokens each source gives."""

    weights: dict = dataclasses.field(default_factory=dict)
    """Source/domain -> weight (normalised to shares)."""
    max_repeat: float = 5.0
    """Most passes over any source's tokens."""


@dataclasses.dataclass
class Row:
    source: str
    available: int
    share: float
    tokens: int
    repeat: float


def plan(available: dict[str, int], spec: MixtureSpec, total_tokens: int) -> list[Row]:
    if not spec.weights:
        raise MixtureError("the mixture has no weights")
    bad = [s for s, w in spec.weights.items() if w < 0]
    if bad:
        raise MixtureError(f"negative weight for {bad[0]}")
    total_w = sum(spec.weights.values())
    if total_w <= 0:
        raise MixtureError("the mixture's weights sum to zero")
    rows = []
    for source, w in spec.weights.items():
        share = w / total_w
        want = round(share * total_tokens)
        have = available.get(source, 0)
        if want and not have:
            raise MixtureError(f"source {source!r} has no tokens (known: {', '.join(sorted(available))})")
        repeat = want / have if have else 0.0
        if repeat > spec.max_repeat:
            raise MixtureError(
                f"source {source!r} would be repeated {repeat:.1f} times ({want:,} tokens "
                f"wanted, {have:,} available); the cap is {spec.max_repeat:g}: lower its "
                f"weight or the total, or add data")
        rows.append(Row(source, have, share, want, repeat))
    return rows


def report(rows: list[Row], out_dir: str, title: str = "Mixture") -> tuple[Path, Path]:
    """composition.md (a table) and composition.png (a bar chart) in out_dir."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    lines = [f"# {title}", "", "| source | available tokens | share | tokens | repetitions |",
             "|---|---:|---:|---:|---:|"]
    lines += [f"| {r.source} | {r.available:,} | {r.share:.1%} | {r.tokens:,} | {r.repeat:.2f} |"
              for r in rows]
    lines.append(f"| **total** | {sum(r.available for r in rows):,} | 100% | "
                 f"{sum(r.tokens for r in rows):,} | |")
    md = out / "composition.md"
    md.write_text("\n".join(lines) + "\n", encoding="utf-8")
    fig, ax = plt.subplots(figsize=(7, 0.5 + 0.45 * len(rows)))
    names = [r.source for r in rows][::-1]
    ax.barh(names, [r.share * 100 for r in rows][::-1], color="#4C72B0")
    for i, r in enumerate(rows[::-1]):
        ax.text(r.share * 100, i, f" {r.share:.1%}  x{r.repeat:.2f}", va="center", fontsize=8)
    ax.set_xlabel("share of tokens (%)  -  label: share and repetitions")
    ax.set_title(title)
    ax.set_xlim(0, max(r.share for r in rows) * 130)
    fig.tight_layout()
    png = out / "composition.png"
    fig.savefig(png, dpi=120)
    plt.close(fig)
    return md, png
