"""Training step time of our model against Hugging Face LlamaForCausalLM, on the CPU.

    python benchmarks/trainer.py [--preset debug|100m] [--batch 4] [--seq 256] [--steps 10]

The same config and batch, randomly initialised (nothing downloaded), in the same
process: forward, backward and an AdamW step, median over the steps after two warm-up
steps. The ratio is ours / Hugging Face (below 1 is faster).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from skypile.trainer.model import PRESETS, build, hf_config, hf_state_dict

sys.path.insert(0, str(Path(__file__).resolve().parent))
from record import record  # noqa: E402


def step_times(model, forward, batch, steps: int) -> list[float]:
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x, y = batch[:, :-1], batch[:, 1:]
    times = []
    for _ in range(steps + 2):
        t0 = time.perf_counter()
        logits = forward(x)
        loss = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), y.reshape(-1))
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - t0)
    return times[2:]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", default="debug")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--steps", type=int, default=10)
    args = ap.parse_args(argv)
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = PRESETS[args.preset]
    torch.manual_seed(0)
    batch = torch.randint(0, cfg.vocab_size, (args.batch, args.seq + 1))
    ours = build(cfg, seed=0).train()
    hf = LlamaForCausalLM(LlamaConfig(**hf_config(cfg), attn_implementation="sdpa")).train()
    hf.load_state_dict(hf_state_dict(ours), strict=False)
    t_ours = statistics.median(step_times(ours, ours, batch, args.steps))
    t_hf = statistics.median(step_times(hf, lambda x: hf(x).logits, batch, args.steps))
    print(f"preset {args.preset}, batch {args.batch} x {args.seq}, {torch.get_num_threads()} threads")
    print(f"ours {t_ours * 1000:.1f} ms/step, Hugging Face LlamaForCausalLM {t_hf * 1000:.1f} "
          f"ms/step, ratio {t_ours / t_hf:.2f}")
    record(f"trainer-step-{args.preset}", "Hugging Face LlamaForCausalLM (sdpa)", round(t_hf * 1000, 1),
           "skypile trainer model", round(t_ours * 1000, 1), "ms/step", higher_is_better=False,
           note=f"CPU, batch {args.batch} x {args.seq}, {torch.get_num_threads()} threads")
    return 0


if __name__ == "__main__":
    sys.exit(main())
