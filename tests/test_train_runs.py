"""Training runs that crash, resume and log: rows survive a stop, each step is logged once,
a resume must keep the stream, the repetition cap holds, losses are global means, and a
Hugging Face Llama goes in and comes out with the same logits."""

import csv
import json
import os
import subprocess
import sys

import pytest

from skypile import config as cfglib
from skypile.trainer.train import train
from trainer_data import config, make_shards

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def shards(data_dir, tmp_path_factory):
    return make_shards(data_dir, tmp_path_factory.mktemp("runs"), 800)


def rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_crash_drill_keeps_every_row_and_logs_each_step_once(shards, tmp_path):
    straight = train(config(shards, tmp_path / "a"), log=lambda *_: None)
    lines = []
    train(config(shards, tmp_path / "b", stop_at=5), log=lines.append)
    run = tmp_path / "b"
    # stopped after step 5 with the last checkpoint at 3: every row so far is on disk
    assert [r["step"] for r in rows(run / "metrics.csv")] == ["1", "2", "3", "4", "5"]
    assert [r["step"] for r in rows(run / "validation.csv")] == ["3"]
    assert sorted(p.name for p in run.glob("step-*")) == ["step-3"]
    assert any("stopped at step 5" in line for line in lines)
    # the schedule was not shortened: the learning rate at step 5 is the 6-step run's
    assert float(rows(run / "metrics.csv")[4]["lr"]) == straight[4]["lr"]
    lines.clear()
    resumed = train(config(shards, run), log=lines.append)
    assert any("dropped 2 rows after step 3" in line for line in lines)
    logged = rows(run / "metrics.csv")
    assert [r["step"] for r in logged] == ["1", "2", "3", "4", "5", "6"]
    assert [float(r["loss"]) for r in logged[3:]] == [r["loss"] for r in resumed]
    assert [r["loss"] for r in resumed] == [r["loss"] for r in straight[3:]]  # bit for bit
    assert [r["step"] for r in rows(run / "validation.csv")] == ["3", "6"]


def test_resume_refuses_another_seed_or_mixture(shards, tmp_path):
    train(config(shards, tmp_path / "r", steps=3), log=lambda *_: None)
    with pytest.raises(cfglib.ConfigError, match="trained with data.seed=0, this run has 7"):
        train(config(shards, tmp_path / "r", **{"data.seed": 7}), log=lambda *_: None)
    with pytest.raises(cfglib.ConfigError, match="another mixture"):
        train(config(shards, tmp_path / "r", **{"data.weights": {"stem": 0.9, "web_zh": 0.1}}),
              log=lambda *_: None)
    # the same stream (weights given in another scale) resumes
    assert train(config(shards, tmp_path / "r", **{"data.weights": {"stem": 1, "web_zh": 1}}),
                 log=lambda *_: None)[0]["step"] == 4


def test_the_repeat_cap_refuses_or_warns(shards, tmp_path):
    cap = {"data.max_repeat": 0.001}  # 6 steps x 256 tokens is ~0.003 passes over stem
    with pytest.raises(cfglib.ConfigError, match=r"source 'stem' would be repeated 0.00\d+ times in 6 steps"):
        train(config(shards, tmp_path / "c", **cap), log=lambda *_: None)
    assert not (tmp_path / "c").exists()  # refused before anything was built or written
    lines = []
    out = train(config(shards, tmp_path / "w", **cap, **{"data.over_repeat": "warn"}),
                log=lines.append)
    assert any(line.startswith("warning: source 'stem' would be repeated") for line in lines)
    assert any("passed data.max_repeat=0.001 passes" in line for line in lines)
    assert out[-1]["max_epochs"] > 0.001


def cli(*args, **env):
    return subprocess.run([sys.executable, "-m", "skypile.cli", "train", *args],
                          capture_output=True, text=True, env=dict(os.environ, **env), timeout=300)


