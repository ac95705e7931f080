"""``skypile report``: one page (Markdown + PNGs) over a whole run of the chain.

It reads what the commands wrote under one folder (the layout ``make demo`` uses) and
includes each section whose inputs exist:

  web/, code/, dedup/, shards/  stats.json of each pipeline: stage counts and drop reasons
  web/docs + models/cutoff.csv  perplexity histogram per language with the bucket cutoffs
  mixture/stage*/               composition tables and charts (skypile shards mixture)
  train/stage*/validation.csv   validation loss per domain over both stages
  eval/perplexity/table6.md     per-domain perplexity (skypile eval perplexity)
  eval/leakage/table8.md        contamination test (skypile eval leakage)
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import glob
import gzip
import json
import shutil
from pathlib import Path

from fsspec.implementations.local import LocalFileSystem

from skypile import config as cfglib
from skypile.cli.subcommands import arg, fail
from skypile.files import output
from skypile.jobs.scoring import PerplexityConfig
from skypile.jobs.web import WebConfig
from skypile.text.cutoffs import read_cutoffs

PROG = "skypile report"
PIPELINES = ("web", "code", "dedup", "tokenize")


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def stage_section(name: str, stats: dict, top: int = 6) -> str:
    lines = [f"### {name}", "", "| stage | in | kept | dropped | top drop reasons |", "|---|---|---|---|---|"]
    for stage, s in stats.get("stages", {}).items():
        dropped = s.get("dropped", {})
        reasons = ", ".join(f"{r} {n}" for r, n in sorted(dropped.items(), key=lambda kv: -kv[1])[:top])
        lines.append(f"| {stage} | {s.get('in', 0)} | {s.get('kept', 0)} | {sum(dropped.values())} | {reasons} |")
    return "\n".join(lines) + "\n"


def read_perplexities(folder: Path, limit: int = 200_000) -> dict[str, list[float]]:
    """Perplexity of every scored document: kept ones, and rejected ones after scoring."""
    out: dict[str, list[float]] = {}
    n = 0
    paths = sorted(glob.glob(str(folder / "docs" / "*.jsonl.gz")) + glob.glob(str(folder / "rejects" / "*.jsonl.gz")))
    for path in output.current_files(LocalFileSystem(), paths):  # the published run's files
        with gzip.open(path, "rt", encoding="utf-8") as f:
            for line in f:
                row = json.loads(line)
                meta = row.get("metadata") or row.get("detail") or {}
                if not isinstance(meta, dict):
                    continue
                if isinstance(meta.get("perplexity"), (int, float)):
                    out.setdefault(meta.get("lang", "?"), []).append(float(meta["perplexity"]))
                    n += 1
                    if n >= limit:
                        return out
    return out


def bucket_cutoffs(table: dict[str, list[float]], cfg: PerplexityConfig) -> dict[str, tuple[float, float]]:
    """language -> (head | middle, middle | tail) perplexity, at the run's percentiles."""
    head, middle = cfg.head_percentile, cfg.middle_percentile
    return {lang: (row[head], row[middle]) for lang, row in table.items()}


def _perplexity_config(web_config: Path) -> PerplexityConfig:
    """The run's perplexity settings, from the web run's saved config (defaults without one)."""
    if not web_config.exists():
        return PerplexityConfig()
    return cfglib.load(WebConfig, str(web_config)).perplexity


