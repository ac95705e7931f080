"""``skypile train``: the training loop, on one process or under torchrun.

    skypile train --config trainer/configs/stage1.toml [--section.key=value ...] [--dry-run]
    torchrun --nproc_per_node 8 -m skypile.cli train --config ...

Per step: a deterministic batch from the mixture sampler (its state is the step), loss,
backward, gradient clip, and a skipped (logged) step when the loss or the gradient norm is
not finite. Checkpoints are PyTorch distributed checkpoints (one folder per step, sharded
per rank) holding the model, the optimiser and the step, so a resumed run continues the
exact stream. Metrics go to OUTPUT/metrics.csv and validation curves per domain to
OUTPUT/validation.csv and validation.png (trainer/metrics.py).

The pieces: checkpoint.py (save, resume, prune), pipeline.py (the stage, its schedule and
step when ``parallel.pp`` > 1), parallelize.py (checkpointing, compile, FSDP2 / DDP); this
module keeps the loop and the step.

MFU (PaLM, appendix B): FLOPs per token = 6 N + 12 L d T, with N the parameters, L the
layers, d the width and T the sequence length (the second term is attention); MFU =
tokens/s x FLOPs per token / the device's peak bf16 FLOP/s (known for H100 / H200 /
A100 / A800; not reported on the CPU). Metrics also go to TensorBoard (OUTPUT/tensorboard).
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from skypile import config as cfglib
from skypile.cli.subcommands import fail
from skypile.tokens import batches
from skypile.tokens.shards import ShardError, ShardSet
from skypile.trainer import checkpoint, cli, pipeline
from skypile.trainer import model as modellib
from skypile.trainer.config import CONFIG_DIR, TrainConfig
from skypile.trainer.metrics import RunLog
from skypile.trainer.optim import adamw, clip_and_check, lr_at
from skypile.trainer.parallelize import parallelize, uses_fsdp

PEAK_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0, "A800": 312.0}  # bf16 dense


def flops_per_token(cfg: modellib.ModelConfig, n_params: int, seq_len: int) -> float:
    return 6.0 * n_params + 12.0 * cfg.n_layers * cfg.dim * seq_len


def memory_estimate(n_params: int, cfg: TrainConfig, world: int) -> dict:
    """Bytes per GPU for weights, gradients and AdamW state, in the report's Table 10 spirit."""
    weights = n_params * (2 if cfg.parallel.bf16 else 4)
    grads = weights
    optim = n_params * 4 * 3  # fp32 master copy + two moments
    if uses_fsdp(cfg.parallel, world):
        weights, grads, optim = weights / world, grads / world, optim / world
    elif cfg.parallel.zero1 and world > 1:
        optim = optim / world
    gib = 1024 ** 3
    return {"weights_gib": round(weights / gib, 2), "grads_gib": round(grads / gib, 2),
            "optimizer_gib": round(optim / gib, 2),
            "total_gib_before_activations": round((weights + grads + optim) / gib, 2)}


def peak_tflops(device: torch.device) -> float:
    """The device's dense bf16 peak (0 when unknown, e.g. on the CPU: no MFU then)."""
    if device.type != "cuda":
        return 0.0
    name = torch.cuda.get_device_name(device)
    return next((v for k, v in PEAK_TFLOPS.items() if k in name), 0.0)


def cross_entropy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Next-token loss in float32 (also the pipeline schedule's loss on the last stage)."""
    return F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), target.reshape(-1))


def process_device(name: str, world: int) -> torch.device:
    """This process's device (cuda:LOCAL_RANK under torchrun); joins the process group when
    there are several processes."""
    cuda = torch.cuda.is_available() and name in ("auto", "cuda")
    device = torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}" if cuda
                          else ("cpu" if name == "auto" else name))
    if world > 1 and not torch.distributed.is_initialized():
        torch.distributed.init_process_group("nccl" if cuda else "gloo")
    return device


def mixture(cfg: TrainConfig):
    """The mixture weights per step: constant, or one source ramped over the run (Stage-2)."""
    d = cfg.data
    if d.ramp_source:
        return batches.ramp(d.weights, d.ramp_source, d.ramp_start, d.ramp_end, cfg.steps)
    return batches.constant(d.weights)


def open_shards(cfg: TrainConfig, mcfg: modellib.ModelConfig) -> ShardSet:
    shards = ShardSet(cfg.data.shards)
    vocab = shards.manifest["tokenizer"]["vocab_size"]
    if vocab > mcfg.vocab_size:
        raise cfglib.ConfigError(f"the shards' tokenizer has {vocab} pieces but the model "
                                 f"only {mcfg.vocab_size}: set model.vocab_size")
    return shards


