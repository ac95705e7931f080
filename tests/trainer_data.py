"""What the trainer tests share: token shards built by our own commands from real GSM8K
(domain stem) and Skywork finance text (web_zh), and a small training config."""

from __future__ import annotations

import json
from pathlib import Path

from skypile import config as cfglib
from skypile.pipelines.tokenize import run as tokenize
from skypile.tokens import tokenizer as tk
from skypile.trainer.config import TrainConfig


def make_shards(data_dir: Path, d: Path, gsm8k_rows: int) -> str:
    """Shards of the first ``gsm8k_rows`` GSM8K problems and the Skywork finance set, with
    5% held out, under ``d``; returns the shard folder."""
    with open(d / "docs.jsonl", "w", encoding="utf-8") as f:
        for i, line in enumerate(open(data_dir / "gsm8k/train.jsonl", encoding="utf-8")):
            if i >= gsm8k_rows:
                break
            r = json.loads(line)
            f.write(json.dumps({"id": f"g{i}", "text": r["question"] + "\n" + r["answer"],
                                "metadata": {"corpus": "stem"}}) + "\n")
        zh = data_dir / "skywork-eval/zh_finance.jsonl"
        for i, line in enumerate(open(zh, encoding="utf-8")):
            f.write(json.dumps({"id": f"z{i}", "text": json.loads(line)["text"],
                                "metadata": {"lang": "zh"}}, ensure_ascii=False) + "\n")
    model = tk.train([str(d / "docs.jsonl")], str(d / "tok"),
                     tk.TokenizerTrainConfig(vocab_size=4000))
    assert tokenize(["--input", str(d / "docs.jsonl"), "--tokenizer", str(model),
                     "--output", str(d / "shards"), "--held_out.fraction=0.05"]) == 0
    return str(d / "shards")


def config(shards: str, out, **over) -> TrainConfig:
    """The debug model for 6 steps on both domains; ``over`` sets dotted keys."""
    base = {"preset": "debug", "steps": 6, "data": {"shards": shards, "seq_len": 64,
            "batch_size": 4, "weights": {"stem": 0.5, "web_zh": 0.5}},
            "optim": {"lr": 3e-3, "min_lr": 3e-4, "warmup_steps": 2},
            "checkpoint": {"dir": str(out), "every": 3, "keep_last": 1},
            "eval": {"every": 3, "batches": 2}}
    for k, v in over.items():
        cfglib.set_dotted(base, k, v)
    return cfglib.from_dict(TrainConfig, base)
