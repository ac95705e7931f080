"""The web pipeline's DoFns under a real Beam runner (TestPipeline + assert_that)."""
import ctypes.util
import os

import apache_beam as beam
import pytest
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline
from apache_beam.testing.util import assert_that, equal_to

from skypile.text.extract import ExtractConfig
from skypile.pipelines.common import (REJECTS, STATS, ApplyStage, ReadFile, WriteStats, chain,
                                      local_runner, with_rejects)
from skypile.pipelines.web import make_extractor
from skypile.document import Origin, Reject
from skypile.files.readers import RawRecord, ReaderOptions
from warcgen import ARTICLE, gz, http_response, record


def pipeline():
    return BeamTestPipeline(runner=local_runner())


def test_read_file_splits_records_rejects_and_counts(tmp_path):
    f = tmp_path / "a.warc.gz"
    good = gz(record(http_response(ARTICLE), url="http://a.example/1"))
    req = gz(record(b"GET / HTTP/1.1\r\n\r\n", wtype="request", url="http://a.example/1",
                    content_type="application/http; msgtype=request"))
    cut = gz(record(http_response(ARTICLE), url="http://a.example/2"))
    f.write_bytes(good + req + cut[:-30])
    junk = tmp_path / "junk.warc"
    junk.write_bytes(b"this is not a warc file at all")
    with pipeline() as p:
        out = (p | beam.Create([str(f), str(junk)])
               | beam.ParDo(ReadFile(ReaderOptions(), {})).with_outputs(
                   REJECTS, STATS, main="records"))
        assert_that(out.records | beam.Map(lambda r: r.url), equal_to(["http://a.example/1"]),
                    label="records")
        assert_that(out[REJECTS] | beam.Map(lambda r: (r.url, r.reason)),
                    equal_to([("http://a.example/2", "read:truncated-gzip"),
                              ("", "read:unreadable-file")]), label="rejects")
        counts = out[STATS] | beam.CombinePerKey(sum)
        assert_that(counts, equal_to([
            (("read", "in", ""), 3), (("read", "kept", ""), 1),
            (("read", "dropped", "read:truncated-gzip"), 1),
            (("read", "dropped", "read:unreadable-file"), 1),
            (("read", "skipped", "request"), 1),
            (("files", "read", ""), 1), (("files", "unreadable", ""), 1)]), label="counts")


def test_extract_fn_routes_documents_and_rejects():
    recs = [RawRecord("a", "http://x/a", "t", "http", http_response(ARTICLE)),
            RawRecord("b", "http://x/b", "t", "http", http_response(ARTICLE, status="404 Not Found")),
            RawRecord("c", "http://x/c", "t", "text", "plain text document")]
    with pipeline() as p:
        out = (p | beam.Create(recs)
               | with_rejects(ApplyStage(make_extractor, ExtractConfig(sandbox=False),
                                          stage="extract")))
        assert_that(out.docs | beam.Map(lambda d: d.id), equal_to(["a", "c"]), label="docs")
        assert_that(out[REJECTS] | beam.Map(lambda r: (r.id, r.stage, r.reason)),
                    equal_to([("b", "extract", "extract:http-status")]), label="rejects")


def test_write_stats_sums_and_balances(tmp_path):
    items = [(("extract", "in", ""), 2), (("extract", "kept", ""), 1),
             (("extract", "dropped", "extract:binary"), 1), (("extract", "in", ""), 1),
             (("extract", "kept", ""), 1), (("files", "read", ""), 1)]
    with pipeline() as p:
        out = p | beam.Create(items) | WriteStats(str(tmp_path), ("extract",), {"inputs": []})
        assert_that(out, equal_to([{
            "stages": {"extract": {"in": 3, "kept": 2, "dropped": {"extract:binary": 1}}},
            "files": {"read": 1, "unreadable": 0}, "inputs": []}]))
    assert (tmp_path / "stats.json").exists()


def test_code_filter_keeps_a_document_or_rejects_with_the_reason():
    from skypile.jobs.code import CodeFilter
    from skypile.text.code_filters import CodeFilterConfig

    meta = {"repo": "r", "path": "src/app.py", "language": "Python", "license": "mit"}
    src = "def add(a, b):\n    return a + b\n\n\nprint(add(1, 2))\n"
    kept = CodeFilter(CodeFilterConfig())(RawRecord("a", "", "t", "text", src, dict(meta)))
    assert kept.text == src and kept.metadata["path"] == "src/app.py"
    lock = CodeFilter(CodeFilterConfig())(
        RawRecord("b", "", "t", "text", "{}", {**meta, "path": "package-lock.json"}))
    assert (lock.stage, lock.reason, lock.text) == ("code", "code:lock-file", "{}")
    assert lock.detail == {"repo": "r", "path": "package-lock.json", "language": "Python"}


