"""``skypile tokenize`` at corpus size against the bare SentencePiece encoder, per core.

    python benchmarks/tokenize_throughput.py --tokenizer MODEL [--gb 1.0] [--workers 2]
        [--work /tmp/skypile-tokenize-bench] [--data DIR] [--profile MB]

The corpus (built once under ``--work``, never in the repository): the shared Chinese
Skywork domain texts, Chinese Wikipedia paragraphs (CMRC, DRCD) and English WikiText
paragraphs, replicated with small edits (each copy rotated at a random sentence, with a
few spans deleted and a few words from another document inserted, so no two copies
tokenize alike) until the JSONL files hold ``--gb`` GB, in files of about 64 MB.

- bare: SentencePiece's batch ``encode`` (1,000 texts a call, ``num_threads=1``) over the
  same texts, in this process pinned to one core; only the encode calls are timed (the
  texts are read before).
- skypile: ``skypile tokenize`` in a subprocess with ``--direct_running_mode
  multi_processing --direct_num_workers N``, wall time from launch to exit (start-up,
  reading, shuffles, shards, manifest all included); per core = tokens / wall / N. The CPU
  seconds the run used (all its processes) are shown next to it.
- ratio: skypile's tokens/s per core over the bare encoder's. Tokens are counted without
  EOS on both sides. With other work on the machine, wall times say little; the tokens per
  CPU-second of both (the bare encoder's thread, every process of the run) are printed
  next to them, and their ratio.

``--profile MB`` instead runs the pipeline in one process (in_memory) under cProfile on the
first MB of the corpus and prints the top functions by cumulative and own time.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import pstats
import random
import re
import resource
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from record import record  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
FILE_BYTES = 64 << 20
_SENTENCE_END = re.compile(r"(?<=[。！？.!?])\s*")


def sources(data: Path) -> list[tuple[str, str, str]]:
    """(id, text, lang) of every base document."""
    out = []
    for f in sorted((data / "skywork-eval").glob("zh_*.jsonl")):
        for i, line in enumerate(open(f, encoding="utf-8")):
            out.append((f"{f.stem}-{i}", json.loads(line)["text"], "zh"))
    for f in sorted((data / "wiki-zh").glob("*.jsonl")):
        for i, line in enumerate(open(f, encoding="utf-8")):
            out.append((f"{f.stem}-{i}", json.loads(line)["text"], "zh"))
    raw = (data / "wiki-en/wiki.test.raw").read_text(encoding="utf-8")
    for i, para in enumerate(raw.splitlines()):
        if len(para.strip()) > 50:
            out.append((f"en-{i}", para.strip(), "en"))
    return out


def edited(text: str, other: str, rng: random.Random) -> str:
    """A copy of ``text`` as copies differ: rotated at a sentence end, a few spans cut, a
    few words of ``other`` put in."""
    ends = [m.end() for m in _SENTENCE_END.finditer(text) if 0 < m.end() < len(text)]
    if ends:
        k = rng.choice(ends)
        text = text[k:] + text[:k]
    for _ in range(3):
        if len(text) > 40:
            at = rng.randrange(len(text) - 20)
            text = text[:at] + text[at + rng.randint(1, 20):]
        if len(other) > 10:
            a = rng.randrange(len(other) - 8)
            at = rng.randrange(len(text) + 1)
            text = text[:at] + other[a:a + rng.randint(2, 8)] + text[at:]
    return text


def build_corpus(data: Path, folder: Path, target_bytes: int) -> list[Path]:
    """JSONL files of about FILE_BYTES each under ``folder``, ``target_bytes`` in all;
    reused when a complete build of the same size is there."""
    stamp = folder / "COMPLETE"
    if stamp.exists() and stamp.read_text() == str(target_bytes):
        return sorted(folder.glob("part-*.jsonl"))
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("part-*.jsonl"):
        old.unlink()
    base = sources(data)
    files, written, copy, f, in_file = [], 0, 0, None, 0
    while written < target_bytes:
        rng = random.Random(copy)
        for i, (doc_id, text, lang) in enumerate(base):
            if f is None or in_file >= FILE_BYTES:
                if f is not None:
                    f.close()
                files.append(folder / f"part-{len(files):05d}.jsonl")
                f, in_file = open(files[-1], "w", encoding="utf-8"), 0
            body = text if copy == 0 else edited(text, base[(i * 7919 + copy) % len(base)][1], rng)
            line = json.dumps({"id": f"{doc_id}-c{copy}", "text": body,
                               "metadata": {"lang": lang}}, ensure_ascii=False) + "\n"
            n = len(line.encode("utf-8"))
            f.write(line)
            in_file += n
            written += n
            if written >= target_bytes:
                break
        copy += 1
    f.close()
    stamp.write_text(str(target_bytes))
    return files


def bare(model: str, files: list[Path]) -> tuple[int, float, float]:
    """(tokens, wall seconds, CPU seconds) of SentencePiece's batch encode, one thread,
    this process."""
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=model)
    tokens, seconds, cpu = 0, 0.0, 0.0
    for path in files:
        texts = [json.loads(line)["text"] for line in open(path, encoding="utf-8")]
        for start in range(0, len(texts), 1000):
            batch = texts[start:start + 1000]
            # process time: SentencePiece's batch call encodes on a thread of its own
            t0, c0 = time.perf_counter(), time.process_time()
            ids = sp.encode(batch, num_threads=1, return_type="numpy")
            seconds += time.perf_counter() - t0
            cpu += time.process_time() - c0
            tokens += sum(len(a) for a in ids)
    return tokens, seconds, cpu


def skypile(model: str, folder: Path, out: Path, workers: int) -> tuple[int, int, float, float]:
    """(tokens, documents, wall seconds, CPU seconds) of ``skypile tokenize``; tokens and
    documents from its manifest (EOS included)."""
    cmd = [sys.executable, "-m", "skypile.cli", "tokenize", "--input", str(folder / "part-*.jsonl"),
           "--tokenizer", model, "--output", str(out)]
    if workers > 1:
        cmd += ["--direct_running_mode", "multi_processing", "--direct_num_workers", str(workers)]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL,
                   env=dict(os.environ, SKYPILE_LOG="WARNING"))
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    m = json.loads((out / "manifest.json").read_text())
    splits = [s for d in m["domains"].values() for s in d.values()]
    return sum(s["tokens"] for s in splits), sum(s["docs"] for s in splits), wall, cpu


def profile(model: str, files: list[Path], mb: float, work: Path) -> None:
    """The pipeline in one process under cProfile, on the first ``mb`` MB of the corpus."""
    from skypile.pipelines.tokenize import run

    sample = work / "profile" / "sample.jsonl"
    sample.parent.mkdir(parents=True, exist_ok=True)
    left = int(mb * 1e6)
    with open(sample, "w", encoding="utf-8") as out:
        for path in files:
            for line in open(path, encoding="utf-8"):
                out.write(line)
                left -= len(line.encode("utf-8"))
                if left <= 0:
                    break
            if left <= 0:
                break
    prof = cProfile.Profile(time.process_time)  # CPU time: other load on the machine aside
    t0 = time.perf_counter()
    prof.enable()
    run(["--input", str(sample), "--tokenizer", model, "--output", str(work / "profile/out"),
         "--direct_running_mode", "in_memory"])
    prof.disable()
    print(f"profile: {mb} MB in {time.perf_counter() - t0:.1f}s")
    st = pstats.Stats(prof)
    st.sort_stats("cumulative").print_stats(35)
    st.sort_stats("tottime").print_stats(30)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tokenizer", required=True)
    ap.add_argument("--data", default=os.environ.get("SKYPILE_DATA", str(REPO.parent / "shared/data")))
    ap.add_argument("--work", default="/tmp/skypile-tokenize-bench", type=Path)
    ap.add_argument("--gb", type=float, default=1.0, help="corpus size, GB of JSONL")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--profile", type=float, default=0, metavar="MB")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    files = build_corpus(Path(args.data), args.work / "corpus", int(args.gb * 1e9))
    size = sum(p.stat().st_size for p in files)
    print(f"corpus: {len(files)} files, {size / 1e9:.2f} GB under {args.work / 'corpus'} "
          f"({time.perf_counter() - t0:.0f}s to build or find)")
    if args.profile:
        profile(args.tokenizer, files, args.profile, args.work)
        return 0
    out = args.work / "out"
    if out.exists():
        import shutil
        shutil.rmtree(out)
    tokens, docs, wall, cpu = skypile(args.tokenizer, args.work / "corpus", out, args.workers)
    print(f"skypile tokenize: {docs:,} documents, {tokens:,} tokens (EOS included) in "
          f"{wall:.1f}s wall, {cpu:.1f} CPU-s, {args.workers} workers")
    # pinned after the pipeline, whose workers must not inherit one core
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
    bare_tokens, bare_s, bare_cpu = bare(args.tokenizer, files)
    bare_rate = bare_tokens / bare_s
    text_tokens = tokens - docs  # the same count as the bare encoder's: no EOS
    ours = text_tokens / wall / args.workers
    print(f"bare encoder      {bare_rate:>14,.0f} tokens/s  (1 core; {bare_tokens:,} tokens, "
          f"EOS not included, in {bare_s:.1f}s; {bare_tokens / bare_cpu:,.0f} per CPU-second)")
    print(f"skypile tokenize  {ours:>14,.0f} tokens/s per core ({text_tokens / wall:,.0f}/s "
          f"over {args.workers} workers; {text_tokens / cpu:,.0f} per CPU-second; EOS not "
          f"included)")
    print(f"ratio             {ours / bare_rate:>14.2f}x the bare encoder per core (wall); "
          f"{text_tokens / cpu / (bare_tokens / bare_cpu):.2f}x per CPU-second")
    # every document is in the shards or a reject (a lost bundle would show here)
    lines = sum(1 for path in files for _ in open(path, "rb"))
    st = json.loads((out / "stats.json").read_text())["stages"]
    dropped = sum(st["tokenize"]["dropped"].values()) + sum(st["read"]["dropped"].values())
    if docs + dropped != lines:
        print(f"error: {lines:,} input documents, but {docs:,} in the shards and {dropped:,} "
              f"rejected", file=sys.stderr)
        return 1
    record("tokenize-vs-sentencepiece", "bare SentencePiece encode, 1 core", round(bare_rate),
           f"skypile tokenize, {args.workers} workers", round(ours), "tokens/s per core",
           note=f"{size / 1e9:.2f} GB JSONL, wall time; per CPU-second "
                f"{text_tokens / cpu / (bare_tokens / bare_cpu):.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
