"""``--read.list_on_workers=true``: the launcher passes the --input patterns on unlisted,
workers expand them; the output is the same as when the launcher lists the files."""

import json
from pathlib import Path

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions

from skypile.files.readers import ReaderOptions
from skypile.jobs.web import WebConfig
from skypile.pipelines import tokenize, web
from skypile.pipelines.common import list_inputs
from skypile.tokens import tokenizer as tk
from outputs import read_jsonl_gz

pytestmark = pytest.mark.integration

ON_WORKERS = "--read.list_on_workers=true"


def _untimed(row: dict) -> dict:
    """A row without the timings in its metadata (extract_ms): they differ run to run."""
    meta = {k: v for k, v in row.get("metadata", {}).items() if not k.endswith("_ms")}
    return {**row, "metadata": meta} if "metadata" in row else row


def contract(out: Path):
    """Docs and rejects (sorted, order-free, timings left out) and stats.json."""
    key = lambda d: (d["id"], d.get("reason", ""), json.dumps(d, sort_keys=True))
    return (sorted(map(_untimed, read_jsonl_gz(out / "docs")), key=key),
            sorted(map(_untimed, read_jsonl_gz(out / "rejects")), key=key),
            json.loads((out / "stats.json").read_text()))


def test_launcher_does_not_list_what_workers_will():
    # a bucket nobody can reach from here: the launcher passes the pattern on untouched
    remote = ["gs://no-such-bucket-skypile/crawl/*.warc.gz", "s3://nor-this-one/x/"]
    assert list_inputs(remote, ReaderOptions(list_on_workers=True), {}) == remote
    p = beam.Pipeline(options=PipelineOptions([]))
    web.build(p, remote, WebConfig(read=ReaderOptions(list_on_workers=True)), "/tmp/unused",
              {"inputs": remote})
    names = {t.unique_name for t in p.to_runner_api().components.transforms.values()}
    assert {"Inputs/Patterns", "Inputs/ListOnWorkers", "Inputs/OncePerFile", "Read"} <= names
    with pytest.raises(FileNotFoundError, match="no input matches"):
        list_inputs(["/no/such/folder/*.warc.gz"], ReaderOptions(), {})


def test_web_same_output_listed_on_workers(data_dir, tmp_path):
    whirl = data_dir / "warc/whirlwind"
    # overlapping patterns: whirlwind.warc.gz is matched twice, and read once either way
    patterns = [str(whirl / "whirlwind.warc*"), str(whirl / "whirlwind.warc.gz"),
                str(data_dir / "warc/resiliparse-cc-warc/*.warc.gz")]
    args = [a for p in patterns for a in ("--input", p)] + ["--stages", "extract,exact,minhash"]
    assert web.run(args + ["--output", str(tmp_path / "launcher")]) == 0
    assert web.run(args + ["--output", str(tmp_path / "workers"), ON_WORKERS]) == 0
    docs_a, rej_a, stats_a = contract(tmp_path / "launcher")
    docs_b, rej_b, stats_b = contract(tmp_path / "workers")
    assert docs_a and docs_a == docs_b and rej_a == rej_b
    assert stats_a["stages"] == stats_b["stages"] and stats_a["files"] == stats_b["files"]
    # the launcher knew the files; the workers' run records the patterns it was given
    assert len(stats_a["inputs"]) == len(set(stats_a["inputs"])) == 7
    assert stats_b["inputs"] == patterns
    assert stats_b["files"]["read"] + stats_b["files"]["unreadable"] == 7  # each file once


def test_dedup_same_output_listed_on_workers(data_dir, tmp_path):
    src = data_dir / "skywork-eval"
    args = ["--input", str(src / "zh_tech.jsonl"), "--input", str(src / "zh_movie.jsonl"),
            "--stages", "exact,minhash"]
    assert web.run_dedup(args + ["--output", str(tmp_path / "a")]) == 0
    assert web.run_dedup(args + ["--output", str(tmp_path / "b"), ON_WORKERS]) == 0
    a, b = contract(tmp_path / "a"), contract(tmp_path / "b")
    assert a[0] and a[0] == b[0] and a[1] == b[1] and a[2]["stages"] == b[2]["stages"]


