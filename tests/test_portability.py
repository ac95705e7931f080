"""The web pipeline translates to a portable pipeline proto, and the layering holds."""

import pickle
import subprocess
import sys

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions

from skypile.extract import ExtractConfig
from skypile.pipelines.web import Extract, ReadFile, WebConfig, build
from skypile.readers import ReaderOptions


def test_web_pipeline_translates_to_runner_api(tmp_path):
    p = beam.Pipeline(options=PipelineOptions([]))
    build(p, ["a.warc.gz"], WebConfig(), str(tmp_path / "staging"), {"inputs": []})
    proto = p.to_runner_api()
    names = {t.unique_name for t in proto.components.transforms.values()}
    assert {"Read", "Extract", "WriteDocs", "WriteRejects", "WriteStats"} <= names
    beam.Pipeline.from_runner_api(proto, p.runner, p._options)


def test_dofns_pickle_without_models_or_processes():
    ex = Extract(ExtractConfig())
    ex.setup()
    try:
        ex._extractor._sandbox.run("<html><body><p>warm</p></body></html>", "", True, True)
        clone = pickle.loads(pickle.dumps(ex._extractor._sandbox))
        assert clone._proc is None  # a child process never travels with the DoFn
    finally:
        ex.teardown()
    assert pickle.loads(pickle.dumps(ReadFile(ReaderOptions(), {}))).opts == ReaderOptions()


def test_core_imports_neither_beam_nor_torch():
    code = ("import sys, skypile.cli, skypile.readers, skypile.extract, skypile.output, "
            "skypile.config, skypile.stats; "
            "print(sorted(m for m in ('apache_beam', 'torch') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
