"""Loading shards at scale: lazy opening, ranged reads of remote shards (no download), one
checksum per node, batches made ahead in a thread, and the repetition cap."""

import json

import fsspec
import numpy as np
import pytest

from s3server import moto_s3
from skypile.tokens import batches, shards
from skypile.tokens import tokenizer as tk
from skypile.pipelines.tokenize import run as tokenize

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def local_set(data_dir, tmp_path_factory):
    """Shards from real text (GSM8K as stem, Chinese finance news as web_zh), small shards."""
    d = tmp_path_factory.mktemp("lazy")
    with open(d / "docs.jsonl", "w", encoding="utf-8") as f:
        for i, line in enumerate(open(data_dir / "gsm8k/train.jsonl", encoding="utf-8")):
            if i >= 600:
                break
            r = json.loads(line)
            f.write(json.dumps({"id": f"g{i}", "text": r["question"] + "\n" + r["answer"],
                                "metadata": {"corpus": "stem"}}) + "\n")
        for i, line in enumerate(open(data_dir / "skywork-eval/zh_finance.jsonl", encoding="utf-8")):
            if i >= 150:
                break
            f.write(json.dumps({"id": f"z{i}", "text": json.loads(line)["text"],
                                "metadata": {"lang": "zh"}}, ensure_ascii=False) + "\n")
    model = tk.train([str(d / "docs.jsonl")], str(d / "tok"), tk.TokenizerTrainConfig(vocab_size=4000))
    assert tokenize(["--input", str(d / "docs.jsonl"), "--tokenizer", str(model), "--output",
                     str(d / "shards"), "--shards.target_tokens=60000"]) == 0
    return str(d / "shards")


@pytest.fixture(scope="module")
def s3_set(local_set):
    with moto_s3("shards") as (_client, options):
        fs = fsspec.filesystem("s3", **options)
        fs.put(local_set, "shards/set", recursive=True)
        yield "s3://shards/set", options


W = batches.constant({"stem": 0.5, "web_zh": 0.5})


def test_remote_shards_are_read_by_range_and_give_the_local_batches(local_set, s3_set, tmp_path):
    url, options = s3_set
    local = batches.MixtureSampler(shards.ShardSet(local_set), W, 64, 8, seed=1)
    remote_set = shards.ShardSet(url, options, check_cache=str(tmp_path / "checks"),
                                 block_size=4096)
    assert remote_set._cache == {}  # opening the set reads the manifest only
    remote = batches.MixtureSampler(remote_set, W, 64, 8, seed=1)
    for k in range(5):
        a, da = local.batch(k)
        b, db = remote.batch(k)
        np.testing.assert_array_equal(a, b)
        assert da == db
    opened = remote_set._cache
    assert opened and all(isinstance(t, shards.RemoteTokens) for t, _ in opened.values())
    for key, (tokens, _offsets) in opened.items():  # a few 4 KiB blocks, not the file
        entry_bytes = next(e["bytes"] for d in remote_set.domains()
                           for e in remote_set.entries(d) if e["path"] == key)
        assert tokens._f.cache.total_requested_bytes < entry_bytes / 2, key
    docs = list(remote_set.documents("stem"))  # whole documents by range too
    assert [d.tolist() for d in docs[:3]] == [d.tolist() for d in
                                              list(shards.ShardSet(local_set).documents("stem"))[:3]]


def test_each_shard_is_hashed_once_per_node_and_a_changed_one_is_caught(s3_set, tmp_path, monkeypatch):
    url, options = s3_set
    hashed = []
    real = shards.ShardSet._digest
    monkeypatch.setattr(shards.ShardSet, "_digest", lambda self, p: hashed.append(p) or real(self, p))
    checks = str(tmp_path / "checks")
    first = shards.ShardSet(url, options, check_cache=checks)
    entries = first.entries("stem")
    for e in entries:
        first.load(e)
    assert len(hashed) == len(entries)
    for e in entries:  # another process of the node: markers found, nothing hashed
        shards.ShardSet(url, options, check_cache=checks).load(e)
    assert len(hashed) == len(entries)
    # a shard rewritten with other bytes of the same size: a new stamp, so hashed and refused
    fs = fsspec.filesystem("s3", **options)
    key = f"shards/set/{entries[0]['path']}"
    data = bytearray(fs.cat_file(key))
    data[100] ^= 0xFF
    fs.pipe_file(key, bytes(data))
    with pytest.raises(shards.ShardError, match="does not match its checksum"):
        shards.ShardSet(url, options, check_cache=checks).load(entries[0])


def test_prefetched_batches_equal_the_plain_ones_and_errors_surface(local_set):
    s = shards.ShardSet(local_set)
    plain = batches.MixtureSampler(s, W, 32, 6, seed=4)
    ahead = batches.MixtureSampler(s, W, 32, 6, seed=4, prefetch=3)
    for _ in range(8):
        a, b = next(plain), next(ahead)
        np.testing.assert_array_equal(a[0], b[0])
    ahead.step = 2  # a resume restarts the thread at the new step
    np.testing.assert_array_equal(next(ahead)[0], plain.batch(2)[0])
    ahead.close()

    def broken(step):
        if step == 3:
            raise ValueError("weights at step 3")
        return {"stem": 1.0}
    failing = batches.MixtureSampler(s, broken, 32, 2, prefetch=2)
    for _ in range(3):
        next(failing)
    with pytest.raises(ValueError, match="weights at step 3"):
        next(failing)
    failing.close()


def test_rows_of_one_replica_and_the_repeat_count(local_set):
    s = shards.ShardSet(local_set)
    whole = batches.MixtureSampler(s, W, 32, 8, seed=2)
    part = batches.MixtureSampler(s, W, 32, 8, seed=2, rows=(2, 4))
    tokens, picked = part.batch(7)
    np.testing.assert_array_equal(tokens, whole.batch(7)[0][2:4])
    assert picked == whole.batch(7)[1] and len(picked) == 8
    for _ in range(50):
        next(whole)
    counted = whole.epochs()
    drawn = [d for k in range(50) for d in whole.picks(k)]
    for d in ("stem", "web_zh"):
        assert counted[d] == drawn.count(d) * 32 / whole.available[d]
    resumed = batches.MixtureSampler(s, W, 32, 8, seed=2)
    resumed.step = 50  # replayed, no tokens read
    assert resumed.epochs() == counted
    planned = batches.planned_epochs(W, 50, 8, 32, whole.available)
    for d in counted:  # the plan is the expectation of the count
        assert abs(planned[d] - counted[d]) < 0.3 * planned[d]


def test_the_tokenizer_travels_with_the_shards(local_set, s3_set, tmp_path):
    from skypile.tokens.manifest import tokenizer_file

    s = shards.ShardSet(local_set)
    entry = s.manifest["tokenizer"]
    assert entry["path"] == "tokenizer.model" and entry["source"].endswith("tok.model")
    copy = tokenizer_file(s)
    assert open(copy, "rb").read() == open(entry["source"], "rb").read()
    url, options = s3_set  # from object storage: fetched once into a local cache
    fetched = tokenizer_file(shards.ShardSet(url, options), cache_dir=str(tmp_path))
    assert fetched.startswith(str(tmp_path)) and open(fetched, "rb").read() == open(copy, "rb").read()
    assert tk.Tokenizer(fetched).vocab_size == entry["vocab_size"]
