"""``skypile tokenize`` on real text: domains, held-out sets, manifest, Megatron, S3 resume."""

import json
import signal
import subprocess
import sys
import time
import zlib

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
    # per source and language: both inputs sit in one folder; each table sums to the total
    tokens = sum(split["tokens"] for splits in m["domains"].values() for split in splits.values())
    b = m["breakdown"]
    assert b["sources"] == {str(_d): {"docs": docs, "tokens": tokens}}
    assert sum(v["tokens"] for v in b["languages"].values()) == tokens
    # counted from the shards themselves: zh is Wikipedia + the news, en the GSM8K (stem)
    # questions, and the pairs name no language
    n = {d: sum(len(t) for split in ("train", "validation") for t in s.documents(d, split))
         for d in s.domains()}
    n_zh = sum(1 for line in open(_d / "docs.jsonl", encoding="utf-8")
               if json.loads(line)["metadata"]["lang"] == "zh")
    assert b["languages"] == {"zh": {"docs": n_zh, "tokens": n["encyclopedia"] + n["web_zh"]},
                              "en": {"docs": 500, "tokens": n["stem"]},
                              "unknown": {"docs": 2, "tokens": n["parallel"]}}
    # which code made it and how it was launched, for the data card
    assert stats["skypile_version"].startswith("skypile ")
    assert stats["command"].startswith(f"skypile tokenize --input {_d / 'docs.jsonl'} --input ")


def test_same_input_same_bytes_and_megatron(corpus, tmp_path):
    """In one process and on two worker processes (other bundles, so other batches and
    other pieces reach each shard), the same shard bytes; so too when the 4 MB JSONL
    file is read in ranges of 1 MB by both workers, and the counts are the same."""
    assert tokenize(corpus, tmp_path / "a", "--read.split_mb=0") == 0
    assert tokenize(corpus, tmp_path / "b", "--direct_running_mode", "multi_processing",
                    "--direct_num_workers", "2", "--read.split_mb=1") == 0
    a = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").glob("*/*.bin"))
    assert a == sorted(p.relative_to(tmp_path / "b") for p in (tmp_path / "b").glob("*/*.bin"))
    assert all((tmp_path / "a" / p).read_bytes() == (tmp_path / "b" / p).read_bytes() for p in a)
    st = [json.loads((tmp_path / x / "stats.json").read_text()) for x in "ab"]
    assert st[0]["stages"] == st[1]["stages"]
    assert st[0]["files"] == st[1]["files"] == {"read": 2, "unreadable": 0}
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


@pytest.mark.parametrize("where", ["local", "memory"])
def test_shard_written_in_memory_that_does_not_grow_with_it(tmp_path, where):
    """A runner on a cluster pages a shard's group in as the writer iterates it: the
    writer then holds a bounded part of it (the old one sorted a list of the whole
    shard). 128 MB of tokens, in 64 piece files, through WriteShards; Python's heap
    (numpy's arrays included) peaks at a fraction of that, and the shard checks out:
    with local pieces (memory-mapped where they lie) and with pieces on another
    filesystem (fsspec's memory://, read by ranged reads into the spill file)."""
    import fsspec
    import tracemalloc

    from skypile.pipelines.tokenize import WriteShards

    rng = np.random.default_rng(7)
    files = []
    for i in range(64):  # what the workers left: 1 Mi tokens a piece
        lengths = rng.integers(1, 2000, size=1000)
        lengths[-1] += (1 << 20) - lengths.sum()
        tokens = rng.integers(0, 16384, size=1 << 20, dtype="<u2")
        path = str(tmp_path / f"{i}.tokens") if where == "local" else \
            f"memory://{tmp_path.name}/{i}.tokens"
        with fsspec.open(path, "wb") as f:
            f.write(tokens.tobytes())
        files.append((path, lengths))

    def segments():  # what the runner hands over, one segment at a time
        for path, lengths in files:
            yield path, 0, lengths, ()

    tracemalloc.start()
    try:
        (row,) = WriteShards(str(tmp_path / "out"), 16384, {}).process(
            (("web", "train", 0, 1), segments()))
        _now, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    shard_bytes = 64 << 21
    assert row["tokens"] == 64 << 20 and row["docs"] == 64_000
    assert row["bytes"] == (tmp_path / "out" / row["path"]).stat().st_size > shard_bytes
    assert peak < shard_bytes / 4, f"peak {peak / 2**20:.0f} MiB for a 128 MiB shard"
    h, _tokens, offsets = shards.decode((tmp_path / "out" / row["path"]).read_bytes())
    assert (h.n_tokens, h.n_docs, int(offsets[-1])) == (64 << 20, 64_000, 64 << 20)
    if where == "memory":
        fsspec.filesystem("memory").rm(f"/{tmp_path.name}", recursive=True)


