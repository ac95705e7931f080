"""``skypile web --stages extract`` end to end on real WARCs and on hostile input."""

import gzip
import json
import subprocess
import sys
from pathlib import Path

import pytest

from skypile.pipelines.web import run
from warcgen import ARTICLE, ARTICLE_ZH, gz, http_response, record
from outputs import read_jsonl_gz

pytestmark = pytest.mark.integration


def outputs(out: Path):
    stats = json.loads((out / "stats.json").read_text())
    return read_jsonl_gz(out / "docs"), read_jsonl_gz(out / "rejects"), stats


def assert_contract(out: Path):
    docs, rejects, stats = outputs(out)
    for d in docs:
        assert {"id", "url", "text", "source", "metadata"} <= set(d) and isinstance(d["metadata"], dict)
    for r in rejects:
        assert {"id", "url", "stage", "reason", "text"} <= set(r)
        assert r["reason"].startswith(r["stage"] + ":")
    total_dropped = 0
    for name, s in stats["stages"].items():
        assert s["in"] == s["kept"] + sum(s["dropped"].values()), name
        total_dropped += sum(s["dropped"].values())
    assert total_dropped == len(rejects)
    last = list(stats["stages"].values())[-1]
    assert last["kept"] == len(docs)
    return docs, rejects, stats


