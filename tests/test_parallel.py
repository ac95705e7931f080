"""Parallel combinations of the trainer on the CPU (gloo): bf16 on every path, DP x PP with
ZeRO-1 or FSDP2, gradient accumulation, meta-device builds, sharded ZeRO-1 checkpoints, the
memory estimate and MFU.

Multi-process runs go through tests/parallel_probe.py under torchrun (debug preset, a
32-token context, 4 steps, one global batch of 8 sequences however it is split). Their
losses are compared with one process's on the same global batches:

* float32 paths within 1e-4 relative (as the pipeline tests in test_train.py): only the
  order of float32 reductions differs (measured: about 1e-7);
* bf16 paths with the one-process bf16 run within 5e-4 relative: besides the reduction
  order, FSDP2's policy keeps bf16 weights and a bf16 residual stream where autocast keeps
  float32 ones, so values round differently at bf16's 2^-9 (measured: up to 8e-5; a replica
  that skipped the gradient all-reduce was 2e-2 off after 4 steps).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from skypile import config as cfglib
from skypile.trainer import checkpoint, estimate
from skypile.trainer import model as modellib
from skypile.trainer.config import ParallelConfig, TrainConfig
from skypile.trainer.parallelize import parallelize, pipeline_stage
from trainer_data import make_shards

pytestmark = pytest.mark.integration

PROBE = Path(__file__).parent / "parallel_probe.py"
FP32_TOL, BF16_TOL = 1e-4, 5e-4


@pytest.fixture(scope="module")
def shards(data_dir, tmp_path_factory):
    return make_shards(data_dir, tmp_path_factory.mktemp("parallel"), 800)


def flags(shards: str, out: Path, *extra: str) -> list[str]:
    return [f"--data.shards={shards}", f"--checkpoint.dir={out}", "--preset=debug", "--steps=4",
            "--data.seq_len=32", "--data.weights={stem: 0.5, web_zh: 0.5}", "--data.prefetch=0",
            "--optim.lr=3e-3", "--optim.min_lr=3e-4", "--optim.warmup_steps=2",
            "--checkpoint.every=0", "--eval.every=0", "--eval.batches=1", *extra]


def probe(shards: str, out: Path, procs: int, mode: str, *extra: str) -> list[dict]:
    """Run the probe on ``procs`` processes; the report of each rank."""
    port = 29400 + (abs(hash(str(out))) % 500)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(procs),
           "--master_port", str(port), str(PROBE), str(out), mode, *flags(shards, out, *extra)]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=300,
                       env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert p.returncode == 0, p.stderr[-4000:]
    return [json.loads((out / f"rank-{r}.json").read_text()) for r in range(procs)]


@pytest.fixture(scope="module")
def one_process(shards, tmp_path_factory):
    """One process, the whole global batch of 8: the float32 and the bf16 reference."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("parallel_probe", PROBE)
    parallel_probe = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(parallel_probe)
    out = {}
    for name, extra in (("fp32", []), ("bf16", ["--parallel.bf16=true"])):
        args = flags(shards, tmp_path_factory.mktemp(name), "--data.batch_size=8", *extra)
        over, _ = cfglib.split_overrides(args, TrainConfig)
        out[name] = parallel_probe.train(cfglib.load(TrainConfig, None, over))
    return out


def close(ours: list[float], ref: list[float], tol: float) -> bool:
    return all(abs(a - b) <= tol * abs(b) for a, b in zip(ours, ref, strict=True))


def test_one_process_bf16_runs_in_bf16(one_process):
    fp32, bf16 = one_process["fp32"], one_process["bf16"]
    assert fp32["dtypes"] == ["torch.float32"] and bf16["dtypes"] == ["torch.bfloat16"]
    assert bf16["losses"] != fp32["losses"]  # no longer bit-identical to float32
    assert close(bf16["losses"], fp32["losses"], 1e-3)
    assert fp32["init_equal"] and fp32["wrapper"] == "Transformer"


