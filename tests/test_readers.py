import gzip
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard

from skypile.document import Reject
from skypile.files.readers import RawRecord, ReaderOptions, ReadStats, UnreadableFile, read_file
from warcgen import ARTICLE, gz, http_response, record


def read_all(path, **kw):
    stats = ReadStats()
    out = list(read_file(str(path), stats=stats, **kw))
    return out, stats


def reasons(items):
    return [r.reason for r in items if isinstance(r, Reject)]


def docs(items):
    return [r for r in items if isinstance(r, RawRecord)]


def test_response_records_are_documents_others_skipped(tmp_path):
    data = (record(b"software: test", wtype="warcinfo", url=None,
                   content_type="application/warc-fields")
            + record(b"GET / HTTP/1.1\r\n\r\n", wtype="request",
                     content_type="application/http; msgtype=request")
            + record(http_response(ARTICLE), url="http://a.example/1")
            + record(b"fetchTimeMs: 12", wtype="metadata", content_type="application/warc-fields")
            + record(b"", wtype="revisit", url="http://a.example/1"))
    f = tmp_path / "a.warc.gz"
    f.write_bytes(b"".join(gz(r) for r in [data]))
    items, stats = read_all(f)
    assert reasons(items) == []
    [doc] = docs(items)
    assert doc.kind == "http" and doc.url == "http://a.example/1"
    assert stats.skipped == {"warcinfo": 1, "request": 1, "metadata": 1, "revisit": 1}


def test_ids_are_stable_and_wget_uris_unwrapped(tmp_path):
    f = tmp_path / "w.warc"
    f.write_bytes(record(http_response(ARTICLE), url="<https://b.example/x>"))
    first, _ = read_all(f)
    again, _ = read_all(f)
    assert first[0].url == "https://b.example/x"
    assert first[0].id == again[0].id


def test_truncated_gzip_member_rejects_only_that_record(tmp_path):
    good = gz(record(http_response(ARTICLE), url="http://a.example/good"))
    cut = gz(record(http_response(ARTICLE), url="http://a.example/cut"))
    f = tmp_path / "t.warc.gz"
    f.write_bytes(good + cut[: len(cut) // 2])
    items, _ = read_all(f)
    assert [d.url for d in docs(items)] == ["http://a.example/good"]
    assert reasons(items) == ["read:truncated-gzip"]
    rej = [r for r in items if isinstance(r, Reject)][0]
    assert rej.detail["file"] == str(f) and rej.detail["offset"] == len(good)


def test_corrupt_member_in_the_middle_is_skipped(tmp_path):
    a = gz(record(http_response(ARTICLE), url="http://a.example/1"))
    b = bytearray(gz(record(http_response(ARTICLE), url="http://a.example/2")))
    b[len(b) // 2: len(b) // 2 + 40] = b"\xff" * 40
    c = gz(record(http_response(ARTICLE), url="http://a.example/3"))
    f = tmp_path / "c.warc.gz"
    f.write_bytes(a + bytes(b) + c)
    items, _ = read_all(f)
    assert [d.url for d in docs(items)] == ["http://a.example/1", "http://a.example/3"]
    assert any(r.startswith("read:corrupt-gzip") for r in reasons(items))


def test_content_length_past_end_of_file(tmp_path):
    good = record(http_response(ARTICLE), url="http://a.example/1")
    bad = record(http_response(ARTICLE), url="http://a.example/2", length=10 ** 6)
    f = tmp_path / "l.warc"
    f.write_bytes(good + bad)
    items, stats = read_all(f)
    assert [d.url for d in docs(items)] == ["http://a.example/1"]
    [rej] = [r for r in items if isinstance(r, Reject)]
    assert rej.reason == "read:content-length-overrun" and rej.url == "http://a.example/2"
    assert "lake" in rej.text  # the text is kept in the reject
    assert stats.records == 2


def test_wrong_content_length_mid_file_recovers_at_next_record(tmp_path):
    short = record(http_response(ARTICLE), url="http://a.example/1", length=200)
    f = tmp_path / "m.warc"
    f.write_bytes(short + record(http_response(ARTICLE), url="http://a.example/2"))
    items, _ = read_all(f)
    got = docs(items)
    assert [d.url for d in got] == ["http://a.example/1", "http://a.example/2"]
    assert got[0].metadata["warc_length_mismatch"]["declared"] == 200
    assert got[0].body.endswith(b"</html>")


def test_response_without_target_uri(tmp_path):
    f = tmp_path / "u.warc"
    f.write_bytes(record(http_response(ARTICLE), url=None))
    items, _ = read_all(f)
    assert reasons(items) == ["read:no-target-uri"]


def test_record_over_size_cap_is_rejected_without_holding_it(tmp_path):
    f = tmp_path / "big.warc"
    f.write_bytes(record(http_response(b"x" * 300_000), url="http://a.example/big")
                  + record(http_response(ARTICLE), url="http://a.example/ok"))
    items, _ = read_all(f, opts=ReaderOptions(max_record_bytes=100_000))
    assert reasons(items) == ["read:too-large"]
    assert [d.url for d in docs(items)] == ["http://a.example/ok"]


def test_non_warc_file_is_unreadable(tmp_path):
    f = tmp_path / "image.warc.gz"
    f.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)))
    with pytest.raises(UnreadableFile, match="not a WARC, JSONL, Parquet, .txt or .tsv"):
        list(read_file(str(f)))


