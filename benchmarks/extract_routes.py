"""The extract stage with trafilatura as released against the same stage with our speed
changes (``skypile.text.extract._speed_up_trafilatura``), on the pages of the web benchmark.

    .venv/bin/python benchmarks/extract_routes.py [--data DIR] [--limit N]

Each variant runs in its own process, one after the other, on one core and in-process
(no sandbox, no Beam): every page of the 14 WARC files of ``benchmarks/vs_datatrove.py``
(the first record of each URL), through the language gate (en, zh) and trafilatura.
Reported: CPU seconds of each, their ratio, and whether every page gives the same text or
reject reason (a hash over all of them, and the count of pages that differ).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from record import record  # noqa: E402
from vs_datatrove import inputs  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def one_variant(data: Path, limit: int) -> dict:
    """Runs in the child: the extract stage over every page; CPU seconds and outcomes."""
    from skypile.classifiers.langid import LangId
    from skypile.document import Document
    from skypile.files.readers import read_file
    from skypile.files.records import ReaderOptions
    from skypile.jobs.scoring import LangIdConfig
    from skypile.text.extract import ExtractConfig, Extractor

    records, seen = [], set()
    for f in inputs(data):
        for r in read_file(str(f), ReaderOptions()):
            if hasattr(r, "body") and r.url not in seen:
                seen.add(r.url)
                records.append(r)
    records = records[:limit] if limit else records
    extractor = Extractor(ExtractConfig(sandbox=False), LangId(LangIdConfig()).top, ("en", "zh"))
    t0 = time.process_time()
    out = [extractor(r) for r in records]
    cpu = time.process_time() - t0
    outcomes = [[r.id, o.text if isinstance(o, Document) else "", getattr(o, "reason", "")]
                for r, o in zip(records, out)]
    return {"cpu_s": cpu, "pages": len(records), "outcomes": outcomes,
            "extracted": sum(isinstance(o, Document) for o in out)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default=os.environ.get("SKYPILE_DATA", str(REPO.parent / "shared/data")))
    ap.add_argument("--limit", type=int, default=0, help="only the first N pages (0: all)")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        json.dump(one_variant(Path(args.data), args.limit), sys.stdout)
        return 0
    results = {}
    for name, value in (("as released", "1"), ("speed changes", "0")):
        env = dict(os.environ, SKYPILE_TRAFILATURA_AS_RELEASED=value, SKYPILE_LOG="WARNING")
        out = subprocess.run([sys.executable, __file__, "--child", "--data", args.data,
                              "--limit", str(args.limit)], env=env, check=True,
                             capture_output=True, text=True)
        results[name] = json.loads(out.stdout)
        r = results[name]
        digest = hashlib.sha1(json.dumps(r["outcomes"]).encode()).hexdigest()[:16]
        print(f"{name:14s} {r['cpu_s']:7.1f} CPU s  {r['pages']} pages, {r['extracted']} extracted, "
              f"outcomes {digest}", flush=True)
    before, after = results["as released"], results["speed changes"]
    differ = sum(a != b for a, b in zip(before["outcomes"], after["outcomes"]))
    ratio = before["cpu_s"] / after["cpu_s"]
    print(f"extract stage: {ratio:.2f}x less CPU with the speed changes; pages that differ: {differ}")
    record("extract-speed-changes", "extract stage, trafilatura as released",
           round(before["pages"] / before["cpu_s"], 2), "extract stage, speed changes",
           round(after["pages"] / after["cpu_s"], 2), "pages per CPU second",
           note=f"{after['pages']} pages of the web benchmark, in-process, one core; "
                f"{differ} pages differ in text or reject reason")
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main())