# id, processes, flags, bf16, what wraps the model ("FSDP..." shards it)
COMBINATIONS = [
    ("ddp-bf16-accum", 2, ["--data.batch_size=2", "--parallel.grad_accum=2",
                           "--parallel.fsdp=false"], True, "DistributedDataParallel"),
    ("zero1-bf16", 2, ["--data.batch_size=4", "--parallel.zero1=true"], True,
     "DistributedDataParallel"),
    ("fsdp2-bf16-accum", 2, ["--data.batch_size=2", "--parallel.grad_accum=2"], True,
     "FSDPTransformer"),
    ("pp-zero1-bf16", 2, ["--data.batch_size=8", "--parallel.pp=2", "--parallel.zero1=true"],
     True, "Transformer"),
    ("pp-gpipe-bf16-ckpt", 2, ["--data.batch_size=8", "--parallel.pp=2",
                               "--parallel.pp_schedule=gpipe",
                               "--parallel.activation_checkpointing=true"], True, "Transformer"),
    ("dp-pp-zero1-bf16-accum", 4, ["--data.batch_size=2", "--parallel.grad_accum=2",
                                   "--parallel.pp=2", "--parallel.zero1=true",
                                   "--parallel.bucket_mb=0.5"], True, "Transformer"),
    ("dp-pp-zero1-fp32", 4, ["--data.batch_size=4", "--parallel.pp=2", "--parallel.zero1=true",
                             "--parallel.bucket_mb=0.5"], False, "Transformer"),
    ("fsdp2-pp-bf16", 4, ["--data.batch_size=4", "--parallel.pp=2"], True, "FSDPTransformer"),
]


@pytest.mark.parametrize("name, procs, extra, bf16, wrapper", COMBINATIONS,
                         ids=[c[0] for c in COMBINATIONS])
def test_combination_matches_one_process(shards, one_process, tmp_path, name, procs, extra,
                                         bf16, wrapper):
    """Each path trains in the precision asked for (a forward hook on every Linear), starts
    from the one-process weights, only holds its stage or shard, and gives the one-process
    losses (training and validation) within the module's tolerances."""
    extra = [*extra, "--parallel.bf16=true"] if bf16 else extra
    reports = probe(shards, tmp_path / name, procs, "train", *extra)
    ref = one_process["bf16" if bf16 else "fp32"]
    tol = BF16_TOL if bf16 else FP32_TOL
    full_bytes = one_process["fp32"]["param_bytes"]
    pp = 2 if "--parallel.pp=2" in extra else 1
    for r in reports:
        assert r["dtypes"] == (["torch.bfloat16"] if bf16 else ["torch.float32"])
        assert r["init_equal"] and r["wrapper"] == wrapper
        assert r["losses"] == reports[0]["losses"]
        assert close(r["losses"], ref["losses"], tol), (r["losses"], ref["losses"])
        for domain, loss in ref["validation"].items():
            assert abs(r["validation"][domain] - loss) <= tol * loss
        share = pp * (r["dp"] if r["sharded"] else 1)
        assert abs(r["param_bytes"] * share - full_bytes) < 0.01 * full_bytes
    if pp > 1:  # stage 0 (the first ranks): the embedding and the first block only
        first, last = reports[0]["names"], reports[-1]["names"]
        assert "tok_embeddings.weight" in first and "output.weight" not in first
        assert "output.weight" in last and not set(first) & set(last)
    if "buckets" in reports[0]:  # replicated stages: every bucket launched from the backward
        assert reports[0]["buckets"] > 1 and reports[0]["early"] == reports[0]["buckets"]


@pytest.mark.parametrize("procs, extra", [
    (2, ["--data.batch_size=4", "--parallel.zero1=true", "--steps=6"]),
    (4, ["--data.batch_size=2", "--parallel.grad_accum=2", "--parallel.zero1=true",
         "--parallel.pp=2", "--parallel.bf16=true"]),
], ids=["zero1", "dp-pp-zero1-bf16"])
def test_zero1_resume_is_exact_and_sharded(shards, tmp_path, procs, extra):
    """3 + 3 resumed steps (2 + 2 with 4 processes) equal the straight steps bit for bit; the
    checkpoint holds each rank's own optimizer shard in its own file, nothing consolidated."""
    import torch.distributed.checkpoint as dcp

    reports = probe(shards, tmp_path, procs, "resume", *extra)
    steps = 6 if "--steps=6" in extra else 4
    for r in reports:
        assert r["resumed_from"] == steps // 2 and r["straight"] == r["resumed"]
    folder = tmp_path / "resumed" / f"step-{steps // 2}"
    # .metadata and one .distcp file per rank: no zero1_optimizer.pt or any other pickle
    assert sorted(p.suffix for p in folder.iterdir()) == [""] + [".distcp"] * procs
    meta = dcp.FileSystemReader(str(folder)).read_metadata()
    names = {".".join(k.split(".")[2:-1]) for k in meta.state_dict_metadata
             if k.startswith("optim.state.") and k.endswith(".exp_avg")}
    assert names == set(one_process_names())  # every parameter's moments, once
    files = {info.relative_path for index, info in meta.storage_data.items()
             if index.fqn.startswith("optim.state.")}
    assert len(files) == procs  # every rank wrote its share


