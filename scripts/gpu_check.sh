#!/usr/bin/env bash
# One command for a borrowed H100/H200 (see DEVELOPERS.md): builds a small shard set from
# the shared data, then trains the ~1B preset in bf16 (flash SDPA, torch.compile) for a few
# hundred steps and prints tokens/s/GPU and MFU. Writes its log under $OUT when set.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-out/gpu}
steps=${STEPS:-300}
mkdir -p "$out"
python3 -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; print(torch.cuda.get_device_name(0))"
make venv kenlm >/dev/null
py=.venv/bin/python
data=${SKYPILE_DATA:-../shared/data}
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
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$out/gpu.txt"
$py -m skypile.cli train --config stage1 --preset=1b --steps="$steps" \
    --data.shards="$out/shards" --data.weights='{web_zh: 1.0}' --data.seq_len=2048 \
    --data.batch_size=8 --parallel.bf16=true --parallel.compile=true --parallel.fsdp=false \
    --checkpoint.dir="$out/run" --checkpoint.every=0 --eval.every=0 --optim.warmup_steps=50 \
    2>&1 | tee "$out/train.log" | awk 'NR % 25 == 0'
$py - "$out/run/metrics.csv" <<'PY'
import csv, sys, statistics
rows = list(csv.DictReader(open(sys.argv[1])))[20:]  # after compile and warmup
tps = statistics.median(float(r["tokens_per_s"]) for r in rows)
mfu = statistics.median(float(r["mfu"]) for r in rows) if rows and rows[0].get("mfu") else float("nan")
print(f"tokens/s/GPU {tps:,.0f}  MFU {mfu:.1%}  (median of steps 21-{len(rows) + 20})")
PY
