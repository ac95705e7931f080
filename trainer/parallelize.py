"""Parallelism applied to a built model: activation checkpointing, compile, FSDP2 / ZeRO-1.

The model code knows nothing of this; ``parallelize`` wraps what it is given (a whole model,
or one pipeline stage: trainer/pipeline.py calls it per stage), and ``pipeline_stage`` cuts
a full model down to one pipeline stage's layers (the layer dict keeps the full model's
names, so checkpoints move between pipelined and plain runs).
"""

from __future__ import annotations

import torch
from torch import nn

from skypile.trainer.config import ParallelConfig


def pipeline_stage(model: nn.Module, stage: int, n_stages: int) -> nn.Module:
    """Keep this stage's contiguous share of the blocks; embeddings first, head last."""
    names = list(model.layers.keys())
    per = -(-len(names) // n_stages)
    keep = set(names[stage * per:(stage + 1) * per])
    for name in names:
        if name not in keep:
            del model.layers[name]
    if stage != 0:
        model.tok_embeddings = None
    if stage != n_stages - 1:
        model.norm = None
        model.output = None
    return model


def clip_grad_norm_across(model: nn.Module, max_norm: float, group) -> float:
    """Global gradient-norm clip when parameters are spread over pipeline stages."""
    import torch.distributed as dist

    grads = [p.grad for p in model.parameters() if p.grad is not None]
    local = torch.stack([g.detach().float().pow(2).sum() for g in grads]).sum() if grads \
        else torch.zeros((), device=next(model.parameters()).device)
    dist.all_reduce(local, group=group)
    norm = local.sqrt()
    scale = (max_norm / (norm + 1e-6)).clamp(max=1.0)
    for g in grads:
        g.mul_(scale)
    return float(norm)


def uses_fsdp(cfg: ParallelConfig, world: int) -> bool:
    """Whether FSDP2 shards the model: asked for, more than one process, and neither ZeRO-1
    nor pipeline stages (those replicate the weights)."""
    return world > 1 and cfg.fsdp and not cfg.zero1 and cfg.pp == 1


def parallelize(model: nn.Module, cfg: ParallelConfig, world: int) -> nn.Module:
    """Wrap ``model`` for ``world`` data-parallel replicas: per-block activation
    checkpointing and compile, then FSDP2 (bf16 policy with ``cfg.bf16``) or DDP.
    ``world=1`` applies only the per-block wrappers."""
    if cfg.activation_checkpointing:
        from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import checkpoint_wrapper

        for name, block in list(model.layers.items()):
            model.layers[name] = checkpoint_wrapper(block)
    if cfg.compile:
        for name, block in list(model.layers.items()):
            model.layers[name] = torch.compile(block)
    if uses_fsdp(cfg, world):
        from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

        mp = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32) \
            if cfg.bf16 else MixedPrecisionPolicy()
        for block in model.layers.values():
            fully_shard(block, mp_policy=mp)
        fully_shard(model, mp_policy=mp)
    elif world > 1:
        # ZeRO-1 and plain data parallel: gradients are all-reduced by DDP; ZeRO-1's
        # optimizer-state sharding is applied where the optimizer is built
        from torch.nn.parallel import DistributedDataParallel

        model = DistributedDataParallel(model)
    return model