def one_process_names() -> list[str]:
    return [n for n, _ in modellib.build_meta(modellib.PRESETS["debug"]).named_parameters()]


class Allocations(TorchDispatchMode):
    """Bytes of every new storage an operation creates off the meta device."""

    def __init__(self):
        super().__init__()
        self.total = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        from torch.utils._pytree import tree_flatten

        out = func(*args, **(kwargs or {}))
        inputs = {t.untyped_storage().data_ptr() for t in tree_flatten((args, kwargs))[0]
                  if isinstance(t, torch.Tensor) and t.device.type != "meta"}
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor) and t.device.type != "meta" \
                    and t.untyped_storage().data_ptr() not in inputs:
                self.total += t.untyped_storage().nbytes()
        return out


@pytest.mark.parametrize("stage", [0, 1])
def test_a_stage_allocates_only_its_layers(stage):
    """Built on the meta device and cut before it is materialised, a pipeline stage
    allocates its own parameters (and the RoPE tables) only, with the one-process values."""
    cfg = modellib.PRESETS["debug"]
    with Allocations() as seen:
        part = parallelize(pipeline_stage(modellib.build_meta(cfg), stage, 2),
                           ParallelConfig(pp=2, bf16=True, activation_checkpointing=True),
                           torch.device("cpu"), seed=7)
    held = sum(t.numel() * t.element_size() for t in [*part.parameters(), *part.buffers()])
    full = sum(p.numel() * 4 for p in modellib.build_meta(cfg).parameters())
    assert held < 0.55 * full and seen.total < 1.05 * held
    whole = dict(modellib.build(cfg, seed=7).named_parameters())
    for name, p in part.named_parameters():
        name = name.replace("_checkpoint_wrapped_module.", "")
        assert torch.equal(p, whole[name]), name
    assert torch.equal(modellib.build(cfg, seed=7).output.weight, whole["output.weight"])
    assert not torch.equal(modellib.build(cfg, seed=8).output.weight, whole["output.weight"])


def test_flash_attention_is_chosen_on_q_k_v_dtype(monkeypatch):
    """Under autocast the block's input stays float32 and q/k/v are bf16: the flash-attn
    branch must see that (CUDA is stood in for by the CPU, flash-attn by SDPA)."""
    calls = []

    def fake_flash(q, k, v, causal):
        calls.append((q.dtype, k.dtype, v.dtype))
        out = torch.nn.functional.scaled_dot_product_attention(
            q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=causal)
        return out.transpose(1, 2)

    monkeypatch.setattr(modellib, "flash_attn_func", fake_flash)
    monkeypatch.setattr(modellib, "FLASH_DEVICES", ("cpu",))
    model = modellib.build(modellib.PRESETS["debug"])
    x = torch.randint(0, 100, (2, 16))
    model(x)
    assert calls == []  # float32: no flash
    with torch.autocast("cpu", dtype=torch.bfloat16):
        model(x)
    assert calls == [(torch.bfloat16,) * 3] * modellib.PRESETS["debug"].n_layers


@pytest.mark.parametrize("over, message", [
    ({"parallel.pp": 3}, "parallel.pp=3 stages for 2 blocks"),
    ({"parallel.pp": 2, "parallel.microbatches": 1}, "needs parallel.microbatches >= parallel.pp"),
    ({"parallel.grad_accum": 0}, "parallel.grad_accum=0: at least 1"),
])
def test_refused_combinations_are_one_line(tmp_path, over, message):
    args = [f"--{k}={v}" for k, v in over.items()]
    p = subprocess.run([sys.executable, "-m", "skypile.cli", "train", "--preset=debug",
                        "--dry-run", *args], capture_output=True, text=True,
                       env=dict(os.environ, WORLD_SIZE="6"))
    assert p.returncode == 2 and len(p.stderr.strip().splitlines()) == 1, p.stderr
    assert message in p.stderr


# ---------------------------------------------------------------- memory and MFU
SKY = modellib.PRESETS["skywork-13b"]
BLOCK = 4 * 4608 ** 2 + 3 * 4608 * 12288 + 2 * 4608  # 254,813,184 (two norms)
MATS = BLOCK - 2 * 4608  # what autocast casts per block
EMB = 65536 * 4608  # 301,989,888 (and the head)


