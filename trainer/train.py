"""``skypile train``: the training loop, on one process or under torchrun.

    skypile train --config trainer/configs/stage1.toml [--section.key=value ...] [--dry-run]
    torchrun --nproc_per_node 8 -m skypile.cli train --config ...

Per step: a deterministic batch from the mixture sampler (its state is the step), loss,
backward, gradient clip, and a skipped (logged) step when the loss or the gradient norm is
not finite. Checkpoints are PyTorch distributed checkpoints (one folder per step, sharded
per rank) holding the model, the optimiser, the step, the sampler's seed and the mixture's
fingerprint, so a resumed run continues the exact stream (and refuses another one).
Shards open lazily and each replica reads only its rows, made ahead in a thread
(skypile/tokens/batches.py); the mixture is held to ``data.max_repeat`` before anything is
built. Metrics go to OUTPUT/metrics.csv and validation losses per domain to
OUTPUT/validation.csv, a row appended and flushed per step / validation, each loss the mean
over the global batch; validation.png at the end (trainer/metrics.py). ``stop_at`` ends a
run early without changing its schedule (crash drills). ``--init-from`` takes a checkpoint
or a Hugging Face Llama folder (trainer/hf.py).

The pieces: checkpoint.py (save, resume, prune), pipeline.py (the stage, its schedule and
step when ``parallel.pp`` > 1), parallelize.py (checkpointing, compile, FSDP2 / DDP); this
module keeps the loop and the step.

MFU follows torchtitan (trainer/estimate.py): FLOPs per token = 6 N + 12 L d T without the
input embedding in N, a pipeline stage's own N and L under ``parallel.pp`` > 1, times the
tokens this rank's stage processed per second, over the device's dense bf16 peak (a table
by GPU name, or ``--peak-tflops``; not reported on the CPU without it). ``tokens_per_s``
is per GPU: the replica's tokens / pipeline stages. Metrics also go to TensorBoard
(OUTPUT/tensorboard).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from hashlib import sha256
from pathlib import Path

import torch
import torch.nn.functional as F

from skypile import config as cfglib
from skypile.cli.subcommands import fail
from skypile.tokens import batches
from skypile.tokens.shards import ShardError, ShardSet
from skypile.trainer import checkpoint, cli, hf, pipeline
from skypile.trainer import model as modellib
from skypile.trainer.config import CONFIG_DIR, TrainConfig
from skypile.trainer.estimate import flops_per_token, memory_estimate, mfu, peak_tflops
from skypile.trainer.metrics import RunLog
from skypile.trainer.optim import adamw, clip_and_check, lr_at
from skypile.trainer.parallelize import grad_sync, parallelize


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
    if not d.weights:
        raise cfglib.ConfigError("data.weights is empty: give each source a weight, e.g. "
                                 "--data.weights='{web_zh: 0.5, stem: 0.5}'")
    if d.ramp_source:
        return batches.ramp(d.weights, d.ramp_source, d.ramp_start, d.ramp_end, cfg.steps)
    return batches.constant(d.weights)


def mixture_id(cfg: TrainConfig) -> int:
    """A 60-bit fingerprint of the mixture (the weights and the ramp), kept in checkpoints."""
    d = cfg.data
    total = sum(d.weights.values()) or 1.0
    spec = {"weights": {k: v / total for k, v in sorted(d.weights.items())}}
    if d.ramp_source:
        spec["ramp"] = [d.ramp_source, d.ramp_start, d.ramp_end, cfg.steps]
    return int(sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:15], 16)


def open_shards(cfg: TrainConfig, mcfg: modellib.ModelConfig) -> ShardSet:
    """The shard set, opened lazily: each shard is read (and checked, once per node) when
    a batch first needs it."""
    d = cfg.data
    shards = ShardSet(d.shards, verify=True, check_cache=d.check_cache or None,
                      block_size=d.block_size)
    vocab = shards.manifest["tokenizer"]["vocab_size"]
    if vocab > mcfg.vocab_size:
        raise cfglib.ConfigError(f"the shards' tokenizer has {vocab} pieces but the model "
                                 f"only {mcfg.vocab_size}: set model.vocab_size")
    return shards


def sampler(cfg: TrainConfig, shards: ShardSet, dp: int, dp_rank: int, split: str = "train",
            weights=None, seed: int | None = None) -> batches.MixtureSampler:
    """The global batch stream (batch_size x dp x grad_accum rows), of which this replica
    reads its rows (those of all its micro-steps: the stream does not depend on how the
    batch is split over replicas and micro-steps)."""
    bs = cfg.data.batch_size * cfg.parallel.grad_accum
    return batches.MixtureSampler(
        shards, weights or mixture(cfg), cfg.data.seq_len, bs * dp,
        cfg.data.seed if seed is None else seed, split=split,
        rows=(dp_rank * bs, (dp_rank + 1) * bs),
        prefetch=cfg.data.prefetch if split == "train" else 0)


def check_repeats(cfg: TrainConfig, stream: batches.MixtureSampler, log) -> None:
    """Hold the run to data.max_repeat: the passes over each source that the whole
    schedule's batches make, from the weights (before anything is trained)."""
    d = cfg.data
    missing = sorted(set(d.weights) - set(stream.domains()))
    if missing:
        raise cfglib.ConfigError(f"data.weights names {missing[0]!r}, which has no "
                                 f"{d.seq_len + 1}-token windows in {d.shards} (have: "
                                 f"{', '.join(stream.domains())})")
    planned = batches.planned_epochs(stream.weights, cfg.steps, stream.batch_size, d.seq_len,
                                     stream.available)
    over = {k: v for k, v in planned.items() if v > d.max_repeat}
    if not over:
        return
    k = max(over, key=over.get)
    text = (f"source {k!r} would be repeated {over[k]:.3g} times in {cfg.steps} steps "
            f"({stream.available[k]:,} tokens); the cap data.max_repeat is {d.max_repeat:g}")
    if d.over_repeat == "error":
        raise cfglib.ConfigError(text + ": lower its weight or the steps, add data, or "
                                 "set data.over_repeat=warn")
    log(f"warning: {text}")


