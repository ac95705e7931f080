"""Hostile records, files and paths (issue 15): invalid Unicode, oversized rows, NaN,
repeated ids, empty files. No crash, every record accounted for, strict JSON out."""

import copy
import gzip
import io
import json
import random
import subprocess
import sys
import textwrap

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline
from apache_beam.testing.util import assert_that, equal_to
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from skypile.document import Document, Reject
from skypile.files.readers import RawRecord, ReaderOptions, ReadStats, read_file
from skypile.files.rows import _parse_line, _row_record, bounded_lines
from skypile.pipelines.common import local_runner, report
from skypile.pipelines.dedup import ExactDedup, MinHashDedup
from skypile.pipelines.web import run_dedup
from skypile.text import dedup

# every code point, lone surrogates, controls and private use included
ANY_CHAR = st.characters(min_codepoint=0, max_codepoint=0x10FFFF)
HOSTILE = st.text(st.one_of(ANY_CHAR, st.sampled_from(
    ["\ud800", "\udfff", "\ud83d", "\x00", "\x1b", "\u2028", "\ue000", "\U000f0000", "\ufeff"])))
JSON_VALUES = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), HOSTILE),
    lambda inner: st.one_of(st.lists(inner, max_size=3),
                            st.dictionaries(HOSTILE, inner, max_size=3)),
    max_leaves=8)


def strict_loads(line: str):
    def no_constant(name):
        raise ValueError(f"non-strict JSON constant {name}")
    return json.loads(line, parse_constant=no_constant)


def assert_strict(obj) -> dict:
    """What a writer makes of obj: UTF-8 bytes that a strict parser reads back."""
    line = obj.to_json()
    data = strict_loads(line.encode("utf-8").decode("utf-8"))
    assert isinstance(data["id"], str)
    return data


def read_all(path, **opts):
    stats = ReadStats()
    return list(read_file(str(path), ReaderOptions(**opts), stats)), stats


def as_doc(rec: RawRecord) -> Document:
    return Document(rec.id, rec.body, rec.url, rec.source, dict(rec.metadata))


# ---- invalid Unicode, NaN, odd ids: repaired and recorded --------------------------------

def test_lone_surrogates_are_repaired_and_recorded(tmp_path):
    f = tmp_path / "s.jsonl"
    row = {"id": "a\ud800", "text": "x\udc00y \ud83d\ude00", "url": "http://e.com/\udfff",
           "metadata": {"deep": ["\ud800", {"k\ud801": "v"}]}}
    f.write_text(json.dumps(row) + "\n", encoding="ascii")  # \ud800 escapes, as in the issue
    [rec], _ = read_all(f)
    assert (rec.id, rec.body, rec.url) == ("a\ufffd", "x\ufffdy \U0001f600", "http://e.com/\ufffd")
    assert rec.metadata["deep"] == ["\ufffd", {"k\ufffd": "v"}]
    # json.loads joins an escaped pair itself; only the lone one is a repair
    assert rec.metadata["repaired"] == {"surrogates": {"id": 1, "text": 1, "url": 1,
                                                       "metadata": 2}}
    assert assert_strict(as_doc(rec))["text"] == "x\ufffdy \U0001f600"


def test_invalid_utf8_bytes_and_a_bom_are_repaired(tmp_path):
    f = tmp_path / "b.jsonl"
    f.write_bytes(b'\xef\xbb\xbf{"id": "1", "text": "caf\xe9 ok"}\n'
                  b'{"id": "2", "text": "fine \xef\xbf\xbd"}\n')
    recs, _ = read_all(f)
    assert [r.body for r in recs] == ["caf\ufffd ok", "fine \ufffd"]
    assert recs[0].metadata["repaired"] == {"invalid_utf8": {"line": 1}}
    assert "repaired" not in recs[1].metadata  # a U+FFFD that was already there is no repair


