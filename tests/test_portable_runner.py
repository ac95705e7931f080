"""Beam's portable path, the process layout Flink uses for Python: Beam's job service and an
external SDK worker pool on 127.0.0.1, each its own process started here. ``skypile web``
(extract through quality, with models trained by our own command) and ``skypile tokenize``
run through them with input, models and output on S3 (moto's server), and give exactly
the output of the in-process DirectRunner."""

import contextlib
import gzip
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import fsspec
import pytest
import yaml

from s3server import free_port, moto_s3

pytestmark = pytest.mark.integration

WARCS = ["warc/resiliparse-cc-warc/CC-MAIN-2020-34-sample.warc.gz",
         "warc/whirlwind/whirlwind.warc.gz",
         "warc/dolma-wget-warc/sample-0000.warc.gz"]
STAGES = "extract,exact,minhash,blocks,langid,perplexity,quality"
BUCKET = "skypile"


def _wait_for_port(port: int, proc: subprocess.Popen, log: Path, limit_s: float = 300) -> None:
    """Until something listens on 127.0.0.1:port; fails with the service's log if it dies."""
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"{proc.args} exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.5)
    pytest.fail(f"{proc.args} did not listen on {port}:\n{log.read_text()[-3000:]}")


def _stop(proc: subprocess.Popen) -> None:
    """The service and the SDK harnesses it started (its own process group)."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    with contextlib.suppress(ProcessLookupError):  # harnesses left behind by the service
        os.killpg(proc.pid, signal.SIGKILL)


@contextlib.contextmanager
def beam_services(workdir: Path, model_cache: Path):
    """Beam's job service and an EXTERNAL worker pool, as on a Flink task manager: the
    venv's python first on PATH (the pool starts ``python -c ...`` per SDK harness), and a
    working directory and a model cache that are not the launcher's."""
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    env["SKYPILE_MODEL_CACHE"] = str(model_cache)
    job_port, pool_port = free_port(), free_port()
    services = [("job-service", "apache_beam.runners.portability.local_job_service_main",
                 ["--port", str(job_port)], job_port),
                ("worker-pool", "apache_beam.runners.worker.worker_pool_main",
                 ["--service_port", str(pool_port)], pool_port)]
    procs = []
    try:
        for name, module, args, port in services:
            log = workdir / f"{name}.log"
            with open(log, "wb") as f:
                procs.append(subprocess.Popen([sys.executable, "-m", module, *args], cwd=workdir,
                                              env=env, stdout=f, stderr=subprocess.STDOUT,
                                              stdin=subprocess.DEVNULL, start_new_session=True))
            _wait_for_port(port, procs[-1], log)
        yield job_port, pool_port
    finally:
        for proc in procs:
            _stop(proc)


def _s3(so: dict) -> fsspec.AbstractFileSystem:
    return fsspec.filesystem("s3", skip_instance_cache=True, use_listings_cache=False, **so)


def _upload_models(fs, models: Path, so: dict) -> dict:
    """The trained models under s3://BUCKET/models/ and a web config naming them by URL
    (with the sha256s ``classifiers train`` wrote); the bundled lid.176 goes there too."""
    from skypile.classifiers.langid import bundled_model
    from skypile.files.models import sha256_file

    trained = yaml.safe_load((models / "web.yaml").read_text())
    url = f"s3://{BUCKET}/models"
    lid = bundled_model()
    fs.put(str(lid), f"{BUCKET}/models/lid.176.ftz")
    ppl = trained["perplexity"]
    for lang, files in ppl["models"].items():
        for key in ("sp", "lm"):
            fs.put(str(models / files[key]), f"{BUCKET}/models/{files[key]}")
            files[key] = f"{url}/{files[key]}"
    fs.put(str(models / ppl["cutoffs"]), f"{BUCKET}/models/{ppl['cutoffs']}")
    ppl["cutoffs"] = f"{url}/{ppl['cutoffs']}"
    quality = trained["quality"]
    fs.put(str(models / quality["model"]), f"{BUCKET}/models/{quality['model']}")
    quality["model"] = f"{url}/{quality['model']}"
    return {"storage_options": so, "perplexity": ppl, "quality": quality,
            "langid": {"model": f"{url}/lid.176.ftz", "model_sha256": sha256_file(str(lid))}}


def _rows(fs, folder: str, so: dict) -> list[dict]:
    from skypile.files import output

    files = output.expand_inputs([f"{folder}/*.jsonl.gz"], so)
    return [json.loads(line) for f in files
            for line in gzip.decompress(fs.cat(f.split("://", 1)[1])).splitlines()]


