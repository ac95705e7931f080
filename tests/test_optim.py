import math

import torch

from skypile.trainer.model import PRESETS, build
from skypile.trainer.optim import OptimConfig, adamw, clip_and_check, lr_at, param_groups


def test_no_weight_decay_on_norms():
    model = build(PRESETS["debug"])
    decay, no_decay = param_groups(model, 0.1)
    assert all(p.ndim == 2 for p in decay["params"]) and all(p.ndim == 1 for p in no_decay["params"])
    assert len(no_decay["params"]) == 2 * PRESETS["debug"].n_layers + 1  # two norms a block + final
    opt = adamw(model, OptimConfig())
    assert opt.defaults["betas"] == (0.9, 0.95)


def test_schedules():
    cfg = OptimConfig(lr=6e-4, min_lr=6e-5, warmup_steps=10)
    assert math.isclose(lr_at(0, 100, cfg), 6e-5) and math.isclose(lr_at(9, 100, cfg), 6e-4)
    assert math.isclose(lr_at(100, 100, cfg), 6e-5) and lr_at(55, 100, cfg) < 6e-4
    const = OptimConfig(schedule="constant", min_lr=6e-5)
    assert lr_at(0, 10, const) == lr_at(9, 10, const) == 6e-5


def test_non_finite_gradients_are_reported():
    model = build(PRESETS["debug"])
    x = torch.randint(0, 100, (1, 8))
    model(x).sum().backward()
    norm, ok = clip_and_check(model, 1.0)
    assert ok and norm > 0
    next(model.parameters()).grad.fill_(float("nan"))
    assert clip_and_check(model, 1.0)[1] is False
