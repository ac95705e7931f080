"""Table 6 (per-domain perplexity) and Table 8 (contamination test) for the demo checkpoints
and a random-init Llama, with the same commands a user runs.

    .venv/bin/python benchmarks/eval.py --demo out/demo [--train-limit 2000]

The random Llama has the demo model's shape (the debug preset at the demo tokenizer's
vocabulary, 4,096 positions), random weights (seed 0), and the demo tokenizer; it is saved
as a Hugging Face folder, so it goes through the Hugging Face loader. Tables are printed and
written to OUT (default: DEMO/eval-bench).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
from pathlib import Path


def random_llama(demo: Path, out: Path) -> Path:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from skypile.tokens import hf_tokenizer
    from skypile.trainer import loading

    run = demo / "train/stage2"
    cfg = loading.run_config(run).model_config()
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(
        vocab_size=cfg.vocab_size, hidden_size=cfg.dim, intermediate_size=cfg.ffn_dim,
        num_hidden_layers=cfg.n_layers, num_attention_heads=cfg.n_heads,
        max_position_embeddings=4096, rms_norm_eps=cfg.norm_eps, tie_word_embeddings=False))
    path = out / "random-llama"
    if path.exists():
        shutil.rmtree(path)
    model.save_pretrained(path)
    hf_tokenizer.export(str(demo / "tokenizer/bilingual.model"), str(path))
    return path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--demo", default="out/demo")
    ap.add_argument("--out", default=None)
    ap.add_argument("--train-limit", type=int, default=2000,
                    help="GSM8K train samples scored (test and reference are scored whole)")
    args = ap.parse_args(argv)
    demo = Path(args.demo)
    out = Path(args.out) if args.out else demo / "eval-bench"
    out.mkdir(parents=True, exist_ok=True)
    rand = random_llama(demo, out)
    models = ["--model", str(demo / "train/stage1"), "--model", str(demo / "train/stage2"),
              "--model", str(rand), "--name", "demo-stage1", "--name", "demo-stage2",
              "--name", "random-llama"]
    skypile = [sys.executable, "-m", "skypile.cli", "eval"]
    t0 = time.time()
    subprocess.run(skypile + ["perplexity", *models, "--reference-tokenizer",
                              str(demo / "tokenizer/bilingual.model"), "--out", str(out / "table6")],
                   check=True)
    t1 = time.time()
    # the train split is cut to --train-limit samples; test and the reference set are whole
    train = out / "gsm8k-train-head.jsonl"
    from skypile.trainer.config import data_root

    with open(Path(data_root()) / "gsm8k/train.jsonl", encoding="utf-8") as src, open(train, "w") as dst:
        for i, line in enumerate(src):
            if i >= args.train_limit:
                break
            dst.write(line)
    subprocess.run(skypile + ["leakage", *models, "--train", str(train), "--out", str(out / "table8")],
                   check=True)
    print(f"perplexity {t1 - t0:.0f} s, leakage {time.time() - t1:.0f} s; tables in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
