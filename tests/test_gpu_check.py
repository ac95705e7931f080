"""scripts/gpu_check.sh has its own install path (CUDA torch, no KenLM) and prints the
measured figures next to the estimate; its summary step is run here on a made-up log."""

import json
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts/gpu_check.sh"


def test_install_path_is_the_gpu_one():
    text = SCRIPT.read_text()
    assert subprocess.run(["bash", "-n", str(SCRIPT)]).returncode == 0
    commands = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
    assert "make gpu-venv" in commands and "kenlm" not in commands.lower()
    assert not re.search(r"make venv\b", text)
    for flag in ("--preset=1b", "--parallel.bf16=true", "--parallel.compile=true", "--dry-run"):
        assert flag in text
    plan = subprocess.run(["make", "-n", "gpu-venv", "GPU_VENV=/nonexistent/v"], cwd=REPO,
                          capture_output=True, text=True, check=True).stdout
    assert "requirements-gpu.txt" in plan and "kenlm" not in plan.lower()
    assert "grep -v -E '^(torch|triton|nvidia-|cuda-)' requirements.lock" in plan
    pins = [line for line in (REPO / "requirements-gpu.txt").read_text().splitlines()
            if line and not line.startswith("#")]
    assert pins[0] == "torch==2.13.0" and all("==" in p for p in pins)
    assert "+cpu" not in "".join(pins)


def test_summary_puts_speed_memory_and_estimate_side_by_side(tmp_path):
    after = SCRIPT.read_text().split('"$out/estimate.json" <<\'PY\'')[1]
    block = after.split("\n", 1)[1].split("\nPY\n")[0]
    (tmp_path / "summary.py").write_text(block)
    with open(tmp_path / "metrics.csv", "w") as f:
        f.write("step,loss,tokens_per_s,mfu,peak_mem_gib,estimate_gib\n")
        for i in range(1, 41):
            f.write(f"{i},2.0,{1000 if i <= 20 else 9000 + i},{0.41 if i > 20 else 0.1},"
                    f"{30 + i / 100},32.5\n")
    (tmp_path / "estimate.json").write_text(json.dumps(
        {"memory_per_gpu": {"weights_gib": 2.0, "optimizer_gib": 8.1, "total_gib": 32.5}}))
    out = subprocess.run([sys.executable, str(tmp_path / "summary.py"), str(tmp_path / "metrics.csv"),
                          str(tmp_path / "estimate.json")], capture_output=True, text=True, check=True).stdout
    assert "median of steps 21-40" in out
    assert "tokens/s/GPU 9,030" in out and "MFU 41.0%" in out
    assert "peak memory 30.40 GiB" in out and "estimate 32.5 GiB (weights 2.0, optimizer 8.1)" in out
