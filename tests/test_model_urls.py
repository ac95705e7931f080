"""Models from any fsspec URL: fastText (language id, quality, STEM), KenLM + SentencePiece
with cutoff.csv, and the tokenizer, from a real S3 server (moto on 127.0.0.1).

Small real models are trained here from the shared data (the full ones are half a gigabyte
each); the web.yaml of ``skypile classifiers train`` is checked on the real trained set.
"""

import gzip
import hashlib
import itertools
import json
import logging
import multiprocessing
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import fsspec
import pytest
import yaml

from s3server import moto_s3
from skypile import config as cfglib
from skypile.classifiers import perplexity as ppl
from skypile.classifiers import quality, stem
from skypile.classifiers.cli import compute_cutoffs
from skypile.classifiers.langid import bundled_model
from skypile.classifiers.stages import LangIdStage, PerplexityStage, QualityStage, StemStage
from skypile.document import Document
from skypile.files import models
from skypile.jobs.scoring import PerplexityConfig, QualityConfig
from skypile.jobs.web import WebConfig, check
from skypile.pipelines.web import run

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[1]
STAGES = "extract,langid,perplexity,quality,stem"


def _sha(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _jsonl(path, field="text", limit=None):
    with open(path, encoding="utf-8") as f:
        rows = (json.loads(line)[field] for line in f if line.strip())
        return list(itertools.islice(rows, limit))


def _fasttext(positives, negatives, path: Path, labels) -> None:
    """A real fastText classifier, as ``quality.train`` makes them, with fewer hash buckets
    and dimensions (13 MB, not the default's half gigabyte)."""
    import fasttext

    rows = [f"{label} {quality.prepare(t)}\n" for label, texts in zip(labels, (positives, negatives))
            for t in texts]
    random.Random(0).shuffle(rows)
    (path.parent / "train.txt").write_text("".join(rows), encoding="utf-8")
    for _attempt in range(20):  # on sets this small, this fastText build sometimes stops
        try:                    # with "Encountered NaN", the same settings at random
            model = fasttext.train_supervised(
                input=str(path.parent / "train.txt"), epoch=5, lr=0.1, dim=16, bucket=200_000,
                wordNgrams=2, minCount=2, seed=0, thread=1, verbose=0)
            break
        except RuntimeError as e:
            if "NaN" not in str(e):
                raise
    model.save_model(str(path))


@pytest.fixture(scope="module")
def tiny(data_dir, kenlm_bin, tmp_path_factory):
    """Small real models of every kind the web config names, and the local files' layout."""
    out = tmp_path_factory.mktemp("tiny")
    wiki_en = [p for p in (data_dir / "wiki-en/wiki.test.raw").read_text(encoding="utf-8")
               .split("\n") if len(p) > 200][:400]
    wiki_zh = _jsonl(data_dir / "wiki-zh/zh_wiki_paragraphs_cmrc2018.jsonl", limit=400)
    trained = {lang: ppl.train(texts, lang, str(out), ppl.KenLMTrainConfig(order=3, spm_vocab=6000),
                               kenlm_bin)
               for lang, texts in (("en", wiki_en), ("zh", wiki_zh))}
    web_en = _jsonl(data_dir / "web-quality/multiple_files_cc_en_head-0091.jsonl", limit=60)
    web_zh = _jsonl(data_dir / "web-quality/ccnet_zh_2021-43_cleared1.jsonl", "raw_content", 60)
    compute_cutoffs({"en": web_en, "zh": web_zh}, trained, str(out / "cutoff.csv"))
    gsm = [f"{r['question']}\n{r['answer']}" for r in
           map(json.loads, itertools.islice(open(data_dir / "gsm8k/train.jsonl"), 300))]
    _fasttext(wiki_en + wiki_zh, web_en + web_zh, out / "quality.bin",
              (quality.POSITIVE, quality.NEGATIVE))
    _fasttext(gsm, wiki_en[:300], out / "stem.bin", (stem.STEM, stem.MAIN))
    shutil.copy(bundled_model(), out / "lid.176.ftz")
    files = {"lid": "lid.176.ftz", "quality": "quality.bin", "stem": "stem.bin",
             "cutoffs": "cutoff.csv", **{f"{lang}.{k}": Path(p).name
                                         for lang, m in trained.items() for k, p in m.items()}}
    return out, files


@pytest.fixture(scope="module")
def s3(tiny):
    """The S3 server, with the tiny models uploaded under s3://models/m/."""
    folder, files = tiny
    with moto_s3("models") as (_client, options):
        fs = fsspec.filesystem("s3", **options)
        for name in files.values():
            fs.put(str(folder / name), f"models/m/{name}")
        yield options


def _config(base: str, files: dict, so: dict | None = None, sha: bool = True) -> dict:
    """A web config naming every model under ``base`` (a folder or s3:// URL)."""
    def at(key):
        return f"{base}/{files[key]}"

    def digest(key):
        return {"model_sha256": files[f"{key}:sha"]} if sha else {}

    cfg = {"stages": STAGES.split(","),
           "langid": {"model": at("lid"), **digest("lid")},
           "perplexity": {"models": {lang: {"sp": at(f"{lang}.sp"), "lm": at(f"{lang}.lm"),
                                            **({"sp_sha256": files[f"{lang}.sp:sha"],
                                                "lm_sha256": files[f"{lang}.lm:sha"]}
                                               if sha else {})}
                                     for lang in ("en", "zh")},
                          "cutoffs": at("cutoffs"),
                          **({"cutoffs_sha256": files["cutoffs:sha"]} if sha else {})},
           "quality": {"model": at("quality"), **digest("quality")},
           "stem": {"model": at("stem"), **digest("stem")}}
    if so:
        cfg["storage_options"] = so
    return cfg


@pytest.fixture(scope="module")
def hashed(tiny):
    folder, files = tiny
    return {**files, **{f"{k}:sha": _sha(folder / v) for k, v in files.items()}}


def _rows(folder: Path) -> list[dict]:
    """Documents or rejects, in id order, without the one field that is a timing."""
    rows = [json.loads(line) for f in sorted(folder.glob("*.jsonl.gz"))
            for line in gzip.open(f, "rt", encoding="utf-8")]
    for r in rows:
        for meta in (r.get("metadata"), r.get("detail")):
            if isinstance(meta, dict):
                meta.pop("extract_ms", None)
    return sorted(rows, key=lambda r: (r["id"], json.dumps(r, sort_keys=True)))


def _cache_files(cache: Path) -> dict[str, tuple[int, int]]:
    return {p.name: (p.stat().st_ino, p.stat().st_mtime_ns)
            for p in cache.iterdir() if p.is_file() and not p.name.endswith(".lock")}


def test_web_with_models_on_s3_equals_local(tiny, hashed, s3, data_dir, tmp_path, monkeypatch,
                                            caplog):
    folder, files = tiny
    caplog.set_level(logging.INFO, logger="skypile")
    cache = tmp_path / "cache"
    monkeypatch.setenv("SKYPILE_MODEL_CACHE", str(cache))
    inputs = ["--input", str(data_dir / "extraction-zh/pages.warc.gz"), "--stages", STAGES]
    local_cfg, s3_cfg = tmp_path / "local.json", tmp_path / "s3.json"
    local_cfg.write_text(json.dumps(_config(str(folder), hashed)))
    s3_cfg.write_text(json.dumps(_config("s3://models/m", hashed, s3)))

    assert run(["--config", str(local_cfg), "--output", str(tmp_path / "local"), *inputs]) == 0
    assert not cache.exists() or not _cache_files(cache)  # local models are used in place
    assert run(["--config", str(s3_cfg), "--output", str(tmp_path / "s3"), *inputs]) == 0
    fetched = sorted(r.getMessage().split(" ")[2] for r in caplog.records
                     if " fetched " in r.getMessage())
    assert fetched == sorted(f"s3://models/m/{name}" for name in files.values())

    local_docs, s3_docs = _rows(tmp_path / "local/docs"), _rows(tmp_path / "s3/docs")
    assert local_docs == s3_docs and len(local_docs) >= 10
    for d in local_docs:
        m = d["metadata"]
        assert {"lang", "perplexity", "quality_score", "stem_score", "corpus"} <= set(m), m
    assert _rows(tmp_path / "local/rejects") == _rows(tmp_path / "s3/rejects")
    stats = [json.loads((tmp_path / k / "stats.json").read_text())["stages"] for k in ("local", "s3")]
    assert stats[0] == stats[1]

    # one verified copy of each remote model, named for its URL and sha256, nothing half-written
    cached = _cache_files(cache)
    assert sorted(n.split("-", 1)[1] for n in cached) == sorted(files.values())
    by_name = {n.split("-", 1)[1]: n for n in cached}
    for key, name in files.items():
        assert _sha(cache / by_name[name]) == hashed[f"{key}:sha"]

    # a second run, in a fresh process as on another worker, finds them: nothing is fetched
    proc = subprocess.run([sys.executable, "-m", "skypile.cli", "web", "--config", str(s3_cfg),
                           "--output", str(tmp_path / "again"), *inputs],
                          capture_output=True, text=True, cwd=tmp_path,
                          env={**os.environ, "SKYPILE_MODEL_CACHE": str(cache),
                               "SKYPILE_LOG": "INFO"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "Perplexity" in proc.stderr or "perplexity" in proc.stderr  # its log is shown...
    assert " fetched " not in proc.stderr  # ...and no model was fetched again
    assert _cache_files(cache) == cached
    assert _rows(tmp_path / "again/docs") == local_docs


def _fetch_together(url, so, barrier, cache):
    """One worker process: wait for the other, then fetch; the fetch's log lines back."""
    import logging

    os.environ["SKYPILE_MODEL_CACHE"] = cache
    lines = []
    handler = logging.Handler()
    handler.emit = lambda record: lines.append(record.getMessage())
    logging.getLogger("skypile").addHandler(handler)
    logging.getLogger("skypile").setLevel(logging.INFO)
    barrier.wait()
    path = models.fetch(url, so, name="quality.model")
    return path, lines


def test_two_processes_fetching_at_once_download_once(tiny, hashed, s3, tmp_path):
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Manager().Barrier(2)
    url = "s3://models/m/quality.bin"
    with ctx.Pool(2) as pool:
        results = pool.starmap(_fetch_together, [(url, s3, barrier, str(tmp_path))] * 2)
    (path_a, log_a), (path_b, log_b) = results
    assert path_a == path_b and _sha(path_a) == hashed["quality:sha"]
    assert len([line for line in log_a + log_b if "fetched" in line]) == 1
    assert [p.name for p in tmp_path.iterdir() if ".tmp-" in p.name] == []


def test_scoring_stages_from_s3_equal_local(tiny, hashed, s3, tmp_path, monkeypatch):
    monkeypatch.setenv("SKYPILE_MODEL_CACHE", str(tmp_path))
    folder, _ = tiny
    local = cfglib.from_dict(WebConfig, _config(str(folder), hashed))
    remote = cfglib.from_dict(WebConfig, _config("s3://models/m", hashed, s3))
    check(remote)  # the launcher's check gives each section the run's storage options
    assert remote.quality.storage_options == s3
    text = ("The committee met on Tuesday to discuss the budget for the coming year, and the "
            "members agreed that the new library should be built before summer.\n") * 3
    for make in (LangIdStage, PerplexityStage, QualityStage, StemStage):
        section = {LangIdStage: "langid", PerplexityStage: "perplexity",
                   QualityStage: "quality", StemStage: "stem"}[make]
        a = make(getattr(local, section))(Document("d", text, "http://x", "t", {"lang": "en"}))
        b = make(getattr(remote, section))(Document("d", text, "http://x", "t", {"lang": "en"}))
        assert a.metadata == b.metadata and a.metadata != {"lang": "en"}, section


def test_tokenizer_from_s3(data_dir, s3, tmp_path, monkeypatch):
    from skypile.tokens import tokenizer as tk

    monkeypatch.setenv("SKYPILE_MODEL_CACHE", str(tmp_path / "cache"))
    model = tk.train([str(data_dir / "wiki-en/wiki.test.raw")], str(tmp_path / "tok"),
                     tk.TokenizerTrainConfig(vocab_size=600, sample_bytes=300_000, threads=1))
    fsspec.filesystem("s3", **s3).put(str(model), "models/tok/tok.model")
    text = "Tokenizers load from object storage as they do from disk: 1234 \u2581 mixed 中文."
    remote = tk.Tokenizer("s3://models/tok/tok.model", s3)
    assert remote.encode(text) == tk.Tokenizer(str(model)).encode(text)
    assert remote.path == "s3://models/tok/tok.model" and _sha(remote.local_path) == _sha(model)
    with pytest.raises(tk.TokenizerError, match="tokenizer: s3://models/tok/none.model does "
                                                "not exist"):
        tk.Tokenizer("s3://models/tok/none.model", s3)


def test_wrong_sha256_is_a_one_line_error_naming_the_model(tiny, hashed, s3, tmp_path,
                                                           monkeypatch, capsys, data_dir):
    cache = tmp_path / "cache"
    monkeypatch.setenv("SKYPILE_MODEL_CACHE", str(cache))
    wrong = "0" * 64
    # a worker fetching a remote model checks what it fetched, and keeps nothing
    cfg = QualityConfig(model="s3://models/m/quality.bin", model_sha256=wrong, storage_options=s3)
    with pytest.raises(models.ModelError) as e:
        QualityStage(cfg)
    message = str(e.value)
    assert "\n" not in message and message.startswith("quality.model s3://models/m/quality.bin "
                                                      f"has sha256 {hashed['quality:sha']}")
    assert f"quality.model_sha256 in the config is {wrong}" in message
    assert [p.name for p in cache.iterdir() if not p.name.endswith(".lock")] == []
    cfg = PerplexityConfig(models={"en": {"sp": "s3://models/m/en.sp.model", "lm": "s3://models/m/"
                                          "en.arpa.bin", "lm_sha256": wrong}}, storage_options=s3)
    with pytest.raises(models.ModelError, match=r"^perplexity\.models\.en\.lm s3://"):
        PerplexityStage(cfg)

    # a local model is checked by the launcher already: exit 2, one line, no run
    folder, _ = tiny
    bad = _config(str(folder), hashed)
    bad["stem"]["model_sha256"] = wrong
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    rc = run(["--config", str(tmp_path / "bad.json"), "--output", str(tmp_path / "out"),
              "--input", str(data_dir / "extraction-zh/pages.warc.gz")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and not (tmp_path / "out").exists()
    assert err.startswith(f"skypile web: error: stem.model {folder}/stem.bin has sha256 ")
    assert len(err.splitlines()) == 1


def test_missing_model_url_is_the_launchers_one_line_error(tiny, hashed, s3, tmp_path, data_dir):
    cfg = _config("s3://models/m", hashed, s3)
    cfg["quality"]["model"] = "s3://models/m/missing.bin"
    (tmp_path / "web.json").write_text(json.dumps(cfg))
    proc = subprocess.run([sys.executable, "-m", "skypile.cli", "web", "--config",
                           str(tmp_path / "web.json"), "--output", str(tmp_path / "out"),
                           "--input", str(data_dir / "extraction-zh/pages.warc.gz")],
                          capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr == ("skypile web: error: quality.model: s3://models/m/missing.bin "
                           "does not exist\n")
    assert not (tmp_path / "out").exists()


def test_config_paths_are_relative_to_the_config_file(tmp_path, s3, monkeypatch):
    data = {"quality": {"model": "q.bin", "model_sha256": "ab" * 32},
            "perplexity": {"models": {"en": {"sp": "m/en.sp.model", "lm": "/abs/en.bin",
                                             "lm_sha256": "cd" * 32}},
                           "cutoffs": "s3://other/cutoff.csv"},
            "stem": {"model": "gs://b/stem.bin"}}
    on_s3 = models.rebase_paths(WebConfig, data, "s3://models/m/web.yaml")
    assert on_s3["quality"] == {"model": "s3://models/m/q.bin", "model_sha256": "ab" * 32}
    assert on_s3["perplexity"]["models"]["en"] == {"sp": "s3://models/m/m/en.sp.model",
                                                   "lm": "/abs/en.bin", "lm_sha256": "cd" * 32}
    assert on_s3["perplexity"]["cutoffs"] == "s3://other/cutoff.csv"
    assert on_s3["stem"]["model"] == "gs://b/stem.bin"
    # a config file read from S3 (credentials from the environment, as on a cluster)
    fs = fsspec.filesystem("s3", **s3)
    fs.pipe("models/cfg/web.yaml", yaml.safe_dump({"quality": {"model": "quality.bin"}}).encode())
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3["client_kwargs"]["endpoint_url"])
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3["key"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3["secret"])
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    assert cfglib.load(WebConfig, "s3://models/cfg/web.yaml").quality.model == \
        "s3://models/cfg/quality.bin"
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub/web.yaml").write_text("quality: {model: ../q.bin}\n")
    monkeypatch.chdir(REPO)
    assert cfglib.load(WebConfig, str(tmp_path / "sub/web.yaml")).quality.model == \
        str(tmp_path / "q.bin")


def test_classifiers_train_writes_a_portable_web_yaml(trained_models):
    folder, _ = trained_models
    text = (folder / "web.yaml").read_text(encoding="utf-8")
    assert str(folder) not in text and str(Path.home()) not in text
    raw = yaml.safe_load(text)

    def strings(node):
        if isinstance(node, dict):
            for v in node.values():
                yield from strings(v)
        elif isinstance(node, list):
            for v in node:
                yield from strings(v)
        elif isinstance(node, str):
            yield node

    assert not [s for s in strings(raw) if os.path.isabs(s)]
    paths = {"quality.model": raw["quality"]["model"], "stem.model": raw["stem"]["model"],
             "perplexity.cutoffs": raw["perplexity"]["cutoffs"],
             **{f"perplexity.models.{lang}.{k}": m[k]
                for lang, m in raw["perplexity"]["models"].items() for k in ("sp", "lm")}}
    shas = {"quality.model": raw["quality"]["model_sha256"],
            "stem.model": raw["stem"]["model_sha256"],
            "perplexity.cutoffs": raw["perplexity"]["cutoffs_sha256"],
            **{f"perplexity.models.{lang}.{k}": m[f"{k}_sha256"]
               for lang, m in raw["perplexity"]["models"].items() for k in ("sp", "lm")}}
    assert len(paths) == 7
    for name, rel in paths.items():  # relative to web.yaml's folder, each with its sha256
        assert not rel.startswith("/") and (folder / rel).is_file(), name
    for name, rel in paths.items():
        assert shas[name] == _sha(folder / rel), name
    # moved elsewhere, the folder still runs: paths resolve against the file's new home
    cfg = cfglib.load(WebConfig, str(folder / "web.yaml"))
    assert cfg.quality.model == str(folder / "quality.bin")
    assert cfg.stem.model_sha256 == shas["stem.model"]
