"""``skypile dedup`` on the labelled near-duplicate dev set: the F1 goal, no template merges."""

import gzip
import json
import sys
from pathlib import Path

import pytest

from skypile.pipelines.web import run_dedup

pytestmark = pytest.mark.integration

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from dedup import score  # noqa: E402  (the benchmark's own scoring, one definition)


def test_dev_set_f1_and_no_template_merges(data_dir, tmp_path):
    out = tmp_path / "out"
    assert run_dedup(["--input", str(data_dir / "neardup/dev.jsonl"), "--output", str(out),
                      "--stages", "blocks,exact,minhash"]) == 0
    docs = [json.loads(line) for line in open(data_dir / "neardup/dev.jsonl", encoding="utf-8")]
    labels = json.loads((data_dir / "neardup/dev-labels.json").read_text())
    kept = set()
    for f in (out / "docs").glob("*.jsonl.gz"):
        kept |= {json.loads(line)["id"] for line in gzip.open(f, "rt", encoding="utf-8")}
    result = score(docs, labels, kept)
    for lang in ("en", "zh"):
        assert result[lang]["f1"] >= 0.97, result
        assert result[lang]["wrong_merges"] == 0, result  # template-sharing articles stay apart
    stats = json.loads((out / "stats.json").read_text())
    for name in ("blocks", "exact", "minhash"):
        s = stats["stages"][name]
        assert s["in"] == s["kept"] + sum(s["dropped"].values())
    rejects = [json.loads(line) for f in (out / "rejects").glob("*.jsonl.gz")
               for line in gzip.open(f, "rt", encoding="utf-8")]
    near = [r for r in rejects if r["reason"] == "minhash:near-duplicate"]
    assert near and all(r["detail"]["kept_id"] in kept and r["text"] for r in near)
    assert json.loads((out / "reports" / "recurring_blocks.json").read_text())["top"]


def test_dedup_refuses_warc_pages(data_dir, tmp_path):
    out = tmp_path / "out"
    assert run_dedup(["--input", str(data_dir / "warc/whirlwind/whirlwind.warc.gz"),
                      "--output", str(out)]) == 0
    rejects = [json.loads(line) for f in (out / "rejects").glob("*.jsonl.gz")
               for line in gzip.open(f, "rt", encoding="utf-8")]
    assert [r["reason"] for r in rejects] == ["read:needs-extraction"]
