"""Tokenizer compression and speed: base model against its Chinese extension.

    python benchmarks/tokenizer.py --base BASE.model --extended EXT.model [--data DIR]

For the Skywork domain texts (Chinese) and WikiText (English), in one process:
Chinese characters per token and UTF-8 bytes per token (higher is better: fewer tokens for
the same text), and encoding throughput in MB of UTF-8 per second on one core (the
process is pinned to one CPU; the batch API is used, as the shard pipeline does).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from pathlib import Path

from skypile.tokens.tokenizer import Tokenizer

REPO = Path(__file__).resolve().parents[1]
_HAN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")


def corpora(data: Path) -> dict[str, list[str]]:
    zh = []
    for f in sorted((data / "skywork-eval").glob("zh_*.jsonl")):
        if f.name != "zh_news.jsonl":
            zh += [json.loads(line)["text"] for line in open(f, encoding="utf-8")]
    en = [p for p in (data / "wiki-en/wiki.test.raw").read_text(encoding="utf-8").split("\n\n")
          if p.strip()]
    return {"zh (Skywork domains)": zh, "en (WikiText-2 test)": en}


def measure(tok: Tokenizer, texts: list[str]) -> dict:
    ids = tok.encode_batch(texts)
    n_tokens = sum(map(len, ids))
    n_bytes = sum(len(t.encode("utf-8")) for t in texts)
    n_han = sum(len(_HAN.findall(t)) for t in texts)
    t0 = time.perf_counter()
    for _ in range(3):
        tok.encode_batch(texts)
    seconds = (time.perf_counter() - t0) / 3
    return {"tokens": n_tokens, "bytes_per_token": n_bytes / n_tokens,
            "han_per_token": n_han / n_tokens, "mb_per_s": n_bytes / 1e6 / seconds}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--base", required=True)
    ap.add_argument("--extended", required=True)
    ap.add_argument("--data", default=os.environ.get("SKYPILE_DATA", str(REPO.parent / "shared/data")))
    args = ap.parse_args(argv)
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
    os.environ["OMP_NUM_THREADS"] = "1"
    models = {"base": Tokenizer(args.base), "extended": Tokenizer(args.extended)}
    print(f"base {args.base} ({models['base'].vocab_size} pieces), "
          f"extended {args.extended} ({models['extended'].vocab_size} pieces), one core")
    print(f"{'corpus':<24}{'model':<10}{'tokens':>10}{'zh chars/tok':>14}{'bytes/tok':>11}{'MB/s':>8}")
    for name, texts in corpora(Path(args.data)).items():
        rows = {m: measure(tok, texts) for m, tok in models.items()}
        for m, r in rows.items():
            print(f"{name:<24}{m:<10}{r['tokens']:>10,}{r['han_per_token']:>14.2f}"
                  f"{r['bytes_per_token']:>11.2f}{r['mb_per_s']:>8.2f}")
        print(f"{'':<24}{'ext/base':<10}{rows['extended']['tokens'] / rows['base']['tokens']:>10.2f}x tokens")
    return 0


if __name__ == "__main__":
    sys.exit(main())
