"""One parallel combination of the trainer, run under torchrun by tests/test_parallel.py.

    torchrun --nproc_per_node N tests/parallel_probe.py OUT MODE --section.key=value ...

MODE ``train``: build the run, check every local parameter against a one-process build
with the same seed, train ``steps`` steps with a forward hook on every Linear (the dtype
of its output), validate once, and write OUT/rank-R.json with the losses and what the
hooks, the parameters and the model's wrapper showed.
MODE ``resume``: ``steps`` straight in OUT/straight, then half of them, a checkpoint, a new
run that resumes from it and the other half in OUT/resumed; both loss lists go to the JSON.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from pathlib import Path

import torch
from torch import nn

from skypile import config as cfglib
from skypile.trainer import model as modellib
from skypile.trainer.config import TrainConfig
from skypile.trainer.parallelize import canonical
from skypile.trainer.train import Run


def local_params(run: Run) -> dict:
    """Bytes and names of this rank's parameters, and whether each equals a one-process
    build's (its local rows of it, for an FSDP2 shard)."""
    from torch.distributed.tensor import DTensor, distribute_tensor

    ref = dict(modellib.build(run.mcfg, "cpu", seed=run.cfg.data.seed).named_parameters())
    nbytes, names, equal, sharded = 0, [], True, False
    for name, p in run.model.named_parameters():
        full = ref[canonical(name)].to(run.device)
        if isinstance(p, DTensor):
            sharded = True
            want = distribute_tensor(full, p.device_mesh, p.placements,
                                     src_data_rank=None).to_local()
            got = p.to_local()
        else:
            want, got = full, p.detach()
        nbytes += got.numel() * got.element_size()
        names.append(canonical(name))
        equal = equal and torch.equal(got, want)
    return {"param_bytes": nbytes, "names": names, "init_equal": equal, "sharded": sharded}


def train(cfg: TrainConfig) -> dict:
    run = Run(cfg)
    report = {"wrapper": type(run.model).__name__, "dp": run.dp, **local_params(run)}
    dtypes: set[str] = set()
    hooks = [m.register_forward_hook(lambda _m, _i, out: dtypes.add(str(out.dtype)))
             for m in run.model.modules() if isinstance(m, nn.Linear)]
    losses = []
    for _ in range(cfg.steps):
        losses.append(run.global_mean([run.train_step()["loss"]])[0])
    for h in hooks:
        h.remove()
    report.update(losses=losses, dtypes=sorted(dtypes), validation=run.validate())
    reducer = run.pipe.reducer if run.pipe is not None else None
    if reducer is not None:  # buckets, and how many the backward launched (per step)
        report.update(buckets=len(reducer.buckets), early=reducer.early / cfg.steps)
    return report


def _in(cfg: TrainConfig, folder: Path) -> TrainConfig:
    return dataclasses.replace(cfg, checkpoint=dataclasses.replace(cfg.checkpoint,
                                                                   dir=str(folder)))


def resume(cfg: TrainConfig, out: Path) -> dict:
    half = cfg.steps // 2
    straight = Run(_in(cfg, out / "straight"))
    a = [straight.global_mean([straight.train_step()["loss"]])[0] for _ in range(cfg.steps)]
    first = Run(_in(cfg, out / "resumed"))
    b = [first.global_mean([first.train_step()["loss"]])[0] for _ in range(half)]
    first.save()
    second = Run(_in(cfg, out / "resumed"))
    start = second.step
    b += [second.global_mean([second.train_step()["loss"]])[0] for _ in range(cfg.steps - half)]
    return {"straight": a, "resumed": b, "resumed_from": start}


def main(argv: list[str]) -> None:
    out, mode, overrides = Path(argv[0]), argv[1], argv[2:]
    over, unknown = cfglib.split_overrides(overrides, TrainConfig)
    assert not unknown, unknown
    cfg = cfglib.load(TrainConfig, None, over)
    rank = int(os.environ.get("RANK", "0"))
    report = train(cfg) if mode == "train" else resume(cfg, out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"rank-{rank}.json").write_text(json.dumps(report))
    if torch.distributed.is_initialized():
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()
    # Every report is written. Gloo on the CPU sometimes aborts in C++ teardown at
    # interpreter exit ("terminate called without an active exception", seen once in a
    # full-suite run after both ranks had written their reports); skip that teardown.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    main(sys.argv[1:])