def test_nan_infinity_and_odd_ids_come_out_strict(tmp_path):
    f = tmp_path / "n.jsonl"
    f.write_text('{"id": NaN, "text": "a", "metadata": {"s": NaN, "t": [Infinity, 1.5]}}\n'
                 '{"id": 7, "text": "b", "score": -Infinity}\n'
                 '{"id": true, "text": "c", "url": 5}\n'
                 '{"id": 2.5, "text": "d"}\n', encoding="utf-8")
    recs, _ = read_all(f)
    out = [assert_strict(as_doc(r)) for r in recs]
    assert out[0]["metadata"]["s"] is None and out[0]["metadata"]["t"] == [None, 1.5]
    assert out[0]["metadata"]["repaired"] == {"non_finite": {"id": 1, "metadata": 2}}
    assert len(out[0]["id"]) == 24 and out[0]["id"] != "nan"  # a stable id of file and line
    assert out[1]["id"] == "7" and out[1]["metadata"]["score"] is None
    assert out[2]["metadata"]["repaired"] == {"bad_id": True, "bad_url": 5}
    assert out[2]["url"] == "" and out[3]["id"] == "2.5"


def _strings(value):
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from _strings(k)
            yield from _strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from _strings(v)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(HOSTILE, JSON_VALUES, max_size=4), st.booleans())
def test_a_line_without_surrogate_escapes_skips_the_scan_and_reads_the_same(fields, ascii):
    """The reader's fast path (no scan of flat strings when the line has no surrogate
    escape) gives exactly the record of the full repair, for any row."""
    row = {"id": "doc", "text": "some text", **fields}
    line = json.dumps(row, ensure_ascii=ascii).encode("utf-8", "surrogatepass") + b"\n"
    parsed, fixed, strings_valid = _parse_line(line, 2)
    if strings_valid:  # what the fast path takes on trust holds
        assert all(not any(0xD800 <= ord(c) <= 0xDFFF for c in s) for s in _strings(parsed))
    fast = _row_record(copy.deepcopy(parsed), "f.jsonl", "line 2", ReaderOptions(), fixed,
                       strings_valid)
    full = _row_record(copy.deepcopy(parsed), "f.jsonl", "line 2", ReaderOptions(), fixed)
    assert type(fast) is type(full)
    assert fast.to_json() == full.to_json() if isinstance(full, Reject) else fast == full


def test_documents_and_rejects_written_by_hand_are_strict_too():
    doc = Document(id=float("nan"), text="t\ud800", metadata={
        "x": float("inf"), "n": np.float32("nan"), "b": b"\xff", "s": [1, 2],
        "deep": json.loads("[" * 40 + "]" * 40)})
    data = assert_strict(doc)
    assert data["id"] == "nan" and data["text"] == "t\ufffd"  # a str id, never a bare NaN
    assert data["metadata"]["repaired"]["on_write"] == {
        "non_finite": 2, "not_json": 1, "surrogates": 1, "too_deep": 1}
    rej = Reject.of(doc, "exact", "duplicate-id", score=float("-inf"))
    assert assert_strict(rej)["detail"]["score"] is None


def test_deep_nesting_is_a_reject_or_cut_not_a_crash(tmp_path):
    f = tmp_path / "d.jsonl"
    f.write_text('{"id": "deep", "text": "t", "m": ' + "[" * 200_000 + "]" * 200_000 + "}\n"
                 + '{"id": "ok", "text": "t", "m": ' + "[" * 300 + "]" * 300 + "}\n")
    items, _ = read_all(f)
    assert isinstance(items[0], Reject) and items[0].reason == "read:bad-json"
    assert items[1].metadata["repaired"] == {"too_deep": {"m": 1}}
    assert_strict(as_doc(items[1]))


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(rows=st.lists(st.fixed_dictionaries(
    {"id": st.one_of(HOSTILE, st.integers(), st.floats(), st.none()), "text": HOSTILE},
    optional={"url": st.one_of(HOSTILE, st.integers()), "metadata": JSON_VALUES,
              "extra": JSON_VALUES}), min_size=1, max_size=6),
    ascii_out=st.booleans())
