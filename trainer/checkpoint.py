"""Training checkpoints: one PyTorch distributed checkpoint (DCP) folder ``step-N`` per save.

A checkpoint holds the model, the optimiser and the progress counters (the step and the
batch sampler's step, so a resumed run continues the exact batch stream), sharded per rank.
The optimiser state is keyed by parameter name (DCP's flattened optimizer state dict), so
what ranks hold apart is saved apart: pipeline stages, FSDP2 shards, and ZeRO-1's shards
(each rank saves and loads the AdamW state of its own share of the parameters, nothing is
consolidated; ZeroRedundancyOptimizer's own state_dict would gather everything on one
rank, so its local optimiser's state is keyed by name here instead). Used by ``train.py``
(save, resume, prune, Stage-2's ``init_from``) and by the eval loader (the weights of the
latest step).
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import torch
from torch import nn

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


def _zero1(opt: torch.optim.Optimizer) -> torch.optim.Optimizer | None:
    """ZeRO-1's local AdamW (over this rank's share of the parameters), or None."""
    from torch.distributed.optim import ZeroRedundancyOptimizer

    return opt.optim if isinstance(opt, ZeroRedundancyOptimizer) else None


def _zero1_state(model: nn.Module, local: torch.optim.Optimizer) -> dict[str, torch.Tensor]:
    """This rank's AdamW state under ``state.<parameter name>.<key>`` (the names of DCP's
    flattened optimizer state dict: disjoint between ranks, so each is saved once). The
    hyper-parameters are the config's. A fresh optimiser gets zero state first (a step
    with zero gradients at learning rate 0), for DCP to load into."""
    from skypile.trainer.parallelize import canonical

    if not local.state:
        lrs = [g["lr"] for g in local.param_groups]
        for g in local.param_groups:
            g["lr"] = 0.0
            for p in g["params"]:
                p.grad = torch.zeros_like(p)
        local.step()
        local.zero_grad(set_to_none=True)
        for g, lr in zip(local.param_groups, lrs):
            g["lr"] = lr
    names = {id(p): canonical(n) for n, p in model.named_parameters()}
    return {f"state.{names[id(p)]}.{k}": v for g in local.param_groups for p in g["params"]
            for k, v in local.state[p].items()}


def _state(model: nn.Module, opt: torch.optim.Optimizer, progress: dict[str, int],
           flat: bool = True) -> dict:
    from torch.distributed.checkpoint.state_dict import (StateDictOptions, get_model_state_dict,
                                                         get_state_dict)

    train = {k: torch.tensor(v) for k, v in progress.items()}
    local = _zero1(opt)
    if local is not None:
        return {"model": get_model_state_dict(model), "optim": _zero1_state(model, local),
                "train": train}
    model_sd, optim_sd = get_state_dict(
        model, opt, options=StateDictOptions(flatten_optimizer_state_dict=flat))
    return {"model": model_sd, "optim": optim_sd, "train": train}


def save(run: Path, model: nn.Module, opt: torch.optim.Optimizer, progress: dict[str, int],
         rank: int) -> Path:
    """Write ``run/step-{progress['step']}`` (every rank calls this and writes its part)."""
    import torch.distributed.checkpoint as dcp

    path = Path(run) / f"step-{progress['step']}"
    dcp.save(_state(model, opt, progress), checkpoint_id=str(path))
    return path


def load(path: Path, model: nn.Module, opt: torch.optim.Optimizer,
         progress: dict[str, int]) -> dict[str, int]:
    """Restore model and optimiser in place; returns the saved values of ``progress``'s keys
    (those the checkpoint has: counters added since it was written are left out)."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import (StateDictOptions, set_model_state_dict,
                                                         set_state_dict)

    saved = dcp.FileSystemReader(str(path)).read_metadata().state_dict_metadata
    if not any(k.startswith("optim.") for k in saved):
        raise ValueError(f"{path} has no optimizer state (a ZeRO-1 checkpoint of an older "
                         "trainer kept it in zero1_optimizer.pt): start a new checkpoint.dir "
                         "with --init-from to keep its weights")
    progress = {k: v for k, v in progress.items() if f"train.{k}" in saved}
    # older checkpoints nest the parameter groups by index, not by parameter name
    flat = not any(k.startswith("optim.param_groups.0.") for k in saved)
    state = _state(model, opt, progress, flat)
    dcp.load(state, checkpoint_id=str(path))
    if _zero1(opt) is not None:  # its state tensors were loaded in place
        set_model_state_dict(model, state["model"])
    else:
        set_state_dict(model, opt, model_state_dict=state["model"],
                       optim_state_dict=state["optim"],
                       options=StateDictOptions(flatten_optimizer_state_dict=flat))
    return {k: int(v) for k, v in state["train"].items()}


def load_weights(path: Path, model: nn.Module) -> None:
    """Only the model's weights (Stage-2 from Stage-1, evaluation, export); ``path`` may
    also be a Hugging Face Llama folder (continued pretraining from a released model)."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_model_state_dict, set_model_state_dict

    from skypile.trainer import hf

    if hf.is_hf_dir(path):
        hf.load_into(path, model)
        return
    state = {"model": get_model_state_dict(model)}
    dcp.load(state, checkpoint_id=str(path))
    set_model_state_dict(model, state["model"])
