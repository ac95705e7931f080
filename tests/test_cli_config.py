import dataclasses
import subprocess
import sys

import pytest

from skypile import config
from skypile.config import split_overrides
from skypile.jobs.web import WebConfig


def skypile(*args, **kw):
    return subprocess.run([sys.executable, "-m", "skypile.cli", *args], capture_output=True,
                          text=True, **kw)


def test_top_level_help_lists_commands():
    p = skypile("--help")
    assert p.returncode == 0 and "web" in p.stdout and "usage: skypile" in p.stdout


def test_web_help_explains_inputs_outputs_and_beam_flags():
    p = skypile("web", "--help")
    assert p.returncode == 0
    for word in ("--input", "--output", "--stages", "--config", "DataflowRunner",
                 "FlinkRunner", "stats.json", "rejects"):
        assert word in p.stdout


@pytest.mark.parametrize("args,message", [
    (["--input", "/no/such/*.warc.gz", "--output", "o"], "no input matches /no/such/*.warc.gz"),
    (["--input", "x", "--output", "o", "--stages", "extract,magic"], "unknown stage 'magic'"),
    (["--input", "x", "--output", "o", "--extract.no_such_key=1"],
     "unknown config key extract.no_such_key"),
    (["--input", "x", "--output", "o", "--extract.timeout_s=soon"], "expected a number"),
    (["--input", "x", "--output", "o", "--config", "/no/such.yaml"], "cannot read config"),
])
def test_bad_input_or_config_is_one_line(tmp_path, args, message):
    (tmp_path / "x").write_text("{}")
    p = skypile("web", *args, cwd=tmp_path)
    assert p.returncode == 2
    assert message in p.stderr
    assert "Traceback" not in p.stderr and len(p.stderr.strip().splitlines()) == 1


def test_unknown_command():
    p = skypile("frobnicate")
    assert p.returncode == 2 and "unknown command" in p.stderr


def test_config_file_and_overrides(tmp_path):
    f = tmp_path / "web.yaml"
    f.write_text("stages: [extract]\nextract:\n  timeout_s: 5\n  cleanup:\n    min_line_units: 2\n")
    cfg = config.load(WebConfig, str(f), ["extract.sandbox=false", "read.text_field=content"])
    assert cfg.extract.timeout_s == 5.0 and cfg.extract.cleanup.min_line_units == 2
    assert cfg.extract.sandbox is False and cfg.read.text_field == "content"
    assert config.to_dict(cfg)["extract"]["cleanup"]["min_line_units"] == 2


def test_toml_config(tmp_path):
    f = tmp_path / "web.toml"
    f.write_text("[extract]\nmax_depth = 50\n")
    assert config.load(WebConfig, str(f)).extract.max_depth == 50


def test_unknown_keys_are_errors():
    with pytest.raises(config.ConfigError, match="unknown config key extrct"):
        config.from_dict(WebConfig, {"extrct": {}})


def test_split_overrides_passes_beam_flags_through():
    ours, beam_args = split_overrides(["--extract.timeout_s", "3", "--runner", "FlinkRunner",
                                       "--flink_master=localhost:8081", "--read.id_field=doc"])
    assert ours == ["extract.timeout_s=3", "read.id_field=doc"]
    assert beam_args == ["--runner", "FlinkRunner", "--flink_master=localhost:8081"]


def test_every_config_field_is_documented():
    """A newcomer reads the field docstrings; each config field must have one."""
    import inspect
    import typing
    from skypile.text.cleanup import CleanupConfig
    from skypile.text.dedup import BlocksConfig, MinHashConfig
    from skypile.text.extract import ExtractConfig
    from skypile.text.dedup import DedupConfig, ExactConfig, SemanticConfig
    from skypile.files.readers import ReaderOptions
    from skypile.text.heuristics import HeuristicThresholds
    from skypile.classifiers.perplexity import KenLMTrainConfig
    from skypile.classifiers.quality import QualityTrainConfig
    from skypile.jobs.scoring import LangIdConfig, PerplexityConfig, QualityConfig, StemConfig
    from skypile.text.thresholds import FilterConfig
    from skypile.tokens.tokenizer import TokenizerTrainConfig
    for cls in (WebConfig, ExtractConfig, CleanupConfig, ReaderOptions, DedupConfig,
                BlocksConfig, MinHashConfig, ExactConfig, SemanticConfig, HeuristicThresholds,
                LangIdConfig, PerplexityConfig, KenLMTrainConfig, QualityConfig,
                QualityTrainConfig, StemConfig, FilterConfig, TokenizerTrainConfig):
        src = inspect.getsource(cls)
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            if dataclasses.is_dataclass(hints[f.name]):
                continue  # a section: its own fields carry the docs
            after = src.split(f"    {f.name}:", 1)[1].split("\n", 2)
            assert after[1].strip().startswith('"""'), f"{cls.__name__}.{f.name} has no docstring"


def test_an_override_keeps_text_for_a_str_field_and_parses_the_rest():
    from skypile.jobs.tokenize import TokenizeConfig

    cfg = config.load(TokenizeConfig, None, ["labels.default={lang}", "shards.target_tokens=5",
                                             "held_out.fraction=0.5"])
    assert cfg.labels.default == "{lang}"
    assert cfg.shards.target_tokens == 5 and cfg.held_out.fraction == 0.5


def test_flags_from_a_config_type_check_literals_and_bool_defaults():
    import argparse
    import dataclasses
    from typing import Literal

    @dataclasses.dataclass
    class Cmd:
        model: list[str] = dataclasses.field(metadata={"metavar": "PATH"})
        """Models."""
        bench: Literal["a", "b"] = "a"
        """Which one."""
        cache: bool = True
        """Use the cache."""

    ap = argparse.ArgumentParser(prog="x")
    config.add_flags(ap, Cmd)
    cfg = config.from_args(Cmd, ap.parse_args(["--model", "m1", "m2", "--no-cache"]))
    assert cfg == Cmd(model=["m1", "m2"], bench="a", cache=False)
    with pytest.raises(config.ConfigError, match="use one of a, b"):
        config.from_args(Cmd, argparse.Namespace(model=["m"], bench=None, cache=None),
                         ["bench=c"])
