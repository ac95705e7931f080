"""``skypile train``: the training loop, on one process or under torchrun.

    skypile train --config trainer/configs/stage1.toml [--section.key=value ...] [--dry-run]
    torchrun --nproc_per_node 8 -m skypile.cli train --config ...

Per step: a deterministic batch from the mixture sampler (its state is the step), loss,
backward, gradient clip, and a skipped (logged) step when the loss or the gradient norm is
not finite. Checkpoints are PyTorch distributed checkpoints (one folder per step, sharded
per rank) holding the model, the optimiser and the step, so a resumed run continues the
exact stream. Metrics go to OUTPUT/metrics.csv and validation curves per domain to
OUTPUT/validation.csv and validation.png.

MFU (PaLM, appendix B): FLOPs per token = 6 N + 12 L d T, with N the parameters, L the
layers, d the width and T the sequence length (the second term is attention); MFU =
tokens/s x FLOPs per token / the device's peak bf16 FLOP/s (known for H100 / H200 /
A100 / A800; not reported on the CPU). Metrics also go to TensorBoard (OUTPUT/tensorboard).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import re
import shutil
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from skypile.tokens import batches
from skypile import config as cfglib
from skypile.tokens.shards import ShardError, ShardSet
from skypile.trainer import model as modellib
from skypile.trainer.config import CONFIG_DIR, TrainConfig
from skypile.trainer.optim import adamw, clip_and_check, lr_at

PEAK_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0, "A800": 312.0}  # bf16 dense


def flops_per_token(cfg: modellib.ModelConfig, n_params: int, seq_len: int) -> float:
    return 6.0 * n_params + 12.0 * cfg.n_layers * cfg.dim * seq_len


def memory_estimate(n_params: int, cfg: TrainConfig, world: int) -> dict:
    """Bytes per GPU for weights, gradients and AdamW state, in the report's Table 10 spirit."""
    weights = n_params * (2 if cfg.parallel.bf16 else 4)
    grads = weights
    optim = n_params * 4 * 3  # fp32 master copy + two moments
    if cfg.parallel.fsdp and world > 1:
        weights, grads, optim = weights / world, grads / world, optim / world
    elif cfg.parallel.zero1 and world > 1:
        optim = optim / world
    gib = 1024 ** 3
    return {"weights_gib": round(weights / gib, 2), "grads_gib": round(grads / gib, 2),
            "optimizer_gib": round(optim / gib, 2),
            "total_gib_before_activations": round((weights + grads + optim) / gib, 2)}


def latest_checkpoint(run: Path) -> Path | None:
    """The highest complete ``step-N`` checkpoint folder of a run (None if there is none)."""
    steps = sorted((int(m.group(1)), p) for p in run.glob("step-*")
                   if (m := re.fullmatch(r"step-(\d+)", p.name)) and (p / ".metadata").exists())
    return steps[-1][1] if steps else None


