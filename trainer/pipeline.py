"""Pipeline parallelism: this process's stage of the model, its schedule and its step.

The processes form a 2-D (pipeline x data-parallel) mesh, pipeline outermost as in
torchtitan (a stage's replicas are neighbouring ranks, so their gradient reduction stays on
the node). Each process keeps a contiguous share of the blocks (``parallelize.pipeline_stage``,
cut on the meta device, so a stage never allocates another stage's layers) and applies the
same ``parallelize`` as a plain run over its stage's data-parallel sub-mesh:

* FSDP2 per block and stage (``parallel.fsdp``, the default) with its bf16 policy, or
* replicated stages (``parallel.fsdp=false`` or ``parallel.zero1``: ZeRO-1 then shards
  the optimizer state over the replicas), their gradients averaged by ``GradBuckets``:
  buckets of ``parallel.bucket_mb``, each all-reduced asynchronously as soon as the last
  backward of the step has accumulated its gradients, so the reduction overlaps the rest
  of that backward (DDP's reducer cannot follow one backward per microbatch: it fails
  rebuilding its buckets);
* bf16 without FSDP2: autocast around the stage's forward.

Gradient accumulation runs whole schedule steps (``parallel.grad_accum``); the loss is
divided by microbatches x micro-steps before its backward, so gradients add up to the mean
over the global batch. Replicated stages reduce once per optimiser step; FSDP2 stages
reduce-scatter at the end of every schedule step (pipelining's FSDP2 integration does),
adding into the sharded gradients.
``check`` refuses what cannot run, in one line, before anything is built.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable

import torch
from torch import nn

from skypile import config as cfglib
from skypile.trainer.config import TrainConfig
from skypile.trainer.parallelize import (clip_grad_norm_across, parallelize, pipeline_stage,
                                         uses_fsdp)


def check(cfg: TrainConfig, world: int) -> None:
    """ConfigError for a parallel layout this trainer cannot run (before anything is built)."""
    p = cfg.parallel
    if p.grad_accum < 1:
        raise cfglib.ConfigError(f"parallel.grad_accum={p.grad_accum}: at least 1")
    if p.pp < 1 or world % p.pp:
        raise cfglib.ConfigError(f"parallel.pp={p.pp} does not divide the {world} processes")
    if p.pp == 1:
        return
    layers = cfg.model_config().n_layers
    if p.pp > layers:
        raise cfglib.ConfigError(f"parallel.pp={p.pp} stages for {layers} blocks: a stage "
                                 "would have none")
    if cfg.data.batch_size % p.microbatches:
        raise cfglib.ConfigError(f"data.batch_size {cfg.data.batch_size} is not a multiple "
                                 f"of parallel.microbatches {p.microbatches}")
    if p.pp_schedule == "1f1b" and p.microbatches < p.pp:
        raise cfglib.ConfigError(f"parallel.pp_schedule=1f1b needs parallel.microbatches >= "
                                 f"parallel.pp ({p.microbatches} < {p.pp})")


class GradBuckets:
    """Average a replicated stage's gradients over its ``dp`` replicas (``group``) in
    buckets of about ``bucket_mb``: a parameter's gradient is final after ``backwards``
    accumulations (microbatches x micro-steps); a bucket is all-reduced, asynchronously, when
    all of its parameters' are. ``finish`` waits and writes the averages back."""

    def __init__(self, params: list[nn.Parameter], group, dp: int, backwards: int,
                 bucket_mb: float):
        self.group, self.dp, self.backwards = group, dp, backwards
        self.buckets: list[list[nn.Parameter]] = []
        cap, size = bucket_mb * 2 ** 20, 0.0
        for p in reversed(params):  # the backward reaches the last layers first
            nbytes = p.numel() * p.element_size()
            if not self.buckets or size + nbytes > cap or p.dtype != self.buckets[-1][0].dtype:
                self.buckets.append([])
                size = 0.0
            self.buckets[-1].append(p)
            size += nbytes
        self.bucket_of = {id(p): b for b, ps in enumerate(self.buckets) for p in ps}
        self.early = 0  # buckets launched from the backward (the rest by finish)
        self._reset()
        for p in params:
            p.register_post_accumulate_grad_hook(self._accumulated)

    def _reset(self) -> None:
        self.count: dict[int, int] = {}
        self.ready = [0] * len(self.buckets)
        self.pending: dict[int, tuple[torch.Tensor, Any]] = {}

    def _accumulated(self, p: nn.Parameter) -> None:
        n = self.count[id(p)] = self.count.get(id(p), 0) + 1
        if n == self.backwards:
            b = self.bucket_of[id(p)]
            self.ready[b] += 1
            if self.ready[b] == len(self.buckets[b]):
                self._launch(b)
                self.early += 1

    def _launch(self, b: int) -> None:
        from torch._utils import _flatten_dense_tensors

        for p in self.buckets[b]:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        flat = _flatten_dense_tensors([p.grad for p in self.buckets[b]]).div_(self.dp)
        self.pending[b] = (flat, torch.distributed.all_reduce(flat, group=self.group,
                                                              async_op=True))

    def finish(self) -> None:
        from torch._utils import _unflatten_dense_tensors

        for b in range(len(self.buckets)):
            if b not in self.pending:
                self._launch(b)
        for b, (flat, work) in sorted(self.pending.items()):
            work.wait()
            grads = [p.grad for p in self.buckets[b]]
            for g, mean in zip(grads, _unflatten_dense_tensors(flat, grads)):
                g.copy_(mean)
        self._reset()