@pytest.mark.parametrize("weights, message", [
    ("{stem: lots}", "data.weights.stem: expected a number, got 'lots'"),
    ("{stem: -1}", "data.weights.stem=-1.0: a weight is a finite number >= 0"),
    ("{stem: 0}", "data.weights: the weights sum to zero"),
    ("[stem]", "data.weights: expected a mapping, got ['stem']"),
    ("{code: 1}", "data.weights names 'code', which has no 65-token windows"),
])
def test_a_malformed_mixture_is_one_line(shards, tmp_path, weights, message):
    p = cli(f"--data.shards={shards}", "--preset=debug", "--data.seq_len=64",
            f"--checkpoint.dir={tmp_path}", f"--data.weights={weights}")
    assert p.returncode == 2, p.stderr
    [line] = p.stderr.strip().splitlines()
    assert line.startswith("skypile train: error: ") and message in line


def test_two_replicas_log_the_global_batch_mean(shards, tmp_path):
    """Two processes with 2 rows each log the losses of one process with the 4 rows."""
    common = [f"--data.shards={shards}", "--preset=debug", "--steps=2", "--data.seq_len=64",
              "--optim.lr=3e-3", "--optim.warmup_steps=1", "--data.weights={stem: 0.5, web_zh: 0.5}",
              "--checkpoint.every=0", "--eval.every=1", "--eval.batches=2"]
    one = cli(*common, f"--checkpoint.dir={tmp_path / 'one'}", "--data.batch_size=4")
    assert one.returncode == 0, one.stderr[-2000:]
    two = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
         "29531", "-m", "skypile.cli", "train", *common, f"--checkpoint.dir={tmp_path / 'two'}",
         "--data.batch_size=2"], capture_output=True, text=True, timeout=600,
        env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert two.returncode == 0, two.stderr[-3000:]
    a, b = rows(tmp_path / "one/metrics.csv"), rows(tmp_path / "two/metrics.csv")
    assert abs(float(a[0]["loss"]) - float(b[0]["loss"])) < 1e-5 * float(a[0]["loss"])
    va, vb = rows(tmp_path / "one/validation.csv"), rows(tmp_path / "two/validation.csv")
    for domain in ("stem", "web_zh"):
        assert abs(float(va[0][domain]) - float(vb[0][domain])) < 1e-4 * float(va[0][domain])


def test_hugging_face_in_and_out_keeps_the_logits(shards, tmp_path, monkeypatch):
    """A released-style Llama folder (sharded safetensors) -> --init-from -> our checkpoint
    -> export (sharded, streamed) -> transformers: the logits are the original model's."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from skypile.trainer.export import run as export
    from skypile.trainer.train import run as train_cli

    torch.manual_seed(0)
    hf = LlamaForCausalLM(LlamaConfig(
        hidden_size=64, intermediate_size=176, num_hidden_layers=3, num_attention_heads=4,
        num_key_value_heads=4, vocab_size=4096, max_position_embeddings=128,
        rms_norm_eps=1e-5, rope_theta=50000.0, tie_word_embeddings=False)).eval()
    hf.save_pretrained(tmp_path / "released", max_shard_size="400KB")
    assert (tmp_path / "released/model.safetensors.index.json").exists()
    assert train_cli(["--init-from", str(tmp_path / "released"), f"--data.shards={shards}",
                      "--steps=1", "--optim.lr=0", "--optim.min_lr=0", "--optim.warmup_steps=0",
                      "--data.weights={stem: 1}", "--data.seq_len=32", "--data.batch_size=2",
                      f"--checkpoint.dir={tmp_path / 'run'}", "--eval.every=0"]) == 0
    saved = json.loads((tmp_path / "run/config.json").read_text())
    assert saved["model"]["dim"] == 64 and saved["model"]["rope_theta"] == 50000.0
    monkeypatch.chdir(tmp_path / "released")  # another folder: the tokenizer is still found
    assert export(["hf", "--checkpoint", str(tmp_path / "run"), "--output", str(tmp_path / "out"),
                   "--max-shard-gb", "0.0004"]) == 0
    index = json.loads((tmp_path / "out/model.safetensors.index.json").read_text())
    files = sorted({f for f in index["weight_map"].values()})
    assert len(files) > 2 and all((tmp_path / "out" / f).exists() for f in files)
    back = LlamaForCausalLM.from_pretrained(tmp_path / "out", local_files_only=True).eval()
    ids = torch.randint(0, 4000, (2, 48))
    with torch.no_grad():
        assert torch.allclose(hf(ids).logits, back(ids).logits, atol=1e-5, rtol=0)