def test_any_jsonl_row_is_a_record_or_a_reject_and_writes_strict_json(tmp_path, rows, ascii_out):
    f = tmp_path / "h.jsonl"
    with open(f, "w", encoding="utf-8", errors="surrogatepass") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=ascii_out) + "\n")
    items, stats = read_all(f)
    assert len(items) == len(rows) == stats.records  # one item per row, nothing lost
    for item, row in zip(items, rows):
        data = assert_strict(as_doc(item) if isinstance(item, RawRecord) else item)
        if isinstance(item, Reject):
            assert item.reason == "read:empty-text" and not row["text"].strip()
        else:
            item.body.encode("utf-8")  # valid Unicode all through
            item.id.encode("utf-8")
            assert data["text"] == item.body


# ---- oversized rows -----------------------------------------------------------------------

def test_bounded_lines_never_hold_more_than_the_cap():
    data = b"short\n" + b"x" * 100_000 + b"\n" + b"y" * 10 + b"\n" + b"z" * 5000
    got = list(bounded_lines(io.BytesIO(data), 1000))
    assert [(n, off, size) for n, off, _line, size in got] == [
        (1, 0, 5), (2, 6, 100_000), (3, 100_007, 10), (4, 100_018, 5000)]
    assert max(len(line) for _n, _o, line, _s in got) == 1001


@pytest.mark.parametrize("gz", [False, True])
def test_oversized_jsonl_line_is_too_large_and_reading_goes_on(tmp_path, gz):
    lines = [json.dumps({"id": "a", "text": "small"}),
             json.dumps({"id": "big", "text": "w " * 300_000}),
             json.dumps({"id": "c", "text": "after"})]
    data = ("\n".join(lines) + "\n").encode()
    f = tmp_path / ("r.jsonl.gz" if gz else "r.jsonl")
    f.write_bytes(gzip.compress(data) if gz else data)
    items, stats = read_all(f, max_record_bytes=100_000)
    assert [getattr(i, "id", None) for i in items if isinstance(i, RawRecord)] == ["a", "c"]
    [rej] = [i for i in items if isinstance(i, Reject)]
    assert rej.reason == "read:too-large" and rej.detail["line"] == 2
    assert rej.detail["offset"] == len(lines[0]) + 1 and rej.detail["bytes"] == len(lines[1])
    assert rej.detail["cap"] == 100_000 and len(rej.text) <= 4096
    assert stats.records == 3


def test_oversized_parquet_row_is_too_large_and_bad_utf8_repaired(tmp_path):
    texts = ["one", "x" * 300_000, "three", "four"]
    raw = pa.array([t.encode() if i != 2 else b"thr\xffee" for i, t in enumerate(texts)],
                   type=pa.binary()).view(pa.string())  # a string column that is not UTF-8
    f = tmp_path / "p.parquet"
    pq.write_table(pa.table({"id": [f"r{i}" for i in range(4)], "text": raw,
                             "score": [1.0, 2.0, float("nan"), 4.0]}), f, row_group_size=3)
    items, stats = read_all(f, max_record_bytes=100_000)
    assert stats.records == 4
    assert [(i.id, i.reason, i.detail["at"]) for i in items if isinstance(i, Reject)] == [
        (items[1].id, "read:too-large", "row 1")]
    recs = [i for i in items if isinstance(i, RawRecord)]
    assert [r.id for r in recs] == ["r0", "r2", "r3"]
    assert recs[1].body == "thr\ufffdee"
    assert recs[1].metadata["repaired"] == {"invalid_utf8": {"text": 1},
                                            "non_finite": {"score": 1}}
    assert "repaired" not in recs[2].metadata


def test_oversized_text_paragraph_is_too_large(tmp_path):
    f = tmp_path / "t.txt"
    f.write_text("first para\n\n" + ("line " * 100 + "\n") * 50 + "\nlast one\n")
    items, stats = read_all(f, max_record_bytes=2000)
    assert [i.reason if isinstance(i, Reject) else i.body for i in items] == [
        "first para", "read:too-large", "last one"]
    assert items[1].detail["line"] == 3 and stats.records == 3


