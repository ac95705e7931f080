"""``skypile tokenize`` on real text: domains, held-out sets, manifest, Megatron, S3 resume."""

import json
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from skypile.tokens import shards
from skypile.tokens import tokenizer as tk
from skypile.pipelines.tokenize import run
from s3server import moto_s3

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def corpus(data_dir, tmp_path_factory):
    """Real documents: English and Chinese Wikipedia, Skywork Chinese news, GSM8K (STEM)."""
    d = tmp_path_factory.mktemp("corpus")
    rows = []
    for i, line in enumerate(open(data_dir / "wiki-zh/zh_wiki_paragraphs_cmrc2018.jsonl", encoding="utf-8")):
        r = json.loads(line)
        rows.append({"id": f"zhwiki-{i}", "text": r["text"], "url": "https://zh.wikipedia.org/x",
                     "metadata": {"lang": "zh"}})
    for i, line in enumerate(open(data_dir / "skywork-eval/zh_finance.jsonl", encoding="utf-8")):
        rows.append({"id": f"fin-{i}", "text": json.loads(line)["text"], "metadata": {"lang": "zh"}})
    for i, line in enumerate(open(data_dir / "gsm8k/train.jsonl", encoding="utf-8")):
        if i >= 500:
            break
        r = json.loads(line)
        rows.append({"id": f"gsm-{i}", "text": r["question"] + "\n" + r["answer"],
                     "metadata": {"lang": "en", "corpus": "stem"}})
    with open(d / "docs.jsonl", "w", encoding="utf-8") as f:
        f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    (d / "pairs.tsv").write_text("The river is wide.\t河很宽。\nGood morning.\t早上好。\nbroken line\n",
                                 encoding="utf-8")
    model = tk.train([str(data_dir / "wiki-en/wiki.test.raw"), str(d / "docs.jsonl")],
                     str(d / "tok"), tk.TokenizerTrainConfig(vocab_size=8000))
    return d, model, len(rows)


def tokenize(corpus, out, *extra):
    d, model, _ = corpus
    return run(["--input", str(d / "docs.jsonl"), "--input", str(d / "pairs.tsv"),
                "--tokenizer", str(model), "--output", str(out),
                "--shards.target_tokens=20000", "--held_out.fraction=0.05",
                "--held_out.max_docs=30", *extra])


def test_domains_heldout_manifest(corpus, tmp_path):
    _d, model, n_rows = corpus
    assert tokenize(corpus, tmp_path / "out") == 0
    s = shards.ShardSet(str(tmp_path / "out"))
    assert s.domains() == ["encyclopedia", "parallel", "stem", "web_zh"]
    m = s.manifest
    assert m["tokenizer"]["sha256"] == tk.model_hash(str(model)) and m["dtype"] == "uint16"
    docs = sum(split["docs"] for splits in m["domains"].values() for split in splits.values())
    stats = json.loads((tmp_path / "out/stats.json").read_text())
    assert docs == n_rows + 2 == stats["stages"]["tokenize"]["kept"]
    assert stats["stages"]["read"]["dropped"] == {"read:not-a-pair": 1}
    for domain in ("encyclopedia", "web_zh", "stem"):
        val = m["domains"][domain]["validation"]
        assert 0 < val["docs"] <= 30
        assert len(m["domains"][domain]["train"]["shards"]) >= 1
        # held-out documents never appear in the training shards
        train_docs = {bytes(np.asarray(t)) for t in s.documents(domain, "train")}
        assert not any(bytes(np.asarray(t)) in train_docs for t in s.documents(domain, "validation"))
    pair = next(s.documents("parallel", "train"))
    tok = tk.Tokenizer(model)
    assert tok.decode(pair[:-1].tolist()).startswith(("The river is wide.\n河很宽。", "Good morning.\n早上好。"))
    assert pair[-1] == tok.eos_id
    # every shard checks out against the manifest
    subprocess.run([sys.executable, "-m", "skypile.cli", "shards", "verify", "--shards",
                    str(tmp_path / "out")], check=True, capture_output=True)


