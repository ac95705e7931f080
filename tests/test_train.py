"""The trainer on the CPU, on token shards the project writes from real text."""

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
    return make_shards(data_dir, tmp_path_factory.mktemp("train"), 1500)


def test_loss_goes_down_and_outputs_are_written(shards, tmp_path):
    rows = train(config(shards, tmp_path / "run", steps=40, **{"eval.every": 20}), log=lambda *_: None)
    first = sum(r["loss"] for r in rows[:5]) / 5
    last = sum(r["loss"] for r in rows[-5:]) / 5
    assert last < first - 0.5
    for name in ("metrics.csv", "validation.csv", "validation.png", "config.json"):
        assert (tmp_path / "run" / name).exists()
    assert list((tmp_path / "run" / "tensorboard").glob("events.out.tfevents.*"))
    vals = (tmp_path / "run/validation.csv").read_text().splitlines()
    assert vals[0].startswith("step,") and "stem" in vals[0] and len(vals) == 3
    assert sorted(p.name for p in (tmp_path / "run").glob("step-*")) == ["step-40"]  # keep_last 1


def test_resume_is_exact(shards, tmp_path):
    straight = train(config(shards, tmp_path / "a"), log=lambda *_: None)
    train(config(shards, tmp_path / "b", steps=3), log=lambda *_: None)
    resumed = train(config(shards, tmp_path / "b"), log=lambda *_: None)
    assert [r["loss"] for r in resumed] == [r["loss"] for r in straight[3:]]  # bit for bit


def test_two_processes_with_fsdp2_lower_the_validation_loss(shards, tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
           "--master_port", "29517", "-m", "skypile.cli", "train",
           f"--data.shards={shards}", f"--checkpoint.dir={tmp_path / 'fsdp'}", "--preset=debug",
           "--steps=30", "--data.seq_len=64", "--data.batch_size=4", "--optim.lr=3e-3",
           "--optim.warmup_steps=3", "--data.weights={stem: 0.5, web_zh: 0.5}",
           "--checkpoint.every=15", "--eval.every=1", "--eval.batches=2",
           "--parallel.activation_checkpointing=true"]
    p = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    assert (tmp_path / "fsdp" / "step-30" / ".metadata").exists()
    import csv
    vals = list(csv.DictReader(open(tmp_path / "fsdp" / "validation.csv")))
    for domain in ("stem", "web_zh"):
        assert float(vals[-1][domain]) < float(vals[0][domain]) - 0.5, (domain, vals[0], vals[-1])


def test_stage2_init_from_stage1(shards, tmp_path):
    train(config(shards, tmp_path / "s1"), log=lambda *_: None)
    rows = train(config(shards, tmp_path / "s2", **{
        "checkpoint.init_from": str(tmp_path / "s1" / "step-6"), "optim.schedule": "constant",
        "data.ramp_source": "stem", "data.weights": {"stem": 0.1, "web_zh": 0.9}}),
        log=lambda *_: None)
    fresh = train(config(shards, tmp_path / "fresh"), log=lambda *_: None)
    assert rows[0]["loss"] < fresh[0]["loss"] - 0.5  # it starts from the trained weights
    assert all(r["lr"] == 3e-4 for r in rows)


def test_zero1_two_processes(shards, tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
           "--master_port", "29518", "-m", "skypile.cli", "train",
           f"--data.shards={shards}", f"--checkpoint.dir={tmp_path / 'z1'}", "--preset=debug",
           "--steps=3", "--data.seq_len=64", "--data.batch_size=2", "--parallel.zero1=true",
           "--data.weights={stem: 0.5, web_zh: 0.5}", "--checkpoint.every=0", "--eval.every=0"]
    p = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]


@pytest.mark.parametrize("schedule,procs,port,extra", [
    ("gpipe", 2, 29519, ["--parallel.activation_checkpointing=true"]),  # applied per stage
    ("1f1b", 2, 29520, []), ("1f1b", 4, 29521, [])])
def test_pipeline_stages_match_no_pipeline(shards, tmp_path, schedule, procs, port, extra):
    """Same init, same global batch: losses through 2 stages (x 2 data-parallel replicas with
    4 processes) equal the plain run's within 1e-4 relative, training and validation
    (recomputing activations changes no number)."""
    plain = train(config(shards, tmp_path / "plain", steps=2, **{"eval.every": 2}),
                  log=lambda *_: None)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    per_rank = 4 // (procs // 2)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(procs),
           "--master_port", str(port), "-m", "skypile.cli", "train",
           f"--data.shards={shards}", f"--checkpoint.dir={tmp_path / 'pp'}", "--preset=debug",
           "--steps=2", "--data.seq_len=64", f"--data.batch_size={per_rank}", "--parallel.pp=2",
           f"--parallel.pp_schedule={schedule}", "--parallel.microbatches=2",
           "--optim.lr=3e-3", "--optim.min_lr=3e-4", "--optim.warmup_steps=2",
           "--data.weights={stem: 0.5, web_zh: 0.5}", "--checkpoint.every=0", "--eval.every=2",
           "--eval.batches=2", *extra]
    p = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    import csv
    rows = list(csv.DictReader(open(tmp_path / "pp" / "metrics.csv")))
    for ours, ref in zip(rows, plain):
        assert abs(float(ours["loss"]) - ref["loss"]) < 1e-4 * ref["loss"], (ours["loss"], ref["loss"])
    val = list(csv.DictReader(open(tmp_path / "pp" / "validation.csv")))[-1]
    ref = list(csv.DictReader(open(tmp_path / "plain" / "validation.csv")))[-1]
    for domain in ("stem", "web_zh"):
        assert abs(float(val[domain]) - float(ref[domain])) < 1e-4 * float(ref[domain])


@pytest.mark.parametrize("over, message", [
    ({"parallel.microbatches": 3}, "not a multiple of parallel.microbatches"),
    ({"parallel.pp": 3}, "does not divide the 2 processes"),
    ({"parallel.microbatches": 1}, "1f1b needs parallel.microbatches >= parallel.pp"),
])
def test_pipeline_refuses_what_it_cannot_honour(over, message):
    from skypile.trainer import pipeline

    cfg = config("unused", "unused", **{"parallel.pp": 2, **over})
    with pytest.raises(cfglib.ConfigError, match=message):
        pipeline.check(cfg, world=2)
    # fsdp's default, ZeRO-1 and bf16 all combine with stages (tests/test_parallel.py)
    for ok in ({}, {"parallel.zero1": True, "parallel.bf16": True}):
        pipeline.check(config("unused", "unused", **{"parallel.pp": 2, **ok}), world=4)


def test_bad_schedule_is_one_line(tmp_path):
    p = subprocess.run([sys.executable, "-m", "skypile.cli", "train", "--data.shards=x",
                        "--parallel.pp_schedule=zigzag"], capture_output=True, text=True)
    assert p.returncode == 2 and p.stderr.strip().splitlines() == [
        "skypile train: error: parallel.pp_schedule='zigzag': use one of 1f1b, gpipe"]