def perplexity_plot(ppl: dict[str, list[float]], cutoffs: dict, out: Path) -> Path:
    import numpy as np

    plt = _plt()
    langs = [lang for lang in sorted(ppl) if len(ppl[lang]) >= 5]
    fig, axes = plt.subplots(1, max(len(langs), 1), figsize=(5 * max(len(langs), 1), 3.4), squeeze=False)
    for ax, lang in zip(axes[0], langs):
        vals = np.log10(np.clip(ppl[lang], 1, None))
        ax.hist(vals, bins=40, color="#4c72b0")
        for cut, label, style in zip(cutoffs.get(lang, ()), ("head | middle", "middle | tail"), ("--", ":")):
            ax.axvline(np.log10(cut), color="#c44e52", linestyle=style, label=f"{label} at {cut:.0f}")
        if lang in cutoffs:
            ax.legend(fontsize=7)
        ax.set_title(f"{lang}: KenLM perplexity, kept and rejected (n={len(vals)})", fontsize=9)
        ax.set_xlabel("log10 perplexity")
    fig.tight_layout()
    path = out / "perplexity.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def validation_plot(runs: list[Path], out: Path) -> Path | None:
    plt = _plt()
    series: dict[str, list[tuple[int, float]]] = {}
    offset, bounds = 0, []
    for run in runs:
        path = run / "validation.csv"
        if not path.exists():
            continue
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
        last = 0
        for r in rows:
            step = int(r["step"])
            last = max(last, step)
            for k, v in r.items():
                if k != "step" and v:
                    series.setdefault(k, []).append((offset + step, float(v)))
        offset += last
        bounds.append((run.name, offset))
    if not series:
        return None
    fig, ax = plt.subplots(figsize=(7, 3.6))
    for domain, pts in sorted(series.items()):
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker=".", label=domain)
    for name, end in bounds[:-1]:
        ax.axvline(end, color="grey", linestyle=":")
        ax.text(end, ax.get_ylim()[1], f" end of {name}", fontsize=7, va="top")
    ax.set_xlabel("step (stages one after the other)")
    ax.set_ylabel("validation loss")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    path = out / "validation.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def build(run: Path, out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    parts = [f"# SkyPile run report: {run}", ""]
    counts = [stage_section(name, json.loads((run / name / "stats.json").read_text()))
              for name in PIPELINES if (run / name / "stats.json").exists()]
    shards_stats = run / "shards" / "stats.json"
    if shards_stats.exists():
        counts.append(stage_section("tokenize", json.loads(shards_stats.read_text())))
    if counts:
        parts += ["## Pipeline stages: counts and drop reasons", "", *counts]
    cut_file = run / "models" / "cutoff.csv"
    ppl = read_perplexities(run / "web")
    if ppl:
        cuts = {}
        if cut_file.exists():
            cuts = bucket_cutoffs(read_cutoffs(str(cut_file)),
                                  _perplexity_config(run / "web" / "config.json"))
        img = perplexity_plot(ppl, cuts, out)
        parts += ["## Perplexity of the scored web documents, with the bucket cutoffs", "",
                  f"![perplexity]({img.name})", ""]
    manifest = run / "shards" / "manifest.json"
    if manifest.exists():
        m = json.loads(manifest.read_text())
        parts += ["## Token shards", "", "| domain | train tokens | validation tokens |", "|---|---|---|"]
        for d, splits in sorted(m["domains"].items()):
            parts.append(f"| {d} | {splits.get('train', {}).get('tokens', 0):,} | "
                         f"{splits.get('validation', {}).get('tokens', 0):,} |")
        parts.append("")
    for mix in sorted((run / "mixture").glob("*/composition.md")):
        png = mix.with_suffix(".png")
        table = [line for line in mix.read_text().strip().splitlines() if not line.startswith("#")]
        parts += [f"## Mixture: {mix.parent.name}", "", "\n".join(table).strip(), ""]
        if png.exists():
            shutil.copyfile(png, out / f"composition-{mix.parent.name}.png")
            parts += [f"![composition {mix.parent.name}](composition-{mix.parent.name}.png)", ""]
    img = validation_plot(sorted(p for p in (run / "train").glob("*") if p.is_dir()), out) \
        if (run / "train").exists() else None
    if img:
        parts += ["## Validation loss per held-out domain, Stage-1 then Stage-2", "",
                  f"![validation]({img.name})", ""]
    for title, path in (("Per-domain perplexity (Table 6)", run / "eval/perplexity/table6.md"),
                        ("Contamination test (Table 8)", run / "eval/leakage/table8.md")):
        if path.exists():
            parts += [f"## {title}", "", path.read_text().strip(), ""]
    report = out / "REPORT.md"
    report.write_text("\n".join(parts) + "\n")
    return report


@dataclasses.dataclass(kw_only=True)
class ReportCommand:
    """What ``skypile report`` is told: where the chain wrote, where the report goes."""

    run: str = arg(metavar="DIR")
    """the folder the chain wrote (e.g. out/demo)"""
    output: str | None = arg(None, metavar="DIR")
    """default: RUN/report"""


def run(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0],
                                 epilog="Sections whose inputs are missing are left out.")
    cfglib.add_flags(ap, ReportCommand)
    try:
        cfg = cfglib.from_args(ReportCommand, ap.parse_args(argv))
        run_dir = Path(cfg.run)
        if not run_dir.is_dir():
            raise cfglib.ConfigError(f"{run_dir} is not a folder")
        path = build(run_dir, Path(cfg.output) if cfg.output else run_dir / "report")
    except (cfglib.ConfigError, OSError) as e:
        return fail(PROG, e)
    print(f"written: {path}")
    return 0
