"""The URL-duplicate pre-pass of ``skypile web``: one read of the corpus, raw records joined
by URL key (no side input of ids), the right copy kept, extraction never sees the others."""

import json
from pathlib import Path

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.portability.api import beam_runner_api_pb2
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline
from apache_beam.testing.util import assert_that, equal_to

import skypile.files.readers
import skypile.pipelines.common
from skypile.files.readers import RawRecord, ReaderOptions, read_file
from skypile.jobs.web import WebConfig
from skypile.pipelines.common import REJECTS, STATS, local_runner
from skypile.pipelines.dedup import UrlDuplicates, _packed, _unpacked, _url_rank
from skypile.pipelines.web import build, run
from warcgen import ARTICLE, gz, http_response, record
from outputs import read_jsonl_gz


# ---- the transform on hand-built raw records ----------------------------------------------

def _raw(rec_id, url, body, status="200 OK", source="t"):
    return RawRecord(rec_id, url, source, "http", http_response(body, status=status))


RAW = [
    _raw("small", "http://site.example/a", ARTICLE),
    _raw("large", "https://www.site.example/a/", ARTICLE + b"<p>more</p>"),
    _raw("failed", "http://site.example/a#top", ARTICLE + b"<p>" + b"pad " * 500 + b"</p>",
         status="404 Not Found"),
    _raw("tie-b", "http://tie.example/", ARTICLE),
    _raw("tie-a", "http://tie.example/", ARTICLE),
    _raw("again", "http://again.example/", ARTICLE),
    _raw("again", "http://again.example/", ARTICLE, source="other file"),  # the same record twice
    RawRecord("no-url", "", "t", "text", "a text without a URL"),
    RawRecord("alone", "http://alone.example/", "t", "text", "the only copy of its URL"),
]


@pytest.mark.parametrize("order", [RAW, RAW[::-1]], ids=["forward", "reversed"])
def test_keeps_the_successful_largest_copy_then_smallest_id(order):
    with BeamTestPipeline(runner=local_runner()) as p:
        out = p | beam.Create(order) | UrlDuplicates()
        assert_that(out["docs"] | beam.Map(lambda r: (r.id, r.source)),
                    equal_to([("large", "t"), ("tie-a", "t"), ("again", "t"),
                              ("again", "other file"), ("no-url", "t"), ("alone", "t")]),
                    label="kept")
        assert_that(out[REJECTS] | beam.Map(lambda r: (r.id, r.stage, r.reason,
                                                        r.detail["kept_id"], r.text)),
                    equal_to([("small", "url", "url:duplicate", "large", ""),
                              ("failed", "url", "url:duplicate", "large", ""),
                              ("tie-b", "url", "url:duplicate", "tie-a", "")]),
                    label="rejects")
        assert_that(out[STATS] | beam.CombinePerKey(sum),
                    equal_to([(("url", "in", ""), 9), (("url", "kept", ""), 6),
                              (("url", "dropped", "url:duplicate"), 3)]), label="stats")


def test_real_pages_cross_the_url_shuffle_packed_and_come_back_whole(data_dir):
    """The shuffle holds every raw page (in the launcher, on the local runner): it carries
    them compressed, ranked without unpacking, and each comes back field for field."""
    warc = sorted((data_dir / "docs-warc").glob("*.warc.gz"))[0]
    records = [r for r in read_file(str(warc), ReaderOptions()) if r.kind == "http"][:200]
    assert len(records) >= 50
    raw = packed = 0
    for rec in records:
        rank, rec_id, blob = _packed(rec)
        assert (rank, rec_id) == (_url_rank(rec), rec.id)  # ranked as before, unpacked
        assert _unpacked(blob) == rec
        raw, packed = raw + len(rec.body), packed + len(blob)
    assert packed * 2 < raw, (raw, packed)  # HTML pages: about 4x smaller


# ---- the whole pipeline: real reader, real extraction ----------------------------------------

