"""Pipeline parallelism: this process's stage of the model, its schedule and its step.

The processes form a (data-parallel x pipeline) mesh. Each keeps a contiguous share of the
blocks (``parallelize.pipeline_stage``), wrapped by the same ``parallelize`` as a plain run
(activation checkpointing, compile). The replicas of a stage average their gradients by
hand once per step (DDP's reducer does not accept one backward per microbatch), so FSDP2 is
not applied to stages. What this path cannot honour is refused by ``check`` in one line
rather than silently dropped: ZeRO-1 and bf16 together with ``parallel.pp`` > 1.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable

import torch
from torch import nn

from skypile import config as cfglib
from skypile.trainer.config import TrainConfig
from skypile.trainer.parallelize import clip_grad_norm_across, parallelize, pipeline_stage


def check(cfg: TrainConfig, world: int) -> None:
    """ConfigError for a pipeline layout this trainer cannot run (before anything is built)."""
    p = cfg.parallel
    if p.pp < 1 or world % p.pp:
        raise cfglib.ConfigError(f"parallel.pp={p.pp} does not divide the {world} processes")
    if p.pp == 1:
        return
    if p.zero1:
        raise cfglib.ConfigError("parallel.zero1 does not combine with parallel.pp > 1 (each "
                                 "stage's replicas average gradients themselves)")
    if p.bf16:
        raise cfglib.ConfigError("parallel.bf16 does not combine with parallel.pp > 1 (the "
                                 "stages run in float32)")
    if cfg.data.batch_size % p.microbatches:
        raise cfglib.ConfigError(f"data.batch_size {cfg.data.batch_size} is not a multiple "
                                 f"of parallel.microbatches {p.microbatches}")


@dataclasses.dataclass
class Pipeline:
    """One process's place in the mesh: its stage, the schedule, and the groups it talks to."""

    model: nn.Module  # this stage's layers, wrapped by parallelize
    schedule: Any
    stage: int
    stages: int
    dp: int  # replicas of each stage
    dp_rank: int
    pp_group: Any
    dp_group: Any
    device: torch.device

    @property
    def first(self) -> bool:
        return self.stage == 0

    @property
    def last(self) -> bool:
        return self.stage == self.stages - 1

    def loss(self, x: torch.Tensor, y: torch.Tensor, train: bool = True) -> torch.Tensor:
        """Through the stages (forward and backward, or forward only); every rank gets the
        mean loss over the whole global batch."""
        run = self.schedule.step if train else self.schedule.eval
        losses: list[torch.Tensor] = []
        if self.first:
            run(x)
        elif self.last:
            run(target=y, losses=losses)
        else:
            run()
        loss = torch.stack(losses).mean().detach() if self.last \
            else torch.zeros((), device=self.device)
        torch.distributed.all_reduce(loss, group=self.pp_group)
        if self.dp > 1:
            torch.distributed.all_reduce(loss, group=self.dp_group)
            loss /= self.dp
        return loss

    def average_grads(self) -> None:
        """Average each stage's gradients over its replicas (once per step)."""
        if self.dp > 1:
            for p in self.model.parameters():
                if p.grad is not None:
                    torch.distributed.all_reduce(p.grad, group=self.dp_group)
                    p.grad /= self.dp

    def forward_backward(self, x: torch.Tensor, y: torch.Tensor,
                         grad_clip: float) -> tuple[torch.Tensor, float, bool]:
        """(loss, gradient norm before clipping over all stages, whether it is finite)."""
        loss = self.loss(x, y)
        self.average_grads()
        norm = clip_grad_norm_across(self.model, grad_clip, self.pp_group)
        return loss, norm, math.isfinite(norm)


def build(model: nn.Module, cfg: TrainConfig, world: int, device: torch.device,
          loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> Pipeline:
    """Cut the full ``model`` to this process's stage, parallelize it and schedule it
    (``check`` has accepted ``cfg``)."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.pipelining import PipelineStage, Schedule1F1B, ScheduleGPipe

    p = cfg.parallel
    dp = world // p.pp
    mesh = init_device_mesh(device.type, (dp, p.pp), mesh_dim_names=("dp", "pp"))
    stage = mesh.get_local_rank("pp")
    # world=1: no FSDP / DDP wrapper, the replicas are averaged by Pipeline.average_grads
    part = parallelize(pipeline_stage(model, stage, p.pp), p, world=1)
    pp_group = mesh.get_group("pp")
    kind = {"1f1b": Schedule1F1B, "gpipe": ScheduleGPipe}[p.pp_schedule]
    schedule = kind(PipelineStage(part, stage, p.pp, device, group=pp_group),
                    n_microbatches=p.microbatches, loss_fn=loss_fn)
    return Pipeline(model=part, schedule=schedule, stage=stage, stages=p.pp, dp=dp,
                    dp_rank=mesh.get_local_rank("dp"), pp_group=pp_group,
                    dp_group=mesh.get_group("dp"), device=device)
