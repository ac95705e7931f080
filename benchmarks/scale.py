"""Memory and time as the corpus grows: per-worker peak RSS and wall time of ``skypile dedup``
and ``skypile web`` on the multi-process runner, at several corpus sizes.

    python benchmarks/scale.py [--docs 25000,50000,100000] [--workers 2]
                               [--what dedup,web,webtext] [--data DIR]

- dedup: ``skypile dedup --stages blocks,exact,minhash`` on ``benchmarks/dedup.py``'s
  replicated near-duplicate set (``neardup/dev.jsonl`` copied to N documents, each copy
  perturbed).
- web: ``skypile web`` (default stages: extract, exact, minhash, blocks) on the
  ``docs-warc`` pages replicated to N under distinct URLs (``?mirror=<copy>``), each copy
  with small text edits (a sentence added, a few words changed), written as WARC files.
- webtext: web's dedup stages without extraction, ``skypile dedup --stages
  exact,minhash,blocks`` on the docs-warc pages extracted once and copied as JSONL text
  with the same kind of edits: the part of a web run where its worker peak comes, in
  about a quarter of the time.

Both run with ``--direct_running_mode multi_processing --direct_num_workers W``. Peak RSS
is the kernel's high-water mark (``VmHWM`` in ``/proc/<pid>/status``) of every process of
the run (found by a tag in their inherited environment), polled every 0.2 s: the launcher
apart, and the largest of the worker processes (Beam's SDK harnesses). The table also gives the growth from the smallest size,
and the largest per-key groups the run reports in ``stats.json`` (largest URL and content
group of ``exact``, largest LSH bucket and cluster of ``minhash``): the keys a worker
streams, never lists. The pipelines have no side input that grows with the corpus.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from dedup import REPO, load_dev, make_corpus  # noqa: E402

sys.path.insert(0, str(REPO / "tests"))
from warcgen import gz, record  # noqa: E402  (the tests' WARC writer)


# ---- memory of a process tree ------------------------------------------------------------

def _hwm_and_cmd(pid: int) -> tuple[int, str] | None:
    """(peak resident bytes so far, command line) of a live process."""
    try:
        with open(f"/proc/{pid}/status") as fh:
            hwm = next((int(line.split()[1]) * 1024 for line in fh if line.startswith("VmHWM:")), 0)
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            cmd = fh.read().replace(b"\0", b" ").decode("utf-8", "replace")
        return hwm, cmd
    except OSError:
        return None


class TreePeaks(threading.Thread):
    """Polls the run's processes; ``peaks`` maps each pid ever seen to (peak bytes, command).

    A process belongs to the run when its environment carries the run's tag: Beam's worker
    processes inherit it, whichever thread started them and whoever their parent is now.
    """

    def __init__(self, proc: subprocess.Popen, tag: str, every_s: float = 0.2):
        super().__init__(daemon=True)
        self.proc, self.tag, self.every_s, self.peaks = proc, tag.encode(), every_s, {}

    def _tagged(self) -> list[int]:
        pids = []
        for name in os.listdir("/proc"):
            if not name.isdigit():
                continue
            try:
                with open(f"/proc/{name}/environ", "rb") as fh:
                    if self.tag in fh.read():
                        pids.append(int(name))
            except OSError:
                continue
        return pids

    def run(self):
        while self.proc.poll() is None:
            for pid in set(self._tagged()) | {self.proc.pid}:
                seen = _hwm_and_cmd(pid)
                if seen:
                    old = self.peaks.get(pid, (0, ""))[0]
                    self.peaks[pid] = (max(old, seen[0]), seen[1])
            time.sleep(self.every_s)

    def split(self) -> tuple[int, int, int]:
        """(launcher peak, largest worker peak, worker processes seen), in bytes."""
        launcher = self.peaks.get(self.proc.pid, (0, ""))[0]
        workers = [b for pid, (b, cmd) in self.peaks.items()
                   if pid != self.proc.pid and "python" in cmd]
        return launcher, max(workers, default=0), len(workers)


def run_measured(cmd: list[str]) -> dict:
    t0 = time.perf_counter()
    tag = f"SKYPILE_BENCH_RUN={uuid.uuid4().hex}"
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ, SKYPILE_LOG="WARNING",
                                     SKYPILE_BENCH_RUN=tag.split("=")[1]))
    peaks = TreePeaks(proc, tag)
    peaks.start()
    out, err = proc.communicate()
    peaks.join()
    seconds = time.perf_counter() - t0
    if proc.returncode:
        raise SystemExit(f"{' '.join(cmd[:4])} failed ({proc.returncode}):\n{err[-3000:]}")
    launcher, worker, n = peaks.split()
    return {"seconds": seconds, "launcher": launcher, "worker": worker, "workers": n,
            "summary": out}


# ---- inputs ------------------------------------------------------------------------------

_WORDS = re.compile(rb">([^<>]{40,})<")


def edit_page(response: bytes, copy: int, rng: random.Random) -> bytes:
    """A small text edit of a raw HTTP response: a sentence added at the start of the
    page's body and one word changed in each of up to three runs of text; the
    Content-Length header follows."""
    head, sep, body = response.partition(b"\r\n\r\n")
    note = (b"<p>Mirror %d of this page, revision %d, kept for readers of the archive.</p>"
            % (copy, rng.randint(0, 10**6)))
    body = re.sub(rb"(<body[^>]*>)", lambda m: m.group(1) + note, body, count=1)
    texts = list(_WORDS.finditer(body))
    chosen = sorted(rng.sample(range(len(texts)), min(3, len(texts))), reverse=True)
    for j in chosen:  # last first: earlier offsets stay valid
        m = texts[j]
        words = m.group(1).split(b" ")
        words[rng.randrange(len(words))] = b"edited%d" % rng.randint(0, 999)
        body = body[:m.start(1)] + b" ".join(words) + body[m.end(1):]
    head = re.sub(rb"(?im)^content-length:[^\r\n]*", b"Content-Length: %d" % len(body), head)
    return head + sep + body


def source_pages(data: Path) -> list[tuple[str, bytes]]:
    """(URL, raw HTTP response) of every docs-warc page."""
    from skypile.files.readers import ReaderOptions, read_file

    pages = []
    for path in sorted((data / "docs-warc").glob("*.warc.gz")):
        for rec in read_file(str(path), ReaderOptions()):
            if getattr(rec, "kind", "") == "http" and rec.url:
                body = rec.body if isinstance(rec.body, bytes) else rec.body.encode("utf-8")
                pages.append((rec.url, body))
    return pages


def mirror_url(url: str, copy: int) -> str:
    """The URL of a page's ``copy``-th replica: a distinct URL (``mirror=<copy>`` added)."""
    return f"{url}{'&' if '?' in url else '?'}mirror={copy}"


