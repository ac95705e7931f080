"""Extraction quality and speed: SkyPile's extract stage against plain trafilatura.

    python benchmarks/extraction.py [--data DIR] [--json OUT.json]

For every page of ``extraction-en`` and ``extraction-zh`` (raw bytes, as crawled), in the
same process and run:
  - plain:      ``trafilatura.extract(raw_bytes)`` with its defaults (what a new user writes)
  - plain+dec:  ``trafilatura.extract(text)`` on the text our HTTP layer decoded (isolates
                the charset handling from the rest)
  - skypile:    our extract stage as the pipeline runs it (decode, guards, sandboxed
                trafilatura in precision mode, clean-up)
Scores are bag-of-words for English (lower-cased ``\\w+`` tokens) and bag-of-characters
for Chinese (every non-space character), as precision / recall / F1 of the multiset
overlap with the ground truth, averaged over pages (an empty output scores 0).
"""

from __future__ import annotations

import argparse
import collections
import gzip
import json
import logging
import os
import platform
import re
import sys
import time
from pathlib import Path

import trafilatura

from skypile.document import Document
from skypile.text.extract import ExtractConfig, Extractor
from skypile.files.payload import decode_text
from skypile.files.readers import RawRecord

REPO = Path(__file__).resolve().parents[1]


def bag(text: str, lang: str) -> collections.Counter:
    if lang == "en":
        return collections.Counter(re.findall(r"\w+", text.lower()))
    return collections.Counter(c for c in text if not c.isspace())


def prf(pred: collections.Counter, gold: collections.Counter) -> tuple[float, float, float]:
    overlap = sum((pred & gold).values())
    p = overlap / sum(pred.values()) if pred else 0.0
    r = overlap / sum(gold.values()) if gold else 0.0
    return p, r, (2 * p * r / (p + r) if p + r else 0.0)


def load_pages(data: Path, lang: str) -> list[tuple[str, bytes, str]]:
    folder = data / f"extraction-{lang}"
    truth = json.loads((folder / "ground-truth.json").read_text(encoding="utf-8"))
    pages = []
    for key, value in sorted(truth.items()):
        [path] = list((folder / "html").glob(f"{key}.html*"))
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
        pages.append((key, raw, value["articleBody"]))
    return pages


def plain(raw: bytes) -> str:
    return trafilatura.extract(raw) or ""


def plain_decoded(raw: bytes) -> str:
    return trafilatura.extract(decode_text(raw)[0]) or ""


def evaluate(name: str, fn, pages, lang: str) -> dict:
    scores = []
    t0 = time.perf_counter()
    for _key, raw, gold in pages:
        scores.append(prf(bag(fn(raw), lang), bag(gold, lang)))
    seconds = time.perf_counter() - t0
    n = len(pages)
    p, r, f = (sum(s[i] for s in scores) / n for i in range(3))
    return {"method": name, "lang": lang, "pages": n, "precision": round(p, 4),
            "recall": round(r, 4), "f1": round(f, 4), "pages_per_s": round(n / seconds, 2)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default=os.environ.get("SKYPILE_DATA", str(REPO.parent / "shared/data")))
    ap.add_argument("--json", default=None, help="also write the rows as JSON here")
    args = ap.parse_args(argv)
    logging.disable(logging.WARNING)  # trafilatura warns on every odd page
    data = Path(args.data)
    extractor = Extractor(ExtractConfig())

    def ours(raw: bytes) -> str:
        out = extractor(RawRecord(id="b", url="", source="bench", kind="html", body=raw))
        return out.text if isinstance(out, Document) else ""

    ours(b"<html><body><p>warm up the sandbox process</p></body></html>")
    rows = []
    for lang in ("en", "zh"):
        pages = load_pages(data, lang)
        for name, fn in (("plain trafilatura", plain), ("plain on our decoding", plain_decoded),
                         ("skypile extract", ours)):
            rows.append(evaluate(name, fn, pages, lang))
    extractor.close()
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, python {platform.python_version()}, "
          f"trafilatura {trafilatura.__version__}")
    print(f"{'method':<24}{'lang':<6}{'pages':>6}{'P':>8}{'R':>8}{'F1':>8}{'pages/s':>10}"
          f"{'F1 vs plain':>13}{'speed vs plain':>16}")
    base = {r["lang"]: r for r in rows if r["method"] == "plain trafilatura"}
    for r in rows:
        b = base[r["lang"]]
        print(f"{r['method']:<24}{r['lang']:<6}{r['pages']:>6}{r['precision']:>8.3f}"
              f"{r['recall']:>8.3f}{r['f1']:>8.3f}{r['pages_per_s']:>10.1f}"
              f"{r['f1'] - b['f1']:>+13.3f}{r['pages_per_s'] / b['pages_per_s']:>15.2f}x")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