def _peak_rss_delta(code: str) -> int:
    """Bytes a snippet adds to a fresh interpreter's peak resident set (Linux ru_maxrss)."""
    script = textwrap.dedent("""
        import resource, random
        from skypile.text.dedup import MinHashConfig, MinHasher
        hasher = MinHasher(MinHashConfig())
        rng = random.Random(0)
        words = ["".join(rng.choice("abcdefghij") for _ in range(rng.randint(2, 9)))
                 for _ in range(50000)]
        text = " ".join(rng.choice(words) for _ in range(5_000_000))[:30_000_000]
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        """) + textwrap.dedent(code) + textwrap.dedent("""
        print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base)
        """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         check=True)
    return int(out.stdout.split()[-1]) * 1024


def test_minhash_of_a_30mb_document_stays_under_1gib():
    delta = _peak_rss_delta("""
        sig = hasher.signature(text)
        assert sig is not None and sig.shape == (256,)
        """)
    assert delta < 1 << 30, f"signature() of 30 MB grew the process by {delta >> 20} MiB"


def test_chunked_signatures_equal_one_batch_signatures():
    cfg = dedup.MinHashConfig()
    hasher = dedup.MinHasher(cfg)
    rng = random.Random(1)
    texts = ["", "two words", "一二三四五六七八九十", "mixed 中文 and words " * 50,
             " ".join(rng.choice(["red", "green", "blue", "河", "山"]) for _ in range(20_000))]
    for text in texts:
        sh = dedup.shingles(text, cfg)
        if not sh:
            assert hasher.signature(text) is None
            continue
        whole = hasher._template.copy()
        whole.update_batch(list(sh))
        assert (hasher.signature(text) == whole.hashvalues.astype(np.uint32)).all()


@settings(max_examples=80, deadline=None)
@given(text=HOSTILE, url=HOSTILE)
def test_dedup_maths_take_any_string(text, url):
    """Even text the reader did not repair: every key is hashable bytes, nothing raises."""
    cfg = dedup.MinHashConfig(ngram_words=2, ngram_chars=2)
    sig = dedup.MinHasher(cfg).signature(text)
    assert sig is None or sig.shape == (cfg.num_perm,)
    assert len(dedup.content_hash(text)) == 40 and len(dedup.text_hash(text)) == 40
    assert isinstance(dedup.url_key(url), str)
    dedup.block_hash(text, dedup.BlocksConfig())
    dedup.renamed_id(url, dedup.text_hash(text)).encode("utf-8", "surrogatepass")


def test_url_key_never_raises():
    assert dedup.url_key("http://example.com:notaport/x") == "http://example.com:notaport/x"
    assert dedup.url_key("http://[::1/") == "http://[::1/"


# ---- repeated ids: no distinct text lost, order does not matter ---------------------------

def _pipeline():
    return BeamTestPipeline(runner=local_runner())


SAME_ID = [Document("d", "the first text of d, the longer one", source="s1"),
           Document("d", "another text under d", source="s2"),
           Document("d", "another text under d", source="s0", url="http://z/"),
           Document("d", "a third distinct text", source="s3"),
           Document("e", "unrelated words here", source="s1")]


def _expected(stage: str):
    h = lambda t: dedup.renamed_id("d", dedup.text_hash(t))  # noqa: E731
    docs = [("d", "the first text of d, the longer one", "s1", None),
            (h("another text under d"), "another text under d", "s0", "d"),
            (h("a third distinct text"), "a third distinct text", "s3", "d"),
            ("e", "unrelated words here", "s1", None)]
    rejects = [("d", f"{stage}:duplicate-id", "s2", h("another text under d"))]
    return docs, rejects


@pytest.mark.parametrize("stage,make", [("exact", lambda: ExactDedup(dedup.ExactConfig())),
                                        ("minhash", lambda: MinHashDedup(dedup.MinHashConfig()))])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_repeated_ids_keep_every_distinct_text_in_any_order(stage, make, seed):
    docs = list(SAME_ID)
    random.Random(seed).shuffle(docs)
    want_docs, want_rejects = _expected(stage)
    with _pipeline() as p:
        out = p | beam.Create(docs) | make()
        assert_that(out["docs"] | beam.Map(lambda d: (d.id, d.text, d.source,
                                                      d.metadata.get("original_id"))),
                    equal_to(want_docs), label="docs")
        assert_that(out["rejects"] | beam.Map(lambda r: (r.id, r.reason, r.source,
                                                         r.detail["kept_id"])),
                    equal_to(want_rejects), label="rejects")