def make_warcs(pages: list[tuple[str, bytes]], n: int, folder: Path, files: int = 8,
               seed: int = 0) -> None:
    """``n`` pages (copy 0 as it is, later copies under ``?mirror=c`` with small edits)
    in ``files`` WARC files of one gzip member per record."""
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    outs = [open(folder / f"pages-{i:03d}.warc.gz", "wb") for i in range(files)]
    try:
        for k in range(n):
            url, body = pages[k % len(pages)]
            copy = k // len(pages)
            if copy:
                url = mirror_url(url, copy)
                body = edit_page(body, copy, rng)
            outs[k % files].write(gz(record(body, url=url)))
    finally:
        for f in outs:
            f.close()


def extracted_pages(pages: list[tuple[str, bytes]]) -> list[dict]:
    """The docs-warc pages extracted once (our extractor, default settings): the text
    documents of ``webtext``."""
    from skypile.files.readers import RawRecord
    from skypile.pipelines.web import make_extractor
    from skypile.text.extract import ExtractConfig

    extract = make_extractor(ExtractConfig())
    docs = []
    for i, (url, body) in enumerate(pages):
        doc = extract(RawRecord(f"page-{i:05d}", url, "docs-warc", "http", body))
        if getattr(doc, "text", "") and not hasattr(doc, "reason"):
            docs.append({"id": doc.id, "url": url, "text": doc.text})
    return docs


