"""Portability: every pipeline translates to a portable proto whose code loads on a fresh
worker, DoFns ship without models, the multi-process runner gives the in-process output,
the Docker files lint, and the core package stays free of Beam and torch."""

import pickle
import subprocess
import sys

import pytest

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions

from skypile.text.extract import ExtractConfig
from skypile.jobs.web import WebConfig
from skypile.pipelines.common import ApplyStage, ReadFile
from skypile.pipelines.web import build, make_extractor
from skypile.files.readers import ReaderOptions


def test_web_pipeline_translates_to_runner_api(tmp_path):
    p = beam.Pipeline(options=PipelineOptions([]))
    build(p, ["a.warc.gz"], WebConfig(), str(tmp_path / "staging"), {"inputs": []})
    proto = p.to_runner_api()
    names = {t.unique_name for t in proto.components.transforms.values()}
    assert {"Read", "Extract", "WriteDocs", "WriteRejects", "WriteStats"} <= names
    beam.Pipeline.from_runner_api(proto, p.runner, p._options)


def test_dofns_pickle_without_models_or_processes():
    ex = ApplyStage(make_extractor, ExtractConfig(), stage="extract")
    ex.setup()
    try:
        ex._stage._sandbox.run("<html><body><p>warm</p></body></html>", "", ExtractConfig())
        clone = pickle.loads(pickle.dumps(ex._stage._sandbox))
        assert clone._proc is None  # a child process never travels with the DoFn
    finally:
        ex.teardown()
    assert pickle.loads(pickle.dumps(ReadFile(ReaderOptions(), {}))).opts == ReaderOptions()