class _Halve:
    """A toy stage: even numbers kept (halved), odd ones rejected."""

    def __init__(self, stage):
        self.stage = stage

    def __call__(self, n):
        if n % 2:
            return Reject.of(Origin(str(n)), self.stage, "odd", n=n)
        return n // 2


def test_apply_stage_and_chain_gather_rejects_and_counts():
    with pipeline() as p:
        out = chain(p | beam.Create([1, 2, 4, 7]), [
            ("First", with_rejects(ApplyStage(_Halve, "first", stage="first"))),
            ("Plain", beam.Map(lambda n: n * 2)),  # drops nothing: no rejects, no counts
            ("Second", with_rejects(ApplyStage(_Halve, "second", stage="second")))])
        assert_that(out.docs, equal_to([1, 2]), label="docs")
        rejects = out.rejects | "AllRejects" >> beam.Flatten()
        assert_that(rejects | beam.Map(lambda r: (r.id, r.reason, r.detail)),
                    equal_to([("1", "first:odd", {"n": 1}), ("7", "first:odd", {"n": 7})]),
                    label="rejects")
        counts = out.counts | "AllCounts" >> beam.Flatten() | beam.CombinePerKey(sum)
        assert_that(counts, equal_to([
            (("first", "in", ""), 4), (("first", "kept", ""), 2),
            (("first", "dropped", "first:odd"), 2),
            (("second", "in", ""), 2), (("second", "kept", ""), 2)]), label="counts")


def test_workers_get_their_input_in_pieces_and_lose_nothing(tmp_path, monkeypatch):
    """A worker's share of a shuffle (about 16 MB here) reaches it in data messages of
    at most a little over 10 MB, never in one; every value arrives, as in process."""
    from apache_beam.options.pipeline_options import PipelineOptions
    from apache_beam.runners.worker import data_plane

    sent = []  # the size of every data message the launcher sends (flushed or closing)
    stream = data_plane.SizeBasedBufferingClosableOutputStream
    flush, close = stream.flush, stream.close
    monkeypatch.setattr(stream, "flush", lambda self: sent.append(self.size()) or flush(self))
    monkeypatch.setattr(stream, "close", lambda self: sent.append(self.size()) or close(self))

    def big_groups(i):  # nested: the worker processes unpickle it by value
        for j in range(i * 4000, i * 4000 + 4000):
            yield j % 3000, f"{j:08d}" * 250  # 2 kB values, 3,000 keys

    def run(*flags):
        out = tmp_path / f"sums{len(flags)}"
        opts = PipelineOptions(list(flags))
        with beam.Pipeline(runner=local_runner(), options=opts) as p:
            (p | beam.Create(range(8)) | beam.FlatMap(big_groups)
             | beam.GroupByKey()
             | beam.MapTuple(lambda k, vs: f"{k} {len(vs)} {sum(int(v[:8]) for v in vs)}")
             | beam.io.WriteToText(str(out), shard_name_template=""))
        return sorted(out.read_text().splitlines())

    multi = run("--direct_running_mode", "multi_processing", "--direct_num_workers", "2")
    to_workers = list(sent)
    assert multi == run()  # in process: one message in memory, as Beam does it
    assert len(multi) == 3000
    big = [size for size in to_workers if size > (1 << 20)]
    assert len(big) >= 4, to_workers  # each worker's share came in several messages
    assert max(to_workers) < 16 << 20, max(to_workers)


def test_an_input_larger_than_the_data_queues_does_not_deadlock(tmp_path, monkeypatch):
    """The runner sends a bundle's input before it starts the bundle. With the launcher's
    send queues at 256 KiB and messages of 64 KiB, each worker's 8 MB share is far more
    than the queues hold: sent in line, the run would wait forever."""
    import threading

    from apache_beam.options.pipeline_options import PipelineOptions
    from apache_beam.runners.worker import data_plane

    from skypile.pipelines import common

    stream = data_plane.SizeBasedBufferingClosableOutputStream
    monkeypatch.setattr(data_plane, "_DEFAULT_SEND_QUEUE_MAX_BYTES", 256 << 10)
    monkeypatch.setattr(common, "GROUP_PIECE_BYTES", 64 << 10)
    monkeypatch.setattr(stream, "maybe_flush",
                        lambda self: self.flush() if self.size() > (64 << 10) else None)
    out = tmp_path / "counts"

    def run():
        opts = PipelineOptions(["--direct_running_mode", "multi_processing",
                                "--direct_num_workers", "2"])
        with beam.Pipeline(runner=local_runner(), options=opts) as p:
            (p | beam.Create(range(16))
             | beam.FlatMap(lambda i: ((j % 500, "v" * 2000) for j in range(i * 500, i * 500 + 500)))
             | beam.GroupByKey()
             | beam.MapTuple(lambda k, vs: f"{k} {sum(1 for _ in vs)}")
             | beam.io.WriteToText(str(out), shard_name_template=""))

    runner = threading.Thread(target=run, daemon=True)
    runner.start()
    runner.join(timeout=180)
    assert not runner.is_alive(), "the multi-process run hung"
    lines = out.read_text().splitlines()
    assert len(lines) == 500 and all(line.endswith(" 16") for line in lines)