@dataclasses.dataclass
class Pipeline:
    """One process's place in the mesh: its stage, the schedule, and the groups it talks to."""

    model: nn.Module  # this stage's layers, wrapped by parallelize (FSDP2, DDP or plain)
    schedule: Any
    stage: int
    stages: int
    dp: int  # replicas of each stage
    dp_rank: int
    pp_group: Any
    dp_group: Any
    device: torch.device
    scale: int  # the schedule's loss is divided by this (microbatches x micro-steps)
    reducer: GradBuckets | None  # replicated stages' gradient averaging (None: FSDP2 or dp 1)

    @property
    def first(self) -> bool:
        return self.stage == 0

    @property
    def last(self) -> bool:
        return self.stage == self.stages - 1

    def loss(self, x: torch.Tensor, y: torch.Tensor, train: bool = True) -> torch.Tensor:
        """Through the stages (forward and backward, or forward only); every rank gets the
        mean loss over this (micro-)step's global batch."""
        run = self.schedule.step if train else self.schedule.eval
        losses: list[torch.Tensor] = []
        if self.first:
            run(x)
        elif self.last:
            run(target=y, losses=losses)
        else:
            run()
        loss = torch.stack(losses).mean().detach().float() * self.scale if self.last \
            else torch.zeros((), device=self.device)
        torch.distributed.all_reduce(loss, group=self.pp_group)
        if self.dp > 1:
            torch.distributed.all_reduce(loss, group=self.dp_group)
            loss /= self.dp
        return loss

    def forward_backward(self, xs: list[torch.Tensor], ys: list[torch.Tensor],
                         grad_clip: float) -> tuple[torch.Tensor, float, bool]:
        """One optimiser step's micro-steps (each a whole schedule step; the stage's
        replicas reduce their gradients inside it), then the clip over all stages: (mean
        loss, gradient norm before clipping, whether it is finite)."""
        losses = [self.loss(x, y) for x, y in zip(xs, ys)]
        if self.reducer is not None:
            self.reducer.finish()
        norm = clip_grad_norm_across(self.model, grad_clip, self.pp_group)
        return torch.stack(losses).mean(), norm, math.isfinite(norm)


def build(model: nn.Module, cfg: TrainConfig, world: int, device: torch.device,
          loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> Pipeline:
    """Cut the meta-device ``model`` to this process's stage, parallelize and materialise it
    over the stage's data-parallel sub-mesh, and schedule it (``check`` has accepted
    ``cfg``)."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.pipelining import PipelineStage, Schedule1F1B, ScheduleGPipe

    p = cfg.parallel
    dp = world // p.pp
    mesh = init_device_mesh(device.type, (p.pp, dp), mesh_dim_names=("pp", "dp"))
    stage = mesh.get_local_rank("pp")
    fsdp = uses_fsdp(p, dp)
    part = parallelize(pipeline_stage(model, stage, p.pp), p, device, cfg.data.seed,
                       mesh["dp"] if fsdp else None)
    pp_group = mesh.get_group("pp")
    scale = p.microbatches * p.grad_accum
    reducer = None
    if dp > 1 and not fsdp:
        reducer = GradBuckets(list(part.parameters()), mesh.get_group("dp"), dp, scale,
                              p.bucket_mb)
    kind = {"1f1b": Schedule1F1B, "gpipe": ScheduleGPipe}[p.pp_schedule]
    # scale_grads=False: the schedule would divide the accumulated gradients by the
    # microbatches at every micro-step; the loss carries the whole scale instead
    schedule = kind(PipelineStage(part, stage, p.pp, device, group=pp_group),
                    n_microbatches=p.microbatches, scale_grads=False,
                    loss_fn=lambda out, target: loss_fn(out, target) / scale)
    return Pipeline(model=part, schedule=schedule, stage=stage, stages=p.pp, dp=dp,
                    dp_rank=mesh.get_local_rank("dp"), pp_group=pp_group,
                    dp_group=mesh.get_group("dp"), device=device, scale=scale,
                    reducer=reducer)
