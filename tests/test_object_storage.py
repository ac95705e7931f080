"""Reading WARCs from and writing the output contract to S3 (moto's server on 127.0.0.1)."""

import gzip
import json

import apache_beam as beam
import fsspec
import pytest

from skypile.document import Document
from skypile.files.output import discard, expand_inputs, new_staging
from skypile.pipelines.common import WriteJsonl, run_pipeline
from skypile.pipelines.web import run
from s3server import moto_s3
from warcgen import ARTICLE, gz, http_response, record

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def s3():
    """The server, with bucket ``versioned`` keeping every version of every key: all that
    was ever written there stays listed, deleted or overwritten."""
    with moto_s3("corpus", "versioned") as (client, options):
        client.put_bucket_versioning(Bucket="versioned",
                                     VersioningConfiguration={"Status": "Enabled"})
        yield client, options


@pytest.fixture(scope="module")
def s3_server(s3):
    return s3[1]


def test_web_pipeline_reads_and_writes_s3(s3_server, tmp_path):
    fs = fsspec.filesystem("s3", **s3_server)
    with fs.open("corpus/crawl/a.warc.gz", "wb") as f:
        f.write(gz(record(http_response(ARTICLE), url="http://s3.example/1"))
                + gz(record(http_response(ARTICLE, status="404 Not Found"), url="http://s3.example/2")))
    cfg = tmp_path / "web.json"
    cfg.write_text(json.dumps({"storage_options": s3_server}))
    rc = run(["--input", "s3://corpus/crawl/*.warc.gz", "--output", "s3://corpus/out",
              "--config", str(cfg)])
    assert rc == 0
    stats = json.loads(fs.cat("corpus/out/stats.json"))
    assert stats["stages"]["extract"] == {"in": 2, "kept": 1,
                                          "dropped": {"extract:http-status": 1}}
    [docs_file] = fs.glob("corpus/out/docs/*.jsonl.gz")
    [doc] = [json.loads(line) for line in gzip.decompress(fs.cat(docs_file)).splitlines()]
    assert doc["url"] == "http://s3.example/1" and "shore of the lake" in doc["text"]
    assert not fs.glob("corpus/out/_runs/*")
    marker = json.loads(fs.cat("corpus/out/_SUCCESS.json"))
    assert [f"corpus/out/docs/{e['name']}" for e in marker["files"]["docs"]["files"]] == [docs_file]


def _warc(fs, key: str, tag: str, pages: int) -> str:
    with fs.open(key, "wb") as f:
        for i in range(pages):
            f.write(gz(record(http_response(ARTICLE), url=f"http://{tag}.example/{i}")))
        f.write(gz(record(http_response(ARTICLE, status="404 Not Found"),
                          url=f"http://{tag}.example/missing")))
    return f"s3://{key}"


def _history(client) -> tuple[list[dict], list[dict]]:
    """Every version ever written under versioned/out/, and every delete marker."""
    pages = client.get_paginator("list_object_versions").paginate(Bucket="versioned",
                                                                    Prefix="out/")
    versions, deletes = [], []
    for page in pages:
        versions += page.get("Versions", [])
        deletes += page.get("DeleteMarkers", [])
    return versions, deletes


def _data_keys(client) -> list[str]:
    """The data files under versioned/out now, as the server lists them."""
    return sorted(o["Key"] for kind in ("docs", "rejects") for o in client.list_objects_v2(
        Bucket="versioned", Prefix=f"out/{kind}/").get("Contents", []))


def test_publish_on_s3_writes_each_data_byte_once(s3, tmp_path):
    """Bucket versioning keeps every object ever put, copied or deleted: each published
    data file must have been written once, under its final key, and never copied; the
    previous run's files are deleted, not moved; until the marker, readers get the
    previous run."""
    client, options = s3
    fs = fsspec.filesystem("s3", **options)
    cfg = tmp_path / "web.json"
    cfg.write_text(json.dumps({"storage_options": options}))

    def web(inp: str) -> None:
        assert run(["--input", inp, "--output", "s3://versioned/out", "--stages", "extract",
                    "--config", str(cfg)]) == 0

    def readable() -> tuple[dict, list[str]]:
        return (json.loads(fs.cat("versioned/out/_SUCCESS.json")),
                expand_inputs(["s3://versioned/out/docs"], options))

    web(_warc(fs, "versioned/in/a.warc.gz", "a", 3))
    first_keys, first = _data_keys(client), readable()
    # a run that writes its docs, then fails: readers get the first run all along
    staging = new_staging("s3://versioned/out")
    run_pipeline([], lambda p: (p | beam.Create([Document(id=f"x{i}", text="x", url="u")
                                                 for i in range(4)])
                                | WriteJsonl(staging, "docs", options)))
    assert len(_data_keys(client)) > len(first_keys) and readable() == first
    discard(staging, options)
    assert _data_keys(client) == first_keys and readable() == first
    web(_warc(fs, "versioned/in/b.warc.gz", "b", 2))
    marker, docs = readable()
    assert marker["run"] != first[0]["run"]
    assert sorted(json.loads(line)["url"] for f in docs
                  for line in gzip.decompress(fs.cat(f)).splitlines()) == \
        ["http://b.example/0", "http://b.example/1"]
    versions, deletes = _history(client)
    etags: dict[str, int] = {}
    for v in versions:
        etags[v["ETag"]] = etags.get(v["ETag"], 0) + 1
    data = _data_keys(client)
    assert data and all(marker["run"] in key for key in data)
    for key in data:  # one version: written once, never overwritten...
        [v] = [v for v in versions if v["Key"] == key]
        assert etags[v["ETag"]] == 1, key  # ... and its bytes were never put anywhere else
    deleted = {d["Key"] for d in deletes}
    for key in first_keys:  # the first run's files: deleted, never moved or copied
        [v] = [v for v in versions if v["Key"] == key]
        assert key in deleted and etags[v["ETag"]] == 1, key
    assert client.list_objects_v2(Bucket="versioned", Prefix="out/_runs/")["KeyCount"] == 0
