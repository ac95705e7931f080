"""What a run costs before it runs: FLOPs per token, the devices' peak, memory per rank.

FLOPs and MFU follow torchtitan: FLOPs per token = 6 N + 12 L d T, with N the parameters
without the input embedding (a lookup, not a matmul), L the layers, d the width and T the
sequence length (the attention matmuls); under pipeline parallelism N and L are the
stage's own and the tokens those that pass through the stage. MFU = tokens/s x FLOPs per
token / the device's dense bf16 peak (``PEAK_TFLOPS`` by device name, or
``--peak-tflops``).

Memory per rank (``memory_estimate``), in bytes, for the heaviest pipeline stage:

* weights and gradients: float32 (bf16 never changes the master weights: autocast casts
  in the forward, FSDP2's policy gathers bf16 copies), divided by the data-parallel size
  under FSDP2;
* optimizer: AdamW's two float32 moments, divided by the data-parallel size under FSDP2
  or ZeRO-1;
* working copies: autocast's bf16 casts of the matrices (one per microbatch in flight
  under pipelining without activation checkpointing), or FSDP2's gathered parameters
  (the root and two blocks; a whole stage under pipelining, which keeps them gathered
  between microbatches, plus its unreduced float32 gradients); replicated pipeline
  stages add their gradients' flat all-reduce buckets;
* activations, with and without activation checkpointing: what autograd keeps for the
  backward, per token and block, counted from the block's code and checked against
  saved-tensor hooks (tests/test_train.py): float32 40 d + 16 f, autocast 34 d + 8 f, bf16
  weights (FSDP2's policy) 32 d + 8 f, each + 8 + 4 heads (f the SwiGLU width); with
  checkpointing only the block's input (4 d, or 2 d in bf16), plus one block recomputed.
  The head adds 12 d + 12 per token and about 8 V (10 V with bf16 logits) for the
  log-softmax and the float32 logits (V the vocabulary). Tokens in flight: the
  micro-step's rows x seq_len; under pipelining the first stage holds min(pp,
  microbatches) microbatches with 1F1B and all of them with GPipe.

Not counted: allocator fragmentation, communication buffers, compile's workspaces, the
CUDA context (about 0.5 GiB): the measured peak (``torch.cuda.max_memory_allocated``,
logged next to this estimate on a GPU) says by how much it is off.
"""

from __future__ import annotations

from skypile import config as cfglib
from skypile.trainer.model import ModelConfig

GIB = 1024 ** 3

# dense bf16 TFLOP/s; matched in order against torch.cuda.get_device_name (e.g. "NVIDIA
# H100 80GB HBM3" is the SXM part, "NVIDIA H100 PCIe", "NVIDIA A800-SXM4-80GB")
PEAK_TFLOPS = (("H100 PCIe", 756.0), ("H100 NVL", 835.0), ("H100", 989.0), ("H200", 989.0),
               ("A100", 312.0), ("A800", 312.0), ("L40S", 362.0))


def peak_tflops_of(name: str) -> float | None:
    """The dense bf16 peak of a device by its name (None when unknown)."""
    return next((v for k, v in PEAK_TFLOPS if k.lower() in name.lower()), None)


def peak_tflops(device, override: float = 0.0) -> float:
    """The peak to compute MFU with: ``override`` (``--peak-tflops``) when given, else the
    table's; 0 on a CPU (no MFU); an unknown GPU is a ConfigError (it needs the flag)."""
    if override:
        return float(override)
    if device.type != "cuda":
        return 0.0
    import torch

    name = torch.cuda.get_device_name(device)
    peak = peak_tflops_of(name)
    if peak is None:
        raise cfglib.ConfigError(f"no peak FLOP/s known for {name!r} (known: "
                                 f"{', '.join(k for k, _ in PEAK_TFLOPS)}): pass "
                                 "--peak-tflops=N, its dense bf16 TFLOP/s")
    return peak


def flops_per_token(cfg: ModelConfig, n_params: int, seq_len: int,
                    n_layers: int | None = None) -> float:
    """6 N + 12 L d T: ``n_params`` without the input embedding; ``n_layers`` the blocks
    counted (a pipeline stage's; default all)."""
    layers = cfg.n_layers if n_layers is None else n_layers
    return 6.0 * n_params + 12.0 * layers * cfg.dim * seq_len


def mfu(tokens_per_s: float, flops: float, peak: float) -> float:
    """Model FLOPs utilisation of one device."""
    return tokens_per_s * flops / (peak * 1e12)


def block_params(cfg: ModelConfig) -> int:
    return 4 * cfg.dim * cfg.dim + 3 * cfg.dim * cfg.ffn_dim + 2 * cfg.dim


