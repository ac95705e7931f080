"""AdamW as the report sets it, learning-rate schedules, and the non-finite step guard."""

from __future__ import annotations

import dataclasses
import math

import torch
from torch import nn


@dataclasses.dataclass
class OptimConfig:
    """Optimiser and schedule (``optim`` in the training config)."""

    lr: float = 6e-4
    """Peak learning rate."""
    min_lr: float = 6e-5
    """Learning rate at the end of the cosine (and the constant schedule's rate)."""
    betas: tuple[float, float] = (0.9, 0.95)
    """AdamW betas."""
    weight_decay: float = 0.1
    """Weight decay on matrices; none on norms, biases and 1-D parameters."""
    grad_clip: float = 1.0
    """Global gradient-norm clip."""
    warmup_steps: int = 2000
    """Linear warmup steps."""
    schedule: str = "cosine"
    """cosine (warmup, then cosine from lr to min_lr over total steps) or constant (min_lr)."""


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim < 2 or name.endswith(".bias") else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0}]


def adamw(model: nn.Module, cfg: OptimConfig, zero1: bool = False,
          group=None) -> torch.optim.Optimizer:
    """AdamW; with ``zero1`` its state is sharded over the data-parallel ranks of ``group``
    (ZeRO-1; None: all processes): each rank keeps and updates its share of the
    parameters, then broadcasts them."""
    kwargs = dict(lr=cfg.lr, betas=tuple(cfg.betas), eps=1e-8)
    if zero1:
        from torch.distributed.optim import ZeroRedundancyOptimizer

        groups = param_groups(model, cfg.weight_decay)
        opt = ZeroRedundancyOptimizer(groups[0]["params"], optimizer_class=torch.optim.AdamW,
                                      process_group=group, weight_decay=cfg.weight_decay,
                                      **kwargs)
        opt.add_param_group(groups[1])
        return opt
    return torch.optim.AdamW(param_groups(model, cfg.weight_decay), **kwargs)


def lr_at(step: int, total_steps: int, cfg: OptimConfig) -> float:
    if cfg.schedule == "constant":
        return cfg.min_lr
    if cfg.schedule != "cosine":
        raise ValueError(f"unknown schedule {cfg.schedule!r} (cosine or constant)")
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    span = max(total_steps - cfg.warmup_steps, 1)
    progress = min((step - cfg.warmup_steps) / span, 1.0)
    return cfg.min_lr + 0.5 * (cfg.lr - cfg.min_lr) * (1 + math.cos(math.pi * progress))


def clip_and_check(model: nn.Module, max_norm: float) -> tuple[float, bool]:
    """Clip gradients; returns (norm before clipping, whether loss and gradients are finite)."""
    norm = torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)
    return float(norm), bool(torch.isfinite(norm))