def data_mesh(device: torch.device, world: int):
    """The 1-D data-parallel mesh of a run without pipeline stages (None on one process)."""
    if world == 1:
        return None
    from torch.distributed.device_mesh import init_device_mesh

    return init_device_mesh(device.type, (world,), mesh_dim_names=("dp",))


def stage_flops(model: torch.nn.Module, mcfg: modellib.ModelConfig, seq_len: int) -> float:
    """FLOPs per token of the part of the model this rank holds (a pipeline stage's own),
    without the input embedding (torchtitan's convention)."""
    n = sum(p.numel() for m in model.modules() if not isinstance(m, torch.nn.Embedding)
            for p in m.parameters(recurse=False))
    layers = sum(isinstance(m, modellib.Block) for m in model.modules())
    return flops_per_token(mcfg, n, seq_len, n_layers=layers)


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
        self.peak = peak_tflops(self.device, cfg.peak_tflops)
        # built on the meta device: only this rank's stage or shard is ever allocated
        meta = modellib.build_meta(self.mcfg)
        self.pipe = None
        if cfg.parallel.pp > 1:
            self.pipe = pipeline.build(meta, cfg, self.world, self.device, cross_entropy)
            self.model, self.dp, self.dp_rank = self.pipe.model, self.pipe.dp, self.pipe.dp_rank
        else:
            self.model = parallelize(meta, cfg.parallel, self.device, cfg.data.seed,
                                     data_mesh(self.device, self.world))
            self.dp, self.dp_rank = self.world, self.rank
        if cfg.checkpoint.init_from:
            checkpoint.load_weights(Path(cfg.checkpoint.init_from), self.model)
        self.opt = adamw(self.model, cfg.optim, zero1=cfg.parallel.zero1 and self.dp > 1,
                         group=self.pipe.dp_group if self.pipe is not None else None)
        self.sampler = sampler(cfg, self.shards, self.dp, self.dp_rank)
        self.step = 0
        latest = checkpoint.latest_checkpoint(self.out)
        if latest is not None:
            saved = checkpoint.load(latest, self.model, self.opt, self._progress())
            check_resume(cfg, saved, latest)
            self.step, self.sampler.step = saved["step"], saved["sampler_step"]
        self.n_params = sum(p.numel() for p in self.model.parameters())
        self.flops = stage_flops(self.model, self.mcfg, cfg.data.seq_len)
        self.memory = memory_estimate(self.mcfg, cfg, self.world)

    def _progress(self) -> dict[str, int]:
        return {"step": self.step, "sampler_step": self.sampler.step,
                "data_seed": self.cfg.data.seed, "data_mixture": mixture_id(self.cfg)}

    def save(self) -> None:
        checkpoint.save(self.out, self.model, self.opt, self._progress(), self.rank)
        if self.rank == 0:
            c = self.cfg.checkpoint
            checkpoint.prune(self.out, c.keep_last, c.keep_every)

    # ---- one step ----
    def _rows(self, tokens) -> tuple[torch.Tensor, torch.Tensor]:
        """This replica's share of the global batch (the sampler reads only its rows), as
        (inputs, next-token targets)."""
        part = torch.from_numpy(tokens).to(self.device, non_blocking=True)
        return part[:, :-1], part[:, 1:]

    def global_mean(self, values: list[float]) -> list[float]:
        """The mean over the data-parallel replicas of each value (a loss over the whole
        global batch); the pipeline's losses already are."""
        if self.pipe is not None or self.world == 1:
            return values
        t = torch.tensor(values, dtype=torch.float64 if self.device.type == "cpu"
                         else torch.float32, device=self.device)
        torch.distributed.all_reduce(t)
        return (t / self.world).tolist()

    def _loss(self, x, y) -> torch.Tensor:
        # bf16 is applied by parallelize: FSDP2's policy, or autocast around the forward
        return cross_entropy(self.model(x), y)

    def _eval_loss(self, x, y) -> torch.Tensor:
        """Forward only, in the training step's micro-steps (same rows, same memory)."""
        n = self.cfg.parallel.grad_accum
        forward = (lambda a, b: self.pipe.loss(a, b, train=False)) if self.pipe is not None \
            else self._loss
        return torch.stack([forward(a, b) for a, b in zip(x.chunk(n), y.chunk(n))]).mean()

    def _forward_backward(self, x, y) -> tuple[torch.Tensor, float, bool]:
        """The step's micro-steps (``parallel.grad_accum``: this replica's rows in equal
        parts), each loss scaled so the gradients add up to the mean over the global batch;
        the data-parallel reduction runs in the last one. (mean loss, norm, finite)."""
        n = self.cfg.parallel.grad_accum
        xs, ys = x.chunk(n), y.chunk(n)
        if self.pipe is not None:
            return self.pipe.forward_backward(xs, ys, self.cfg.optim.grad_clip)
        losses = []
        for i, (xi, yi) in enumerate(zip(xs, ys)):
            with grad_sync(self.model, sync=i == n - 1):
                loss = self._loss(xi, yi)
                (loss / n if n > 1 else loss).backward()
            losses.append(loss.detach())
        norm, finite = clip_and_check(self.model, self.cfg.optim.grad_clip)
        return torch.stack(losses).mean(), norm, finite

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
        # x: the tokens through this rank's stage; per GPU, shared by the stages
        stages = self.cfg.parallel.pp
        row = {"step": self.step, "loss": loss.item(), "lr": lr, "grad_norm": norm,
               "tokens_per_s": round(x.numel() / seconds / stages, 1), "skipped": int(skipped),
               "stem_share": round(domains.count("stem") / len(domains), 3)}
        if self.peak:
            row["mfu"] = round(mfu(x.numel() / seconds, self.flops, self.peak), 4)
        if self.device.type == "cuda":  # next to peak_mem_gib, torch's measured peak
            row["estimate_gib"] = self.memory["total_gib"]
        return row

    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        """Mean loss per held-out domain (through the stages when pipelining)."""
        out = {}
        for domain in self.shards.domains():
            if not self.shards.entries(domain, "validation"):
                continue
            held = sampler(self.cfg, self.shards, self.dp, self.dp_rank, split="validation",
                           weights=batches.constant({domain: 1.0}), seed=12345)
            if domain not in held.domains():
                continue
            losses = [self._eval_loss(*self._rows(held.batch(k)[0])).item()
                      for k in range(self.cfg.eval.batches)]
            out[domain] = sum(losses) / len(losses)
        return dict(zip(out, self.global_mean(list(out.values()))))


