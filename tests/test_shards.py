"""Shard format, manifest checksums, Megatron export, mixtures."""

import struct

import numpy as np
import pytest

from skypile.tokens import mixture
from skypile.tokens import shards


def test_roundtrip_and_memmap(tmp_path):
    docs = [[5, 6, 2], [7, 2], [2]]
    data = shards.encode(docs, vocab_size=65536)
    assert data[:8] == b"SKYSHARD"
    h, tokens, offsets = shards.decode(data)
    assert (h.version, h.dtype, h.n_tokens, h.n_docs) == (1, np.dtype("<u2"), 6, 3)
    assert tokens.tolist() == [5, 6, 2, 7, 2, 2] and offsets.tolist() == [0, 3, 5, 6]
    (tmp_path / "s.bin").write_bytes(data)
    s = shards.Shard(str(tmp_path / "s.bin"))
    assert [s.doc(i).tolist() for i in range(len(s))] == docs
    # plain numpy, no SkyPile: the documented layout
    raw = np.fromfile(tmp_path / "s.bin", dtype="<u2", count=6, offset=64)
    assert raw.tolist() == [5, 6, 2, 7, 2, 2]


def test_large_vocab_uses_uint32():
    h, tokens, _ = shards.decode(shards.encode([[70000, 2]], vocab_size=100000))
    assert h.dtype == np.dtype("<u4") and tokens.tolist() == [70000, 2]


def test_bad_files_say_how_to_fix():
    with pytest.raises(shards.ShardError, match="not a SkyPile token shard"):
        shards.decode(b"PK\x03\x04" + bytes(100))
    future = bytearray(shards.encode([[1, 2]], 100))
    future[8:12] = struct.pack("<I", 9)
    with pytest.raises(shards.ShardError, match="version 9; this SkyPile reads version 1"):
        shards.decode(bytes(future))
    with pytest.raises(shards.ShardError, match="truncated"):
        shards.decode(shards.encode([[1, 2, 3]], 100)[:-4])


def test_mixture_plan_and_cap(tmp_path):
    spec = mixture.MixtureSpec(weights={"web_en": 3, "web_zh": 1}, max_repeat=5)
    rows = mixture.plan({"web_en": 1000, "web_zh": 100}, spec, 800)
    assert [(r.source, r.tokens, round(r.repeat, 2)) for r in rows] == [("web_en", 600, 0.6),
                                                                       ("web_zh", 200, 2.0)]
    with pytest.raises(mixture.MixtureError, match="'web_zh' would be repeated 6.0 times"):
        mixture.plan({"web_en": 1000, "web_zh": 100}, spec, 2400)
    with pytest.raises(mixture.MixtureError, match="'code' has no tokens"):
        mixture.plan({"web_en": 10}, mixture.MixtureSpec(weights={"code": 1}), 5)
    md, png = mixture.report(rows, str(tmp_path))
    assert "| web_zh | 100 | 25.0% | 200 | 2.00 |" in md.read_text()
    assert png.read_bytes()[:4] == b"\x89PNG"


def _shard_set(root, docs, domain="web"):
    """A one-shard set written by hand, as skypile tokenize lays it out."""
    import hashlib
    import json

    data = shards.encode(docs, vocab_size=1000)
    (root / domain).mkdir(parents=True)
    (root / domain / "train-00000-of-00001.bin").write_bytes(data)
    entry = {"path": f"{domain}/train-00000-of-00001.bin", "sha256": hashlib.sha256(data).hexdigest(),
             "tokens": sum(map(len, docs)), "docs": len(docs), "bytes": len(data)}
    manifest = {"format": "skypile-token-shards", "version": shards.VERSION,
                "tokenizer": {"path": "t.model", "sha256": "0" * 64, "vocab_size": 1000, "eos_id": 2},
                "dtype": "uint16", "domains": {domain: {"train": {
                    "tokens": entry["tokens"], "docs": len(docs), "shards": [entry]}}}}
    (root / "manifest.json").write_text(json.dumps(manifest))


