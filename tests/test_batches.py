"""Mixture sampling from real token shards: deterministic, resumable, the Stage-2 ramp."""

import json

import numpy as np
import pytest

from skypile.tokens import batches
from skypile.tokens import tokenizer as tk
from skypile.pipelines.tokenize import run
from skypile.tokens.shards import ShardSet

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def shard_set(data_dir, tmp_path_factory):
    """Shards written by the project from real text: GSM8K (stem) and Chinese news (main)."""
    d = tmp_path_factory.mktemp("mix")
    with open(d / "docs.jsonl", "w", encoding="utf-8") as f:
        for i, line in enumerate(open(data_dir / "gsm8k/train.jsonl", encoding="utf-8")):
            r = json.loads(line)
            f.write(json.dumps({"id": f"g{i}", "text": r["question"] + "\n" + r["answer"],
                                "metadata": {"corpus": "stem", "lang": "en"}}) + "\n")
        for i, line in enumerate(open(data_dir / "skywork-eval/zh_finance.jsonl", encoding="utf-8")):
            f.write(json.dumps({"id": f"z{i}", "text": json.loads(line)["text"],
                                "metadata": {"lang": "zh"}}, ensure_ascii=False) + "\n")
    model = tk.train([str(d / "docs.jsonl")], str(d / "tok"), tk.TokenizerTrainConfig(vocab_size=4000))
    assert run(["--input", str(d / "docs.jsonl"), "--tokenizer", str(model),
                "--output", str(d / "shards"), "--shards.target_tokens=100000"]) == 0
    return ShardSet(str(d / "shards"))


def test_batches_are_deterministic_and_resumable(shard_set):
    w = batches.constant({"stem": 0.5, "web_zh": 0.5})
    a = batches.MixtureSampler(shard_set, w, seq_len=64, batch_size=4, seed=7)
    first = [next(a)[0] for _ in range(5)]
    b = batches.MixtureSampler(shard_set, w, seq_len=64, batch_size=4, seed=7)
    b.load_state_dict({"step": 3, "seed": 7})
    np.testing.assert_array_equal(next(b)[0], first[3])
    assert first[0].shape == (4, 65) and first[0].dtype == np.int64
    with pytest.raises(ValueError, match="seed"):
        b.load_state_dict({"step": 1, "seed": 8})


def test_stage2_stem_ramp_measured_on_sampled_batches(shard_set):
    steps = 1000
    w = batches.ramp({"stem": 0.1, "web_zh": 0.9}, "stem", 0.1, 0.4, steps)
    s = batches.MixtureSampler(shard_set, w, seq_len=32, batch_size=64, seed=0)
    for step, want in ((0, 0.1), (steps // 2, 0.25), (steps - 1, 0.4)):
        rows = [d for k in range(step, step + 30) for d in s.batch(min(k, steps - 1))[1]]
        share = rows.count("stem") / len(rows)
        assert abs(share - want) < 0.05, (step, share)


def test_unknown_source_is_named(shard_set):
    s = batches.MixtureSampler(shard_set, batches.constant({"code": 1.0}), 16, 2)
    with pytest.raises(ValueError, match="'code'"):
        next(s)