class Run:
    """One process's part of a training run: its model (or pipeline stage), the optimiser,
    the batch stream and the step; ``train`` drives the loop."""

    def __init__(self, cfg: TrainConfig):
        self.cfg = cfg
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.device = process_device(cfg.device, self.world)
        self.out = Path(cfg.checkpoint.dir)
        self.mcfg = cfg.model_config()
        self.shards = open_shards(cfg, self.mcfg)
        pipeline.check(cfg, self.world)
        model = modellib.build(self.mcfg, self.device, seed=cfg.data.seed)
        if cfg.checkpoint.init_from:
            checkpoint.load_weights(Path(cfg.checkpoint.init_from), model)
        self.pipe = None
        if cfg.parallel.pp > 1:
            self.pipe = pipeline.build(model, cfg, self.world, self.device, cross_entropy)
            self.model, self.dp, self.dp_rank = self.pipe.model, self.pipe.dp, self.pipe.dp_rank
        else:
            self.model = parallelize(model, cfg.parallel, self.world)
            self.dp, self.dp_rank = self.world, self.rank
        self.opt = adamw(self.model, cfg.optim, zero1=cfg.parallel.zero1 and self.dp > 1)
        self.sampler = batches.MixtureSampler(self.shards, mixture(cfg), cfg.data.seq_len,
                                              cfg.data.batch_size * self.dp, cfg.data.seed)
        self.step = 0
        latest = checkpoint.latest_checkpoint(self.out)
        if latest is not None:
            saved = checkpoint.load(latest, self.model, self.opt, self._progress())
            self.step, self.sampler.step = saved["step"], saved["sampler_step"]
        self.n_params = sum(p.numel() for p in self.model.parameters())

    def _progress(self) -> dict[str, int]:
        return {"step": self.step, "sampler_step": self.sampler.step}

    def save(self) -> None:
        checkpoint.save(self.out, self.model, self.opt, self._progress(), self.rank)
        if self.rank == 0:
            c = self.cfg.checkpoint
            checkpoint.prune(self.out, c.keep_last, c.keep_every)

    # ---- one step ----
    def _rows(self, tokens) -> tuple[torch.Tensor, torch.Tensor]:
        """This replica's share of the global batch, as (inputs, next-token targets)."""
        bs = self.cfg.data.batch_size
        part = torch.from_numpy(tokens[self.dp_rank * bs:(self.dp_rank + 1) * bs]).to(self.device)
        return part[:, :-1], part[:, 1:]

    def _loss(self, x, y) -> torch.Tensor:
        # bf16 is FSDP2's mixed-precision policy when FSDP shards the model, autocast otherwise
        bf16 = self.cfg.parallel.bf16 and not uses_fsdp(self.cfg.parallel, self.world)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=bf16):
            logits = self.model(x)
        return cross_entropy(logits, y)

    def _forward_backward(self, x, y) -> tuple[torch.Tensor, float, bool]:
        if self.pipe is not None:
            return self.pipe.forward_backward(x, y, self.cfg.optim.grad_clip)
        loss = self._loss(x, y)
        loss.backward()
        norm, finite = clip_and_check(self.model, self.cfg.optim.grad_clip)
        return loss, norm, finite

    def train_step(self) -> dict:
        lr = lr_at(self.step, self.cfg.steps, self.cfg.optim)
        for g in self.opt.param_groups:
            g["lr"] = lr
        tokens, domains = next(self.sampler)
        x, y = self._rows(tokens)
        t0 = time.perf_counter()
        loss, norm, finite = self._forward_backward(x, y)
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
        peak = peak_tflops(self.device)
        if peak:
            row["mfu"] = round(tps * flops_per_token(self.mcfg, self.n_params,
                                                     self.cfg.data.seq_len) / (peak * 1e12), 4)
        return row

    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        """Mean loss per held-out domain (through the stages when pipelining)."""
        forward = (lambda x, y: self.pipe.loss(x, y, train=False)) if self.pipe is not None \
            else self._loss
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
            losses = [forward(*self._rows(sampler.batch(k)[0])).item()
                      for k in range(self.cfg.eval.batches)]
            out[domain] = sum(losses) / len(losses)
        return out


def _due(step: int, every: int, last: int) -> bool:
    return bool(every and step % every == 0) or step == last


def train(cfg: TrainConfig, log=print) -> list[dict]:
    run = Run(cfg)
    if run.rank == 0:
        run.out.mkdir(parents=True, exist_ok=True)
        (run.out / "config.json").write_text(json.dumps(cfglib.to_dict(cfg), indent=2))
    outputs = RunLog(run.out, run.rank, log)
    rows, vals = [], []
    while run.step < cfg.steps:
        row = run.train_step()
        rows.append(row)
        outputs.step(row)
        if _due(run.step, cfg.eval.every, cfg.steps):
            v = run.validate()
            vals.append({"step": run.step, **v})
            outputs.validation(run.step, v)
        if _due(run.step, cfg.checkpoint.every, cfg.steps):
            run.save()
    outputs.close(rows, vals)
    return rows


def _parser() -> cli.Parser:
    presets = ", ".join(p.stem for p in sorted(CONFIG_DIR.glob("*.toml")))
    ap = cli.Parser(
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
        return fail("skypile train", e)
    finally:
        # a process group left to interpreter shutdown can abort in gloo's threads
        # ("terminate called without an active exception")
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
    return 0