def _due(step: int, every: int, last: int) -> bool:
    return bool(every and step % every == 0) or step == last


def check_resume(cfg: TrainConfig, saved: dict[str, int], path: Path) -> None:
    """A resumed run must draw the stream it left: the same seed and the same mixture
    (checkpoints older than these counters are let through)."""
    if saved.get("data_seed", cfg.data.seed) != cfg.data.seed:
        raise cfglib.ConfigError(f"{path} was trained with data.seed={saved['data_seed']}, "
                                 f"this run has {cfg.data.seed}: resume with the same seed, "
                                 "or start a new checkpoint.dir")
    if saved.get("data_mixture", mixture_id(cfg)) != mixture_id(cfg):
        raise cfglib.ConfigError(f"{path} was trained with another mixture (data.weights, "
                                 "data.ramp_*, or steps with a ramp): resume with the same "
                                 "one, or start a new checkpoint.dir (--init-from keeps the weights)")


def preflight(cfg: TrainConfig, log) -> None:
    """What can be refused before a model is built: the mixture, its sources and their
    repetition over the whole schedule (read from the manifest, no shard opened)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    init = cfg.checkpoint.init_from
    if init and not (hf.is_hf_dir(Path(init)) or (Path(init) / ".metadata").exists()):
        raise cfglib.ConfigError(f"checkpoint.init_from={init}: neither a step-N checkpoint "
                                 "folder nor a Hugging Face Llama folder (config.json)")
    shards = open_shards(cfg, cfg.model_config())
    dp = world // max(cfg.parallel.pp, 1)
    quiet = int(os.environ.get("RANK", "0")) != 0
    check_repeats(cfg, sampler(cfg, shards, dp, 0), (lambda *_: None) if quiet else log)


def train(cfg: TrainConfig, log=print) -> list[dict]:
    """Train to ``steps`` (or ``stop_at``); rows are logged and flushed as they come, the
    losses being means over the whole global batch."""
    if "://" not in cfg.data.shards:  # the run's config.json then works from any folder
        cfg = dataclasses.replace(cfg, data=dataclasses.replace(
            cfg.data, shards=os.path.abspath(cfg.data.shards)))
    preflight(cfg, log)
    run = Run(cfg)
    if run.rank == 0:
        run.out.mkdir(parents=True, exist_ok=True)
        (run.out / "config.json").write_text(json.dumps(cfglib.to_dict(cfg), indent=2))
    outputs = RunLog(run.out, run.rank, log, resumed_at=run.step)
    rows, warned = [], set()
    last = min(cfg.stop_at or cfg.steps, cfg.steps)
    try:
        while run.step < last:
            row = run.train_step()
            row["loss"] = run.global_mean([row["loss"]])[0]
            epochs = run.sampler.epochs()
            row["max_epochs"] = round(max(epochs.values(), default=0.0), 4)
            if run.device.type == "cuda":
                row["peak_mem_gib"] = round(torch.cuda.max_memory_allocated(run.device) / 2**30, 2)
            rows.append(row)
            outputs.step(row)
            for k in sorted(set(epochs) - warned):
                if epochs[k] > cfg.data.max_repeat and run.rank == 0:
                    warned.add(k)
                    log(f"warning: source {k!r} passed data.max_repeat={cfg.data.max_repeat:g} "
                        f"passes at step {run.step}")
            if _due(run.step, cfg.eval.every, cfg.steps):
                outputs.validation(run.step, run.validate())
            if _due(run.step, cfg.checkpoint.every, cfg.steps):
                run.save()
    finally:
        run.sampler.close()
    if last < cfg.steps and run.rank == 0:
        log(f"stopped at step {last} (stop_at); the schedule runs to {cfg.steps}: run again "
            f"to resume from {checkpoint.latest_checkpoint(run.out) or 'the start'}")
    outputs.close()
    return rows


def dry_run(cfg: TrainConfig, world: int) -> dict:
    """``--dry-run``: the model's size and FLOPs, and memory per rank for this parallel
    combination on ``world`` processes (WORLD_SIZE); refused combinations are refused."""
    pipeline.check(cfg, world)
    mcfg = cfg.model_config()
    n = modellib.count_params(mcfg)
    body = n - mcfg.vocab_size * mcfg.dim  # without the input embedding (6N of MFU)
    return {"preset": cfg.preset, "parameters": n, "parameters_billion": round(n / 1e9, 3),
            "flops_per_token": flops_per_token(mcfg, body, cfg.data.seq_len), "world": world,
            "memory_per_gpu": memory_estimate(mcfg, cfg, world)}


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
                    help="start from a (Stage-1) checkpoint's weights, or a Hugging Face Llama "
                         "folder's (its config.json sets the model shape), with a fresh "
                         "optimiser (same as --checkpoint.init_from=...)")
    ap.add_argument("--stop-at", type=int, default=None, metavar="N",
                    help="stop after step N without changing the schedule's length (a crash "
                         "drill; same as --stop_at=N)")
    ap.add_argument("--peak-tflops", type=float, default=None, metavar="T",
                    help="the GPU's dense bf16 TFLOP/s for MFU, when it is not in the table "
                         "(H100 SXM/PCIe, H200, A100, A800, L40S) (same as --peak_tflops=T)")
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
        if args.stop_at is not None:
            overrides.append(f"stop_at={args.stop_at}")
        if args.peak_tflops is not None:
            overrides.append(f"peak_tflops={args.peak_tflops}")
        cfg = cfglib.load(TrainConfig, path, overrides)
        init = Path(cfg.checkpoint.init_from) if cfg.checkpoint.init_from else None
        if init is not None and hf.is_hf_dir(init):
            # a released Llama: its config.json gives the shape (model.* flags still win)
            shape = [f"model.{k}={v!r}" for k, v in hf.model_fields(init).items()]
            cfg = cfglib.load(TrainConfig, path, shape + overrides)
        if args.dry_run:
            print(json.dumps(dry_run(cfg, int(os.environ.get("WORLD_SIZE", "1"))), indent=2))
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
