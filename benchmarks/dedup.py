"""Deduplication quality on the labelled near-duplicate set, and scale on 100k documents.

    python benchmarks/dedup.py quality [--data DIR]
    python benchmarks/dedup.py scale [--docs 100000] [--workers 2] [--stages exact,minhash]

quality: ``skypile dedup`` (several stage sets) and, in the same process, the baseline a
new user would write: datasketch ``MinHashLSH(threshold=0.7, num_perm=128)`` on
whitespace-split word 5-grams without normalisation, first come first kept. Scores per
language over the set of removed documents: a removed document is right when another
member of its labelled cluster is kept; precision = right / removed, recall = right /
(documents - clusters), F1 their harmonic mean.

scale: replicates ``neardup/dev.jsonl`` to N documents, each copy perturbed (a share of
its words replaced: 2%, 10% or 50%, so some copies are near duplicates and some are not),
runs ``skypile dedup`` in a child process and reports docs/s and the peak resident memory
of the whole process tree (sampled from /proc every 0.2 s).
"""

from __future__ import annotations

import argparse
import collections
import gzip
import json
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
from record import record  # noqa: E402


def load_dev(data: Path):
    docs = [json.loads(line) for line in open(data / "neardup/dev.jsonl", encoding="utf-8")]
    labels = json.loads((data / "neardup/dev-labels.json").read_text())
    return docs, labels


def score(docs, labels, kept: set[str]) -> dict:
    out = {}
    for lang in sorted({d["lang"] for d in docs}):
        ids = [d["id"] for d in docs if d["lang"] == lang]
        clusters = collections.defaultdict(list)
        for i in ids:
            clusters[labels[i]].append(i)
        removed = [i for i in ids if i not in kept]
        right = sum(1 for i in removed if any(j in kept for j in clusters[labels[i]] if j != i))
        should = len(ids) - len(clusters)
        p = right / len(removed) if removed else 1.0
        r = right / should if should else 1.0
        merged = sum(1 for i in removed
                     if not any(j in kept for j in clusters[labels[i]] if j != i))
        out[lang] = {"removed": len(removed), "should": should, "precision": round(p, 4),
                     "recall": round(r, 4), "f1": round(2 * p * r / (p + r) if p + r else 0, 4),
                     "wrong_merges": merged}
    return out


def baseline_kept(docs) -> set[str]:
    from datasketch import MinHash, MinHashLSH

    lsh = MinHashLSH(threshold=0.7, num_perm=128)
    kept = set()
    for d in docs:
        words = d["text"].split()
        shingles = {" ".join(words[i:i + 5]) for i in range(max(1, len(words) - 4))}
        m = MinHash(num_perm=128)
        m.update_batch([s.encode("utf-8") for s in shingles])
        if not lsh.query(m):
            lsh.insert(d["id"], m)
            kept.add(d["id"])
    return kept


def kept_ids(out: Path) -> set[str]:
    kept = set()
    for f in (out / "docs").glob("*.jsonl.gz"):
        with gzip.open(f, "rt", encoding="utf-8") as fh:
            kept |= {json.loads(line)["id"] for line in fh}
    return kept


def run_skypile(inputs: list[str], out: Path, stages: str, extra: list[str] = ()) -> float:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "skypile.cli", "dedup", *sum((["--input", i] for i in inputs), []),
                    "--output", str(out), "--stages", stages, *extra], check=True,
                   stdout=subprocess.DEVNULL, env=dict(os.environ, SKYPILE_LOG="WARNING"))
    return time.perf_counter() - t0


def quality(args) -> None:
    data = Path(args.data)
    docs, labels = load_dev(data)
    rows = []
    t0 = time.perf_counter()
    rows.append(("datasketch MinHashLSH baseline", score(docs, labels, baseline_kept(docs)),
                 time.perf_counter() - t0))
    with tempfile.TemporaryDirectory() as tmp:
        for stages in ("exact,minhash", "exact,minhash,blocks", "exact,minhash,semantic,blocks"):
            out = Path(tmp) / stages.replace(",", "_")
            seconds = run_skypile([str(data / "neardup/dev.jsonl")], out, stages)
            rows.append((f"skypile dedup {stages}", score(docs, labels, kept_ids(out)), seconds))
    print(f"{'method':<44}{'lang':<5}{'removed':>8}{'should':>8}{'P':>8}{'R':>8}{'F1':>8}"
          f"{'wrong':>7}{'seconds':>9}")
    for name, res, seconds in rows:
        for lang, r in res.items():
            print(f"{name:<44}{lang:<5}{r['removed']:>8}{r['should']:>8}{r['precision']:>8.3f}"
                  f"{r['recall']:>8.3f}{r['f1']:>8.3f}{r['wrong_merges']:>7}{seconds:>9.1f}")
    base, ours = rows[0][1], rows[1][1]
    for lang in sorted(base):
        record(f"dedup-quality-f1-{lang}", "datasketch MinHashLSH(0.7), first kept", base[lang]["f1"],
               "skypile dedup exact,minhash", ours[lang]["f1"], "F1",
               note="neardup/dev.jsonl, labelled clusters")