@pytest.fixture(scope="module")
def hostile(tmp_path_factory) -> Path:
    """One WARC.gz with good pages between every kind of bad record, then a cut member."""
    d = tmp_path_factory.mktemp("hostile")
    bomb = gzip.compress(b"<p>" + b"a" * (64 * 1024 * 1024))
    big = b"<html><body>" + b"<p>word word word</p>" * (21 * 1024 * 1024 // 20)
    members = [
        record(http_response(ARTICLE), url="http://good.example/1"),
        record(http_response(ARTICLE, status="404 Not Found"), url="http://bad.example/404"),
        record(http_response(ARTICLE, status="500 Internal Server Error"), url="http://bad.example/500"),
        record(http_response(ARTICLE), url=None),
        record(http_response(b"\x89PNG\r\n\x1a\n" + bytes(500), headers={"Content-Type": "image/png"}),
               url="http://bad.example/img.png"),
        record(http_response(b"%PDF-1.5\n" + bytes(500), headers={"Content-Type": "application/pdf"}),
               url="http://bad.example/doc.pdf"),
        record(http_response(b""), url="http://bad.example/empty"),
        record(http_response(bomb, headers={"Content-Encoding": "gzip"}), url="http://bad.example/bomb"),
        record(http_response(bytes(range(256)) * 64), url="http://bad.example/binary"),
        record(http_response(big), url="http://bad.example/big"),
        record(http_response(b"<html><body>" + b"<div>" * 100_000 + b"<p>x</p>"),
               url="http://bad.example/deep"),
        record(http_response(ARTICLE.replace(b"calm and clear", b"calm\x00\x1b and \xff\xfe clear")),
               url="http://good.example/dirty-bytes"),
        record(http_response(ARTICLE_ZH, headers={"Content-Type": "text/html"}), url="http://good.example/zh"),
    ]
    last = gz(record(http_response(ARTICLE), url="http://bad.example/cut"))
    (d / "hostile.warc.gz").write_bytes(b"".join(gz(m) for m in members) + last[: len(last) // 2])
    (d / "overrun.warc").write_bytes(
        record(http_response(ARTICLE), url="http://good.example/2")
        + record(http_response(ARTICLE), url="http://bad.example/overrun", length=50_000))
    (d / "notes.warc.gz").write_bytes(b"%PDF-1.4 this file is not a WARC at all")
    return d


def test_hostile_input_never_crashes_or_vanishes(hostile, tmp_path):
    out = tmp_path / "out"
    rc = run(["--input", str(hostile / "*"), "--output", str(out), "--stages", "extract"])
    assert rc == 0
    docs, rejects, stats = assert_contract(out)
    assert sorted(d["url"] for d in docs) == ["http://good.example/1", "http://good.example/2",
                                              "http://good.example/dirty-bytes",
                                              "http://good.example/zh"]
    by_url = {r["url"]: r["reason"] for r in rejects if r["url"]}
    assert by_url == {
        "http://bad.example/404": "extract:http-status",
        "http://bad.example/500": "extract:http-status",
        "http://bad.example/img.png": "extract:non-html",
        "http://bad.example/doc.pdf": "extract:non-html",
        "http://bad.example/empty": "extract:empty-body",
        "http://bad.example/bomb": "extract:decompression-bomb",
        "http://bad.example/binary": "extract:binary",
        "http://bad.example/big": "read:too-large",  # the record itself is over the cap
        "http://bad.example/deep": "extract:too-deep",
        "http://bad.example/cut": "read:truncated-gzip",
        "http://bad.example/overrun": "read:content-length-overrun",
    }
    no_url = sorted(r["reason"] for r in rejects if not r["url"])
    assert no_url == ["read:no-target-uri", "read:unreadable-file"]
    unreadable = [r for r in rejects if r["reason"] == "read:unreadable-file"][0]
    assert unreadable["detail"]["file"].endswith("notes.warc.gz")
    truncated = [r for r in rejects if r["reason"] == "read:truncated-gzip"][0]
    assert truncated["detail"]["offset"] > 0
    assert stats["files"] == {"read": 2, "unreadable": 1}


def test_no_readable_input_is_a_one_line_error(tmp_path):
    bad = tmp_path / "bad.warc"
    bad.write_bytes(b"\x00\x01 not a warc")
    proc = subprocess.run([sys.executable, "-m", "skypile.cli", "web", "--input", str(bad),
                           "--output", str(tmp_path / "o")], capture_output=True, text=True)
    assert proc.returncode == 1
    assert "error: none of the 1 input files could be read" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_real_warcs_and_rerun_replaces_output(data_dir, tmp_path):
    out = tmp_path / "out"
    inputs = ["--input", str(data_dir / "warc/*/*.warc*"),
              "--input", str(data_dir / "extraction-zh/pages.warc.gz"),
              "--input", str(data_dir / "extraction-en/pages.warc.gz")]
    assert run(inputs + ["--output", str(out), "--stages", "extract"]) == 0
    docs, rejects, stats = assert_contract(out)
    assert stats["stages"]["read"]["skipped"]["request"] > 0
    urls = {d["url"] for d in docs}
    # the benchmark pages come out, with their Chinese text decoded
    assert sum(u.startswith("https://bench.invalid/zh/") for u in urls) >= 45
    en_urls = set(json.loads((data_dir / "extraction-en/urls.json").read_text()))
    assert len(urls & en_urls) >= 100
    zh = [d for d in docs if d["url"].startswith("https://bench.invalid/zh/")]
    assert sum("的" in d["text"] for d in zh) >= 40
    cc = [d for d in docs if "CC-MAIN-2020-34" in d["source"]]
    assert len(cc) >= 10 and all(d["metadata"]["http_status"] == 200 for d in cc)

    # ids are stable, and a re-run into the same output replaces it whole
    stale = out / "docs" / "part-99999.jsonl.gz"
    stale.write_bytes(gzip.compress(b'{"id": "stale"}\n'))
    assert run(["--input", str(data_dir / "warc/whirlwind/whirlwind.warc.gz"),
                "--output", str(out)]) == 0
    docs2, _, _ = assert_contract(out)
    assert not stale.exists()
    assert [d["url"] for d in docs2] == ["https://an.wikipedia.org/wiki/Escopete"]
    first = [d for d in docs if d["url"] == docs2[0]["url"]
             and "whirlwind.warc.gz" in d["source"]]
    assert first and first[0]["id"] == docs2[0]["id"]
    assert not (out / "_runs").exists() and (out / "_SUCCESS.json").exists()


def test_multi_processing_runner_gives_the_same_documents(data_dir, tmp_path):
    args = ["--input", str(data_dir / "warc/dolma-wget-warc/*.warc.gz"),
            "--input", str(data_dir / "warc/resiliparse-cc-warc/*.warc.gz")]
    assert run(args + ["--output", str(tmp_path / "a")]) == 0
    assert run(args + ["--output", str(tmp_path / "b"), "--direct_num_workers", "2",
                       "--direct_running_mode", "multi_processing"]) == 0
    a, ra, _ = outputs(tmp_path / "a")
    b, rb, _ = outputs(tmp_path / "b")
    key = lambda d: d["id"]
    strip = lambda d: {k: v for k, v in d.items() if k != "metadata"}
    assert [strip(d) for d in sorted(a, key=key)] == [strip(d) for d in sorted(b, key=key)]
    assert sorted(r["id"] for r in ra) == sorted(r["id"] for r in rb)


FRENCH = ("<html><head><title>Le lac</title><script>var x = 'the the the';</script></head><body>"
          + "".join(f"<p>Nous avons marché le long du lac pendant toute la matinée, et l'eau était "
                    f"calme et claire ; on voyait les pierres au fond. Le paragraphe {i} décrit les "
                    f"oiseaux, les arbres et le temps qu'il faisait.</p>" for i in range(8))
          + "</body></html>").encode()


def test_cheap_work_first_url_duplicates_and_other_languages_skip_extraction(tmp_path):
    from skypile.text.markup import rough_text

    assert "var x" not in rough_text(FRENCH.decode()) and "Nous avons" in rough_text(FRENCH.decode())
    warc = tmp_path / "in.warc.gz"
    bigger_404 = ARTICLE + b"<p>" + b"padding " * 2000 + b"</p>"
    warc.write_bytes(b"".join(gz(m) for m in [
        record(http_response(ARTICLE), url="http://site.example/a"),
        record(http_response(bigger_404, status="404 Not Found"), url="https://www.site.example/a"),
        record(http_response(ARTICLE + b"<p>more</p>"), url="http://site.example/a#top"),
        record(http_response(FRENCH), url="http://fr.example/lac"),
        record(http_response(ARTICLE_ZH), url="http://zh.example/1"),
    ]))
    out = tmp_path / "out"
    assert run(["--input", str(warc), "--output", str(out), "--stages", "extract,exact,langid"]) == 0
    docs, rejects, stats = assert_contract(out)
    reasons = {r["url"]: r["reason"] for r in rejects}
    # the successful, larger copy of the page is the one kept; the 404 never becomes the winner
    assert reasons["https://www.site.example/a"] == "url:duplicate"
    assert reasons["http://site.example/a"] == "url:duplicate"
    assert reasons["http://fr.example/lac"] == "extract:lang-gate"
    assert {d["url"] for d in docs} == {"http://site.example/a#top", "http://zh.example/1"}
    assert stats["stages"]["url"]["in"] == 5 and stats["stages"]["extract"]["in"] == 3
    gate = next(r for r in rejects if r["reason"] == "extract:lang-gate")
    assert gate["detail"]["lang"] == "fr"
    # without the langid stage there is no gate: the French page is extracted
    out2 = tmp_path / "out2"
    assert run(["--input", str(warc), "--output", str(out2), "--stages", "extract,exact"]) == 0
    assert "http://fr.example/lac" in {d["url"] for d in outputs(out2)[0]}
