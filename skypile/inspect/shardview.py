"""The shard set's part of a tokenize tab: tokens per domain and split, document lengths,
the mixture plans made from it, and its data card."""

from __future__ import annotations

import glob
import os
from html import escape

import numpy as np

from skypile.inspect import charts
from skypile.inspect.markdown import to_html
from skypile.inspect.sampling import Histogram
from skypile.tokens import shards


def tokens_table(manifest: dict) -> str:
    rows, total = [], 0
    for splits in manifest.get("domains", {}).values():
        total += sum(s.get("tokens", 0) for s in splits.values())
    for domain, splits in sorted(manifest.get("domains", {}).items()):
        for split, s in sorted(splits.items()):
            share = s.get("tokens", 0) / max(total, 1)
            rows.append(f'<tr data-domain="{escape(domain)}" data-split="{escape(split)}" '
                        f'data-tokens="{s.get("tokens", 0)}"><td>{escape(domain)}</td>'
                        f'<td>{escape(split)}</td><td class="r">{s.get("docs", 0):,}</td>'
                        f'<td class="r">{s.get("tokens", 0):,}</td><td class="r">'
                        f'{len(s.get("shards", []))}</td><td class="barcell">'
                        f'{charts.bar([(share, "kept")])} {share:.1%}</td></tr>')
    tok = manifest.get("tokenizer", {})
    return (f'<h2>Tokens per domain and split</h2><p class="mut">tokenizer '
            f'<code>{escape(str(tok.get("path", "")))}</code>, vocabulary '
            f'{tok.get("vocab_size", "?"):,}, sha256 <code>{escape(str(tok.get("sha256", ""))[:16])}'
            f'</code>...; {total:,} tokens in all.</p><table class="tokens"><thead><tr>'
            f'<th>domain</th><th>split</th><th class="r">documents</th><th class="r">tokens</th>'
            f'<th class="r">shards</th><th>share of tokens</th></tr></thead><tbody>{"".join(rows)}'
            f"</tbody></table>")


def _offsets(path: str) -> np.ndarray:
    """A shard's document index only (the tokens are not read)."""
    with open(path, "rb") as f:
        h = shards.parse_header(f.read(shards.HEADER_BYTES), path)
        f.seek(shards.HEADER_BYTES + h.n_tokens * h.dtype.itemsize)
        return np.frombuffer(f.read((h.n_docs + 1) * 8), dtype="<u8")


def length_histogram(folder: str, manifest: dict) -> str:
    """Tokens per document over every local shard, from the shards' indexes."""
    hist = Histogram(0.0, 6.0, 240, log=True)
    for splits in manifest.get("domains", {}).values():
        for s in splits.values():
            for entry in s.get("shards", []):
                path = os.path.join(folder, entry["path"])
                try:
                    lengths = np.diff(_offsets(path).astype(np.int64))
                except (OSError, shards.ShardError):
                    continue
                hist.add_many(lengths, "docs")
    if not hist.total():
        return ""
    return ("<h2>Document length</h2><p class=\"mut\">Tokens per document (EOS included), all "
            "domains and splits, log scale.</p>" +
            charts.histogram_svg(hist, f"tokens per document (n={hist.total():,})"))


def mixtures(folder: str) -> str:
    """Mixture plans made from this shard set (``skypile shards mixture`` outputs beside it)."""
    found = sorted(set(glob.glob(os.path.join(folder, "mixture", "*", "composition.md")) +
                       glob.glob(os.path.join(os.path.dirname(folder.rstrip("/")), "mixture", "*",
                                              "composition.md"))))
    parts = []
    for path in found:
        with open(path, encoding="utf-8") as f:
            body = to_html(f.read(), shift=2)
        name = os.path.basename(os.path.dirname(path))
        parts.append(f'<div class="mixture" data-mixture="{escape(name)}"><h3>{escape(name)} '
                     f'<span class="mut">({escape(path)})</span></h3>{body}</div>')
    return "<h2>Mixture plans</h2>" + "".join(parts) if parts else ""


def datacard(folder: str) -> str:
    path = os.path.join(folder, "DATACARD.md")
    if not os.path.exists(path):
        return ('<h2>Data card</h2><p class="mut">No DATACARD.md in this shard set (written by '
                'skypile tokenize since the data card was added).</p>')
    with open(path, encoding="utf-8") as f:
        return (f'<h2>Data card <span class="mut">({escape(path)})</span></h2>'
                f'<div class="card datacard">{to_html(f.read(), shift=2)}</div>')


def shard_sections(folder: str, manifest: dict) -> list[tuple[str, str, str]]:
    """(key, title, html) of each section, for the tab's contents line."""
    return [("tokens", "tokens per domain", tokens_table(manifest)),
            ("lengths", "document length", length_histogram(folder, manifest)),
            ("mixtures", "mixture plans", mixtures(folder)),
            ("datacard", "data card", datacard(folder))]