class Run:
    def __init__(self, cfg: TrainConfig):
        self.cfg = cfg
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        cuda = torch.cuda.is_available() and cfg.device in ("auto", "cuda")
        self.device = torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}" if cuda
                                   else ("cpu" if cfg.device == "auto" else cfg.device))
        if self.world > 1 and not torch.distributed.is_initialized():
            torch.distributed.init_process_group("nccl" if cuda else "gloo")
        self.out = Path(cfg.checkpoint.dir)
        self.mcfg = cfg.model_config()
        self.shards = ShardSet(cfg.data.shards)
        vocab = self.shards.manifest["tokenizer"]["vocab_size"]
        if vocab > self.mcfg.vocab_size:
            raise cfglib.ConfigError(f"the shards' tokenizer has {vocab} pieces but the model "
                                     f"only {self.mcfg.vocab_size}: set model.vocab_size")
        from skypile.trainer.parallelize import parallelize, pipeline_stage

        pp = cfg.parallel.pp
        if pp < 1 or self.world % pp:
            raise cfglib.ConfigError(f"parallel.pp={pp} does not divide the {self.world} processes")
        self.dp, self.dp_rank, self.pp_rank, self.pp_group = self.world // pp, self.rank, 0, None
        self.model = modellib.build(self.mcfg, self.device, seed=cfg.data.seed)
        if cfg.checkpoint.init_from:
            self._load(Path(cfg.checkpoint.init_from), weights_only=True)
        if pp > 1:
            from torch.distributed.device_mesh import init_device_mesh

            mesh = init_device_mesh(self.device.type, (self.dp, pp), mesh_dim_names=("dp", "pp"))
            self.dp_rank, self.pp_rank = mesh.get_local_rank("dp"), mesh.get_local_rank("pp")
            self.pp_group = mesh.get_group("pp")
            self.model = pipeline_stage(self.model, self.pp_rank, pp)
            self.dp_group = mesh.get_group("dp")  # replicas of each stage (see _average_grads)
        else:
            self.model = parallelize(self.model, cfg.parallel, self.world)
        self.opt = adamw(self.model, cfg.optim, zero1=cfg.parallel.zero1 and self.dp > 1 and pp == 1)
        self.schedule = self._schedule() if pp > 1 else None
        weights = (batches.ramp(cfg.data.weights, cfg.data.ramp_source, cfg.data.ramp_start,
                                cfg.data.ramp_end, cfg.steps)
                   if cfg.data.ramp_source else batches.constant(cfg.data.weights))
        self.sampler = batches.MixtureSampler(self.shards, weights, cfg.data.seq_len,
                                              cfg.data.batch_size * self.dp, cfg.data.seed)
        self.step = 0
        latest = self._latest()
        if latest is not None:
            self._load(latest)
        self.n_params = sum(p.numel() for p in self.model.parameters())

    # ---- checkpoints ----
    def _latest(self) -> Path | None:
        return latest_checkpoint(self.out)

    @property
    def _zero1(self) -> bool:
        from torch.distributed.optim import ZeroRedundancyOptimizer

        return isinstance(self.opt, ZeroRedundancyOptimizer)

    def _state(self):
        from torch.distributed.checkpoint.state_dict import get_model_state_dict, get_state_dict

        train = {"step": torch.tensor(self.step), "sampler_step": torch.tensor(self.sampler.step)}
        if self._zero1:  # its state is consolidated and saved beside the checkpoint
            return {"model": get_model_state_dict(self.model), "train": train}
        model_sd, optim_sd = get_state_dict(self.model, self.opt)
        return {"model": model_sd, "optim": optim_sd, "train": train}

    def save(self) -> None:
        import torch.distributed.checkpoint as dcp

        path = self.out / f"step-{self.step}"
        dcp.save(self._state(), checkpoint_id=str(path))
        if self._zero1:
            self.opt.consolidate_state_dict(to=0)
            if self.rank == 0:
                torch.save(self.opt.state_dict(), path / "zero1_optimizer.pt")
        if self.rank == 0:
            self._prune()

    def _prune(self) -> None:
        c = self.cfg.checkpoint
        found = sorted((int(p.name.split("-")[1]), p) for p in self.out.glob("step-*"))
        keep = {s for s, _ in found[-c.keep_last:]} if c.keep_last > 0 else set()
        for s, p in found:
            if s not in keep and not (c.keep_every and s % c.keep_every == 0):
                shutil.rmtree(p, ignore_errors=True)

    def _load(self, path: Path, weights_only: bool = False) -> None:
        import torch.distributed.checkpoint as dcp
        from torch.distributed.checkpoint.state_dict import (get_model_state_dict,
                                                             set_model_state_dict, set_state_dict)

        if weights_only:
            state = {"model": get_model_state_dict(self.model)}
            dcp.load(state, checkpoint_id=str(path))
            set_model_state_dict(self.model, state["model"])
            return
        state = self._state()
        dcp.load(state, checkpoint_id=str(path))
        if self._zero1:
            set_model_state_dict(self.model, state["model"])
            self.opt.load_state_dict(torch.load(path / "zero1_optimizer.pt", weights_only=False))
        else:
            set_state_dict(self.model, self.opt, model_state_dict=state["model"],
                           optim_state_dict=state["optim"])
        self.step = int(state["train"]["step"])
        self.sampler.step = int(state["train"]["sampler_step"])

    def _schedule(self):
        from torch.distributed.pipelining import PipelineStage, Schedule1F1B, ScheduleGPipe

        p = self.cfg.parallel
        if self.cfg.data.batch_size % p.microbatches:
            raise cfglib.ConfigError(f"data.batch_size {self.cfg.data.batch_size} is not a multiple "
                                     f"of parallel.microbatches {p.microbatches}")
        stage = PipelineStage(self.model, self.pp_rank, p.pp, self.device, group=self.pp_group)
        kind = {"1f1b": Schedule1F1B, "gpipe": ScheduleGPipe}.get(p.pp_schedule)
        if kind is None:
            raise cfglib.ConfigError(f"unknown pp_schedule {p.pp_schedule!r} (1f1b or gpipe)")
        return kind(stage, n_microbatches=p.microbatches, loss_fn=self._ce)

    @staticmethod
    def _ce(logits, target):
        return F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), target.reshape(-1))

    # ---- one step ----
    def _rows(self, tokens) -> tuple[torch.Tensor, torch.Tensor]:
        bs = self.cfg.data.batch_size
        part = torch.from_numpy(tokens[self.dp_rank * bs:(self.dp_rank + 1) * bs]).to(self.device)
        return part[:, :-1], part[:, 1:]

    def _average_grads(self) -> None:
        """Data parallel beside pipeline stages: average each stage's gradients over its
        replicas once per step (DDP's reducer does not accept one backward per microbatch)."""
        if self.dp > 1:
            for p in self.model.parameters():
                if p.grad is not None:
                    torch.distributed.all_reduce(p.grad, group=self.dp_group)
                    p.grad /= self.dp

    def _pipeline_loss(self, x, y, train: bool = True) -> torch.Tensor:
        """Through the stages (forward and backward, or forward only); every rank gets the
        mean loss over the whole global batch."""
        run = self.schedule.step if train else self.schedule.eval
        last = self.pp_rank == self.cfg.parallel.pp - 1
        losses: list[torch.Tensor] = []
        if self.pp_rank == 0:
            run(x)
        elif last:
            run(target=y, losses=losses)
        else:
            run()
        loss = torch.stack(losses).mean().detach() if last else torch.zeros((), device=self.device)
        torch.distributed.all_reduce(loss, group=self.pp_group)
        if self.dp > 1:
            torch.distributed.all_reduce(loss, group=self.dp_group)
            loss /= self.dp
        return loss

    def _loss(self, x, y) -> torch.Tensor:
        autocast = torch.autocast(self.device.type, dtype=torch.bfloat16,
                                  enabled=self.cfg.parallel.bf16 and not self.cfg.parallel.fsdp)
        with autocast:
            logits = self.model(x)
        return F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), y.reshape(-1))

    def train_step(self) -> dict:
        lr = lr_at(self.step, self.cfg.steps, self.cfg.optim)
        for g in self.opt.param_groups:
            g["lr"] = lr
        tokens, domains = next(self.sampler)
        x, y = self._rows(tokens)
        t0 = time.perf_counter()
        if self.schedule is not None:
            from skypile.trainer.parallelize import clip_grad_norm_across

            loss = self._pipeline_loss(x, y)
            self._average_grads()
            norm = clip_grad_norm_across(self.model, self.cfg.optim.grad_clip, self.pp_group)
            finite = math.isfinite(norm)
        else:
            loss = self._loss(x, y)
            loss.backward()
            norm, finite = clip_and_check(self.model, self.cfg.optim.grad_clip)
        skipped = not (finite and math.isfinite(loss.item()))
        if not skipped:
            self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        seconds = time.perf_counter() - t0
        self.step += 1
        tps = x.numel() / seconds
        row = {"step": self.step, "loss": loss.item(), "lr": lr, "grad_norm": norm,
               "tokens_per_s": round(tps, 1), "skipped": int(skipped),
               "stem_share": round(domains.count("stem") / len(domains), 3)}
        peak = self._peak_tflops()
        if peak:
            row["mfu"] = round(tps * flops_per_token(self.mcfg, self.n_params,
                                                     self.cfg.data.seq_len) / (peak * 1e12), 4)
        return row

    def _peak_tflops(self) -> float:
        if self.device.type != "cuda":
            return 0.0
        name = torch.cuda.get_device_name(self.device)
        return next((v for k, v in PEAK_TFLOPS.items() if k in name), 0.0)

    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        out = {}
        for domain in self.shards.domains():
            if not self.shards.entries(domain, "validation"):
                continue
            sampler = batches.MixtureSampler(self.shards, batches.constant({domain: 1.0}),
                                             self.cfg.data.seq_len,
                                             self.cfg.data.batch_size * self.dp,
                                             seed=12345, split="validation")
            if domain not in sampler.domains():
                continue
            forward = (lambda x, y: self._pipeline_loss(x, y, train=False)) \
                if self.schedule is not None else self._loss
            losses = [forward(*self._rows(sampler.batch(k)[0])).item()
                      for k in range(self.cfg.eval.batches)]
            out[domain] = sum(losses) / len(losses)
        return out


