"""Same input, same output: ``skypile dedup`` on the multi-process runner, three times, and
once in-process, must keep the same documents with the same bytes.

    python benchmarks/determinism.py [--docs 100000] [--runs 3] [--workers 2]
                                     [--stages exact,minhash] [--data DIR]

The input is ``benchmarks/dedup.py``'s replicated near-duplicate set (``neardup/dev.jsonl``
copied to N documents, each copy perturbed). Each run writes its own output; per run the
table gives the documents kept and rejected, a SHA-256 of the sorted kept ids, of the sorted
kept documents (every field, metadata included) and of the sorted rejects. Exit status 1
when any two runs differ, with the first ids that differ.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from dedup import REPO, load_dev, make_corpus  # noqa: E402  (one generator for every benchmark)


def run(corpus: Path, out: Path, stages: str, workers: int) -> float:
    """One ``skypile dedup`` run into ``out``; its wall time. ``workers`` 0 = in-process."""
    extra = []
    if workers:
        extra = ["--direct_running_mode", "multi_processing",
                 "--direct_num_workers", str(workers)]
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "skypile.cli", "dedup", "--input", str(corpus),
                           "--output", str(out), "--stages", stages, *extra],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          env=dict(os.environ, SKYPILE_LOG="WARNING"))
    if proc.returncode:
        raise SystemExit(f"skypile dedup failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return time.perf_counter() - t0


def lines(folder: Path) -> list[str]:
    """Every JSON line under ``folder``, each re-serialised with sorted keys, sorted."""
    out = []
    for f in sorted(folder.glob("*.jsonl.gz")):
        with gzip.open(f, "rt", encoding="utf-8") as fh:
            out += [json.dumps(json.loads(line), sort_keys=True, ensure_ascii=False)
                    for line in fh]
    return sorted(out)


def digest(items: list[str]) -> str:
    h = hashlib.sha256()
    for item in items:
        h.update(item.encode("utf-8", "surrogatepass") + b"\n")
    return h.hexdigest()[:16]


def summarise(out: Path) -> dict:
    docs, rejects = lines(out / "docs"), lines(out / "rejects")
    ids = sorted(json.loads(d)["id"] for d in docs)
    return {"kept": len(docs), "rejected": len(rejects), "ids": ids,
            "ids_sha": digest(ids), "docs_sha": digest(docs), "rejects_sha": digest(rejects)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default=os.environ.get("SKYPILE_DATA",
                                                     str(REPO.parent / "shared/data")))
    ap.add_argument("--docs", type=int, default=100_000)
    ap.add_argument("--runs", type=int, default=3, help="multi-process runs")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--stages", default="exact,minhash")
    args = ap.parse_args(argv)
    docs, _ = load_dev(Path(args.data))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        corpus = Path(tmp) / "corpus.jsonl"
        make_corpus(docs, args.docs, corpus)
        plan = [(f"multi_processing x{args.workers} #{i + 1}", args.workers)
                for i in range(args.runs)] + [("in-process", 0)]
        for name, workers in plan:
            out = Path(tmp) / f"out{len(rows)}"
            seconds = run(corpus, out, args.stages, workers)
            rows.append((name, seconds, summarise(out)))
            print(f"done: {name} in {seconds:.0f}s", file=sys.stderr)
    print(f"docs: {args.docs}, stages {args.stages}\n")
    print("| run | seconds | kept | rejected | kept ids | kept docs | rejects |")
    print("|---|---:|---:|---:|---|---|---|")
    for name, seconds, s in rows:
        print(f"| {name} | {seconds:.0f} | {s['kept']} | {s['rejected']} | {s['ids_sha']} | "
              f"{s['docs_sha']} | {s['rejects_sha']} |")
    first = rows[0][2]
    same = all((s["ids_sha"], s["docs_sha"], s["rejects_sha"])
               == (first["ids_sha"], first["docs_sha"], first["rejects_sha"])
               for _, _, s in rows)
    if same:
        print(f"\nidentical: all {len(rows)} runs kept the same {first['kept']} documents, "
              f"byte for byte")
        return 0
    for name, _, s in rows[1:]:
        a, b = set(first["ids"]), set(s["ids"])
        if a != b:
            print(f"\n{name} vs {rows[0][0]}: only in the first {sorted(a - b)[:10]}, "
                  f"only in this one {sorted(b - a)[:10]}")
    print("\nDIFFERENT outputs (see the table)")
    return 1


if __name__ == "__main__":
    sys.exit(main())
