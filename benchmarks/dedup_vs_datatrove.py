"""SkyPile's MinHash dedup against datatrove's MinHash pipeline on the replicated set.

    python benchmarks/dedup_vs_datatrove.py [--docs 100000] [--workers 2] [--files 8]

The corpus: ``neardup/dev.jsonl`` (1,202 documents in labelled clusters) replicated to
``--docs`` documents, each further copy with a share of its words (characters, for CJK)
replaced at random: 2%, 10% or 50%, chosen per copy. The ground truth is known by
construction, under two definitions, both reported:

- *strict*: a copy edited by 2% belongs to its source's cluster; 10% and 50% copies are
  distinct documents;
- *loose*: copies edited by 2% or 10% belong to their source's cluster (at 10% of words
  replaced, about 40% of word 5-grams survive: what our default threshold, 0.4, targets).

Both systems read the same JSONL files (``--files`` of them, so that ``--workers``
tasks share the work), with ``--workers`` workers each, in one run: datatrove through
``benchmarks/datatrove_minhash.py`` in its own venv (``make datatrove-venv``), SkyPile as
``skypile dedup --stages minhash`` on the multi-process DirectRunner. Reported: wall
time, docs/s per core, peak RSS of each process tree, and precision / recall / F1 of
the removed documents (benchmarks/dedup.py's scoring: a removed document is right when
another member of its true cluster is kept).
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from dedup import load_dev, perturb, sample_peak_rss, score  # noqa: E402
from record import record  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def make_corpus(docs, labels, n: int, folder: Path, files: int, seed: int = 0):
    """Writes ``files`` JSONL files; returns {definition: {id: cluster}}."""
    rng = random.Random(seed)
    truth = {"strict": {}, "loose": {}}
    outs = [open(folder / f"part-{i:02d}.jsonl", "w", encoding="utf-8") for i in range(files)]
    try:
        for k in range(n):
            d = docs[k % len(docs)]
            copy = k // len(docs)
            rate = 0.0 if copy == 0 else rng.choice((0.02, 0.1, 0.5))
            text = d["text"] if copy == 0 else perturb(d["text"], rate, rng)
            doc_id = f"{d['id']}-{copy}"
            source = labels[d["id"]]
            truth["strict"][doc_id] = source if rate <= 0.02 else doc_id
            truth["loose"][doc_id] = source if rate <= 0.1 else doc_id
            outs[k % files].write(json.dumps({"id": doc_id, "text": text, "lang": d["lang"]},
                                             ensure_ascii=False) + "\n")
    finally:
        for f in outs:
            f.close()
    return truth


def kept_ids(folder: Path) -> set[str]:
    kept = set()
    for f in sorted(folder.glob("*.jsonl*")):
        opener = gzip.open if f.name.endswith(".gz") else open
        with opener(f, "rt", encoding="utf-8") as fh:
            kept |= {json.loads(line)["id"] for line in fh}
    return kept


def run(cmd: list[str], env: dict, log: Path) -> tuple[float, int]:
    t0 = time.perf_counter()
    with open(log, "w") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env)
        sampler, peak = sample_peak_rss(proc)
        proc.wait()
        sampler.join()
    if proc.returncode:
        raise SystemExit(f"failed ({proc.returncode}): {' '.join(cmd)}\n{log.read_text()[-3000:]}")
    return time.perf_counter() - t0, peak[0]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default=os.environ.get("SKYPILE_DATA", str(REPO.parent / "shared/data")))
    ap.add_argument("--docs", type=int, default=100_000)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--files", type=int, default=8)
    ap.add_argument("--datatrove-python", default=str(REPO / ".cache/datatrove-venv/bin/python"))
    ap.add_argument("--no-record", action="store_true", help="do not write the ratio-table row")
    args = ap.parse_args(argv)
    if not Path(args.datatrove_python).exists():
        print(f"error: no datatrove venv at {args.datatrove_python}: run `make datatrove-venv`",
              file=sys.stderr)
        return 2
    docs, labels = load_dev(Path(args.data))
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        corpus = tmp / "corpus"
        corpus.mkdir()
        truth = make_corpus(docs, labels, args.docs, corpus, args.files)
        mb = sum(f.stat().st_size for f in corpus.iterdir()) / 1e6
        print(f"{args.docs} documents ({mb:.0f} MB) in {args.files} files; {args.workers} workers each",
              flush=True)
        dt_env = dict(os.environ, PYTHONWARNINGS="ignore", HF_HUB_OFFLINE="1")
        s, peak = run([args.datatrove_python, str(REPO / "benchmarks/datatrove_minhash.py"),
                       "--inputs", str(corpus), "--out", str(tmp / "dt"),
                       "--workers", str(args.workers)], dt_env, tmp / "dt.log")
        rows["datatrove MinHash"] = (s, peak, kept_ids(tmp / "dt/final"))
        print(f"datatrove: {s:.1f}s", flush=True)
        s, peak = run([sys.executable, "-m", "skypile.cli", "dedup", "--input", str(corpus),
                       "--output", str(tmp / "ours"), "--stages", "minhash",
                       "--direct_running_mode", "multi_processing",
                       "--direct_num_workers", str(args.workers)],
                      dict(os.environ, SKYPILE_LOG="WARNING"), tmp / "ours.log")
        rows["skypile dedup minhash"] = (s, peak, kept_ids(tmp / "ours/docs"))
        print(f"skypile: {s:.1f}s", flush=True)

    all_docs = [{"id": i, "lang": "all"} for i in truth["strict"]]
    print("\n| system | wall s | docs/s per core | peak RSS GiB | kept | P strict | R strict | "
          "F1 strict | P loose | R loose | F1 loose |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    figures = {}
    for name, (s, peak, kept) in rows.items():
        per_core = args.docs / s / args.workers
        f = {d: score(all_docs, truth[d], kept)["all"] for d in ("strict", "loose")}
        figures[name] = (per_core, peak, f)
        print(f"| {name} | {s:.1f} | {per_core:.0f} | {peak / 2**30:.2f} | {len(kept)} | "
              + " | ".join(f"{f[d]['precision']:.3f} | {f[d]['recall']:.3f} | {f[d]['f1']:.3f}"
                           for d in ("strict", "loose")) + " |")
    (dt_rate, dt_peak, dt_f), (our_rate, our_peak, our_f) = figures.values()
    print(f"speed ratio skypile / datatrove: {our_rate / dt_rate:.2f}x; "
          f"peak RSS ratio {our_peak / dt_peak:.2f}x")
    if not args.no_record:
        record("dedup-vs-datatrove-speed", "datatrove MinHash", round(dt_rate, 1),
               "skypile dedup --stages minhash", round(our_rate, 1), "docs/s per core",
               note=f"{args.docs} docs, {args.workers} workers each")
        record("dedup-vs-datatrove-f1-loose", "datatrove MinHash", dt_f["loose"]["f1"],
               "skypile dedup --stages minhash", our_f["loose"]["f1"], "F1",
               note="ground truth: copies with <=10% of words replaced are duplicates")
        record("dedup-vs-datatrove-f1-strict", "datatrove MinHash", dt_f["strict"]["f1"],
               "skypile dedup --stages minhash", our_f["strict"]["f1"], "F1",
               note="ground truth: copies with <=2% of words replaced are duplicates")
    return 0


if __name__ == "__main__":
    sys.exit(main())
