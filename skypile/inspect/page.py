"""The report: one self-contained ``index.html`` (inline style, script and SVG), a tab per
step of the run, a search box over the sampled documents.

Its size is bounded whatever the corpus: a fixed number of samples per reason, and a text
budget shared by every text shown (``TEXT_BUDGET`` characters), so each sample's full
text is cut to budget / samples (between ``MIN_TEXT`` and ``Limits.full_text``).
"""

from __future__ import annotations

import os
from html import escape

from skypile import __version__
from skypile.inspect import assets, sections, shardview
from skypile.inspect.collect import Limits, Step, collect

CHAIN = ("web", "code", "dedup", "shards", "tokenize")
"""Step folders in the demo chain's order; other folders holding stats.json follow by name."""
TEXT_BUDGET = 3_000_000
MIN_TEXT = 1_000


class InspectError(ValueError):
    """A folder that is not the output of a skypile pipeline, nor a run of the chain."""


def find_steps(run: str) -> list[tuple[str, str]]:
    """(tab name, folder) of every pipeline output in ``run``: itself, or its sub-folders."""
    run = run.rstrip("/") or "/"
    if not os.path.isdir(run):
        raise InspectError(f"{run} is not a folder")
    if os.path.exists(os.path.join(run, "stats.json")):
        return [(os.path.basename(os.path.abspath(run)) or "run", run)]
    subs = sorted(d for d in os.listdir(run)
                  if os.path.exists(os.path.join(run, d, "stats.json")))
    if not subs:
        raise InspectError(f"{run} holds no stats.json, nor do its sub-folders: give the output "
                           f"of skypile web, dedup, code or tokenize, or a run of the chain "
                           f"(e.g. out/demo)")
    order = {name: i for i, name in enumerate(CHAIN)}
    subs.sort(key=lambda d: (order.get(d, len(order)), d))
    return [(d, os.path.join(run, d)) for d in subs]


def _texts(step: Step) -> int:
    n = sum(len(items) for items in step.samples.values()) + len(step.kept)
    n += sum("raw" in item for items in step.samples.values() for item in items)
    n += sum("raw" in item for item in step.kept)
    n += sum(len(c["members"]) + 1 for rows in step.clusters.values() for c in rows)
    return n


def text_cap(steps: list[Step], limits: Limits) -> int:
    """Characters of full text per shown text, so that all of them fit the budget."""
    n = sum(_texts(s) for s in steps)
    return max(MIN_TEXT, min(limits.full_text, TEXT_BUDGET // max(n, 1)))


def tab(step: Step, cap: int) -> str:
    """One step's tab: a contents line, then each section that has something to show."""
    parts = [("funnel", "funnel", sections.funnel(step))]
    if step.manifest is not None:
        parts += shardview.shard_sections(step.folder, step.manifest)
    parts += [("rejects", "rejects by reason", sections.rejects(step, cap)),
              ("kept", "kept sample", sections.kept(step, cap)),
              ("scores", "score histograms", sections.histograms(step)),
              ("blocks", "recurring blocks", sections.blocks(step)),
              ("clusters", "near-duplicate clusters", sections.clusters(step, cap))]
    parts = [(sections.slug(key, step.name), title, html) for key, title, html in parts if html]
    toc = "".join(f'<a href="#tab={escape(step.name)}&amp;at={anchor}">{title}</a>'
                  for anchor, title, _html in parts)
    body = "".join(f'<div class="part" id="{anchor}">{html}</div>' for anchor, _t, html in parts)
    return (f'<section class="tab" id="tab-{sections.slug(step.name)}" '
            f'data-tab="{escape(step.name)}" data-kind="{escape(step.kind)}">'
            f'<h2 class="step">{escape(step.name)} <span class="mut">({escape(step.kind)} output: '
            f'<code>{escape(step.folder)}</code>)</span></h2><p class="toc">{toc}</p>{body}'
            f"</section>")


def render(run: str, steps: list[Step], limits: Limits) -> str:
    cap = text_cap(steps, limits)
    nav = "".join(f'<a href="#tab={escape(s.name)}" data-tab="{escape(s.name)}">'
                  f"{escape(s.name)}</a>" for s in steps)
    tabs = "".join(tab(s, cap) for s in steps)
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="generator" content="skypile inspect {escape(__version__)}">
<title>SkyPile inspect: {escape(run)}</title>
<style>{assets.CSS}</style>
<script>{assets.HEAD_JS}</script>
</head>
<body>
<header class="top">
<h1>SkyPile run: {escape(run)}</h1>
<nav class="tabs">{nav}</nav>
<input id="q" type="search" placeholder="search sampled documents by URL or text" aria-label="search">
<div id="search-box"><p id="nres"></p><ol id="results"></ol></div>
</header>
<pre id="js-errors"></pre>
<main>
<p class="mut">Written by skypile inspect {escape(__version__)}; samples drawn with seed
{limits.seed}, {limits.samples} per reason; full texts cut at {cap:,} characters.</p>
{tabs}
</main>
<script>{assets.JS}</script>
</body>
</html>
"""


def build(run: str, out: str, limits: Limits | None = None,
          storage_options: dict | None = None) -> tuple[str, list[Step]]:
    """Write ``out/index.html`` for the run or output folder ``run``; returns its path."""
    limits = limits or Limits()
    steps = [collect(name, folder, limits, storage_options) for name, folder in find_steps(run)]
    os.makedirs(out, exist_ok=True)
    path = os.path.join(out, "index.html")
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(render(run, steps, limits))
    os.replace(tmp, path)
    return path, steps