def train(cfg: TrainConfig, log=print) -> list[dict]:
    run = Run(cfg)
    out = run.out
    if run.rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.json").write_text(json.dumps(cfglib.to_dict(cfg), indent=2))
    rows, vals = [], []
    board = _board(out) if run.rank == 0 else None
    while run.step < cfg.steps:
        row = run.train_step()
        rows.append(row)
        if board is not None:
            for k, v in row.items():
                if k != "step":
                    board.add_scalar(f"train/{k}", v, row["step"])
        if run.rank == 0:
            log(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()))
        if cfg.eval.every and run.step % cfg.eval.every == 0 or run.step == cfg.steps:
            v = run.validate()
            vals.append({"step": run.step, **v})
            if run.rank == 0 and v:
                log("validation " + " ".join(f"{d}={l:.4f}" for d, l in v.items()))
                for d, l in v.items():
                    board.add_scalar(f"validation/{d}", l, run.step)
        if cfg.checkpoint.every and run.step % cfg.checkpoint.every == 0 or run.step == cfg.steps:
            run.save()
    if board is not None:
        board.close()
    if run.rank == 0:
        _append_csv(out / "metrics.csv", rows)
        _append_csv(out / "validation.csv", vals)
        _plot(out)
    return rows


def _board(out: Path):
    from torch.utils.tensorboard import SummaryWriter

    return SummaryWriter(log_dir=str(out / "tensorboard"))