def test_missing_file_is_unreadable(tmp_path):
    with pytest.raises(UnreadableFile):
        list(read_file(str(tmp_path / "nope.warc")))


def test_junk_between_records_is_reported(tmp_path):
    f = tmp_path / "j.warc"
    f.write_bytes(record(http_response(ARTICLE), url="http://a.example/1") + b"GARBAGE" * 10
                  + b"\r\n" + record(http_response(ARTICLE), url="http://a.example/2"))
    items, _ = read_all(f)
    assert len(docs(items)) == 2
    assert reasons(items) == ["read:junk-bytes"]


def test_wet_conversion_records_are_text(tmp_path):
    f = tmp_path / "x.warc.wet.gz"
    f.write_bytes(gz(record("纯文本内容\nplain text".encode(), wtype="conversion",
                            url="http://c.example/", content_type="text/plain")))
    [doc], _ = read_all(f)
    assert doc.kind == "text" and doc.body == "纯文本内容\nplain text"


def test_jsonl_variants(tmp_path):
    rows = [{"id": "a", "content": "first", "url": "u1", "lang": "en"},
            {"content": "no id here"},
            {"id": "c"}]
    text = "\n".join(json.dumps(r) for r in rows) + "\n{broken json\n"
    for name, data in [("d.jsonl", text.encode()), ("d.jsonl.gz", gzip.compress(text.encode())),
                       ("d.jsonl.zst", zstandard.ZstdCompressor().compress(text.encode()))]:
        f = tmp_path / name
        f.write_bytes(data)
        items, stats = read_all(f, opts=ReaderOptions(text_field="content"))
        good = docs(items)
        assert [d.body for d in good] == ["first", "no id here"], name
        assert good[0].id == "a" and good[0].metadata["lang"] == "en"
        assert good[1].id  # a stable id is made
        assert reasons(items) == ["read:no-text-field", "read:bad-json"], name
        assert stats.records == 4


