"""The typed configs of the trainer's commands: ``skypile train`` (nested dataclasses, TOML
presets in trainer/configs/, ``--section.key=value`` overrides), and one config per
``skypile eval`` subcommand and for ``skypile export hf``, whose flags are generated from
the fields by ``skypile.config.add_flags``.

Defaults that name the shared data folder are computed when a config is built (when the
command runs), from ``$SKYPILE_DATA``; nothing reads the environment at import.
"""

from __future__ import annotations

import dataclasses
import math
import os
import tempfile
from pathlib import Path
from typing import Literal

from skypile import config as cfglib
from skypile.trainer.model import PRESETS, ModelConfig
from skypile.trainer.optim import OptimConfig

CONFIG_DIR = Path(__file__).parent / "configs"


@dataclasses.dataclass
class DataConfig:
    """What to train on (``data``)."""

    shards: str = ""
    """Token shards written by skypile tokenize (local or fsspec URL)."""
    weights: dict[str, float] = dataclasses.field(default_factory=dict)
    """Source/domain -> mixture weight (normalised), e.g. {web_zh: 0.5, stem: 0.5}."""
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
    max_repeat: float = 5.0
    """Most passes over any source's training tokens in the run (the mixture plan's cap,
    the report's five epochs); counted from the weights before the run starts."""
    over_repeat: Literal["error", "warn"] = "error"
    """Past max_repeat: refuse to start (error) or log a warning and train (warn)."""
    prefetch: int = 2
    """Batches made ahead in a background thread (0: none)."""
    block_size: int = 1 << 20
    """Bytes per ranged read of a remote shard (fsspec block cache; a shard is never
    downloaded whole)."""
    check_cache: str = dataclasses.field(
        default_factory=lambda: os.path.join(tempfile.gettempdir(), "skypile-shard-checks"))
    """Node-local folder of markers for shards already checked against the manifest's
    sha256 (one check per node and shard); empty: every process checks on first use."""

    def __post_init__(self):
        bad = [k for k, v in self.weights.items() if not v >= 0 or math.isinf(v)]
        if bad:
            raise cfglib.ConfigError(f"data.weights.{bad[0]}={self.weights[bad[0]]!r}: a weight "
                                     "is a finite number >= 0")
        if self.weights and sum(self.weights.values()) <= 0:
            raise cfglib.ConfigError("data.weights: the weights sum to zero")
        if self.ramp_source and self.ramp_source not in self.weights:
            raise cfglib.ConfigError(f"data.ramp_source={self.ramp_source!r} is not one of "
                                     f"data.weights ({', '.join(self.weights) or 'none'})")
        for name in ("ramp_start", "ramp_end"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise cfglib.ConfigError(f"data.{name}={getattr(self, name)!r}: a share in [0, 1]")


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
    """Start from this checkpoint's weights (Stage-1 -> Stage-2), or a Hugging Face Llama
    folder's (skypile train's command line takes the model shape from its config.json),
    with a fresh optimiser."""


@dataclasses.dataclass
class EvalConfig:
    """Validation (``eval``) on every held-out domain set."""

    every: int = 50
    """Steps between validations (0: only at the end)."""
    batches: int = 4
    """Batches per domain and validation."""


@dataclasses.dataclass
class ParallelConfig:
    """Parallelism (``parallel``); applied by trainer/parallelize.py and trainer/pipeline.py."""

    fsdp: bool = True
    """FSDP2 (fully_shard per block) over the data-parallel replicas when there are more
    than one (with parallel.pp > 1: each stage over its replicas, as torchtitan does);
    parallel.zero1 replaces it."""
    zero1: bool = False
    """Shard only the optimizer state (ZeRO-1), as the report chose, instead of FSDP2: the
    weights are replicated (DDP, bucketed all-reduce), the AdamW state is split over the
    data-parallel replicas and checkpointed sharded (also per pipeline stage)."""
    bf16: bool = False
    """bf16 mixed precision on every path: FSDP2's policy (bf16 weights and activations,
    float32 gradient reduction) where FSDP2 shards, otherwise autocast around the forward
    (float32 weights, gradients and optimizer state; bf16 matmuls and activations)."""
    activation_checkpointing: bool = False
    """Recompute each block's activations in the backward pass (also per pipeline stage)."""
    compile: bool = False
    """torch.compile each block (also per pipeline stage)."""
    pp: int = 1
    """Pipeline stages (the processes form a pipeline x data-parallel mesh, pipeline
    outermost)."""
    pp_schedule: Literal["1f1b", "gpipe"] = "1f1b"
    """Pipeline schedule: 1f1b or gpipe."""
    microbatches: int = 2
    """Microbatches per step when pipelining (the batch must divide evenly)."""
    bucket_mb: float = 25.0
    """Gradient all-reduce bucket size in MiB (DDP's, and the pipeline stages' replicas')."""
    grad_accum: int = 1
    """Micro-steps per optimiser step (gradient accumulation, outside the pipeline's
    microbatches): each process trains on data.batch_size sequences per micro-step, so the
    global batch is batch_size x data-parallel replicas x grad_accum. The data-parallel
    reduction runs once per step (with parallel.pp > 1: once per micro-step)."""


@dataclasses.dataclass
class TrainConfig:
    """Everything ``skypile train`` can be told (--config FILE, --section.key=value)."""

    preset: str = "debug"
    """Model preset (debug, 100m, 1b, skywork-13b, llama2-13b); ``model`` overrides fields."""
    model: dict = dataclasses.field(default_factory=dict)
    """Model fields that differ from the preset (e.g. vocab_size)."""
    steps: int = 100
    """Optimiser steps in this run."""
    stop_at: int = 0
    """Stop after this step (0: at ``steps``) without changing the schedule, which still
    spans ``steps``: a crash drill (resume runs on from the last checkpoint)."""
    optim: OptimConfig = dataclasses.field(default_factory=OptimConfig)
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    checkpoint: CheckpointConfig = dataclasses.field(default_factory=CheckpointConfig)
    eval: EvalConfig = dataclasses.field(default_factory=EvalConfig)
    parallel: ParallelConfig = dataclasses.field(default_factory=ParallelConfig)
    device: str = "auto"
    """cuda when available, else cpu (auto), or name one."""
    peak_tflops: float = 0.0
    """The device's dense bf16 peak in TFLOP/s for MFU (0: from the table of known GPUs;
    an unknown GPU needs it, the CPU reports MFU only with it)."""

    def model_config(self) -> ModelConfig:
        if self.preset not in PRESETS:
            raise cfglib.ConfigError(f"unknown preset {self.preset!r} (known: {', '.join(PRESETS)})")
        base = dataclasses.asdict(PRESETS[self.preset])
        base.update(self.model)
        return cfglib.from_dict(ModelConfig, base, "model")


# ---------------------------------------------------------------- skypile eval / export
Dtype = Literal["float32", "bfloat16", "float16"]
BenchName = Literal["ceval", "cmmlu", "mmlu"]  # the keys of multiple_choice.BENCHES


def data_root() -> str:
    """The shared sample data: ``$SKYPILE_DATA``, or ../shared/data."""
    return os.environ.get("SKYPILE_DATA", "../shared/data")


def default_sets() -> str:
    """The perplexity sets of the report (Skywork Table 6), one JSONL file per domain."""
    return f"{data_root()}/skywork-eval/*.jsonl"


def _under_data(relative: str):
    return dataclasses.field(default_factory=lambda: f"{data_root()}/{relative}",
                             metadata={"metavar": "FILE"})


@dataclasses.dataclass(kw_only=True)
class ModelsConfig:
    """The models an eval command scores (the flags every ``skypile eval`` subcommand takes)."""

    model: list[str] = dataclasses.field(metadata={"action": "append", "metavar": "PATH"})
    """a skypile train run or step-N folder, or a local Hugging Face model folder; repeat
    for one row per model"""
    name: list[str] = dataclasses.field(default_factory=list,
                                        metadata={"action": "append", "metavar": "NAME"})
    """row label for each --model, in order (default: the folder name)"""
    tokenizer: str | None = dataclasses.field(default=None, metadata={"metavar": "MODEL"})
    """tokenizer of a skypile checkpoint (default: the one in its shard manifest)"""
    device: str = "auto"
    """auto (CUDA if present), cpu, cuda, cuda:N"""
    dtype: Dtype = "float32"
    """weights' dtype"""
    batch_tokens: int = 8192
    """padded tokens per forward pass, the memory knob"""

    def __post_init__(self):
        if self.name and len(self.name) != len(self.model):
            raise cfglib.ConfigError("give one --name per --model")


@dataclasses.dataclass(kw_only=True)
class PerplexityConfig(ModelsConfig):
    """``skypile eval perplexity``."""

    sets: list[str] = dataclasses.field(default_factory=lambda: [default_sets()],
                                        metadata={"metavar": "GLOB"})
    """JSONL files, one per domain (default: the report's six domains in
    $SKYPILE_DATA/skywork-eval)"""
    reference_tokenizer: str | None = dataclasses.field(default=None,
                                                        metadata={"metavar": "MODEL"})
    """also report perplexity rescaled to this tokenizer's token count (SentencePiece model
    or Hugging Face tokenizer folder)"""
    limit: int = 0
    """first N documents per domain, 0 for all"""
    out: str = "out/eval/perplexity"
    """output folder"""


@dataclasses.dataclass(kw_only=True)
class LeakageConfig(ModelsConfig):
    """``skypile eval leakage``."""

    train: str = _under_data("gsm8k/train.jsonl")
    """the train split (default: $SKYPILE_DATA/gsm8k/train.jsonl)"""
    test: str = _under_data("gsm8k/test.jsonl")
    """the test split (default: $SKYPILE_DATA/gsm8k/test.jsonl)"""
    ref: str = _under_data("gsm8k/mock_gsm8k_test_public.jsonl")
    """fresh reference text in the test's style (default: the report's mock set,
    $SKYPILE_DATA/gsm8k/mock_gsm8k_test_public.jsonl)"""
    limit: int = 0
    """first N samples per set, 0 for all"""
    bootstrap: int = 2000
    """bootstrap rounds"""
    tolerance: float = 0.01
    """band around 0 (nats) an interval must clear to be flagged"""
    seed: int = 0
    """seed of the bootstrap resampling"""
    out: str | None = None
    """also write table8.md / table8.csv here"""


@dataclasses.dataclass(kw_only=True)
class McConfig(ModelsConfig):
    """``skypile eval mc``."""

    bench: BenchName
    """the benchmark"""
    shots: int = 5
    """examples from the dev split"""
    subjects: str = ""
    """comma-separated subjects (default: all)"""
    limit: int = 0
    """first N questions per subject, 0 for all"""
    data: str = dataclasses.field(default_factory=lambda: f"{data_root()}/benchmarks",
                                  metadata={"metavar": "DATA"})
    """folder with ceval/ cmmlu/ mmlu/ (default: $SKYPILE_DATA/benchmarks)"""
    out: str | None = None
    """also write mc-BENCH.csv / .md here"""


@dataclasses.dataclass(kw_only=True)
class ExportConfig:
    """``skypile export hf``."""

    checkpoint: str = dataclasses.field(metadata={"metavar": "DIR"})
    """a skypile train run folder (its latest step) or one step-N folder"""
    tokenizer: str | None = dataclasses.field(default=None, metadata={"metavar": "MODEL"})
    """SentencePiece model (default: the one in the run's shard manifest)"""
    output: str = dataclasses.field(metadata={"metavar": "DIR"})
    """the Hugging Face model folder to write"""
    dtype: Dtype = "float32"
    """dtype of the written weights"""
    max_shard_gb: float = 5.0
    """largest safetensors file, in GB; a bigger model is split into
    model-0000K-of-0000N.safetensors with model.safetensors.index.json"""