def test_megatron_output_folder_is_made(tmp_path, capsys):
    from skypile.cli.shards import run

    _shard_set(tmp_path / "set", [[5, 6, 2], [7, 2]])
    prefix = tmp_path / "new" / "deeper" / "web"
    assert run(["megatron", "--shards", str(tmp_path / "set"), "--domain", "web",
                "--output", str(prefix)]) == 0
    assert np.fromfile(str(prefix) + ".bin", dtype="<u2").tolist() == [5, 6, 2, 7, 2]
    assert open(str(prefix) + ".idx", "rb").read(9) == b"MMIDIDX\x00\x00"
    # a folder is no prefix: one line, exit 2, nothing written inside it
    assert run(["megatron", "--shards", str(tmp_path / "set"), "--domain", "web",
                "--output", str(tmp_path / "new") + "/"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "is a folder" in err
    assert sorted(p.name for p in (tmp_path / "new").iterdir()) == ["deeper"]


def test_manifest_paths_stay_inside_the_shard_set(tmp_path):
    import json

    _shard_set(tmp_path / "set", [[5, 6, 2]])
    (tmp_path / "outside.bin").write_bytes(b"secret")
    s = shards.ShardSet(str(tmp_path / "set"))
    assert [d.tolist() for d in s.documents("web")] == [[5, 6, 2]]
    for bad in ("../outside.bin", "/etc/passwd", "web/../../outside.bin", "web/notes.bin",
                "train-00000-of-00001.bin", "a/b/train-00000-of-00001.bin"):
        m = json.loads((tmp_path / "set/manifest.json").read_text())
        m["domains"]["web"]["train"]["shards"][0]["path"] = bad
        (tmp_path / "set/manifest.json").write_text(json.dumps(m))
        with pytest.raises(shards.ShardError, match="not a shard path"):
            list(shards.ShardSet(str(tmp_path / "set")).documents("web"))


def _random_docs(rng, n, vocab=1000):
    return [rng.integers(0, vocab, size=int(rng.integers(1, 40))).astype("<u2") for _ in range(n)]


def _packed(docs):
    return np.concatenate(docs), np.array([len(d) for d in docs])


def test_shard_writer_bytes_depend_only_on_the_documents(tmp_path):
    """Any order and any grouping into packs gives the same bytes: the documents are
    ordered by a hash of their tokens (a repeated document included)."""
    rng = np.random.default_rng(0)
    docs = _random_docs(rng, 300)
    docs += [docs[5], docs[5].copy()]
    outputs = []
    for seed, pack in ((1, 1), (2, 7), (3, 300)):
        order = np.random.default_rng(seed).permutation(len(docs))
        with shards.ShardWriter(vocab_size=1000, chunk_tokens=50) as w:
            for start in range(0, len(docs), pack):
                w.add(*_packed([docs[i] for i in order[start:start + pack]]))
            path = tmp_path / f"s{seed}.bin"
            with open(path, "wb") as f:
                digest = w.write(f)
            assert digest == w.write() == shards.sha256(path.read_bytes())
            assert w.size_bytes == path.stat().st_size
        outputs.append(path.read_bytes())
    assert outputs[0] == outputs[1] == outputs[2]
    h, tokens, offsets = shards.decode(outputs[0])
    got = [tokens[a:b].tolist() for a, b in zip(offsets[:-1], offsets[1:])]
    assert sorted(got) == sorted(d.tolist() for d in docs) and h.n_docs == len(docs)
    # the same layout as shards.encode of the documents in key order
    keys = [bytes(k) for k in shards.doc_keys(*_packed(docs))]
    assert outputs[0] == shards.encode([docs[i] for i in sorted(range(len(docs)),
                                                                 key=keys.__getitem__)], 1000)
    with pytest.raises(ValueError, match="lengths add up"):
        with shards.ShardWriter(1000) as w:
            w.add(np.arange(5), np.array([2, 2]))


def test_documents_left_in_local_files_give_the_same_bytes(tmp_path, monkeypatch):
    """Packs memory-mapped from local files (add_view), some with documents left out by
    a mask, mixed with copied packs and past the cap on views (the rest copied): the
    same bytes as copying the same documents, and the files are never written to."""
    rng = np.random.default_rng(4)
    docs = _random_docs(rng, 240)
    packs = [docs[i:i + 20] for i in range(0, 240, 20)]
    maps = []
    for i, pack in enumerate(packs):
        tokens, _lengths = _packed(pack)
        np.ascontiguousarray(tokens, dtype="<u2").tofile(tmp_path / f"p{i}")
        maps.append(np.memmap(tmp_path / f"p{i}", dtype="<u2", mode="r"))
    keep = [np.arange(len(p)) % 3 != 1 if i % 2 else None for i, p in enumerate(packs)]
    monkeypatch.setattr(shards.ShardWriter, "MAX_VIEWS", 5)
    with shards.ShardWriter(vocab_size=1000, chunk_tokens=64) as w:
        for i, pack in enumerate(packs):
            if i % 4 == 3:
                chosen = [d for d, k in zip(pack, keep[i] if keep[i] is not None
                                            else [True] * len(pack)) if k]
                w.add(*_packed(chosen))
            else:
                w.add_view(maps[i], _packed(pack)[1], keep[i])
        via_views = w.write()
        assert len(w._views) == 5
    with shards.ShardWriter(vocab_size=1000) as w:
        for i, pack in enumerate(packs):
            w.add(*_packed([d for j, d in enumerate(pack) if keep[i] is None or keep[i][j]]))
        assert w.write() == via_views
    assert all((tmp_path / f"p{i}").read_bytes() == np.ascontiguousarray(
        _packed(p)[0], dtype="<u2").tobytes() for i, p in enumerate(packs))
    with pytest.raises(ValueError, match="holds uint16"):
        with shards.ShardWriter(1000) as w:
            w.add_view(np.zeros(3, np.int32), np.array([3]))