def test_truncated_jsonl_gz_keeps_earlier_lines(tmp_path):
    data = gzip.compress(b"".join(json.dumps({"text": f"line {i}"}).encode() + b"\n"
                                  for i in range(2000)))
    f = tmp_path / "t.jsonl.gz"
    f.write_bytes(data[: len(data) // 2])
    items, _ = read_all(f)
    assert len(docs(items)) > 10
    assert reasons(items) == ["read:truncated-gzip"]


def test_parquet(tmp_path):
    f = tmp_path / "d.parquet"
    pq.write_table(pa.table({"id": ["x", "y"], "text": ["hello", None]}), f)
    items, _ = read_all(f)
    assert [d.body for d in docs(items)] == ["hello"]
    assert reasons(items) == ["read:no-text-field"]


def _whole_and_ranges(path, step, **opts):
    """The records of ``path`` read whole, and read range by range (with the ranges)."""
    from skypile.files.readers import line_ranges

    ro = ReaderOptions(**opts)
    whole = list(read_file(str(path), ro, ReadStats()))
    ranges = line_ranges(str(path), step)
    parts = [item for span in ranges for item in read_file(str(path), ro, ReadStats(), span=span)]
    return whole, parts, ranges


def test_a_large_jsonl_file_read_in_ranges_gives_the_same_records(tmp_path, data_dir):
    """Real rows (Chinese Wikipedia) with the hard cases among them: rows without an id
    (their id comes from the line number), blank lines, broken JSON, a row over the
    size cap that spans a range boundary, a byte order mark, no final newline. Read in
    ranges of 4 KiB, the same records and rejects, in the same order, as read whole."""
    src = [json.loads(line)["text"] for line in
           open(data_dir / "wiki-zh/zh_wiki_paragraphs_cmrc2018.jsonl", encoding="utf-8")][:60]
    lines = []
    for i, text in enumerate(src):
        row = {"text": text} if i % 7 == 3 else {"id": f"zh-{i}", "text": text}
        lines.append(json.dumps(row, ensure_ascii=False))
        if i % 11 == 5:
            lines.append("")
        if i % 13 == 8:
            lines.append('{"id": "broken", "text": ')
        if i == 30:
            lines.append(json.dumps({"id": "huge", "text": "x" * 9000}))
    path = tmp_path / "rows.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + "\n".join(lines).encode("utf-8"))  # BOM, no final newline
    whole, parts, ranges = _whole_and_ranges(path, 4096, max_record_bytes=6000)
    assert len(ranges) > 10
    assert [r.start for r in ranges] == sorted({r.start for r in ranges})
    assert all(a.end == b.start for a, b in zip(ranges, ranges[1:]))
    assert ranges[0].start == 0 and ranges[-1].end == path.stat().st_size
    assert {"read:too-large", "read:bad-json"} <= set(reasons(whole))
    assert len(docs(whole)) == 60
    key = (lambda r: (r.id, r.body, r.metadata) if isinstance(r, RawRecord)
           else (r.reason, r.id, r.detail))
    assert [key(r) for r in parts] == [key(r) for r in whole]


def test_only_large_plain_jsonl_files_are_split(tmp_path):
    from skypile.files.readers import line_ranges

    rows = "".join(json.dumps({"id": str(i), "text": "word " * 50}) + "\n" for i in range(400))
    (tmp_path / "a.jsonl").write_text(rows)
    (tmp_path / "a.jsonl.gz").write_bytes(gzip.compress(rows.encode()))
    (tmp_path / "gz-inside.jsonl").write_bytes(gzip.compress(rows.encode()))
    (tmp_path / "a.txt").write_text(rows)
    assert len(line_ranges(str(tmp_path / "a.jsonl"), 10_000)) > 5
    assert line_ranges(str(tmp_path / "a.jsonl"), len(rows) // 2) == []  # not over 2 steps
    assert line_ranges(str(tmp_path / "a.jsonl"), 0) == []  # split_mb=0: never
    for name in ("a.jsonl.gz", "gz-inside.jsonl", "a.txt"):
        assert line_ranges(str(tmp_path / name), 100) == [], name


def test_a_range_of_a_file_that_is_not_plain_jsonl_after_all(tmp_path):
    """The ranges were made from the name; by its bytes the file is gzip: the first range
    reads the whole file, the others nothing (and no empty-file reject)."""
    from skypile.files.readers import FileRange

    rows = "".join(json.dumps({"id": str(i), "text": "t"}) + "\n" for i in range(20)).encode()
    path = tmp_path / "x.jsonl"
    path.write_bytes(gzip.compress(rows))
    size = path.stat().st_size
    first = list(read_file(str(path), span=FileRange(str(path), 0, size // 2, 1)))
    stats = ReadStats()
    rest = list(read_file(str(path), stats=stats, span=FileRange(str(path), size // 2, size, 9)))
    assert [r.id for r in docs(first)] == [str(i) for i in range(20)] and rest == []
    assert stats.part