@pytest.fixture
def three_warcs(tmp_path):
    """One page under one URL in two WARC files (the second copy larger), a larger failed
    (404) copy of it in a third, and a page of its own."""
    d = tmp_path / "in"
    d.mkdir()
    (d / "a.warc.gz").write_bytes(
        gz(record(http_response(ARTICLE), url="http://site.example/page"))
        + gz(record(http_response(ARTICLE.replace(b"lake", b"river")),
                    url="http://other.example/1")))
    (d / "b.warc.gz").write_bytes(
        gz(record(http_response(ARTICLE + b"<p>One more paragraph about the lake.</p>"),
                  url="https://www.site.example/page/")))
    (d / "c.warc.gz").write_bytes(
        gz(record(http_response(ARTICLE + b"<p>" + b"padding " * 3000 + b"</p>",
                                status="404 Not Found"), url="http://site.example/page#x")))
    return d


def test_same_url_in_two_files_read_once(three_warcs, tmp_path, monkeypatch):
    opened = []
    real = skypile.files.readers.read_file

    def counting(path, *args, **kwargs):
        opened.append(Path(path).name)
        return real(path, *args, **kwargs)

    # every way into the reader is counted (the in-process runner shares this module)
    monkeypatch.setattr(skypile.files.readers, "read_file", counting)
    monkeypatch.setattr(skypile.pipelines.common, "read_file", counting)
    out = tmp_path / "out"
    assert run(["--input", str(three_warcs / "*.warc.gz"), "--output", str(out),
                "--stages", "extract,exact"]) == 0
    assert sorted(opened) == ["a.warc.gz", "b.warc.gz", "c.warc.gz"]  # each file read once

    docs, rejects = read_jsonl_gz(out / "docs"), read_jsonl_gz(out / "rejects")
    stats = json.loads((out / "stats.json").read_text())
    assert stats["files"] == {"read": 3, "unreadable": 0}
    assert sorted(d["url"] for d in docs) == ["http://other.example/1",
                                              "https://www.site.example/page/"]
    kept_id = next(d["id"] for d in docs if "site.example" in d["url"])
    dups = sorted((r["url"], r["reason"], r["detail"]["kept_id"]) for r in rejects)
    assert dups == [("http://site.example/page", "url:duplicate", kept_id),
                    ("http://site.example/page#x", "url:duplicate", kept_id)]
    s = stats["stages"]
    assert list(s)[:3] == ["read", "url", "extract"]
    assert s["url"] == {"in": 4, "kept": 2, "dropped": {"url:duplicate": 2}}
    assert s["extract"]["in"] == 2  # extraction never saw a URL duplicate
    for name, counts in s.items():
        assert counts["in"] == counts["kept"] + sum(counts["dropped"].values()), name


def _side_inputs(proto) -> dict[str, list[str]]:
    """Transform name -> the side inputs of its ParDo, for every ParDo that has any."""
    found = {}
    for t in proto.components.transforms.values():
        if t.spec.urn == "beam:transform:pardo:v1":
            payload = beam_runner_api_pb2.ParDoPayload.FromString(t.spec.payload)
            if payload.side_inputs:
                found[t.unique_name] = sorted(payload.side_inputs)
    return found


def test_graph_has_no_side_input_of_ids_and_one_read(tmp_path):
    cfg = WebConfig(stages=["extract", "exact"])
    p = beam.Pipeline(options=PipelineOptions([]))
    build(p, ["a.warc.gz", "b.warc.gz"], cfg, str(tmp_path / "staging"), {"inputs": []})
    proto = p.to_runner_api()
    # no AsDict / multimap of losing ids: no side input at all, but the empty defaults
    # Beam injects after a global combine (one value each)
    side = _side_inputs(proto)
    assert not [n for n in side if not n.endswith("/InjectDefault")], side
    names = {t.unique_name for t in proto.components.transforms.values()}
    assert {"Read", "Url", "Url/ByUrl", "Url/PickUrl", "Extract"} <= names
    reads = [n for n in names if n.rsplit("/", 1)[-1] in ("Read", "RawUrlKeys", "UrlFirst")]
    assert reads == ["Read"]  # the corpus is read by one transform only
    # without the exact stage's URL check there is no url stage at all
    p2 = beam.Pipeline(options=PipelineOptions([]))
    build(p2, ["a.warc.gz"], WebConfig(stages=["extract", "minhash"]), str(tmp_path / "s2"),
          {"inputs": []})
    assert "Url" not in {t.unique_name for t in p2.to_runner_api().components.transforms.values()}
