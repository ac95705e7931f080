"""Training checkpoints: one PyTorch distributed checkpoint (DCP) folder ``step-N`` per save.

A checkpoint holds the model, the optimiser and the progress counters (the step and the
batch sampler's step, so a resumed run continues the exact batch stream), sharded per rank.
ZeRO-1's optimiser is not a DCP state dict: its state is consolidated on rank 0 and saved
beside the checkpoint as ``zero1_optimizer.pt``. Used by ``train.py`` (save, resume,
prune, Stage-2's ``init_from``) and by the eval loader (the weights of the latest step).
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import torch
from torch import nn

ZERO1_FILE = "zero1_optimizer.pt"
_STEP = re.compile(r"step-(\d+)")


def steps(run: Path, complete: bool = True) -> list[tuple[int, Path]]:
    """The run's ``step-N`` folders, oldest first; ``complete``: only those DCP finished
    (it writes ``.metadata`` last)."""
    found = [(int(m.group(1)), p) for p in Path(run).glob("step-*")
             if (m := _STEP.fullmatch(p.name)) and (not complete or (p / ".metadata").exists())]
    return sorted(found)


def latest_checkpoint(run: Path) -> Path | None:
    """The highest complete ``step-N`` checkpoint folder of a run (None if there is none)."""
    found = steps(run)
    return found[-1][1] if found else None


def prune(run: Path, keep_last: int, keep_every: int = 0) -> None:
    """Delete all but the newest ``keep_last`` checkpoints and every ``keep_every``-th."""
    found = steps(run, complete=False)
    keep = {s for s, _ in found[-keep_last:]} if keep_last > 0 else set()
    for s, p in found:
        if s not in keep and not (keep_every and s % keep_every == 0):
            shutil.rmtree(p, ignore_errors=True)


def _is_zero1(opt: torch.optim.Optimizer) -> bool:
    from torch.distributed.optim import ZeroRedundancyOptimizer

    return isinstance(opt, ZeroRedundancyOptimizer)


def _state(model: nn.Module, opt: torch.optim.Optimizer, progress: dict[str, int]) -> dict:
    from torch.distributed.checkpoint.state_dict import get_model_state_dict, get_state_dict

    train = {k: torch.tensor(v) for k, v in progress.items()}
    if _is_zero1(opt):  # its state is saved beside the checkpoint (see save)
        return {"model": get_model_state_dict(model), "train": train}
    model_sd, optim_sd = get_state_dict(model, opt)
    return {"model": model_sd, "optim": optim_sd, "train": train}


def save(run: Path, model: nn.Module, opt: torch.optim.Optimizer, progress: dict[str, int],
         rank: int) -> Path:
    """Write ``run/step-{progress['step']}`` (every rank calls this; rank 0 adds ZeRO-1's file)."""
    import torch.distributed.checkpoint as dcp

    path = Path(run) / f"step-{progress['step']}"
    dcp.save(_state(model, opt, progress), checkpoint_id=str(path))
    if _is_zero1(opt):
        opt.consolidate_state_dict(to=0)
        if rank == 0:
            torch.save(opt.state_dict(), path / ZERO1_FILE)
    return path


def load(path: Path, model: nn.Module, opt: torch.optim.Optimizer,
         progress: dict[str, int]) -> dict[str, int]:
    """Restore model and optimiser in place; returns the saved values of ``progress``'s keys."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import set_model_state_dict, set_state_dict

    state = _state(model, opt, progress)
    dcp.load(state, checkpoint_id=str(path))
    if _is_zero1(opt):
        set_model_state_dict(model, state["model"])
        opt.load_state_dict(torch.load(Path(path) / ZERO1_FILE, weights_only=False))
    else:
        set_state_dict(model, opt, model_state_dict=state["model"],
                       optim_state_dict=state["optim"])
    return {k: int(v) for k, v in state["train"].items()}


def load_weights(path: Path, model: nn.Module) -> None:
    """Only the model's weights (Stage-2 from Stage-1, evaluation, export)."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_model_state_dict, set_model_state_dict

    state = {"model": get_model_state_dict(model)}
    dcp.load(state, checkpoint_id=str(path))
    set_model_state_dict(model, state["model"])
