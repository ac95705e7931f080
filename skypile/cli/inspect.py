"""``skypile inspect``: a browsable HTML report of a run (what was dropped, why, what was kept).

    skypile inspect --run out/demo            # every step of the chain, a tab each
    skypile inspect --run out/web --output /tmp/web-report

One folder, ``index.html`` with everything inline (no server, no script or font from
elsewhere), so it opens from disk or object storage, or as a ticket attachment. It works
on any output of ``skypile web``, ``dedup``, ``code`` or ``tokenize``, and on a run of the
chain; each output is streamed once, and the report's size is bounded whatever the corpus.
"""

from __future__ import annotations

import argparse
import dataclasses
import os

from skypile import config as cfglib
from skypile.cli.subcommands import arg, fail
from skypile.inspect.collect import Limits
from skypile.inspect.page import InspectError, build

PROG = "skypile inspect"


@dataclasses.dataclass(kw_only=True)
class InspectCommand:
    """What ``skypile inspect`` is told: which run, where the report goes, how much to show."""

    run: str = arg(metavar="DIR")
    """an output of skypile web / dedup / code / tokenize, or a run of the chain (out/demo)"""
    output: str | None = arg(None, metavar="DIR")
    """folder for index.html (default: RUN/inspect)"""
    samples: int = 20
    """rejects sampled per reason, and kept documents sampled"""
    full_text: int = 20_000
    """most characters of one sampled text in the report (less when many are shown)"""
    clusters: int = 10
    """largest near-duplicate clusters shown per dedup stage"""
    seed: int = 0
    """seed of the sampling hash: another seed shows another sample"""


def check(cfg: InspectCommand) -> None:
    for name in ("samples", "full_text", "clusters"):
        if getattr(cfg, name) < 1:
            raise cfglib.ConfigError(f"--{name.replace('_', '-')} must be at least 1")
    if not os.path.isdir(cfg.run):
        raise cfglib.ConfigError(f"--run {cfg.run} is not a folder")


def run(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0],
                                 epilog="Open OUTPUT/index.html in a browser; "
                                        "#tab=NAME&q=TEXT in its address opens a tab and a search.")
    cfglib.add_flags(ap, InspectCommand)
    try:
        cfg = cfglib.from_args(InspectCommand, ap.parse_args(argv))
        check(cfg)
        limits = Limits(samples=cfg.samples, full_text=cfg.full_text, clusters=cfg.clusters,
                        seed=cfg.seed)
        out = cfg.output or os.path.join(cfg.run, "inspect")
        path, steps = build(cfg.run, out, limits)
    except (cfglib.ConfigError, InspectError, OSError, ValueError) as e:
        return fail(PROG, e)
    size = os.path.getsize(path)
    print(f"written: {path} ({size / 1e6:.2f} MB; steps: {', '.join(s.name for s in steps)})")
    return 0
