"""Publishing a run: data files written once under their final names, the marker last,
every step safe to repeat, and the previous output readable until the marker names the
new run (object storage: tests/test_object_storage.py)."""

import gzip
import json
import re
from pathlib import Path

import apache_beam as beam
import pytest

from skypile.document import Document
from skypile.files import output
from skypile.jobs.web import WebConfig
from skypile.pipelines.common import WriteJsonl, _WriteBundleFiles, run_command, run_pipeline
from skypile.pipelines.web import make_parser, run
from warcgen import ARTICLE, gz, http_response, record

pytestmark = pytest.mark.integration

PART = re.compile(r"part-([0-9a-f]{12})-[0-9a-f]{32}\.jsonl\.gz")


def warc(path: Path, tag: str, pages: int) -> Path:
    """``pages`` article pages at http://<tag>.example/<i>, then one 404 (a reject)."""
    members = [record(http_response(ARTICLE), url=f"http://{tag}.example/{i}")
               for i in range(pages)]
    members.append(record(http_response(ARTICLE, status="404 Not Found"),
                          url=f"http://{tag}.example/missing"))
    path.write_bytes(b"".join(gz(m) for m in members))
    return path


def snapshot(out: Path) -> dict[str, bytes]:
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*"))
            if p.is_file()}


def urls(files: list[str]) -> list[str]:
    rows = []
    for f in files:
        with gzip.open(f, "rt", encoding="utf-8") as fh:
            rows += [json.loads(line)["url"] for line in fh]
    return sorted(rows)


def published(out: Path) -> tuple[dict, list[str]]:
    """The marker, and the docs a reader of ``out/docs`` gets."""
    return output.read_marker(str(out)), output.expand_inputs([str(out / "docs")])


def web(inp: Path, out: Path) -> None:
    assert run(["--input", str(inp), "--output", str(out), "--stages", "extract"]) == 0


def test_run_writes_final_names_and_the_marker(tmp_path):
    out = tmp_path / "out"
    web(warc(tmp_path / "a.warc.gz", "a", 3), out)
    marker, docs = published(out)
    run_id = marker["run"]
    files = snapshot(out)
    data = sorted(f for f in files if f.split("/")[0] in output.DATA)
    # every data file carries the run id, sits in its final folder, and the marker lists it
    assert data and all(PART.fullmatch(f.split("/")[1])[1] == run_id for f in data)
    assert sorted(f"{k}/{e['name']}" for k, v in marker["files"].items()
                  for e in v["files"]) == data
    assert marker["files"]["docs"]["records"] == 3 and marker["files"]["rejects"]["records"] == 1
    assert marker["files"]["other"] == {"records": 0, "files": []}
    assert set(marker["small"]) == {"stats.json", "config.json"}
    # no run folder, no temporary, nothing else is left
    assert set(files) == set(data) | {"stats.json", "config.json", output.MARKER}
    assert urls(docs) == [f"http://a.example/{i}" for i in range(3)]


def test_rerun_replaces_the_previous_output(tmp_path):
    out = tmp_path / "out"
    web(warc(tmp_path / "a.warc.gz", "a", 3), out)
    first = snapshot(out)
    (out / "docs" / "part-00000.jsonl.gz").write_bytes(gzip.compress(b'{"id": "old layout"}\n'))
    (out / "reports").mkdir()
    (out / "reports" / "semantic_clusters.json").write_text("{}")
    web(warc(tmp_path / "b.warc.gz", "b", 2), out)
    marker, docs = published(out)
    assert urls(docs) == ["http://b.example/0", "http://b.example/1"]
    now = snapshot(out)
    # no file of the first run, of the older layout, or a report this run did not write
    assert not set(now) & (set(first) - {"stats.json", "config.json", output.MARKER})
    assert not any(f.startswith(("reports", "docs/part-00000")) for f in now)
    assert all(PART.fullmatch(f.split("/")[1])[1] == marker["run"] for f in now if "/" in f)


def _docs(tag: str, n: int) -> list[Document]:
    return [Document(id=f"{tag}{i}", text=f"text {i}", url=f"http://{tag}.example/{i}",
                     source="test") for i in range(n)]


def test_previous_output_stays_readable_until_the_marker(tmp_path):
    out = tmp_path / "out"
    web(warc(tmp_path / "a.warc.gz", "a", 3), out)
    before = snapshot(out)
    marker_a, docs_a = published(out)
    # a second run, up to the end of its pipeline: its files are in docs/ already
    staging = output.new_staging(str(out))
    run_pipeline([], lambda p: (p | beam.Create(_docs("b", 5))
                                | WriteJsonl(staging, "docs", {})))
    output.write_json(output.join(staging, "stats.json"), {"run": "b"})
    new_files = sorted(set(snapshot(out)) - set(before))
    assert any(f.startswith("docs/part-") for f in new_files)
    # ... and a reader still gets the first run, whole, and only it
    assert published(out) == (marker_a, docs_a)
    assert urls(docs_a) == [f"http://a.example/{i}" for i in range(3)]
    assert {f: b for f, b in snapshot(out).items() if f in before} == before
    output.commit(staging, str(out))
    marker_b, docs_b = published(out)
    assert marker_b["run"] == output.run_of(staging)[1] != marker_a["run"]
    assert urls(docs_b) == [f"http://b.example/{i}" for i in range(5)]
    assert json.loads((out / "stats.json").read_text()) == {"run": "b"}
    assert not (out / "rejects").exists() and not (out / "config.json").exists()