@pytest.fixture(scope="module")
def runs(trained_models, data_dir, tmp_path_factory):
    """Both runners over the same S3 inputs: {"direct"|"portable": s3 output folders}."""
    from skypile.pipelines import tokenize, web
    from skypile.tokens import tokenizer as tk

    tmp = tmp_path_factory.mktemp("portable")
    models, _ = trained_models
    tok = tk.train([str(data_dir / "neardup/dev.jsonl")], str(tmp / "tok"),
                   tk.TokenizerTrainConfig(vocab_size=3000, character_coverage=0.995))
    workdir = tmp / "worker"
    workdir.mkdir()
    mp = pytest.MonkeyPatch()
    mp.setenv("SKYPILE_MODEL_CACHE", str(tmp / "launcher-cache"))  # the DirectRunner's own
    with moto_s3(BUCKET) as (_client, so), \
            beam_services(workdir, tmp / "worker-cache") as (job_port, pool_port):
        fs = _s3(so)
        for rel in WARCS:
            fs.put(str(data_dir / rel), f"{BUCKET}/crawl/{Path(rel).name}")
        fs.put(str(tok), f"{BUCKET}/models/tok.model")
        tok_url = f"s3://{BUCKET}/models/tok.model"  # launcher, workers and manifest fetch it
        web_cfg, tok_cfg = tmp / "web.json", tmp / "tokenize.json"
        web_cfg.write_text(json.dumps(_upload_models(fs, models, so)))
        tok_cfg.write_text(json.dumps({"storage_options": so}))
        portable = ["--runner", "PortableRunner", "--job_endpoint", f"localhost:{job_port}",
                    "--environment_type", "EXTERNAL",
                    "--environment_config", f"localhost:{pool_port}"]
        out = {}
        for name, beam_flags in (("direct", []), ("portable", portable)):
            root = f"s3://{BUCKET}/{name}"
            # as on a cluster, the workers list the inputs (docker/README.md runs the same)
            assert web.run(["--config", str(web_cfg), "--stages", STAGES,
                            "--input", f"s3://{BUCKET}/crawl/*.warc.gz",
                            "--output", f"{root}/web", "--read.list_on_workers=true"]
                           + beam_flags) == 0, name
            assert tokenize.run(["--config", str(tok_cfg), "--input", f"{root}/web/docs/*.jsonl.gz",
                                 "--tokenizer", tok_url, "--output", f"{root}/shards",
                                 "--read.list_on_workers=true", "--held_out.fraction=0.2",
                                 "--shards.target_tokens=2000"] + beam_flags) == 0, name
            out[name] = root
        harness_log = (workdir / "worker-pool.log").read_text()
        yield fs, so, out, harness_log, workdir
    mp.undo()
    for cache in ("launcher-cache", "worker-cache"):  # a GB of models each
        shutil.rmtree(tmp / cache, ignore_errors=True)


def test_web_through_the_job_service_and_worker_pool_equals_the_direct_runner(runs):
    fs, so, out, harness_log, workdir = runs
    # the work ran in SDK harness processes the pool started, not in the launcher
    assert "Starting worker with command" in harness_log
    fetched = list((workdir.parent / "worker-cache").glob("*-quality.bin"))
    assert fetched, "the harness did not fetch the quality model from S3 into its own cache"

    results = {}
    for name, root in out.items():
        docs = sorted(_rows(fs, f"{root}/web/docs", so), key=lambda d: d["id"])
        rejects = sorted((r["id"], r["stage"], r["reason"])
                         for r in _rows(fs, f"{root}/web/rejects", so))
        stats = json.loads(fs.cat(f"{root}/web/stats.json".split("://", 1)[1]))
        results[name] = (docs, rejects, stats)
    (d_docs, d_rej, d_stats), (p_docs, p_rej, p_stats) = results["direct"], results["portable"]
    assert len(d_docs) >= 5 and d_rej
    assert {d["metadata"]["lang"] for d in d_docs} >= {"en"}
    assert all("quality_score" in d["metadata"] for d in d_docs)  # quality ran on S3 models
    assert [d["id"] for d in p_docs] == [d["id"] for d in d_docs]
    assert [d["text"] for d in p_docs] == [d["text"] for d in d_docs]
    assert p_rej == d_rej
    assert p_stats["stages"] == d_stats["stages"] and p_stats["files"] == d_stats["files"]


def test_tokenize_through_the_job_service_and_worker_pool_equals_the_direct_runner(runs):
    fs, so, out, _, _ = runs
    shards = {}
    for name, root in out.items():
        manifest = json.loads(fs.cat(f"{BUCKET}/{name}/shards/manifest.json"))
        listed = {s["path"]: s["sha256"] for splits in manifest["domains"].values()
                  for split in splits.values() for s in split["shards"]}
        # the bytes on S3 are what the manifest says
        for rel, digest in listed.items():
            assert hashlib.sha256(fs.cat(f"{BUCKET}/{name}/shards/{rel}")).hexdigest() == digest
        shards[name] = listed
    assert len(shards["direct"]) >= 2
    assert shards["portable"] == shards["direct"]
