#!/usr/bin/env bash
# One command for a borrowed H100/H200 (see DEVELOPERS.md). Its own install path: the lock
# with PyPI's CUDA torch instead of the CPU one (`make gpu-venv`, requirements-gpu.txt), no
# KenLM. Builds a small shard set from the shared data, trains the ~1B preset in bf16 with
# torch.compile and flash attention (flash-attn when it imports, else SDPA's flash kernel,
# which this script checks runs), then prints tokens/s/GPU, MFU, torch's peak memory and
# the trainer's memory estimate side by side. Writes everything under $OUT when set.
#   SKYPILE_GPU_PY=/path/to/python  use a Python that already has CUDA torch (e.g. the
#                                   trainer image) instead of making .venv-gpu
#   STEPS=300 SEQ=2048 BATCH=8      the run's length and shape
set -euo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-out/gpu}
steps=${STEPS:-300}
seq=${SEQ:-2048}
batch=${BATCH:-8}
mkdir -p "$out"
if [ -n "${SKYPILE_GPU_PY:-}" ]; then
  py=$SKYPILE_GPU_PY
else
  make gpu-venv >/dev/null
  py=.venv-gpu/bin/python
fi
data=${SKYPILE_DATA:-../shared/data}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$out/gpu.txt"
$py - <<'PY' | tee "$out/attention.txt"
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
assert torch.cuda.is_available() and torch.version.cuda, "no CUDA device, or a CPU build of torch"
print(f"torch {torch.__version__} CUDA {torch.version.cuda} on {torch.cuda.get_device_name(0)}")
try:
    import flash_attn
    print(f"attention: flash-attn {flash_attn.__version__}")
except ImportError:
    q = torch.randn(1, 16, 2048, 128, device="cuda", dtype=torch.bfloat16)
    with sdpa_kernel(SDPBackend.FLASH_ATTENTION):  # raises if the flash kernel cannot run
        torch.nn.functional.scaled_dot_product_attention(q, q, q, is_causal=True)
    print("attention: SDPA's flash kernel (flash-attn not installed)")
PY
if [ ! -f "$out/shards/manifest.json" ]; then
  $py -m skypile.cli tokenizer train --input "$data/wiki-en/wiki.test.raw" \
      --input "$data/wiki-zh/zh_wiki_paragraphs_cmrc2018.jsonl" --vocab-size 16000 --output "$out/tok"
  $py - "$data" "$out/docs.jsonl" <<'PY'
import json, sys, pathlib
data, out = pathlib.Path(sys.argv[1]), sys.argv[2]
with open(out, "w", encoding="utf-8") as f:
    for p in sorted((data / "skywork-eval").glob("zh_*.jsonl")) + sorted((data / "wiki-zh").glob("*.jsonl")):
        for i, line in enumerate(open(p, encoding="utf-8")):
            f.write(json.dumps({"id": f"{p.stem}-{i}", "text": json.loads(line)["text"],
                                "metadata": {"lang": "zh"}}, ensure_ascii=False) + "\n")
PY
  $py -m skypile.cli tokenize --input "$out/docs.jsonl" --tokenizer "$out/tok.model" --output "$out/shards"
fi
# a speed run: repeating the small zh set past the 5-pass cap is fine here (warn, not refuse)
flags=(--config stage1 --preset=1b --steps="$steps" --data.shards="$out/shards"
       "--data.weights={web_zh: 1.0}" --data.seq_len="$seq" --data.batch_size="$batch"
       --data.over_repeat=warn --parallel.bf16=true --parallel.compile=true
       --checkpoint.dir="$out/run" --checkpoint.every=0 --eval.every=0 --optim.warmup_steps=50)
rm -rf "$out/run"
$py -m skypile.cli train "${flags[@]}" --dry-run > "$out/estimate.json"
$py -m skypile.cli train "${flags[@]}" 2>&1 | tee "$out/train.log" | awk 'NR % 25 == 0'
$py - "$out/run/metrics.csv" "$out/estimate.json" <<'PY' | tee "$out/summary.txt"
import csv, json, statistics, sys
rows = list(csv.DictReader(open(sys.argv[1])))
steady = rows[20:] or rows  # after compile and warm-up
med = lambda k: statistics.median(float(r[k]) for r in steady) if steady[0].get(k) else float("nan")
est = json.load(open(sys.argv[2]))["memory_per_gpu"]
total = est.get("total_gib", next((v for k, v in est.items() if k.startswith("total")), float("nan")))
parts = {k: v for k, v in est.items() if k.endswith("_gib") and not k.startswith("total")}
peak = max(float(r["peak_mem_gib"]) for r in rows) if rows[0].get("peak_mem_gib") else float("nan")
print(f"steps {len(rows)} (median of steps {len(rows) - len(steady) + 1}-{len(rows)})")
print(f"tokens/s/GPU {med('tokens_per_s'):,.0f}   MFU {med('mfu'):.1%}")
print(f"peak memory {peak:.2f} GiB (torch.cuda.max_memory_allocated)   "
      f"estimate {total} GiB ({', '.join(f'{k[:-4]} {v}' for k, v in parts.items())})")
PY