def test_same_input_same_bytes_and_megatron(corpus, tmp_path):
    assert tokenize(corpus, tmp_path / "a") == 0
    assert tokenize(corpus, tmp_path / "b") == 0
    a = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").glob("*/*.bin"))
    assert a == sorted(p.relative_to(tmp_path / "b") for p in (tmp_path / "b").glob("*/*.bin"))
    assert all((tmp_path / "a" / p).read_bytes() == (tmp_path / "b" / p).read_bytes() for p in a)
    s = shards.ShardSet(str(tmp_path / "a"))
    bin_path, idx_path = shards.to_megatron(s, "web_zh", "train", str(tmp_path / "mega"))
    idx = open(idx_path, "rb").read()
    assert idx[:9] == b"MMIDIDX\x00\x00"
    version, code, n_seq, n_doc = struct_unpack(idx)
    assert (version, code) == (1, 8) and n_seq == s.manifest["domains"]["web_zh"]["train"]["docs"]
    sizes = np.frombuffer(idx, dtype="<i4", count=n_seq, offset=34)
    pointers = np.frombuffer(idx, dtype="<i8", count=n_seq, offset=34 + 4 * n_seq)
    tokens = np.fromfile(bin_path, dtype="<u2")
    first = next(s.documents("web_zh", "train"))
    assert tokens[pointers[0] // 2: pointers[0] // 2 + sizes[0]].tolist() == first.tolist()
    assert sizes.sum() == len(tokens) and n_doc == n_seq + 1


def struct_unpack(idx: bytes):
    import struct
    return (struct.unpack("<Q", idx[9:17])[0], idx[17], struct.unpack("<Q", idx[18:26])[0],
            struct.unpack("<Q", idx[26:34])[0])


def test_bad_tokenizer_is_one_line(tmp_path):
    p = subprocess.run([sys.executable, "-m", "skypile.cli", "tokenize", "--input", "x",
                        "--tokenizer", str(tmp_path / "none.model"), "--output", str(tmp_path)],
                       capture_output=True, text=True, cwd=tmp_path)
    assert p.returncode == 2 and "Traceback" not in p.stderr


def test_encoder_stage_labels_splits_or_rejects(corpus):
    from skypile.document import Document, Reject
    from skypile.jobs.tokenize import Encoder, TokenizeConfig

    _d, model, _ = corpus
    cfg = TokenizeConfig()
    cfg.shards.min_doc_tokens = 3
    enc = Encoder(str(model), cfg)
    tok = tk.Tokenizer(model)
    doc = Document(id="a", text="The river is wide and deep.", metadata={"lang": "en",
                                                                          "corpus": "stem"})
    (domain, split), (doc_id, ids) = enc(doc, {"a": True})
    assert (domain, split, doc_id) == ("stem", "validation", "a")
    assert ids == tok.encode(doc.text) + [tok.eos_id]
    assert enc(doc, {})[0] == ("stem", "train")
    short = enc(Document(id="s", text="a"), {})
    assert isinstance(short, Reject) and (short.stage, short.reason) == ("tokenize",
                                                                         "tokenize:too-short")


# ---- real object storage ------------------------------------------------------------------

@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    """moto's S3 server on 127.0.0.1, started and stopped by the test module."""
    with moto_s3("shards") as (client, options):
        cfg = tmp_path_factory.mktemp("s3cfg") / "s3.json"
        cfg.write_text(json.dumps({"storage_options": options}))
        yield client, cfg, options


def _objects(client, prefix):
    out = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket="shards", Prefix=prefix):
        for o in page.get("Contents", []):
            out[o["Key"][len(prefix):]] = o
    return out


def test_s3_interrupted_run_resumes_byte_identical(corpus, s3, tmp_path):
    client, cfg, options = s3
    d, model, _ = corpus
    args = ["--input", str(d / "docs.jsonl"), "--tokenizer", str(model),
            "--shards.target_tokens=5000", "--config", str(cfg)]
    assert run(args + ["--output", "s3://shards/straight"]) == 0
    straight = _objects(client, "straight/")
    shard_keys = {k for k in straight if k.endswith(".bin")}
    assert len(shard_keys) > 20

    # interrupt a second run midway: kill it once some shards exist
    cmd = [sys.executable, "-m", "skypile.cli", "tokenize", *args, "--output", "s3://shards/resumed"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while proc.poll() is None and len([k for k in _objects(client, "resumed/") if k.endswith(".bin")]) < 3:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = _objects(client, "resumed/")
    if "manifest.json" in before:  # the run won the race: take it back to a crash state
        for key in ["manifest.json", *sorted(k for k in before if k.endswith(".bin"))[::2]]:
            client.delete_object(Bucket="shards", Key="resumed/" + key)
        before = _objects(client, "resumed/")
    done = {k: o for k, o in before.items() if k.endswith(".bin")}
    assert 0 < len(done) < len(shard_keys) and "manifest.json" not in before

    assert run(args + ["--output", "s3://shards/resumed"]) == 0
    after = _objects(client, "resumed/")
    assert {k for k in after if k.endswith(".bin")} == shard_keys
    for key in shard_keys:
        a = client.get_object(Bucket="shards", Key="straight/" + key)["Body"].read()
        b = client.get_object(Bucket="shards", Key="resumed/" + key)["Body"].read()
        assert a == b, key
    for key, obj in done.items():  # complete shards were left untouched
        assert after[key]["LastModified"] == obj["LastModified"] and after[key]["ETag"] == obj["ETag"]
    # reading back through fsspec verifies every checksum
    s = shards.ShardSet("s3://shards/resumed", options)
    assert sum(1 for _ in s.documents("web_zh")) == s.manifest["domains"]["web_zh"]["train"]["docs"]