def test_core_imports_neither_beam_nor_torch():
    code = ("import sys, skypile.cli, skypile.files.readers, skypile.text.extract, skypile.files.output, "
            "skypile.config, skypile.stats; "
            "print(sorted(m for m in ('apache_beam', 'torch') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# ---- every pipeline: portable proto, importable on a fresh worker, DoFns without models ----

WORKER_CHECK = r"""
import json, sys
import apache_beam as beam
from apache_beam.internal import pickler
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.portability import common_urns
from apache_beam.portability.api import beam_runner_api_pb2

proto = beam_runner_api_pb2.Pipeline.FromString(open(sys.argv[1], "rb").read())
modules, biggest, n = set(), 0, 0
for t in proto.components.transforms.values():
    urn = t.spec.urn
    if urn == common_urns.primitives.PAR_DO.urn:
        payload = beam_runner_api_pb2.ParDoPayload.FromString(t.spec.payload).do_fn.payload
    elif urn == common_urns.composites.COMBINE_PER_KEY.urn:
        payload = beam_runner_api_pb2.CombinePayload.FromString(t.spec.payload).combine_fn.payload
    else:
        continue
    if not payload:
        continue
    biggest, n = max(biggest, len(payload)), n + 1
    obj = pickler.loads(payload)          # what a worker does with the transform's code
    fn = obj[0] if isinstance(obj, tuple) else obj
    inner = getattr(fn, "_fn", None)      # Map / FlatMap wrap a function
    for o in (fn, inner):
        if o is not None:
            modules.add(getattr(o, "__module__", None) or type(o).__module__)
beam.Pipeline.from_runner_api(proto, None, PipelineOptions([]))
print(json.dumps({"modules": sorted(m for m in modules if m), "biggest": biggest, "n": n}))
"""


def _pipelines(tmp_path, data_dir):
    """name -> a function adding that pipeline to a Beam pipeline, as its command builds it."""
    from pathlib import Path

    from skypile import config as cfglib
    from skypile.jobs.code import CodeConfig
    from skypile.jobs.tokenize import TokenizeConfig
    from skypile.tokens import tokenizer as tk
    from skypile.pipelines import code, tokenize, web

    worker_cfg = str(Path(__file__).resolve().parents[1] / "docker/web-worker.yaml")
    tok = tk.train([str(data_dir / "wiki-en/wiki.test.raw")], str(tmp_path / "tok"),
                   tk.TokenizerTrainConfig(vocab_size=600))

    def web_all(p):  # every stage; the model paths only exist inside the worker image, so
        # the config is read as the workers read it, without the launcher's model check
        cfg = cfglib.load(WebConfig, worker_cfg)
        web.build(p, ["a.warc.gz"], cfg, str(tmp_path / "s1"), {"inputs": []})

    def dedup_all(p):
        cfg = web.resolve(web.make_parser(web.DEDUP).parse_args(
            ["--input", "x", "--output", "y", "--stages", "blocks,exact,minhash,semantic"]), [], web.DEDUP)
        web.build(p, ["a.jsonl"], cfg, str(tmp_path / "s2"), {"inputs": []})

    def code_all(p):
        code.build(p, ["repo"], cfglib.load(CodeConfig), str(tmp_path / "s3"))

    def tokenize_all(p):
        tokenize.build(p, ["a.jsonl"], str(tok), cfglib.load(TokenizeConfig),
                       str(tmp_path / "out"), str(tmp_path / "s4"))

    return {"web": web_all, "dedup": dedup_all, "code": code_all, "tokenize": tokenize_all}


def test_every_pipeline_translates_and_its_code_loads_on_a_fresh_worker(tmp_path, data_dir):
    import json

    for name, add in _pipelines(tmp_path, data_dir).items():
        p = beam.Pipeline(options=PipelineOptions([]))
        add(p)
        path = tmp_path / f"{name}.pb"
        path.write_bytes(p.to_runner_api().SerializeToString())
        # a new interpreter that never imported the tests: only installed code can load
        out = subprocess.run([sys.executable, "-c", WORKER_CHECK, str(path)], capture_output=True,
                             text=True, cwd=tmp_path)
        assert out.returncode == 0, (name, out.stderr[-2000:])
        info = json.loads(out.stdout.strip().splitlines()[-1])
        assert info["n"] >= 5, name
        assert any(m.startswith("skypile.pipelines") for m in info["modules"]), name
        # code pickled from __main__ or the test files would not exist on a worker
        foreign = [m for m in info["modules"] if m == "__main__" or m.split(".")[0] in ("tests", "conftest")]
        assert not foreign, (name, foreign)
        assert info["biggest"] < 200_000, (name, info["biggest"])  # no model inside a DoFn


def test_dofns_with_models_pickle_small_and_load_them_in_setup(trained_models, data_dir):
    from skypile import config as cfglib
    from skypile.document import Document
    from skypile.classifiers.stages import LangIdStage, PerplexityStage, QualityStage, StemStage

    models, _ = trained_models
    cfg = cfglib.load(WebConfig, str(models / "web.yaml"))
    text = ("The library opened a new reading room on Monday, and the city council said the "
            "building would stay open late during exam season for students.")
    for fn in (ApplyStage(LangIdStage, cfg.langid), ApplyStage(PerplexityStage, cfg.perplexity),
               ApplyStage(QualityStage, cfg.quality), ApplyStage(StemStage, cfg.stem)):
        blob = pickle.dumps(fn)  # what Beam ships: configuration only
        assert len(blob) < 20_000, (fn.make.__name__, len(blob))
        clone = pickle.loads(blob)
        fn.setup()
        clone.setup()  # the worker loads the model from the path in the config
        meta = {"lang": "en"}
        a = next(fn.process(Document(id="1", text=text, metadata=dict(meta))))
        b = next(clone.process(Document(id="1", text=text, metadata=dict(meta))))
        assert a.metadata == b.metadata and len(a.metadata) > 1, fn.make.__name__


def _docker_compose() -> list[str] | None:
    """``docker compose`` when the plugin is installed (Debian's packages have none)."""
    import shutil

    docker = shutil.which("docker")
    if docker and subprocess.run([docker, "compose", "version"], capture_output=True).returncode == 0:
        return [docker, "compose"]
    return None


def test_docker_files_lint_and_parse():
    import shutil
    from pathlib import Path

    root = Path(__file__).resolve().parents[1] / "docker"
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    files = sorted(str(p) for p in root.glob("Dockerfile.*"))
    assert len(files) == 2
    out = subprocess.run([hadolint, *files], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_compose_file_follows_the_compose_spec_and_runs_the_pool_as_a_sidecar():
    """The compose file against the Compose specification (``docker compose config`` when
    the plugin is there, else the compose-spec package's parser, which rejects unknown
    keys and wrong types), then what the Flink recipe needs of it."""
    from pathlib import Path

    import yaml
    from compose_spec import PyCompose

    path = Path(__file__).resolve().parents[1] / "docker/compose.flink.yml"
    compose_cmd = _docker_compose()
    if compose_cmd:
        out = subprocess.run([*compose_cmd, "-f", str(path), "config", "--quiet"],
                             capture_output=True, text=True)
        assert out.returncode == 0, out.stderr
    parsed = PyCompose.from_yaml(path.read_text())
    parsed.validate()  # networks, volumes, configs, secrets named by services exist
    parsed.to_spec()  # and the pydantic models of the spec's JSON schema accept it
    for bad in ("services:\n  a:\n    image: x\n    netwrk_mode: host\n",
                "services:\n  a:\n    image: x\n    ports: 8081\n"):
        with pytest.raises(ValueError):  # the check does reject what the spec does not allow
            PyCompose.from_yaml(bad)

    services = yaml.safe_load(path.read_text())["services"]
    assert {"jobmanager", "taskmanager", "job-server", "worker-pool"} <= set(services)
    for name, svc in services.items():
        assert set(svc.get("depends_on", [])) <= set(services), name
    pool, tm = services["worker-pool"], services["taskmanager"]
    # a sidecar in the task manager's network namespace: the task manager finds the pool
    # at localhost:50000 and the SDK harnesses find the endpoints Flink gives as localhost
    assert pool["network_mode"] == "service:taskmanager"
    assert "ports" not in pool  # a container in another's namespace cannot publish ports
    assert "taskmanager" in pool["depends_on"]
    assert tm.get("deploy", {}).get("replicas", 1) == 1  # one pool per task manager


def test_worker_image_runs_jemalloc_as_the_local_workers_do():
    from pathlib import Path

    from skypile.pipelines.common import JEMALLOC, JEMALLOC_CONF

    text = (Path(__file__).resolve().parents[1] / "docker" / "Dockerfile.worker").read_text()
    assert f"LD_PRELOAD={JEMALLOC}" in text
    assert f"MALLOC_CONF={JEMALLOC_CONF}" in text


def test_docker_readme_runs_what_the_portable_runner_test_runs():
    """docker/README.md's Flink command uses the flags tests/test_portable_runner.py runs."""
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "docker/README.md").read_text()
    flink = readme[readme.index("## Flink"):readme.index("## Dataflow")]
    lines = flink.replace("\\\n", " ").splitlines()  # continuation lines joined
    portable = [" ".join(line.split()) for line in lines if "--runner PortableRunner" in line]
    assert len(portable) >= 3  # web and tokenize on the compose cluster, web without Docker
    for cmd in portable:
        for flag in ("--job_endpoint localhost:8099", "--environment_type EXTERNAL",
                     "--environment_config localhost:50000", "--read.list_on_workers=true"):
            assert flag in cmd, (flag, cmd)


def _read_jsonl_gz(folder):
    import gzip
    import json

    return sorted((json.loads(line) for p in sorted(folder.glob("*.jsonl.gz"))
                   for line in gzip.open(p, "rt", encoding="utf-8")), key=lambda d: d["id"])


MULTI = ["--direct_num_workers", "2", "--direct_running_mode", "multi_processing"]


@pytest.mark.integration
@pytest.mark.parametrize("pipeline", ["dedup", "code", "tokenize"])
def test_multi_process_runner_gives_the_same_output(pipeline, data_dir, tmp_path):
    from pathlib import Path

    import datasketch

    from skypile.tokens import tokenizer as tk
    from skypile.pipelines import code, tokenize, web

    if pipeline == "dedup":
        run, args = web.run_dedup, ["--input", str(data_dir / "neardup/dev.jsonl"),
                                    "--stages", "blocks,exact,minhash"]
    elif pipeline == "code":
        run, args = code.run, ["--input", str(Path(datasketch.__file__).parent)]
    else:
        tok = tk.train([str(data_dir / "neardup/dev.jsonl")], str(tmp_path / "tok"),
                       tk.TokenizerTrainConfig(vocab_size=3000, character_coverage=0.995))
        run, args = tokenize.run, ["--input", str(data_dir / "neardup/dev.jsonl"), "--tokenizer",
                                   str(tok), "--held_out.fraction=0.1", "--shards.target_tokens=20000"]
    assert run(args + ["--output", str(tmp_path / "one")]) == 0
    assert run(args + ["--output", str(tmp_path / "multi")] + MULTI) == 0
    one, multi = tmp_path / "one", tmp_path / "multi"
    if pipeline == "tokenize":
        files = sorted(p.relative_to(one) for p in one.rglob("*.bin"))
        assert len(files) >= 3 and files == sorted(p.relative_to(multi) for p in multi.rglob("*.bin"))
        for f in files:
            assert (one / f).read_bytes() == (multi / f).read_bytes(), f
        return
    a, b = _read_jsonl_gz(one / "docs"), _read_jsonl_gz(multi / "docs")
    assert len(a) > 10
    assert [(d["id"], d["text"]) for d in a] == [(d["id"], d["text"]) for d in b]
    ra, rb = _read_jsonl_gz(one / "rejects"), _read_jsonl_gz(multi / "rejects")
    assert [(r["id"], r["reason"]) for r in ra] == [(r["id"], r["reason"]) for r in rb]
