"""The Markdown our own files use (data card, mixture composition) as HTML.

Headings, tables, bullet lists, fenced code, paragraphs; inline code, bold and links.
Everything is escaped first, so a file cannot inject markup into the report.
"""

from __future__ import annotations

import re
from html import escape

_CODE = re.compile(r"`([^`]+)`")
_BOLD = re.compile(r"\*\*([^*]+)\*\*")
_LINK = re.compile(r"\[([^\]]+)\]\(([^)\s]+)\)")


def inline(text: str) -> str:
    out = escape(text, quote=False)
    out = _CODE.sub(lambda m: f"<code>{m.group(1)}</code>", out)
    out = _BOLD.sub(r"<b>\1</b>", out)
    # links become their text and target as plain text: the report opens nothing by itself
    return _LINK.sub(r"\1 (\2)", out)


def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def _table(lines: list[str]) -> str:
    head, body = _cells(lines[0]), [_cells(line) for line in lines[2:]]
    aligns = ["r" if c.strip().endswith(":") else "" for c in _cells(lines[1])]
    th = "".join(f"<th>{inline(c)}</th>" for c in head)
    rows = []
    for row in body:
        tds = "".join(f'<td class="{a}">{inline(c)}</td>' if a else f"<td>{inline(c)}</td>"
                      for c, a in zip(row, aligns + [""] * len(row)))
        rows.append(f"<tr>{tds}</tr>")
    return f"<table><thead><tr>{th}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def _is_table(lines: list[str], i: int) -> bool:
    return (i + 1 < len(lines) and lines[i].lstrip().startswith("|")
            and re.fullmatch(r"\s*\|?[\s:|-]+\|?\s*", lines[i + 1]) is not None
            and "-" in lines[i + 1])


def _block(lines: list[str], i: int, shift: int) -> tuple[str, int]:
    """The HTML of the block starting at line ``i``, and the line after it."""
    line = lines[i]
    if line.startswith("```"):
        j = i + 1
        while j < len(lines) and not lines[j].startswith("```"):
            j += 1
        return f"<pre>{escape(chr(10).join(lines[i + 1:j]), quote=False)}</pre>", j + 1
    if m := re.match(r"(#{1,6})\s+(.*)", line):
        level = min(len(m.group(1)) + shift, 6)  # below the page's own headings
        return f"<h{level}>{inline(m.group(2))}</h{level}>", i + 1
    if _is_table(lines, i):
        j = i + 2
        while j < len(lines) and lines[j].lstrip().startswith("|"):
            j += 1
        return _table(lines[i:j]), j
    if re.match(r"\s*[-*]\s+", line):
        items, j = [], i
        while j < len(lines) and (re.match(r"\s*[-*]\s+", lines[j]) or
                                  (lines[j].startswith("  ") and lines[j].strip())):
            if re.match(r"\s*[-*]\s+", lines[j]):
                items.append(re.sub(r"\s*[-*]\s+", "", lines[j], count=1))
            else:
                items[-1] += " " + lines[j].strip()
            j += 1
        return "<ul>" + "".join(f"<li>{inline(it)}</li>" for it in items) + "</ul>", j
    j = i
    while j < len(lines) and lines[j].strip() and not _starts_block(lines, j):
        j += 1
    j = max(j, i + 1)
    return f"<p>{inline(' '.join(s.strip() for s in lines[i:j]))}</p>", j


def _starts_block(lines: list[str], i: int) -> bool:
    line = lines[i]
    return (line.startswith(("```", "#")) or _is_table(lines, i)
            or re.match(r"\s*[-*]\s+", line) is not None)


def to_html(text: str, shift: int = 1) -> str:
    """``shift``: levels added to each heading (# becomes h2 with the default)."""
    lines = text.splitlines()
    out, i = [], 0
    while i < len(lines):
        if not lines[i].strip():
            i += 1
            continue
        html, i = _block(lines, i, shift)
        out.append(html)
    return "\n".join(out)