def test_each_worker_process_gives_freed_memory_back(monkeypatch):
    """A stage's first bundle in a worker process starts the one trimming thread there
    (glibc's malloc; a worker that preloads jemalloc needs none)."""
    import threading

    monkeypatch.delenv("LD_PRELOAD", raising=False)
    monkeypatch.setenv("SKYPILE_WORKER_MALLOC", "glibc")

    from apache_beam.options.pipeline_options import PipelineOptions

    from skypile.pipelines.common import StageFn

    class Threads(StageFn):
        def process(self, _):
            yield os.getpid(), sorted(t.name for t in threading.enumerate()
                                      if t.name == "skypile-trim")

    opts = PipelineOptions(["--direct_running_mode", "multi_processing",
                            "--direct_num_workers", "2"])
    with beam.Pipeline(runner=local_runner(), options=opts) as p:
        seen = (p | beam.Create(range(40)) | beam.Reshuffle() | beam.ParDo(Threads()))
        assert_that(seen | beam.Map(lambda pid_names: pid_names[1]),
                    equal_to([["skypile-trim"]] * 40))
        assert_that(seen | "Pids" >> beam.Map(lambda pid_names: pid_names[0])
                    | beam.Distinct() | beam.Filter(lambda pid, me=os.getpid(): pid == me),
                    equal_to([]), label="NotTheLauncher")


def _on_two_workers(probe, expected):
    """``probe`` (a function of a dummy element, yielding one value) gives ``expected`` for
    each of 20 elements spread over two worker processes. Define ``probe`` inside the
    caller, so that it is pickled by value for the workers."""
    from apache_beam.options.pipeline_options import PipelineOptions

    opts = PipelineOptions(["--direct_running_mode", "multi_processing",
                            "--direct_num_workers", "2"])
    with beam.Pipeline(runner=local_runner(), options=opts) as p:
        seen = p | beam.Create(range(20)) | beam.Reshuffle() | beam.FlatMap(probe)
        assert_that(seen, equal_to([expected] * 20))


def _run_on_two_workers(expected):
    """Every element's worker process has ``expected`` = (jemalloc mapped in the process,
    LD_PRELOAD set in its environment)."""
    def mapped(_):
        with open("/proc/self/maps") as fh:
            yield "libjemalloc" in fh.read(), bool(os.environ.get("LD_PRELOAD"))

    _on_two_workers(mapped, expected)


@pytest.mark.skipif(not ctypes.util.find_library("jemalloc"),
                    reason="libjemalloc2 is not installed (make installs it)")
def test_worker_processes_preload_jemalloc_the_launcher_keeps_its_own(monkeypatch):
    """The local runner's worker processes start with jemalloc (a lower, flatter peak than
    glibc's on web-like documents: BENCHMARKS.md); the launcher's environment is left
    alone."""
    monkeypatch.delenv("LD_PRELOAD", raising=False)
    monkeypatch.delenv("SKYPILE_WORKER_MALLOC", raising=False)
    _run_on_two_workers((True, True))
    assert "LD_PRELOAD" not in os.environ


def _workers_see_jemalloc_options(expected):
    """Every worker process reads ``expected`` = jemalloc's (``opt.dirty_decay_ms``,
    ``opt.background_thread``)."""
    def read(_):
        import ctypes as c

        mallctl = c.CDLL(None).mallctl
        decay, on = c.c_ssize_t(0), c.c_bool(False)
        for name, value in ((b"opt.dirty_decay_ms", decay), (b"opt.background_thread", on)):
            size = c.c_size_t(c.sizeof(value))
            assert mallctl(name, c.byref(value), c.byref(size), None, 0) == 0, name
        yield decay.value, on.value

    _on_two_workers(read, expected)


@pytest.mark.skipif(not ctypes.util.find_library("jemalloc"),
                    reason="libjemalloc2 is not installed (make installs it)")