def test_exact_then_minhash_makes_ids_unique_once():
    with _pipeline() as p:
        exact = p | beam.Create(SAME_ID) | "Exact" >> ExactDedup(dedup.ExactConfig())
        minhash = exact["docs"] | "MinHash" >> MinHashDedup(dedup.MinHashConfig())
        assert_that(minhash["docs"] | beam.Map(lambda d: d.id),
                    equal_to([d[0] for d in _expected("exact")[0]]), label="docs")
        assert_that(minhash["rejects"], equal_to([]), label="no-rejects")
    assert "Exact/UniqueIds" in p.applied_labels  # the first stage keyed by id runs it
    assert "MinHash/UniqueIds" not in p.applied_labels  # the next one knows ids are unique


def test_dedup_command_output_is_strict_order_free_and_balanced(tmp_path):
    rows = [{"id": "x", "text": f"text number {i} about hostile \ud800 input " * 3,
             "metadata": {"score": float("nan") if i % 2 else i}} for i in range(4)]
    rows += [{"id": "x", "text": rows[0]["text"]}, {"id": float("nan"), "text": "nan id"},
             {"id": "\udc00", "text": "surrogate id"}]
    outputs = []
    for order in (rows, rows[::-1]):
        src = tmp_path / f"in{len(outputs)}"
        src.mkdir()
        (src / "a.jsonl").write_text("".join(json.dumps(r) + "\n" for r in order[:4]))
        (src / "b.jsonl").write_text("".join(json.dumps(r) + "\n" for r in order[4:]))
        (src / "empty.jsonl").write_bytes(b"")
        out = tmp_path / f"out{len(outputs)}"
        assert run_dedup(["--input", str(src), "--output", str(out),
                          "--stages", "blocks,exact,minhash"]) == 0
        rows_out = {kind: [strict_loads(line.decode("utf-8"))
                           for part in sorted((out / kind).glob("*.jsonl.gz"))
                           for line in gzip.open(part).read().splitlines()]
                    for kind in ("docs", "rejects")}
        # ids made from a file's path differ between the two folders; the rest may not
        docs = sorted((d["text"], d["id"] if d["id"][0] in "x\ufffd" else "")
                      for d in rows_out["docs"])
        rejects = sorted((r["reason"], r["text"]) for r in rows_out["rejects"])
        stats = json.loads((out / "stats.json").read_text())
        outputs.append(({"docs": docs, "rejects": rejects}, stats["stages"]))
    assert outputs[0] == outputs[1]
    stages = outputs[0][1]
    assert stages["read"]["dropped"] == {"read:empty-file": 1}
    assert stages["read"]["kept"] == len(rows)
    assert stages["exact"]["dropped"].get("exact:duplicate-id") == 1
    assert len(outputs[0][0]["docs"]) + sum(
        sum(s["dropped"].values()) for n, s in stages.items() if n != "read") == len(rows)


# ---- empty and unreadable files -----------------------------------------------------------

@pytest.mark.parametrize("name,data", [
    ("e.jsonl", b""), ("e.jsonl.gz", gzip.compress(b"")), ("blank.jsonl", b"\n\n  \n"),
    ("e.txt", b""), ("e.tsv", b"")])
def test_an_empty_file_is_one_empty_file_reject(tmp_path, name, data):
    f = tmp_path / name
    f.write_bytes(data)
    items, _ = read_all(f)
    assert [(r.reason, r.detail["file"]) for r in items] == [("read:empty-file", str(f))]


def test_a_parquet_file_without_rows_is_empty(tmp_path):
    f = tmp_path / "e.parquet"
    empty = pa.array([], pa.string())
    pq.write_table(pa.table({"id": empty, "text": empty}), f)
    items, _ = read_all(f)
    assert [r.reason for r in items] == ["read:empty-file"]