def make_webtext(docs: list[dict], n: int, path: Path, seed: int = 0) -> None:
    """``n`` text documents: copy 0 as extracted, later copies under ``?mirror=c`` with the
    same kind of edit as :func:`edit_page` (a sentence first, three words changed)."""
    rng = random.Random(seed)
    with open(path, "w", encoding="utf-8") as out:
        for k in range(n):
            d, copy = dict(docs[k % len(docs)]), k // len(docs)
            if copy:
                d["url"] = mirror_url(d["url"], copy)
                d["id"] = f"{d['id']}-m{copy}"
                words = d["text"].split(" ")
                for _ in range(3):
                    words[rng.randrange(len(words))] = f"edited{rng.randint(0, 999)}"
                d["text"] = (f"Mirror {copy} of this page, revision {rng.randint(0, 10**6)}, "
                             "kept for readers of the archive.\n" + " ".join(words))
            out.write(json.dumps(d, ensure_ascii=False) + "\n")


# ---- the runs ----------------------------------------------------------------------------

def beam_flags(workers: int) -> list[str]:
    return ["--direct_running_mode", "multi_processing", "--direct_num_workers", str(workers)]


def largest_groups(out: Path) -> str:
    stages = json.loads((out / "stats.json").read_text())["stages"]
    ex, mh = stages.get("exact", {}), stages.get("minhash", {})
    return (f"url {ex.get('largest_url_group', '-')}, "
            f"content {ex.get('largest_content_group', '-')}, "
            f"bucket {mh.get('largest_bucket', '-')}, cluster {mh.get('largest_cluster', '-')}"
            + (f" ({mh['capped_buckets']} capped)" if mh.get("capped_buckets") else ""))


def measure(what: str, n: int, args, tmp: Path, dev, pages) -> dict:
    out = tmp / f"{what}-{n}-out"
    if what == "dedup":
        corpus = tmp / f"dedup-{n}.jsonl"
        make_corpus(dev, n, corpus)
        inputs = ["--input", str(corpus)]
        cmd = ["dedup", *inputs, "--stages", "blocks,exact,minhash"]
    elif what == "webtext":
        corpus = tmp / f"webtext-{n}.jsonl"
        make_webtext(pages, n, corpus)
        cmd = ["dedup", "--input", str(corpus), "--stages", "exact,minhash,blocks"]
    else:
        folder = tmp / f"web-{n}"
        make_warcs(pages, n, folder)
        cmd = ["web", "--input", str(folder)]
    result = run_measured([sys.executable, "-m", "skypile.cli", *cmd, "--output", str(out),
                           *beam_flags(args.workers)])
    result["groups"] = largest_groups(out)
    stages = json.loads((out / "stats.json").read_text())["stages"]
    last = [s for s in ("blocks", "minhash", "exact") if s in stages]
    result["kept"] = stages[last[0]]["kept"] if last else 0
    return result


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default=os.environ.get("SKYPILE_DATA",
                                                     str(REPO.parent / "shared/data")))
    ap.add_argument("--docs", default="25000,50000,100000")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--what", default="dedup,web")
    args = ap.parse_args(argv)
    sizes = [int(s) for s in args.docs.split(",")]
    whats = [w for w in args.what.split(",") if w]
    data = Path(args.data)
    dev = load_dev(data)[0] if "dedup" in whats else None
    pages = source_pages(data) if {"web", "webtext"} & set(whats) else None
    texts = extracted_pages(pages) if "webtext" in whats else None
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for what in whats:
            for n in sizes:
                r = measure(what, n, args, Path(tmp), dev,
                            texts if what == "webtext" else pages)
                rows.append((what, n, r))
                print(f"done: {what} {n} in {r['seconds']:.0f}s, kept {r['kept']}, launcher "
                      f"peak {r['launcher'] / 2**30:.2f} GiB, worker peak "
                      f"{r['worker'] / 2**30:.2f} GiB", file=sys.stderr, flush=True)
    gib = 2 ** 30
    print(f"workers: {args.workers} (multi_processing)\n")
    print("| command | docs | kept | wall s | x time | launcher peak GiB | worker peak GiB "
          "| x worker RSS | processes | largest per-key groups |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for what in whats:
        base = next(r for w, _, r in rows if w == what)
        for w, n, r in rows:
            if w != what:
                continue
            print(f"| {w} | {n} | {r['kept']} | {r['seconds']:.0f} | "
                  f"{r['seconds'] / base['seconds']:.2f} | {r['launcher'] / gib:.2f} | "
                  f"{r['worker'] / gib:.2f} | {r['worker'] / max(base['worker'], 1):.2f} | "
                  f"{r['workers']} | {r['groups']} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
