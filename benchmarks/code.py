"""Code pipeline throughput and drop reasons on real third-party code found on the machine.

    python benchmarks/code.py [--max-files 6000]

The corpus: the project's own .venv site-packages (Python, C, data files) and the
xml / json / yaml files under /usr/share, packed by this script into a tar.gz and into
Stack-style JSONL (repo, path, content). ``skypile code`` (in-process DirectRunner) runs
on each in the same process run; files per second and the drop reasons are printed.
"""

from __future__ import annotations

import argparse
import collections
import gzip
import json
import os
import subprocess
import sys
import sysconfig
import tarfile
import tempfile
import time
from pathlib import Path


def collect(max_files: int) -> list[Path]:
    site = Path(sysconfig.get_paths()["purelib"])
    files = sorted(p for p in site.rglob("*") if p.is_file() and "__pycache__" not in p.parts)
    share = sorted(p for ext in ("xml", "json", "yaml", "yml") for p in Path("/usr/share").rglob(f"*.{ext}")
                   if p.is_file())
    step = max(1, len(files) // max(1, max_files - min(len(share), max_files // 5)))
    return files[::step] + share[: max_files // 5]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--max-files", type=int, default=6000)
    args = ap.parse_args(argv)
    files = collect(args.max_files)
    with tempfile.TemporaryDirectory() as tmp:
        tgz, jsonl = Path(tmp) / "corpus.tar.gz", Path(tmp) / "stack.jsonl.gz"
        with tarfile.open(tgz, "w:gz") as tar:
            for f in files:
                tar.add(f, arcname="corpus/" + str(f).lstrip("/"))
        with gzip.open(jsonl, "wt", encoding="utf-8") as out:
            for f in files:
                try:
                    content = f.read_text(encoding="utf-8")
                except (UnicodeDecodeError, OSError):
                    continue
                parts = f.parts
                repo = "/".join(parts[-3:-1]) if len(parts) > 3 else "root"
                out.write(json.dumps({"repo": repo, "path": str(f).lstrip("/"), "content": content}) + "\n")
        print(f"corpus: {len(files)} files ({sum(f.stat().st_size for f in files) / 1e6:.0f} MB)")
        for name, path in (("tar.gz", tgz), ("Stack JSONL", jsonl)):
            out = Path(tmp) / name.replace(" ", "_")
            t0 = time.perf_counter()
            subprocess.run([sys.executable, "-m", "skypile.cli", "code", "--input", str(path),
                            "--output", str(out)], check=True, stdout=subprocess.DEVNULL,
                           env=dict(os.environ, SKYPILE_LOG="WARNING"))
            seconds = time.perf_counter() - t0
            stats = json.loads((out / "stats.json").read_text())["stages"]
            n = stats["read"]["in"]
            print(f"\n{name}: {n} files in {seconds:.1f}s = {n / seconds:.0f} files/s (one process)")
            reasons = collections.Counter()
            for s in stats.values():
                reasons.update(s["dropped"])
            print(f"  kept {stats['minhash']['kept']}")
            for reason, count in reasons.most_common():
                print(f"  {reason:<28}{count:>7}")
            formats = json.loads((out / "reports/formats.json").read_text())
            top = sorted(formats.items(), key=lambda kv: -kv[1]["share_of_kept_bytes"])[:8]
            print("  kept bytes by extension: " + ", ".join(
                f"{ext} {v['share_of_kept_bytes']:.1%} (rate {v['rate']:g})" for ext, v in top))
    return 0


if __name__ == "__main__":
    sys.exit(main())