def test_worker_jemalloc_returns_freed_pages_soon_unless_told_otherwise(monkeypatch):
    """Workers that preload jemalloc run it with a background thread and a one-second
    decay (jemalloc's own: ten seconds, no thread); a MALLOC_CONF the user set is kept."""
    monkeypatch.delenv("LD_PRELOAD", raising=False)
    monkeypatch.delenv("SKYPILE_WORKER_MALLOC", raising=False)
    monkeypatch.delenv("MALLOC_CONF", raising=False)
    _workers_see_jemalloc_options((1000, True))
    monkeypatch.setenv("MALLOC_CONF", "dirty_decay_ms:5000")
    _workers_see_jemalloc_options((5000, False))


def test_worker_malloc_glibc_preloads_nothing(monkeypatch):
    monkeypatch.delenv("LD_PRELOAD", raising=False)
    monkeypatch.setenv("SKYPILE_WORKER_MALLOC", "glibc")
    _run_on_two_workers((False, False))


def test_worker_processes_hold_small_data_queues_and_pass_larger_messages(monkeypatch):
    """The local runner's worker processes start through ``skypile.pipelines.worker``:
    each data-channel queue there holds ``SKYPILE_WORKER_QUEUE_MB`` (Beam's own: 100 MB
    each), and a message larger than the queue still passes, whole."""
    from apache_beam.options.pipeline_options import PipelineOptions

    monkeypatch.setenv("SKYPILE_WORKER_QUEUE_MB", "1")
    monkeypatch.setenv("SKYPILE_WORKER_MALLOC", "glibc")

    def limits(_):  # the data channels this worker process made, found in its heap
        import gc

        from apache_beam.runners.worker import data_plane

        channels = [o for o in gc.get_objects() if isinstance(o, data_plane._GrpcDataChannel)]
        yield os.getpid() != launcher, sorted({q.max_bytes for c in channels
                                              for q in (c._to_send, c._pending_send)})

    launcher = os.getpid()
    opts = PipelineOptions(["--direct_running_mode", "multi_processing",
                            "--direct_num_workers", "2"])
    with beam.Pipeline(runner=local_runner(), options=opts) as p:
        big = (p | beam.Create(range(24)) | beam.Reshuffle()
               | beam.Map(lambda i: (i % 3, bytes([i]) * (3 << 20))))  # 3 MB each
        sizes = (big | beam.GroupByKey()
                 | beam.MapTuple(lambda k, vs: (k, sorted((v[0], len(v)) for v in vs))))
        assert_that(sizes, equal_to([(k, [(i, 3 << 20) for i in range(k, 24, 3)])
                                     for k in range(3)]), label="whole")
        seen = p | "Few" >> beam.Create(range(8)) | "Spread" >> beam.Reshuffle() \
            | beam.FlatMap(limits)
        assert_that(seen, equal_to([(True, [1 << 20])] * 8), label="limits")


def test_worker_processes_let_go_of_a_finished_stages_output_buffer(monkeypatch):
    """A bundle's output buffer (Beam keeps it, closed, in the worker's cached processor of
    that stage) is dropped when the bundle ends: a later stage's worker holds none of the
    6 MB an earlier stage sent."""
    from apache_beam.options.pipeline_options import PipelineOptions

    monkeypatch.setenv("SKYPILE_WORKER_MALLOC", "glibc")

    def held(_):  # bytes in the closed output buffers of this worker's earlier stages
        import gc

        from apache_beam.runners.worker.bundle_processor import DataOutputOperation

        yield sum(len(op.output_stream.get()) for op in gc.get_objects()
                  if isinstance(op, DataOutputOperation)
                  and getattr(op, "output_stream", None) is not None)

    opts = PipelineOptions(["--direct_running_mode", "multi_processing",
                            "--direct_num_workers", "2"])
    with beam.Pipeline(runner=local_runner(), options=opts) as p:
        sent = (p | beam.Create(range(24)) | "Spread" >> beam.Reshuffle()
                | beam.Map(lambda i: (i % 4, bytes([i]) * (256 << 10))))  # 6 MB in all
        sizes = (sent | beam.GroupByKey()
                 | beam.MapTuple(lambda k, vs: sum(len(v) for v in vs)))
        assert_that(sizes, equal_to([6 * (256 << 10)] * 4), label="whole")
        after = sizes | "Again" >> beam.Reshuffle() | beam.FlatMap(held)
        assert_that(after | beam.Filter(lambda b: b > 64 << 10), equal_to([]), label="held")


def test_worker_queue_setting(monkeypatch):
    from skypile.pipelines import worker

    for raw, want in (("", 16 << 20), ("4", 4 << 20), ("0.5", 1 << 19), ("0", 16 << 20),
                      ("-2", 16 << 20), ("lots", 16 << 20), ("nan", 16 << 20),
                      ("inf", 16 << 20)):
        monkeypatch.setenv("SKYPILE_WORKER_QUEUE_MB", raw)
        assert worker.queue_bytes() == want, raw