def test_report_names_the_rejects_folder_only_when_it_exists(tmp_path, capsys):
    result = {"stages": {"read": {"in": 1, "kept": 0, "dropped": {"unreadable-file": 1}}},
              "files": {"read": 0, "unreadable": 1}}
    assert report(result, str(tmp_path), 0.1, "skypile dedup", ("read",)) == 1
    assert "see" not in capsys.readouterr().err
    (tmp_path / "rejects").mkdir()
    assert report(result, str(tmp_path), 0.1, "skypile dedup", ("read",)) == 1
    assert f"see {tmp_path}/rejects" in capsys.readouterr().err


def test_empty_inputs_are_read_and_rejected_by_the_command(tmp_path):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.jsonl").write_bytes(b"")
    (tmp_path / "in" / "b.jsonl.gz").write_bytes(gzip.compress(b""))
    out = tmp_path / "out"
    assert run_dedup(["--input", str(tmp_path / "in"), "--output", str(out)]) == 0
    stats = json.loads((out / "stats.json").read_text())
    assert stats["files"] == {"read": 2, "unreadable": 0}
    assert stats["stages"]["read"] == {"in": 2, "kept": 0, "dropped": {"read:empty-file": 2}}
    rejects = [json.loads(line) for part in (out / "rejects").glob("*.jsonl.gz")
               for line in gzip.open(part).read().splitlines()]
    assert sorted(r["detail"]["file"].rsplit("/", 1)[1] for r in rejects) == ["a.jsonl",
                                                                               "b.jsonl.gz"]


# ---- tokenize: hostile rows become shards or rejects, never a crash ----------------------

@pytest.fixture(scope="module")
def tiny_tokenizer(tmp_path_factory):
    from skypile.tokens import tokenizer as tk

    d = tmp_path_factory.mktemp("tok")
    rng = random.Random(3)
    words = ["river", "mountain", "data", "token", "河", "山", "数据", "value", "hostile"]
    (d / "train.txt").write_text("\n\n".join(" ".join(rng.choice(words) for _ in range(30))
                                             for _ in range(400)), encoding="utf-8")
    return tk.train([str(d / "train.txt")], str(d / "tok"), tk.TokenizerTrainConfig(vocab_size=300))


@settings(max_examples=40, deadline=None)
@given(text=HOSTILE)
def test_the_tokenizer_encodes_any_repaired_text(tiny_tokenizer, text):
    from skypile.document import clean_str
    from skypile.tokens.tokenizer import Tokenizer

    ids = Tokenizer(str(tiny_tokenizer)).encode(clean_str(text)[0])
    assert all(isinstance(i, int) for i in ids)


def test_tokenize_command_takes_hostile_rows(tiny_tokenizer, tmp_path):
    from skypile.pipelines.tokenize import run as tokenize

    rows = ['{"id": "a\\ud800", "text": "river \\udc00 mountain \\u0000 \\u001b data"}',
            '{"id": NaN, "text": "\\ue000 private use and 河 山"}',
            '{"id": "c", "text": "ok", "metadata": {"x": Infinity}}',
            '{"id": "a\\ud800", "text": "the same id, another text"}']
    (tmp_path / "d.jsonl").write_text("\n".join(rows) + "\n" + "x" * 5000 + "\n")
    (tmp_path / "empty.jsonl").write_bytes(b"")
    out = tmp_path / "out"
    assert tokenize(["--input", str(tmp_path / "*.jsonl"), "--tokenizer", str(tiny_tokenizer),
                     "--output", str(out), "--read.max_record_bytes=4000"]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert sum(s["docs"] for splits in manifest["domains"].values()
               for s in splits.values()) == 4
    rejects = [strict_loads(line.decode("utf-8")) for part in (out / "rejects").glob("*.jsonl.gz")
               for line in gzip.open(part).read().splitlines()]
    assert sorted(r["reason"] for r in rejects) == ["read:empty-file", "read:too-large"]
