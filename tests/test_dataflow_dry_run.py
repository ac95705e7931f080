"""``--runner DataflowRunner --dry_run=True``: every pipeline builds its Dataflow job offline,
without credentials, from gs:// inputs that only workers list, and saves the job and the
portable pipeline under the output folder."""

import json

import pytest
from google.protobuf import json_format

from apache_beam.portability.api import beam_runner_api_pb2

DATAFLOW = ["--runner", "DataflowRunner", "--project", "skypile-test", "--region", "us-central1",
            "--temp_location", "gs://skypile-test/tmp", "--sdk_location", "container",
            "--no_auth", "--dry_run=True"]
ON_WORKERS = ["--read.list_on_workers=true"]  # the launcher never globs gs://

# top-level transforms each pipeline must have, as labelled by its build()
STAGES = {
    "web": {"Inputs", "Read", "Extract", "Exact", "Minhash", "Blocks", "QualityFiltering",
            "WriteDocs", "WriteRejects", "WriteStats"},
    "dedup": {"Inputs", "Read", "AsDocuments", "Exact", "Minhash", "Semantic", "Blocks",
              "WriteDocs", "WriteRejects", "WriteStats"},
    "code": {"Inputs", "Read", "Code", "Exact", "Minhash", "WriteDocs", "WriteRejects",
             "WriteStats"},
    "tokenize": {"Inputs", "Read+Encode|ReadEncode", "ByShard", "WriteShards", "Manifest",
                 "WriteRejects", "WriteStats"},
}
"""``A|B``: either label; ``A+B``: both."""


def _missing(expected: set[str], top: set[str]) -> list[str]:
    return sorted(e for e in expected
                  if not any(set(alt.split("+")) <= top for alt in e.split("|")))


@pytest.fixture(scope="module")
def tokenizer(data_dir, tmp_path_factory):
    from skypile.tokens import tokenizer as tk

    return str(tk.train([str(data_dir / "wiki-en/wiki.test.raw")],
                        str(tmp_path_factory.mktemp("tok") / "tok"),
                        tk.TokenizerTrainConfig(vocab_size=600)))


def _command(name, tokenizer):
    from skypile.pipelines import code, tokenize, web

    if name == "web":
        return web.run, ["--input", "gs://skypile-test/crawl/CC-MAIN-2024-22/*.warc.gz",
                         "--stages", "extract,exact,minhash,blocks,langid"]
    if name == "dedup":
        return web.run_dedup, ["--input", "gs://skypile-test/web/docs/*.jsonl.gz",
                               "--stages", "exact,minhash,semantic,blocks"]
    if name == "code":
        return code.run, ["--input", "gs://skypile-test/repos/*"]
    return tokenize.run, ["--input", "gs://skypile-test/dedup/docs/*.jsonl.gz",
                          "--tokenizer", tokenizer]


@pytest.mark.parametrize("name", sorted(STAGES))
def test_dry_run_builds_the_job_offline_and_saves_it(name, tokenizer, tmp_path, capsys,
                                                     monkeypatch):
    # nothing to log in with: a credential lookup or a listing of gs:// would fail the run
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "no-such-key.json"))
    monkeypatch.setenv("NO_GCE_CHECK", "true")
    run, args = _command(name, tokenizer)
    out = tmp_path / "out"
    assert run(args + ["--output", str(out)] + ON_WORKERS + DATAFLOW) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if "dry run" in line]
    assert len(lines) == 1 and str(out / "dataflow") in lines[0], lines

    job = json.loads((out / "dataflow/job.json").read_text())
    assert job["type"] == "JOB_TYPE_BATCH"
    [pool] = job["environment"]["workerPools"]
    assert pool["sdkHarnessContainerImages"][0]["containerImage"].endswith(
        "beam_python3.11_sdk:2.77.0")
    assert job["environment"]["tempStoragePrefix"].startswith("storage.googleapis.com/skypile-test/tmp")

    proto = json_format.Parse((out / "dataflow/pipeline.json").read_text(),
                              beam_runner_api_pb2.Pipeline())
    names = {t.unique_name for t in proto.components.transforms.values()}
    top = {n for n in names if "/" not in n}
    assert not _missing(STAGES[name], top), (_missing(STAGES[name], top), sorted(top))
    assert "Inputs/ListOnWorkers" in names  # the patterns went to the workers, unlisted
    docker = [e for e in proto.components.environments.values()
              if e.urn == "beam:env:docker:v1"]
    assert docker  # Dataflow runs every step in the SDK container

    # nothing ran: no output contract, no run folder left behind
    assert sorted(p.name for p in out.iterdir()) == ["dataflow"]


def test_dry_run_with_a_bad_bucket_is_one_line_and_offline(tmp_path, capsys):
    from skypile.pipelines import web

    flags = [a if a != "gs://skypile-test/tmp" else "gs://B/tmp" for a in DATAFLOW]
    rc = web.run(["--input", "gs://skypile-test/crawl/*.warc.gz", "--output", str(tmp_path / "o")]
                 + ON_WORKERS + flags)
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1, err
    assert "--temp_location" in err[0] and "gs://B/tmp" in err[0]
    assert not (tmp_path / "o").exists()
