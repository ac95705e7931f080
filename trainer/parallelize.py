"""Parallelism applied to a built model: activation checkpointing, compile, FSDP2 / ZeRO-1.

The model code knows nothing of this; ``parallelize`` wraps what it is given.
Pipeline parallelism (torch.distributed.pipelining over the layer dict) is not here yet.
"""

from __future__ import annotations

import torch
from torch import nn

from skypile.trainer.config import ParallelConfig


def parallelize(model: nn.Module, cfg: ParallelConfig, world: int) -> nn.Module:
    if cfg.activation_checkpointing:
        from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import checkpoint_wrapper

        for name, block in list(model.layers.items()):
            model.layers[name] = checkpoint_wrapper(block)
    if cfg.compile:
        for name, block in list(model.layers.items()):
            model.layers[name] = torch.compile(block)
    if world > 1 and cfg.fsdp and not cfg.zero1:
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