def stage_layers(n_layers: int, stage: int, stages: int) -> int:
    """Blocks of pipeline stage ``stage`` (the cut of ``parallelize.pipeline_stage``)."""
    per = -(-n_layers // stages)
    return max(0, min(n_layers, (stage + 1) * per) - stage * per)


def stage_params(cfg: ModelConfig, stage: int, stages: int) -> dict[str, int]:
    """Parameters of one stage: all, the matrices autocast casts, and the embedding's."""
    layers = stage_layers(cfg.n_layers, stage, stages)
    emb = cfg.vocab_size * cfg.dim if stage == 0 else 0
    head = cfg.vocab_size * cfg.dim if stage == stages - 1 else 0
    norm = cfg.dim if stage == stages - 1 else 0
    mats = layers * (4 * cfg.dim * cfg.dim + 3 * cfg.dim * cfg.ffn_dim) + head
    return {"all": emb + layers * block_params(cfg) + head + norm, "matrices": mats,
            "embedding": emb, "head": head + norm, "layers": layers}


def activation_bytes_per_token(cfg: ModelConfig, mode: str) -> int:
    """Saved for the backward, per token and block (``mode``: fp32, autocast, bf16)."""
    d, f = cfg.dim, cfg.ffn_dim
    per = {"fp32": 40 * d + 16 * f, "autocast": 34 * d + 8 * f, "bf16": 32 * d + 8 * f}[mode]
    return per + 8 + 4 * cfg.n_heads


def _in_flight(cfg, stage: int) -> tuple[int, int, int]:
    """(microbatches whose activations a stage holds at once, of which at the head, tokens
    per microbatch); without pipelining one "microbatch", the micro-step's rows."""
    p = cfg.parallel
    if p.pp == 1:
        return 1, 1, cfg.data.batch_size * cfg.data.seq_len
    micro = cfg.data.batch_size // max(p.microbatches, 1) * cfg.data.seq_len
    if p.pp_schedule == "gpipe":
        return p.microbatches, p.microbatches, micro
    return min(p.pp - stage, p.microbatches), 1, micro


def _activations(mcfg: ModelConfig, cfg, stage: int, mode: str, layers: int) -> dict:
    held, at_head, micro = _in_flight(cfg, stage)
    layer = activation_bytes_per_token(mcfg, mode)
    head = 0
    if stage == cfg.parallel.pp - 1:
        head = (12 * mcfg.dim + 12 + (8 if mode == "fp32" else 10) * mcfg.vocab_size) \
            * at_head * micro
    kept = (2 if mode == "bf16" else 4) * mcfg.dim
    # checkpointing: each block keeps its input; one block of one microbatch is recomputed
    return {"without": layers * layer * held * micro + head,
            "with": layers * kept * held * micro + (layer * micro if layers else 0) + head}


def _stage_memory(mcfg: ModelConfig, cfg, world: int, stage: int) -> dict:
    from skypile.trainer.parallelize import uses_fsdp

    p = cfg.parallel
    dp = max(world // p.pp, 1)
    sizes = stage_params(mcfg, stage, p.pp)
    n = sizes["all"]
    fsdp = uses_fsdp(p, dp)
    shard = dp if fsdp else 1
    weights, grads = 4 * n / shard, 4 * n / shard
    optim = 8 * n / (dp if fsdp or (p.zero1 and dp > 1) else 1)
    e = 2 if p.bf16 else 4
    if fsdp and p.pp > 1:  # gathered for the whole step, unreduced gradients alongside
        working = e * n + 4 * n
    elif fsdp:
        root = sizes["embedding"] + sizes["head"]
        working = e * (root + 2 * block_params(mcfg))
    elif p.bf16:
        copies = 1 if p.activation_checkpointing else _in_flight(cfg, stage)[0]
        working = 2 * sizes["matrices"] * copies
    else:
        working = 0
    if p.pp > 1 and dp > 1 and not fsdp:  # GradBuckets' flat copies, all in flight at worst
        working += 4 * n
    mode = "bf16" if fsdp and p.bf16 else ("autocast" if p.bf16 else "fp32")
    act = _activations(mcfg, cfg, stage, mode, sizes["layers"])
    chosen = act["with"] if p.activation_checkpointing else act["without"]
    return {"stage": stage, "parameters": n, "weights": weights, "grads": grads,
            "optimizer": optim, "working": working, "activations": act,
            "total": weights + grads + optim + working + chosen}


def memory_bytes(mcfg: ModelConfig, cfg, world: int) -> dict:
    """Bytes per rank for ``cfg``'s combination on ``world`` processes, for the pipeline
    stage that needs the most: weights, grads, optimizer, working (copies), activations
    (with and without checkpointing) and the total of what the config chose."""
    return max((_stage_memory(mcfg, cfg, world, s) for s in range(cfg.parallel.pp)),
               key=lambda m: m["total"])


def memory_estimate(mcfg: ModelConfig, cfg, world: int) -> dict:
    """``memory_bytes`` in GiB (rounded), as the dry run prints it."""
    worst = memory_bytes(mcfg, cfg, world)
    act = worst["activations"]
    fixed = worst["weights"] + worst["grads"] + worst["optimizer"] + worst["working"]

    def gib(x: float) -> float:
        return round(x / GIB, 3)

    return {"stage": worst["stage"], "stage_parameters": worst["parameters"],
            "data_parallel": max(world // cfg.parallel.pp, 1),
            "weights_gib": gib(worst["weights"]), "grads_gib": gib(worst["grads"]),
            "optimizer_gib": gib(worst["optimizer"]), "working_copies_gib": gib(worst["working"]),
            "activations_gib": gib(act["without"]),
            "activations_checkpointed_gib": gib(act["with"]),
            "total_gib": gib(worst["total"]),
            "total_gib_without_checkpointing": gib(fixed + act["without"]),
            "total_gib_with_checkpointing": gib(fixed + act["with"])}
