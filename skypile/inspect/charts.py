"""Charts as inline SVG and CSS bars: no script, no image file, no external resource."""

from __future__ import annotations

from html import escape

from skypile.inspect.sampling import Histogram

COLORS = {"kept": "#4c72b0", "rejected": "#c44e52", "docs": "#4c72b0", "all": "#4c72b0"}
W, H, PAD_L, PAD_B, PAD_T = 380, 150, 34, 26, 16


def _fmt(v: float) -> str:
    for unit, size in (("M", 1e6), ("k", 1e3)):
        if abs(v) >= size:
            return f"{v / size:.3g}{unit}"
    return f"{v:.3g}"


def histogram_svg(hist: Histogram, title: str, thresholds: list[tuple[float, str]] = ()) -> str:
    """Stacked bars per series (kept under rejected), threshold lines with their labels."""
    hist = hist.crop([v for v, _label in thresholds]) if hist.log else hist
    series = [s for s in ("kept", "rejected", "docs", "all") if s in hist.counts]
    stacks = [sum(hist.counts[s][i] for s in series) for i in range(hist.bins)]
    peak = max(stacks) or 1
    bw = (W - PAD_L - 4) / hist.bins
    plot_h = H - PAD_B - PAD_T
    parts = [f'<svg class="hist" viewBox="0 0 {W} {H}" width="{W}" height="{H}" role="img" '
             f'aria-label="{escape(title)}">', f"<title>{escape(title)}</title>",
             f'<text x="{PAD_L}" y="11" class="t">{escape(title)}</text>',
             f'<text x="2" y="{PAD_T + 8}" class="a">{peak}</text>',
             f'<line x1="{PAD_L}" y1="{H - PAD_B}" x2="{W - 4}" y2="{H - PAD_B}" class="axis"/>']
    for i in range(hist.bins):
        y = H - PAD_B
        for s in series:
            n = hist.counts[s][i]
            if not n:
                continue
            h = n / peak * plot_h
            y -= h
            parts.append(f'<rect x="{PAD_L + i * bw:.1f}" y="{y:.1f}" width="{max(bw - 1, 1):.1f}" '
                         f'height="{h:.1f}" fill="{COLORS[s]}"><title>{s}: {n} in '
                         f'[{_fmt(hist.edge(i))}, {_fmt(hist.edge(i + 1))})</title></rect>')
    for i, anchor in ((0, "start"), (hist.bins // 2, "middle"), (hist.bins, "end")):
        x = PAD_L + i * bw
        parts.append(f'<text x="{x:.1f}" y="{H - 8}" class="a" text-anchor="{anchor}">'
                     f'{_fmt(hist.edge(i))}</text>')
    for n, (value, label) in enumerate(thresholds):
        pos = hist.position(value)
        if not 0 <= pos <= hist.bins:
            continue
        x = PAD_L + pos * bw
        parts.append(f'<line x1="{x:.1f}" y1="{PAD_T}" x2="{x:.1f}" y2="{H - PAD_B}" '
                     f'class="cut"/><text x="{x + 2:.1f}" y="{PAD_T + 10 + 11 * n}" '
                     f'class="cutl">{escape(label)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def bar(parts: list[tuple[float, str]], title: str = "") -> str:
    """A horizontal CSS bar: (fraction of the full width, css class) per segment."""
    spans = "".join(f'<span class="{cls}" style="width:{max(f, 0) * 100:.2f}%"></span>'
                    for f, cls in parts if f > 0)
    return f'<div class="bar" title="{escape(title)}">{spans}</div>'


def legend() -> str:
    return ('<p class="legend"><span class="sw kept"></span>kept <span class="sw rejected">'
            '</span>rejected <span class="sw cutsw"></span>threshold in force</p>')
