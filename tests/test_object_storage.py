"""Reading WARCs from and writing the output contract to S3 (moto's server on 127.0.0.1)."""

import gzip
import json

import fsspec
import pytest

from skypile.pipelines.web import run
from s3server import moto_s3
from warcgen import ARTICLE, gz, http_response, record

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def s3_server():
    with moto_s3("corpus") as (_client, options):
        yield options


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
    assert not fs.glob("corpus/out/_staging-*")
