"""Parallelism applied to a model built on the meta device, then the local part materialised.

The model code knows nothing of this; ``parallelize`` wraps what it is given (a whole model,
or one pipeline stage: trainer/pipeline.py cuts the stage with ``pipeline_stage`` and calls
it per stage) over the data-parallel mesh it is given:

* activation checkpointing and compile, per block;
* bf16: FSDP2's mixed-precision policy (bf16 parameters and activations, float32 gradient
  reduction) when FSDP2 shards the model, otherwise autocast around the model's forward
  (one process, DDP, ZeRO-1, pipeline stages without FSDP2), so every path honours it;
* FSDP2 (``fully_shard`` per block, then the root) on the meta model, or DDP (bucketed
  all-reduce, overlapped with the backward; ZeRO-1's optimizer sharding is in optim.py)
  once the weights exist;
* ``materialize``: allocate only this process's parameters (its stage, its FSDP shard) and
  give each the value a one-process build with the same seed has
  (model.init_parameter_).

The layer dict keeps the full model's names, so checkpoints move between pipelined and
plain runs.
"""

from __future__ import annotations

import contextlib
import functools

import torch
from torch import nn

from skypile.trainer import model as modellib
from skypile.trainer.config import ParallelConfig

# what wrappers insert into parameter names (checkpoint_wrapper, torch.compile, FSDP1, DDP);
# the FSDP1 part goes before "module.", which it contains
WRAPPER_PARTS = ("_checkpoint_wrapped_module.", "_orig_mod.", "_fsdp_wrapped_module.", "module.")


def canonical(name: str) -> str:
    """A parameter's name in the plain model, without the wrappers' parts."""
    for part in WRAPPER_PARTS:
        name = name.replace(part, "")
    return name


def pipeline_stage(model: nn.Module, stage: int, n_stages: int) -> nn.Module:
    """Keep this stage's contiguous share of the blocks; embeddings first, head last (on the
    meta device nothing is freed or allocated)."""
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


def clip_grad_norm_across(model: nn.Module, max_norm: float, group=None) -> float:
    """Global gradient-norm clip when parameters are spread over pipeline stages (``group``)
    and possibly FSDP2-sharded within a stage (their norm is a DTensor: made whole first)."""
    import torch.distributed as dist
    from torch.distributed.tensor import DTensor

    params = [p for p in model.parameters() if p.grad is not None]
    if params:
        norm = torch.nn.utils.get_total_norm([p.grad for p in params], 2.0)
        if isinstance(norm, DTensor):
            norm = norm.full_tensor()
    else:
        norm = torch.zeros((), device=next(model.parameters()).device)
    if group is not None:
        square = norm.float() ** 2
        dist.all_reduce(square, group=group)
        norm = square.sqrt()
    if params:
        torch.nn.utils.clip_grads_with_norm_(params, max_norm, norm)
    return float(norm)


def uses_fsdp(cfg: ParallelConfig, dp: int) -> bool:
    """Whether FSDP2 shards the model (or each pipeline stage) over ``dp`` data-parallel
    replicas: asked for, more than one replica, and not ZeRO-1 (which keeps whole weights)."""
    return dp > 1 and cfg.fsdp and not cfg.zero1


def autocast_forward(module: nn.Module, device_type: str) -> None:
    """Run ``module``'s forward under bf16 autocast (the backward follows the forward's
    dtypes); its parameters, gradients and optimizer state stay float32."""
    forward = module.forward

    @functools.wraps(forward)
    def run(*args, **kwargs):
        with torch.autocast(device_type, dtype=torch.bfloat16):
            return forward(*args, **kwargs)

    module.forward = run


def _shard(model: nn.Module, cfg: ParallelConfig, mesh, reshard_after_forward: bool) -> None:
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    mp = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32) \
        if cfg.bf16 else MixedPrecisionPolicy()
    for block in model.layers.values():
        fully_shard(block, mesh=mesh, mp_policy=mp, reshard_after_forward=reshard_after_forward)
    fully_shard(model, mesh=mesh, mp_policy=mp, reshard_after_forward=reshard_after_forward)


def parallelize(model: modellib.Transformer, cfg: ParallelConfig, device: torch.device,
                seed: int, mesh=None) -> nn.Module:
    """Wrap the meta-device ``model`` (whole, or a pipeline stage) for the data-parallel
    replicas of the 1-D ``mesh`` (None: one replica), materialise its local part on
    ``device`` with the weights of ``seed``, and return what to train."""
    dp = mesh.size() if mesh is not None else 1
    mcfg = model.cfg
    if cfg.activation_checkpointing:
        from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import checkpoint_wrapper

        for name, block in list(model.layers.items()):
            model.layers[name] = checkpoint_wrapper(block)
    if cfg.compile:
        for name, block in list(model.layers.items()):
            model.layers[name] = torch.compile(block)
    fsdp = uses_fsdp(cfg, dp)
    if cfg.bf16 and not fsdp:
        autocast_forward(model, device.type)
    if fsdp:
        # pipeline stages keep their blocks gathered between microbatches (torchtitan's
        # choice): one all-gather per step instead of one per microbatch
        _shard(model, cfg, mesh, reshard_after_forward=cfg.pp == 1)
    materialize(model, mcfg, device, seed)
    if dp > 1 and not fsdp:
        from torch.nn.parallel import DistributedDataParallel

        # the RoPE tables are computed, not trained: no buffer broadcast per forward
        return DistributedDataParallel(model, process_group=mesh.get_group(),
                                       bucket_cap_mb=cfg.bucket_mb, broadcast_buffers=False,
                                       gradient_as_bucket_view=True)
    return model


@torch.no_grad()
def materialize(model: nn.Module, mcfg: modellib.ModelConfig, device: torch.device,
                seed: int) -> None:
    """Allocate ``model``'s parameters on ``device`` (an FSDP2 shard: only the local rows)
    and give each the value a one-process build has (``model.init_parameter_`` by its
    full-model name). A sharded parameter's whole value is drawn on the device, one
    parameter at a time, and only the local rows are kept."""
    from torch.distributed.tensor import DTensor, distribute_tensor

    model.to_empty(device=device)
    for name, p in model.named_parameters():
        if isinstance(p, DTensor):
            full = modellib.init_parameter_(canonical(name), torch.empty(p.shape, device=device),
                                            mcfg, seed)
            local = distribute_tensor(full, p.device_mesh, p.placements, src_data_rank=None)
            p.to_local().copy_(local.to_local())
            del full, local
        else:
            modellib.init_parameter_(canonical(name), p, mcfg, seed)
    for module in model.modules():
        if isinstance(module, modellib.Transformer):
            module.reset_buffers()


@contextlib.contextmanager
def grad_sync(model: nn.Module, sync: bool):
    """Gradient accumulation: the data-parallel reduction runs only when ``sync`` (the last
    micro-step); DDP skips it with ``no_sync``, FSDP2 keeps unsharded gradients."""
    from torch.distributed.fsdp import FSDPModule
    from torch.nn.parallel import DistributedDataParallel

    if sync:
        yield
    elif isinstance(model, DistributedDataParallel):
        with model.no_sync():
            yield
    elif isinstance(model, FSDPModule):
        model.set_requires_gradient_sync(False)
        try:
            yield
        finally:
            model.set_requires_gradient_sync(True)
    else:
        yield