def train_config(**over) -> TrainConfig:
    base = {"preset": "debug"}
    for k, v in over.items():
        cfglib.set_dotted(base, k, v)
    return cfglib.from_dict(TrainConfig, base)


def test_memory_one_process_float32():
    """debug (d 128, 2 blocks, 4 heads, SwiGLU 352, vocab 4096), 8 x 64 tokens, float32."""
    n = 2 * 4096 * 128 + 2 * (4 * 128 ** 2 + 3 * 128 * 352 + 2 * 128) + 128  # 1,450,624
    cfg = train_config(**{"data.batch_size": 8, "data.seq_len": 64})
    m = estimate.memory_bytes(cfg.model_config(), cfg, world=1)
    layer = 40 * 128 + 16 * 352 + 8 + 4 * 4  # 10,776 bytes per token and block
    head = (12 * 128 + 12 + 8 * 4096) * 512
    assert (m["weights"], m["grads"], m["optimizer"], m["working"]) == (4 * n, 4 * n, 8 * n, 0)
    assert m["activations"] == {"without": 2 * layer * 512 + head,
                                "with": 2 * 4 * 128 * 512 + layer * 512 + head}
    assert m["total"] == 16 * n + 2 * layer * 512 + head  # 51,814,400


def test_memory_13b_zero1_bf16_checkpointed():
    """skywork-13b, ZeRO-1 over 8 GPUs, bf16 autocast, one 4,096-token sequence,
    activation checkpointing."""
    n = 52 * BLOCK + 2 * EMB + 4608  # 13,854,269,952
    cfg = train_config(preset="skywork-13b", **{
        "parallel.zero1": True, "parallel.bf16": True, "parallel.activation_checkpointing": True,
        "data.batch_size": 1, "data.seq_len": 4096})
    m = estimate.memory_bytes(SKY, cfg, world=8)
    layer = 34 * 4608 + 8 * 12288 + 8 + 4 * 36  # autocast: 255,128 bytes per token and block
    head = (12 * 4608 + 12 + 10 * 65536) * 4096
    assert (m["weights"], m["grads"], m["optimizer"]) == (4 * n, 4 * n, 8 * n / 8)
    assert m["working"] == 2 * (52 * MATS + EMB)  # one bf16 copy of every matrix
    assert m["activations"]["with"] == 52 * 4 * 4608 * 4096 + layer * 4096 + head
    assert m["total"] == 8 * n + n + 2 * (52 * MATS + EMB) + m["activations"]["with"]
    assert 148 < m["total"] / 2 ** 30 < 149


def test_memory_13b_zero1_bf16_pp2_on_512():
    """The report's setup as the issue gives it: 512 GPUs, pp 2 (256 replicas), ZeRO-1,
    bf16; 1F1B over 2 microbatches of one sequence. Stage 0 (embedding + 26 blocks, two
    microbatches in flight) needs the most."""
    n = EMB + 26 * BLOCK  # 6,927,132,672
    cfg = train_config(preset="skywork-13b", **{
        "parallel.zero1": True, "parallel.bf16": True, "parallel.pp": 2,
        "data.batch_size": 2, "data.seq_len": 4096})
    m = estimate.memory_bytes(SKY, cfg, world=512)
    layer = 34 * 4608 + 8 * 12288 + 8 + 4 * 36
    assert m["stage"] == 0 and m["parameters"] == n
    assert (m["weights"], m["grads"], m["optimizer"]) == (4 * n, 4 * n, 8 * n / 256)
    # a bf16 copy per microbatch in flight, and the gradients' all-reduce buckets
    assert m["working"] == 2 * 2 * 26 * MATS + 4 * n
    assert m["activations"]["without"] == 26 * layer * 2 * 4096
    p = subprocess.run([sys.executable, "-m", "skypile.cli", "train", "--preset=skywork-13b",
                        "--parallel.zero1=true", "--parallel.bf16=true", "--parallel.pp=2",
                        "--data.batch_size=2", "--data.seq_len=4096", "--dry-run"],
                       capture_output=True, text=True, env=dict(os.environ, WORLD_SIZE="512"))
    shown = json.loads(p.stdout)["memory_per_gpu"]
    assert shown["total_gib"] == round(m["total"] / 2 ** 30, 3) > 100  # not 0.4 GiB
    assert shown["activations_checkpointed_gib"] < shown["activations_gib"]


