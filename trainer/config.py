"""The training config: nested dataclasses, TOML presets in trainer/configs/, overrides."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from skypile.trainer.model import PRESETS, ModelConfig
from skypile.trainer.optim import OptimConfig

CONFIG_DIR = Path(__file__).parent / "configs"


@dataclasses.dataclass
class DataConfig:
    """What to train on (``data``)."""

    shards: str = ""
    """Token shards written by skypile tokenize (local or fsspec URL)."""
    weights: dict = dataclasses.field(default_factory=dict)
    """Source/domain -> mixture weight (normalised)."""
    ramp_source: str = ""
    """Stage-2: the source whose share ramps linearly over the run (e.g. stem)."""
    ramp_start: float = 0.1
    """Its share at the first step."""
    ramp_end: float = 0.4
    """Its share at the last step."""
    seq_len: int = 256
    """Tokens per sequence."""
    batch_size: int = 8
    """Sequences per step and process."""
    seed: int = 0
    """Seed of the batch stream (with the step, it fixes every batch)."""


@dataclasses.dataclass
class CheckpointConfig:
    """Checkpoints (``checkpoint``): PyTorch distributed checkpoint, sharded."""

    dir: str = "out/train"
    """Run folder: checkpoints, logs, plots and the resolved config."""
    every: int = 100
    """Steps between checkpoints (0: only at the end)."""
    keep_last: int = 2
    """Newest checkpoints kept."""
    keep_every: int = 0
    """Also keep every checkpoint whose step is a multiple of this (released snapshots)."""
    init_from: str = ""
    """Start from this checkpoint's weights (Stage-1 -> Stage-2), with a fresh optimiser."""


@dataclasses.dataclass
class EvalConfig:
    """Validation (``eval``) on every held-out domain set."""

    every: int = 50
    """Steps between validations (0: only at the end)."""
    batches: int = 4
    """Batches per domain and validation."""


@dataclasses.dataclass
class ParallelConfig:
    """Parallelism (``parallel``); applied by trainer/parallelize.py."""

    fsdp: bool = True
    """FSDP2 (fully_shard) over all processes when there are more than one."""
    zero1: bool = False
    """Shard only the optimizer state (ZeRO-1), as the report chose, instead of FSDP2."""
    bf16: bool = False
    """bf16 mixed precision (FSDP2 policy; autocast without FSDP)."""
    activation_checkpointing: bool = False
    """Recompute each block's activations in the backward pass."""
    compile: bool = False
    """torch.compile each block."""
    pp: int = 1
    """Pipeline stages (the processes form a data-parallel x pipeline mesh)."""
    pp_schedule: str = "1f1b"
    """Pipeline schedule: 1f1b or gpipe."""
    microbatches: int = 2
    """Microbatches per step when pipelining (the batch must divide evenly)."""


@dataclasses.dataclass
class TrainConfig:
    """Everything ``skypile train`` can be told (--config FILE, --section.key=value)."""

    preset: str = "debug"
    """Model preset (debug, 100m, 1b, skywork-13b, llama2-13b); ``model`` overrides fields."""
    model: dict = dataclasses.field(default_factory=dict)
    """Model fields that differ from the preset (e.g. vocab_size)."""
    steps: int = 100
    """Optimiser steps in this run."""
    optim: OptimConfig = dataclasses.field(default_factory=OptimConfig)
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    checkpoint: CheckpointConfig = dataclasses.field(default_factory=CheckpointConfig)
    eval: EvalConfig = dataclasses.field(default_factory=EvalConfig)
    parallel: ParallelConfig = dataclasses.field(default_factory=ParallelConfig)
    device: str = "auto"
    """cuda when available, else cpu (auto), or name one."""

    def model_config(self) -> ModelConfig:
        from skypile import config as cfglib

        if self.preset not in PRESETS:
            raise cfglib.ConfigError(f"unknown preset {self.preset!r} (known: {', '.join(PRESETS)})")
        base = dataclasses.asdict(PRESETS[self.preset])
        base.update(self.model)
        return cfglib.from_dict(ModelConfig, base, "model")