def test_no_match_on_a_worker_is_a_reject(data_dir, tmp_path, capsys):
    good = str(data_dir / "warc/whirlwind/whirlwind.warc.gz")
    missing = str(tmp_path / "nothing-here" / "*.warc.gz")
    out = tmp_path / "out"
    assert web.run(["--input", good, "--input", missing, "--output", str(out),
                    "--stages", "extract", ON_WORKERS]) == 0
    docs, rejects, stats = contract(out)
    assert docs
    no_match = [r for r in rejects if r["reason"] == "read:no-match"]
    assert [(r["stage"], r["detail"]["pattern"]) for r in no_match] == [("read", missing)]
    assert stats["stages"]["read"]["dropped"]["read:no-match"] == 1
    assert stats["files"] == {"read": 1, "unreadable": 1}
    # nothing matched at all: the run fails with one line, the reject says why
    capsys.readouterr()
    assert web.run(["--input", missing, "--output", str(tmp_path / "none"),
                    "--stages", "extract", ON_WORKERS]) == 1
    err = capsys.readouterr().err
    assert "error: none of the 1 input files could be read" in err and "Traceback" not in err
    assert [r["reason"] for r in read_jsonl_gz(tmp_path / "none" / "rejects")] == ["read:no-match"]
    # listed by the launcher, the same pattern is refused before anything runs
    assert web.run(["--input", missing, "--output", str(tmp_path / "never")]) == 2
    assert f"no input matches {missing}" in capsys.readouterr().err


@pytest.fixture(scope="module")
def earlier_output(data_dir, tmp_path_factory):
    """Documents as an earlier run leaves them (RUN/docs/*.jsonl) and a small tokenizer."""
    d = tmp_path_factory.mktemp("tok")
    (d / "run" / "docs").mkdir(parents=True)
    lines = (data_dir / "gsm8k/train.jsonl").read_text(encoding="utf-8").splitlines()[:400]
    for part in range(2):
        with open(d / "run" / "docs" / f"part-{part}.jsonl", "w", encoding="utf-8") as f:
            for i, line in enumerate(lines[part::2]):
                r = json.loads(line)
                f.write(json.dumps({"id": f"gsm-{part}-{i}", "text": r["question"] + "\n" + r["answer"],
                                    "metadata": {"lang": "en"}}) + "\n")
    model = tk.train([str(d / "run" / "docs" / "*.jsonl")], str(d / "tok"),
                     tk.TokenizerTrainConfig(vocab_size=600, character_coverage=1.0))
    return d, model


def test_tokenize_same_shards_listed_on_workers(earlier_output, tmp_path):
    d, model = earlier_output
    args = ["--input", str(d / "run" / "docs" / "*.jsonl"), "--tokenizer", str(model),
            "--shards.target_tokens=20000", "--held_out.fraction=0.05"]
    assert tokenize.run(args + ["--output", str(tmp_path / "a")]) == 0
    assert tokenize.run(args + ["--output", str(tmp_path / "b"), ON_WORKERS]) == 0
    ma = json.loads((tmp_path / "a" / "manifest.json").read_text())
    mb = json.loads((tmp_path / "b" / "manifest.json").read_text())
    assert ma["domains"] and ma["domains"] == mb["domains"]  # the same shards, sha256 and all
    assert ma["breakdown"] == mb["breakdown"]
    assert len(ma["inputs"]) == 2 and mb["inputs"] == [str(d / "run" / "docs" / "*.jsonl")]
    for split in ma["domains"].values():
        for s in split.values():
            for shard in s["shards"]:
                assert ((tmp_path / "a" / shard["path"]).read_bytes()
                        == (tmp_path / "b" / shard["path"]).read_bytes())
    sa = json.loads((tmp_path / "a" / "stats.json").read_text())
    sb = json.loads((tmp_path / "b" / "stats.json").read_text())
    assert sa["stages"] == sb["stages"] and sa["files"] == sb["files"] == {"read": 2, "unreadable": 0}