@pytest.mark.parametrize("mode, dtype, autocast, ckpt", [
    ("fp32", torch.float32, False, False), ("autocast", torch.float32, True, False),
    ("bf16", torch.bfloat16, False, False), ("fp32", torch.float32, False, True)])
def test_activation_estimate_matches_saved_tensors(mode, dtype, autocast, ckpt):
    """The per-token, per-block bytes of the estimate are what autograd saves (counted by
    saved-tensor hooks: 2 blocks minus 1, at 4 minus 2 sequences); bf16 weights stand for
    FSDP2's policy; with checkpointing a block keeps its float32 input."""
    def saved(layers: int, rows: int) -> int:
        mcfg = modellib.ModelConfig(dim=128, n_layers=layers, n_heads=4, ffn_dim=352,
                                    vocab_size=1000, max_seq_len=64)
        model = parallelize(modellib.build_meta(mcfg),
                            ParallelConfig(activation_checkpointing=ckpt, bf16=autocast),
                            torch.device("cpu"), 0).to(dtype)
        weights = {t.untyped_storage().data_ptr() for t in [*model.parameters(), *model.buffers()]}
        kept = {}

        def pack(t):
            if t.untyped_storage().data_ptr() not in weights:
                kept[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            model(torch.randint(0, 1000, (rows, 64)))
        return sum(kept.values())

    per_token = ((saved(2, 4) - saved(1, 4)) - (saved(2, 2) - saved(1, 2))) / 128
    mcfg = modellib.ModelConfig(dim=128, n_layers=2, n_heads=4, ffn_dim=352)
    assert per_token == (4 * 128 if ckpt else estimate.activation_bytes_per_token(mcfg, mode))


def test_mfu_of_the_report():
    """Skywork's 1,873 tokens/s/GPU for 13B on A800 (4,096-token sequences) is about 56%
    MFU with the input embedding left out of 6N."""
    n = modellib.count_params(SKY) - EMB
    flops = estimate.flops_per_token(SKY, n, 4096)
    peak = estimate.peak_tflops_of("NVIDIA A800-SXM4-80GB")
    assert peak == 312.0 and abs(estimate.mfu(1873, flops, peak) - 0.56) < 0.005


def test_stage_flops_add_up_to_the_model():
    from skypile.trainer.train import stage_flops

    whole = stage_flops(modellib.build_meta(SKY), SKY, 4096)
    stages = [stage_flops(pipeline_stage(modellib.build_meta(SKY), s, 2), SKY, 4096)
              for s in range(2)]
    assert whole == sum(stages) == estimate.flops_per_token(
        SKY, modellib.count_params(SKY) - EMB, 4096)
    assert stages[1] > stages[0]  # the head is a matmul, the embedding a lookup


def test_peak_table_and_unknown_devices():
    table = {"NVIDIA H100 80GB HBM3": 989.0, "NVIDIA H100 PCIe": 756.0, "NVIDIA H200": 989.0,
             "NVIDIA A100-SXM4-80GB": 312.0, "NVIDIA A800-SXM4-80GB": 312.0, "NVIDIA L40S": 362.0}
    assert {k: estimate.peak_tflops_of(k) for k in table} == table
    assert estimate.peak_tflops_of("NVIDIA GeForce RTX 4090") is None
    assert estimate.peak_tflops(torch.device("cpu")) == 0.0
    assert estimate.peak_tflops(torch.device("cpu"), override=100.0) == 100.0


def test_legacy_optimizer_layout_still_resumes(tmp_path):
    """Checkpoints written before the optimiser state was keyed by name (parameter groups
    by index) load into a fresh model and optimiser."""
    import torch.distributed.checkpoint as dcp

    from skypile.trainer.optim import OptimConfig, adamw

    def made():
        model = modellib.build(modellib.PRESETS["debug"], seed=1)
        return model, adamw(model, OptimConfig())

    model, opt = made()
    model(torch.randint(0, 100, (1, 8))).sum().backward()
    opt.step()
    dcp.save(checkpoint._state(model, opt, {"step": 1}, flat=False),
             checkpoint_id=str(tmp_path / "step-1"))
    fresh, fresh_opt = made()
    assert checkpoint.load(tmp_path / "step-1", fresh, fresh_opt, {"step": 0}) == {"step": 1}
    p, q = next(fresh.parameters()), next(model.parameters())
    assert torch.equal(p, q) and torch.equal(fresh_opt.state[p]["exp_avg"], opt.state[q]["exp_avg"])