def _fail(listing: dict):
    raise RuntimeError(f"boom after writing {len(listing['files'])} docs files")


def test_failed_run_leaves_the_previous_output_unchanged(tmp_path):
    out = tmp_path / "out"
    inp = warc(tmp_path / "a.warc.gz", "a", 3)
    web(inp, out)
    before, paths = snapshot(out), sorted(out.rglob("*"))

    def build(p, _args, _files, _cfg, staging):
        written = p | beam.Create(_docs("b", 4)) | WriteJsonl(staging, "docs", {})
        written | beam.Map(_fail)  # fails once the run's docs are written and listed

    with pytest.raises(Exception, match="boom after writing 1 docs files"):
        run_command(["--input", str(inp), "--output", str(out)], WebConfig, build,
                    parser=make_parser())
    assert snapshot(out) == before  # the failed run's own files are gone, too
    assert sorted(out.rglob("*")) == paths  # and so are the folders it made


def _bundle_files(staging: str, folder: Path) -> list[tuple[str, int]]:
    """What WriteBundles reports: one bundle fails after writing (its worker goes on with
    the next bundle), a retry and a second bundle commit."""
    fn = _WriteBundleFiles(staging, "docs", {})
    fn.setup()
    fn.start_bundle()
    fn.process("a line of a bundle that fails")
    run_id = output.run_of(staging)[1]
    failed = [p.name for p in folder.iterdir() if run_id in p.name]
    assert len(failed) == 1 and failed[0].startswith(".part-")  # a hidden temporary
    reported = []
    for lines in (["one", "two"], ["three"]):
        fn.start_bundle()  # drops the failed bundle's file
        for line in lines:
            fn.process(line)
        reported += [w.value for w in fn.finish_bundle()]
    fn.teardown()
    return reported


def test_publish_step_retried_gives_the_same_result(tmp_path):
    out = tmp_path / "out"
    staging = output.new_staging(str(out))
    run_id = output.run_of(staging)[1]
    folder = out / "docs"
    folder.mkdir(parents=True)
    other = folder / "part-0123456789ab-0123456789abcdef0123456789abcdef.jsonl.gz"
    other.write_bytes(b"another run's file")
    files = _bundle_files(staging, folder)
    assert [n for _f, n in files] == [2, 1]
    # a bundle that finished its file but failed to commit: written, never reported
    stray = folder / output.part_name(run_id)
    stray.write_bytes(gzip.compress(b'{"id": "retried"}\n'))
    listing = output.publish_files(staging, "docs", files)
    first = snapshot(out)
    assert output.publish_files(staging, "docs", files) == listing  # the retry
    assert snapshot(out) == first
    assert sorted(p.name for p in folder.iterdir()) == sorted([other.name] + [f for f, _ in files])
    assert listing == {"kind": "docs", "run": run_id, "records": 3,
                       "files": [{"name": f, "records": n} for f, n in sorted(files)]}


def test_commit_retried_at_any_point_gives_the_same_output(tmp_path):
    out = tmp_path / "out"
    web(warc(tmp_path / "a.warc.gz", "a", 3), out)
    old = snapshot(out)

    def prepared() -> str:
        staging = output.new_staging(str(out))
        run_pipeline([], lambda p: (p | beam.Create(_docs("b", 3))
                                    | WriteJsonl(staging, "docs", {})))
        output.write_json(output.join(staging, "stats.json"), {"run": "b"})
        output.write_json(output.join(staging, "reports", "formats.json"), {"x": 1})
        return staging

    staging = prepared()
    marker = output.commit(staging, str(out))
    done = snapshot(out)
    assert output.commit(staging, str(out)) == marker and snapshot(out) == done
    output.discard(staging)  # a published run is the output: discarding it does nothing
    assert snapshot(out) == done
    assert not set(done) & (set(old) - {"stats.json", output.MARKER})
    # a launcher that died after the marker, before the cleanup: the commit is run again
    staging = prepared()
    fs, out_path = output.fs_and_path(str(out))
    marker = output._write_marker(fs, out_path, output.fs_and_path(staging)[1],
                                  output.run_of(staging)[1], output.CONTRACT)
    assert output.expand_inputs([str(out / "docs")]) == [
        str(out / "docs" / e["name"]) for e in marker["files"]["docs"]["files"]]
    assert output.commit(staging, str(out)) == marker
    assert sorted(p.name for p in (out / "docs").iterdir()) == [
        e["name"] for e in marker["files"]["docs"]["files"]]
    assert not (out / "_runs").exists()


def test_a_file_written_in_a_failed_block_never_appears(tmp_path):
    url = str(tmp_path / "d" / "x.json")
    with pytest.raises(ValueError):
        with output.open_final(url) as f:
            f.write(b"half")
            raise ValueError("writer died")
    assert list((tmp_path / "d").iterdir()) == []
    output.write_json(url, {"a": 1})
    assert json.loads(Path(url).read_text()) == {"a": 1}
    assert [p.name for p in (tmp_path / "d").iterdir()] == ["x.json"]