def test_a_shard_reads_one_slice_of_each_piece_and_leaves_out_the_held_documents(tmp_path):
    """Pieces sorted by the CRC of their ids: the shards of a domain take consecutive CRC
    ranges, so each reads one slice of a piece; held-out documents in a training slice
    are left out of it and each goes to its validation shard. Every document lands in
    exactly one shard, whole."""
    from skypile.pipelines.tokenize import WriteShards, shard_index, shard_segments, write_piece
    from skypile.jobs.tokenize import Encoded
    from skypile.tokens.domains import HeldOutConfig, is_held_out

    rng = np.random.default_rng(3)
    ids = [f"doc-{i}" for i in range(3000)]
    lengths = rng.integers(1, 50, size=len(ids))
    docs = {i: rng.integers(0, 16384, size=n, dtype="<u2") for i, n in zip(ids, lengths)}
    batches = [Encoded("web", ids[a:a + 1000], np.concatenate([docs[i] for i in ids[a:a + 1000]]),
                       lengths[a:a + 1000], [("s", "en")] * 1000) for a in range(0, 3000, 1000)]
    cfg = HeldOutConfig(fraction=0.05)
    piece = write_piece(str(tmp_path / "pieces"), "web",
                        [(e, [is_held_out(i, cfg) for i in e.ids]) for e in batches], {})
    assert sorted(i for _, i in piece.candidates) == sorted(i for i in ids if is_held_out(i, cfg))
    assert (np.diff(piece.crc.astype(np.int64)) >= 0).all() and len(piece.crc) == 3000
    held = {doc_id: True for _pos, doc_id in piece.candidates[::2]}
    assert 50 < len(piece.candidates) < 300 and held
    total = int(lengths.sum())
    n_val = sum(len(docs[i]) for i in held)
    segments = list(shard_segments(("web", piece), held, {"web": total}, {"web": n_val}, 10_000))
    keys = [k for k, _ in segments]
    train = [k for k in keys if k[1] == "train"]
    assert len(train) == len(set(train)) == -(-(total - n_val) // 10_000)  # one slice each
    assert {k[3] for k in keys if k[1] == "validation"} == {1}
    by_shard: dict = {}
    for key, seg in segments:
        by_shard.setdefault(key, []).append(seg)
    seen = []
    for key, segs in sorted(by_shard.items()):
        (row,) = WriteShards(str(tmp_path / "out"), 16384, {}).process((key, iter(segs)))
        _h, tokens, offsets = shards.decode((tmp_path / "out" / row["path"]).read_bytes())
        got = [bytes(tokens[a:b]) for a, b in zip(offsets[:-1], offsets[1:])]
        want = [i for i in ids if (i in held) == (key[1] == "validation")
                and int(shard_index(np.array([zlib.crc32(i.encode())], np.uint32), key[3])[0]) == key[2]]
        assert sorted(got) == sorted(bytes(docs[i]) for i in want), key
        seen += want
    assert sorted(seen) == sorted(ids)


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
    (domain, split), (doc_id, ids), source_lang = enc(doc, {"a": True})
    assert (domain, split, doc_id) == ("stem", "validation", "a")
    assert source_lang == ("other", "en")  # a document from no input of the run
    assert ids.tolist() == tok.encode(doc.text) + [tok.eos_id]
    assert ids.dtype == np.uint16  # the shard's dtype for a vocabulary under 65,536
    assert enc(doc, {})[0] == ("stem", "train")
    short = enc(Document(id="s", text="a"), {})
    assert isinstance(short, Reject) and (short.stage, short.reason) == ("tokenize",
                                                                         "tokenize:too-short")
    cfg.labels.default = "{lang}"
    bad = Encoder(str(model), cfg)(Document(id="b", text=doc.text, metadata={"lang": ".."}), {})
    assert isinstance(bad, Reject) and bad.reason == "tokenize:bad-domain"
    assert bad.detail["domain"] == ".." and bad.text == doc.text


def test_breakdown_keys_stay_few_whatever_the_files():
    from skypile.tokens.manifest import breakdown, lang_of, source_of, source_roots

    runs = [f"/r/web/docs/part-{i:05d}.jsonl.gz" for i in range(10_000)]
    raw = [f"/data/crawl/seg-{i}/part.jsonl" for i in range(200)] + ["/data/wiki/zh.jsonl"]
    assert source_roots(runs) == ("/r/web",)  # one run, however many parts
    roots = source_roots(runs + raw, limit=8)
    assert roots == ("/data/crawl", "/data/wiki", "/r/web")  # the deepest gave way first
    assert source_of("/data/crawl/seg-7/part.jsonl", roots) == "/data/crawl"
    assert source_of(runs[42], roots) == "/r/web"
    assert source_of("/elsewhere/x.jsonl", roots) == "other"
    assert source_roots(["a.jsonl"]) == (".",) and source_of("a.jsonl", (".",)) == "."
    assert [lang_of({"lang": v}) for v in ("zh", "zh-Hans", "x" * 40, None, 3, "../etc")] == \
        ["zh", "zh-Hans", "unknown", "unknown", "unknown", "unknown"]
    assert breakdown([(("/r/web", "en"), (2, 30)), (("/r/web", "zh"), (1, 5)),
                      (("/data/wiki", "zh"), (4, 40))]) == {
        "sources": {"/data/wiki": {"docs": 4, "tokens": 40}, "/r/web": {"docs": 3, "tokens": 35}},
        "languages": {"en": {"docs": 2, "tokens": 30}, "zh": {"docs": 5, "tokens": 45}}}


def test_label_rules_must_name_safe_folders():
    from skypile.config import ConfigError
    from skypile.jobs.tokenize import TokenizeConfig, check
    from skypile.tokens.domains import LabelRule, bad_domain

    assert [bad_domain(n) is None for n in ("web_en", "zh-Hant", "a.b", "A1", "x" * 64)] == [True] * 5
    assert all(bad_domain(n) for n in ("", ".", "..", ".x", "a/b", "a\\b", "x" * 65, "中文",
                                       "REJECTS", "manifest.json", "_tmp", "-x", "a b"))
    cfg = TokenizeConfig()
    cfg.labels.rules.append(LabelRule(domain="../up"))
    with pytest.raises(ConfigError, match="'../up' is not a folder name"):
        check(cfg)
    cfg = TokenizeConfig()
    cfg.read.split_mb = -1
    with pytest.raises(ConfigError, match="read.split_mb=-1"):
        check(cfg)


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


# ---- hostile labels and re-runs --------------------------------------------------------------

def _subset(corpus, path, **take):
    """The first N rows of each id prefix in the corpus (e.g. zhwiki=150)."""
    d, _model, _ = corpus
    left = dict(take)
    with open(d / "docs.jsonl", encoding="utf-8") as src, open(path, "w", encoding="utf-8") as dst:
        for line in src:
            prefix = json.loads(line)["id"].rsplit("-", 1)[0]
            if left.get(prefix, 0) > 0:
                left[prefix] -= 1
                dst.write(line)
    return path


def _rejects(out):
    import gzip
    return [json.loads(line) for f in sorted((out / "rejects").glob("*.jsonl.gz"))
            for line in gzip.open(f, "rt", encoding="utf-8")]


BAD_LANGS = ["..", "../../escape", ".hidden", "a/b", "rejects", "x" * 65, "中文", "-x", "_staging-1"]


def test_domain_from_data_never_leaves_the_output(corpus, tmp_path, capsys):
    d, model, _ = corpus
    text = json.loads(open(d / "docs.jsonl", encoding="utf-8").readline())["text"]
    rows = [{"id": f"bad-{i}", "text": text, "metadata": {"lang": lang}}
            for i, lang in enumerate(BAD_LANGS)]
    rows += [{"id": f"ok-{i}", "text": text, "metadata": {"lang": lang}}
             for i, lang in enumerate(["zh", "zh-Hant", "en.v2"])]
    (tmp_path / "in").mkdir()
    (tmp_path / "in/docs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    args = ["--input", str(tmp_path / "in/docs.jsonl"), "--tokenizer", str(model),
            "--output", str(tmp_path / "work/out"), "--labels.default={lang}"]
    assert run(args) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in", "work"]
    assert sorted(p.name for p in (tmp_path / "work").iterdir()) == ["out"]
    assert sorted(p.name for p in (tmp_path / "in").iterdir()) == ["docs.jsonl"]
    assert shards.ShardSet(str(tmp_path / "work/out")).domains() == ["en.v2", "zh", "zh-Hant"]
    rejects = _rejects(tmp_path / "work/out")
    assert sorted((r["id"], r["reason"], r["detail"]["domain"]) for r in rejects) == sorted(
        (f"bad-{i}", "tokenize:bad-domain", lang) for i, lang in enumerate(BAD_LANGS))
    stats = json.loads((tmp_path / "work/out/stats.json").read_text())
    assert stats["stages"]["tokenize"]["dropped"] == {"tokenize:bad-domain": len(BAD_LANGS)}
    # a config whose own text makes a bad folder is a one-line error before any work
    capsys.readouterr()
    assert run(args[:-1] + ["--labels.default=../{lang}", "--output", str(tmp_path / "o2")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "labels.default" in err
    assert not (tmp_path / "o2").exists()


def test_rerun_removes_only_its_own_stale_shards(corpus, tmp_path):
    d, model, _ = corpus
    docs = _subset(corpus, tmp_path / "docs.jsonl", zhwiki=150, fin=150, gsm=100)
    out = tmp_path / "out"
    base = ["--input", str(docs), "--tokenizer", str(model), "--output", str(out)]
    assert run(base + ["--shards.target_tokens=4000"]) == 0
    first = {p.relative_to(out).as_posix() for p in out.glob("*/*.bin")}
    assert any("-of-00001.bin" not in p for p in first) and "web_zh/train-00000-of-00001.bin" not in first
    # what a user keeps next to the shards, and a temporary left by a crashed run
    s = shards.ShardSet(str(out))
    shards.to_megatron(s, "web_zh", "train", str(out / "web_zh/megatron_web_zh"))
    keep = {"web_zh/megatron_web_zh.bin", "web_zh/megatron_web_zh.idx", "web_zh/notes.bin.txt",
            "exports/train-00000-of-00002.bin", "stem/train-00000-of-00002.bin.bak",
            "stem/validation-1-of-2.bin"}
    for rel in keep - {"web_zh/megatron_web_zh.bin", "web_zh/megatron_web_zh.idx"}:
        (out / rel).parent.mkdir(exist_ok=True)
        (out / rel).write_bytes(b"not ours " + rel.encode())
    kept_bytes = {rel: (out / rel).read_bytes() for rel in keep}
    (out / "stem/train-00000-of-00009.bin.tmp-0badf00d").write_bytes(b"half a shard")
    # fewer, bigger shards, and the default label changes: web_zh is no domain any more
    assert run(base + ["--shards.target_tokens=1000000", "--labels.default=zh_{lang}"]) == 0
    m = shards.ShardSet(str(out)).manifest
    listed = {e["path"] for splits in m["domains"].values() for sp in splits.values()
              for e in sp["shards"]}
    assert "web_zh" not in m["domains"] and "zh_zh" in m["domains"]
    on_disk = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()}
    shard_files = {p for p in on_disk if p.split("/")[0] in m["domains"] or p.startswith("web_zh/")}
    assert shard_files - keep == listed  # every stale shard and temporary is gone
    assert not first & on_disk - listed
    assert {rel: (out / rel).read_bytes() for rel in keep} == kept_bytes


def test_cleanup_trusts_no_path_from_a_manifest(tmp_path):
    """A tampered previous manifest (domain '..') deletes nothing outside the output."""
    from skypile.pipelines.tokenize import previous_manifest, remove_stale_shards

    out = tmp_path / "out"
    (out / "web").mkdir(parents=True)
    for rel in ("train-00000-of-00002.bin", "out/web/train-00000-of-00001.bin",
                "out/web/train-00001-of-00002.bin", "out/.hidden/train-00000-of-00001.bin"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"x")
    new = {"domains": {"web": {"train": {"shards": [{"path": "web/train-00000-of-00001.bin"}]}}}}
    previous = {"format": "skypile-token-shards",
                "domains": {"..": {"train": {"shards": [{"path": "../train-00000-of-00002.bin"}]}},
                            ".hidden": {}, "web": {}}}
    (out / "manifest.json").write_text(json.dumps(previous))
    assert previous_manifest(str(out), {}) == previous
    remove_stale_shards(str(out), new, {}, previous_manifest(str(out), {}))
    left = {p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*.bin")}
    assert left == {"train-00000-of-00002.bin", "out/web/train-00000-of-00001.bin",
                    "out/.hidden/train-00000-of-00001.bin"}
    (out / "manifest.json").write_text("{not json")
    assert previous_manifest(str(out), {}) is None
    (out / "manifest.json").write_text(json.dumps({"domains": {"web": {}}}))
    assert previous_manifest(str(out), {}) is None  # not a shard manifest: not trusted