def _append_csv(path: Path, rows: list[dict]) -> None:
    if not rows:
        return
    fields = sorted({k for r in rows for k in r}, key=lambda k: (k != "step", k))
    new = not path.exists()
    if not new:
        with open(path, newline="") as f:
            fields = next(csv.reader(f), fields)
    with open(path, "a", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
        if new:
            w.writeheader()
        w.writerows(rows)


def _plot(out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = out / "validation.csv"
    if not path.exists():
        return
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    fig, ax = plt.subplots(figsize=(7, 4))
    for domain in [k for k in rows[0] if k != "step"]:
        pts = [(int(r["step"]), float(r[domain])) for r in rows if r.get(domain)]
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=domain)
    ax.set_xlabel("step")
    ax.set_ylabel("validation loss")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "validation.png", dpi=110)
    plt.close(fig)


def _parser() -> argparse.ArgumentParser:
    presets = ", ".join(p.stem for p in sorted(CONFIG_DIR.glob("*.toml")))
    ap = argparse.ArgumentParser(
        prog="skypile train",
        description="Train the LLaMA-style model on token shards (one process, or under "
                    "torchrun --nproc_per_node K [--nnodes ...] -m skypile.cli train ...).",
        epilog=f"Config files ship in {CONFIG_DIR} ({presets}); --section.key=value "
               "overrides, e.g. --steps=200 --data.shards=out/shards --optim.lr=3e-4. "
               "Unknown keys are an error; the resolved config is saved in the run folder.")
    ap.add_argument("--config", default=None, metavar="FILE",
                    help="a TOML/YAML config, or the name of one in trainer/configs")
    ap.add_argument("--init-from", default=None, metavar="CHECKPOINT",
                    help="start from a (Stage-1) checkpoint's weights with a fresh optimiser "
                         "(same as --checkpoint.init_from=...)")
    ap.add_argument("--dry-run", action="store_true",
                    help="print the parameter count and memory per GPU, then stop")
    return ap


def run(argv: list[str] | None = None) -> int:
    args, rest = _parser().parse_known_args(argv)
    try:
        overrides, unknown = cfglib.split_overrides(rest, TrainConfig)
        if unknown:
            raise cfglib.ConfigError(f"unexpected argument {unknown[0]!r}: use --section.key=value")
        path = args.config
        if path and not Path(path).exists() and (CONFIG_DIR / f"{path}.toml").exists():
            path = str(CONFIG_DIR / f"{path}.toml")
        if args.init_from:
            overrides.append(f"checkpoint.init_from={args.init_from}")
        cfg = cfglib.load(TrainConfig, path, overrides)
        mcfg = cfg.model_config()
        if args.dry_run:
            n = modellib.count_params(mcfg)
            world = int(os.environ.get("WORLD_SIZE", "1"))
            print(json.dumps({"preset": cfg.preset, "parameters": n,
                              "parameters_billion": round(n / 1e9, 3),
                              "flops_per_token": flops_per_token(mcfg, n, cfg.data.seq_len),
                              "memory_per_gpu": memory_estimate(n, cfg, world)}, indent=2))
            return 0
        if not cfg.data.shards:
            raise cfglib.ConfigError("data.shards is not set (a skypile tokenize output)")
        train(cfg)
    except (cfglib.ConfigError, ShardError, ValueError) as e:
        print(f"skypile train: error: {e}", file=sys.stderr)
        return 2
    finally:
        # a process group left to interpreter shutdown can abort in gloo's threads
        # ("terminate called without an active exception")
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
    return 0