def perturb(text: str, rate: float, rng: random.Random) -> str:
    """Replace a share of the words (of the characters, for CJK text) at random."""
    spaced = text.count(" ") > len(text) / 20
    units = text.split(" ") if spaced else list(text)
    for i in range(len(units)):
        if rng.random() < rate:
            units[i] = ("".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(5))
                        if spaced else chr(rng.randint(0x4E00, 0x9FA5)))
    return (" " if spaced else "").join(units)


def make_corpus(docs, n: int, path: Path, seed: int = 0) -> None:
    rng = random.Random(seed)
    with open(path, "w", encoding="utf-8") as f:
        for k in range(n):
            d = docs[k % len(docs)]
            copy = k // len(docs)
            text = d["text"] if copy == 0 else perturb(d["text"], rng.choice((0.02, 0.1, 0.5)), rng)
            f.write(json.dumps({"id": f"{d['id']}-{copy}", "text": text, "lang": d["lang"]},
                               ensure_ascii=False) + "\n")


def tree_rss(root: int) -> int:
    """Resident bytes of a process and all its descendants."""
    total, todo = 0, [root]
    while todo:
        pid = todo.pop()
        try:
            with open(f"/proc/{pid}/statm") as fh:
                total += int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
            for tid in os.listdir(f"/proc/{pid}/task"):  # children of every thread
                with open(f"/proc/{pid}/task/{tid}/children") as fh:
                    todo += [int(c) for c in fh.read().split()]
        except OSError:
            continue
    return total


def sample_peak_rss(proc: subprocess.Popen, every_s: float = 0.2) -> tuple[threading.Thread, list[int]]:
    """Start sampling the resident memory of ``proc``'s tree; join the thread for peak[0]."""
    peak = [0]

    def sample():
        while proc.poll() is None:
            peak[0] = max(peak[0], tree_rss(proc.pid))
            time.sleep(every_s)

    thread = threading.Thread(target=sample)
    thread.start()
    return thread, peak


def scale(args) -> None:
    data = Path(args.data)
    docs, _ = load_dev(data)
    with tempfile.TemporaryDirectory() as tmp:
        corpus = Path(tmp) / "corpus.jsonl"
        make_corpus(docs, args.docs, corpus)
        mb = corpus.stat().st_size / 1e6
        extra = []
        if args.workers > 1:
            extra = ["--direct_num_workers", str(args.workers),
                     "--direct_running_mode", "multi_processing"]
        cmd = [sys.executable, "-m", "skypile.cli", "dedup", "--input", str(corpus),
               "--output", str(Path(tmp) / "out"), "--stages", args.stages, *extra]
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True,
                                env=dict(os.environ, SKYPILE_LOG="WARNING"))
        sampler, peak = sample_peak_rss(proc)
        summary = proc.communicate()[0]
        sampler.join()
        seconds = time.perf_counter() - t0
        if proc.returncode:
            raise SystemExit(f"skypile dedup failed ({proc.returncode})")
        out = Path(tmp) / "out"
        lines = {kind: sum(1 for f in (out / kind).glob("*.jsonl.gz")
                           for _ in gzip.open(f)) for kind in ("docs", "rejects")}
    print(summary.strip())
    print(f"docs: {args.docs} ({mb:.0f} MB JSONL), stages {args.stages}, workers {args.workers}; "
          f"written: {lines['docs']} docs + {lines['rejects']} rejects "
          f"= {lines['docs'] + lines['rejects']}")
    print(f"wall {seconds:.1f}s, {args.docs / seconds:.0f} docs/s, "
          f"{args.docs / seconds / max(args.workers, 1):.0f} docs/s per worker, "
          f"peak RSS (process tree) {peak[0] / 2**30:.2f} GiB")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("what", choices=("quality", "scale"))
    ap.add_argument("--data", default=os.environ.get("SKYPILE_DATA", str(REPO.parent / "shared/data")))
    ap.add_argument("--docs", type=int, default=100_000)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--stages", default="exact,minhash")
    args = ap.parse_args(argv)
    quality(args) if args.what == "quality" else scale(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
