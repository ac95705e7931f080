"""Tokenize throughput and shard read throughput.

    python benchmarks/shards.py --tokenizer MODEL [--data DIR] [--batch 8] [--seq 2048]

- tokenize: ``skypile tokenize`` (the Beam pipeline, in-process DirectRunner, one worker)
  over the Chinese Skywork domain texts and the Chinese / English Wikipedia text, as
  tokens per second of wall time, next to the bare encoder on the same texts in the same
  process (the ratio is the pipeline's overhead);
- read: random training batches (batch x sequence tokens, random windows across all
  shards, memory-mapped) per second, on one process, warm page cache.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from skypile.tokens.shards import ShardSet
from skypile.tokens.tokenizer import Tokenizer

REPO = Path(__file__).resolve().parents[1]


def corpus(data: Path, path: Path) -> int:
    n = 0
    with open(path, "w", encoding="utf-8") as out:
        for f in sorted((data / "skywork-eval").glob("zh_*.jsonl")):
            for i, line in enumerate(open(f, encoding="utf-8")):
                out.write(json.dumps({"id": f"{f.stem}-{i}", "text": json.loads(line)["text"],
                                      "metadata": {"lang": "zh"}}, ensure_ascii=False) + "\n")
                n += 1
        for f in sorted((data / "wiki-zh").glob("*.jsonl")):
            for i, line in enumerate(open(f, encoding="utf-8")):
                out.write(json.dumps({"id": f"{f.stem}-{i}", "text": json.loads(line)["text"],
                                      "metadata": {"lang": "zh"}}, ensure_ascii=False) + "\n")
                n += 1
        for i, para in enumerate((data / "wiki-en/wiki.test.raw").read_text(encoding="utf-8").splitlines()):
            if len(para.strip()) > 50:
                out.write(json.dumps({"id": f"en-{i}", "text": para.strip(),
                                      "metadata": {"lang": "en"}}) + "\n")
                n += 1
    return n


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tokenizer", required=True)
    ap.add_argument("--data", default=os.environ.get("SKYPILE_DATA", str(REPO.parent / "shared/data")))
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=2048)
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        docs = Path(tmp) / "docs.jsonl"
        n_docs = corpus(Path(args.data), docs)
        mb = docs.stat().st_size / 1e6
        texts = [json.loads(line)["text"] for line in open(docs, encoding="utf-8")]
        tok = Tokenizer(args.tokenizer)
        t0 = time.perf_counter()
        n_tokens = sum(map(len, tok.encode_batch(texts)))
        bare = time.perf_counter() - t0
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "skypile.cli", "tokenize", "--input", str(docs),
                        "--tokenizer", args.tokenizer, "--output", str(Path(tmp) / "shards"),
                        "--shards.target_tokens=2000000"], check=True, stdout=subprocess.DEVNULL,
                       env=dict(os.environ, SKYPILE_LOG="WARNING"))
        wall = time.perf_counter() - t0
        print(f"corpus: {n_docs:,} documents, {mb:.1f} MB, {n_tokens:,} tokens "
              f"(tokenizer {tok.vocab_size:,} pieces)")
        print(f"bare encoder      {n_tokens / bare:>12,.0f} tokens/s  (1 core)")
        print(f"skypile tokenize  {n_tokens / wall:>12,.0f} tokens/s  (wall, 1 worker, start-up "
              f"included) = {bare / wall:.2f}x the bare encoder")

        s = ShardSet(str(Path(tmp) / "shards"))
        arrays = [s.load(e)[0] for d in s.domains() for e in s.entries(d, "train")]
        sizes = np.array([len(a) for a in arrays], dtype=np.float64)
        rng = np.random.default_rng(0)
        need = args.seq + 1
        pick = sizes >= need
        arrays = [a for a, ok in zip(arrays, pick) if ok]
        probs = sizes[pick] / sizes[pick].sum()
        n_batches, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < 3.0:
            batch = np.empty((args.batch, need), dtype=np.int64)
            for row, k in enumerate(rng.choice(len(arrays), size=args.batch, p=probs)):
                start = rng.integers(0, len(arrays[k]) - need + 1)
                batch[row] = arrays[k][start:start + need]
            n_batches += 1
        seconds = time.perf_counter() - t0
        print(f"random batches    {n_batches / seconds:>12,.0f} batches/s of {args.batch} x "
              f"{args.seq} tokens ({n_batches / seconds * args.batch * args.seq / 1e6:,.0f} M tokens/s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
