"""Beam plumbing shared by every pipeline: runner choice, the output contract, stats, and
the one skeleton the commands share.

The DoFns here are thin: the work happens in ``skypile`` functions they wrap. A core
stage is a callable from a record to what it keeps or a :class:`Reject`;
:class:`ApplyStage` runs one (built once per worker), :func:`chain` runs a list of stages
and gathers their rejects and counts, and :func:`run_command` is what ``skypile web``,
``dedup``, ``code`` and ``tokenize`` each do around their pipeline.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import gzip
import logging
import os
import posixpath
import re
import shlex
import sys
import threading
import time
from typing import Any, Callable, NamedTuple

import apache_beam as beam
from apache_beam import pvalue
from apache_beam.metrics import Metrics
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.transforms.window import GlobalWindow
from apache_beam.utils.timestamp import MIN_TIMESTAMP
from apache_beam.utils.windowed_value import WindowedValue

from skypile import config as cfglib
from skypile import stats
from skypile.config import split_overrides
from skypile.document import Document, Reject
from skypile.files import output
from skypile.files.readers import (FileRange, RawRecord, ReaderOptions, ReadStats,
                                   UnreadableFile, file_reject, line_ranges, read_file)
from skypile.version import code_version, launch_command

LOG = logging.getLogger("skypile")
NAMESPACE = "skypile"
REJECTS = "rejects"
STATS = "stats"

_DIRECT_NAMES = {None, "", "directrunner", "direct", "switchingdirectrunner", "fnapirunner"}


def local_runner():
    """Beam's batch engine for the DirectRunner (the FnApiRunner), used directly.

    Beam 2.77's DirectRunner first tries the Prism runner, which downloads a binary at run
    time; calling its FnApiRunner ourselves keeps runs offline. In-process and
    ``--direct_running_mode multi_processing`` both work through it.

    Its data channel to worker processes flushes by size only: with the default time
    limit (1 s), a flusher thread copies the send buffer and clears it after the send,
    while the main thread may append to it without that thread's lock; what it appends
    in between is lost without an error (seen: 2,548 of 501,091 documents missing from
    a multi-process tokenize run, stats counting all of them). Size-based flushing has
    no second thread. A batch pipeline loses nothing by it: every stream is flushed when
    it closes.
    """
    from apache_beam.runners.portability.fn_api_runner import fn_runner, worker_handlers

    worker_handlers.DATA_BUFFER_TIME_LIMIT_MS = 0  # read when the runner starts its server
    _stream_bundle_inputs()
    _worker_processes()
    return fn_runner.FnApiRunner()


JEMALLOC = "libjemalloc.so.2"
# jemalloc's settings in the workers (a MALLOC_CONF already set is kept): a background
# thread gives freed pages back to the system after about a second instead of ten, so
# a worker's resident memory follows what it holds (web at 5,000 pages: worker peak 0.59
# GiB against 0.67, the same time; BENCHMARKS.md).
JEMALLOC_CONF = "background_thread:true,dirty_decay_ms:1000,muzzy_decay_ms:0"


def worker_allocator() -> str | None:
    """The allocator library the local runner's worker processes preload, or None (glibc's
    malloc): ``SKYPILE_WORKER_MALLOC`` = ``auto`` (the default: jemalloc where the machine
    has it, e.g. Debian's ``libjemalloc2``), ``jemalloc`` (the same, with a warning when
    it is missing), ``glibc`` (none), or a library path. A ``LD_PRELOAD`` already set is
    left as it is.

    Why: on web's dedup stages without extraction, a worker's peak with glibc grew 1.32x
    from 25k to 100k documents (heap pages that ``malloc_trim`` cannot return), with
    jemalloc 1.11x, from a lower start (BENCHMARKS.md, "Corpus scale on one machine"; the
    full web run still grows: see there)."""
    choice = os.environ.get("SKYPILE_WORKER_MALLOC", "auto").strip() or "auto"
    if os.environ.get("LD_PRELOAD") or choice == "glibc":
        return None
    if choice not in ("auto", "jemalloc"):  # a library path
        if os.path.isfile(choice):
            return choice
        LOG.warning("SKYPILE_WORKER_MALLOC=%r is not auto, jemalloc, glibc or a library "
                    "file; workers use glibc's malloc", choice)
        return None
    import ctypes.util

    if ctypes.util.find_library("jemalloc"):
        return JEMALLOC
    if choice == "jemalloc":
        LOG.warning("SKYPILE_WORKER_MALLOC=jemalloc, but %s is not installed (Debian: "
                    "apt-get install libjemalloc2); workers use glibc's malloc", JEMALLOC)
    return None


BEAM_WORKER = "-m apache_beam.runners.worker.sdk_worker_main"
SKYPILE_WORKER = "-m skypile.pipelines.worker"


def _worker_processes() -> None:
    """Worker processes of ``--direct_running_mode multi_processing`` start through
    :mod:`skypile.pipelines.worker` (Beam's harness with smaller data-channel queues),
    with :func:`worker_allocator`'s library preloaded (their command line only: the
    launching process and its other children keep their environment)."""
    from apache_beam.runners.portability import local_job_service

    cls = local_job_service.SubprocessSdkWorker
    if getattr(cls.__init__, "_skypile", False):
        return
    beams_init = cls.__init__

    def __init__(self, worker_command_line, *args, **kwargs):
        beams_init(self, worker_command_line, *args, **kwargs)
        command = self._worker_command_line
        if command.endswith(BEAM_WORKER):  # the local runner's own command, not a user's
            command = command[:-len(BEAM_WORKER)] + SKYPILE_WORKER
        lib = worker_allocator()
        if lib:
            command = f"LD_PRELOAD={shlex.quote(lib)} {command}"
            if lib == JEMALLOC and not os.environ.get("MALLOC_CONF"):
                command = f"MALLOC_CONF={JEMALLOC_CONF} {command}"
        self._worker_command_line = command

    __init__._skypile = True
    cls.__init__ = __init__


GROUP_PIECE_BYTES = 4 << 20


def _stream_bundle_inputs() -> None:
    """Send each worker its bundle's input in messages of about 10 MB, not in one.

    The FnApiRunner gives each worker 1/N of a stage's input as one bundle. Beam 2.77
    writes that input to the worker's data stream without flushing in between, so the
    whole share leaves as ONE message on close, and the worker holds it all while the
    stage runs (a 200 MiB block per worker at 100k documents in ``benchmarks/scale.py``,
    49 MiB at 25k). Here each piece is followed by the stream's own size check (it
    flushes past 10 MB; pieces end on element boundaries), and a shuffle's output is
    encoded in pieces of about ``GROUP_PIECE_BYTES`` instead of one byte string per
    worker, so the worker's bounded receive queue holds a few messages at a time. The
    keys each worker gets, and their order, are Beam's own (key i of the table to worker
    i mod n). Only the global window (every SkyPile pipeline is batch) is handled here;
    other windowing keeps Beam's code. The input goes from a thread of its own (see
    ``send_input``): without it, an input larger than the data queues deadlocks.
    """
    from apache_beam.runners.portability.fn_api_runner import execution, fn_runner

    manager, grouping = fn_runner.BundleManager, execution.GroupingBuffer
    if getattr(manager._send_input_to_worker, "_skypile", False):
        return
    grouping.partition = _partition_in_pieces(grouping.partition)
    manager._send_input_to_worker = _input_sender(manager._send_input_to_worker)


def _input_sender(beams_send):
    """``BundleManager._send_input_to_worker`` for a worker process: a flush check after
    each piece, from a thread of its own. The in-process worker keeps ``beams_send``."""
    from apache_beam.runners.worker import data_plane

    senders: dict[str, threading.Thread] = {}  # the last sender thread of each bundle
    senders_lock = threading.Lock()

    def send_input(self, process_bundle_id: str, read_transform_id: str, pieces) -> None:
        # The runner sends a bundle's input BEFORE it asks the worker to start the bundle,
        # and the data queues on both sides are bounded: sent in messages, an input larger
        # than those queues would wait forever for a worker that has not started. So a
        # thread sends it to a worker process while the runner starts the bundle and
        # reads its output; the inputs of one bundle still go one after the other, in the
        # runner's order. The in-process worker runs the bundle when asked and reads only
        # what is there by then: its input goes in line, as Beam sends it (in memory).
        conn = self._worker_handler.data_conn
        if not isinstance(conn, data_plane._GrpcDataChannel):
            return beams_send(self, process_bundle_id, read_transform_id, pieces)
        stream = conn.output_stream(process_bundle_id, read_transform_id)

        def send(before: threading.Thread | None) -> None:
            if before is not None:
                before.join()
            for piece in pieces or ():
                stream.write(piece)
                stream.maybe_flush()
            stream.close()
            with senders_lock:
                if senders.get(process_bundle_id) is threading.current_thread():
                    del senders[process_bundle_id]

        with senders_lock:
            thread = threading.Thread(target=send, args=(senders.get(process_bundle_id),),
                                      name=f"send-{process_bundle_id}", daemon=True)
            senders[process_bundle_id] = thread
            thread.start()

    send_input._skypile = True
    return send_input


def _partition_in_pieces(beams_partition):
    """``GroupingBuffer.partition`` that encodes each worker's share in pieces of about
    ``GROUP_PIECE_BYTES`` (global window; other windowing keeps ``beams_partition``)."""
    from apache_beam.coders.coder_impl import create_OutputStream
    from apache_beam.transforms.window import GlobalWindow, GlobalWindows
    from apache_beam.utils.windowed_value import PaneInfo, PaneInfoTiming

    def partition(self, n: int) -> list[list[bytes]]:
        if self._grouped_output or not self._windowing.is_default():
            return beams_partition(self, n)
        encode = self._post_grouped_coder.get_impl().encode_to_stream
        decode_key = self._key_coder.get_impl().decode
        end_of_window = GlobalWindow().max_timestamp()
        only_pane = PaneInfo(is_first=True, is_last=True, timing=PaneInfoTiming.ON_TIME,
                             index=0, nonspeculative_index=0)
        pieces: list[list[bytes]] = [[] for _ in range(n)]
        streams = [create_OutputStream() for _ in range(n)]
        for i, (key, values) in enumerate(self._table.items()):
            w = i % n
            group = GlobalWindows.windowed_value((decode_key(key), values), end_of_window,
                                                 only_pane)
            encode(group, streams[w], True)
            if streams[w].size() >= GROUP_PIECE_BYTES:
                pieces[w].append(streams[w].get())
                streams[w] = create_OutputStream()
        for w, stream in enumerate(streams):
            if stream.size() or not pieces[w]:
                pieces[w].append(stream.get())
        self._grouped_output = pieces
        self._table.clear()
        return pieces

    return partition


def runner_for(options: PipelineOptions):
    name = options.view_as(StandardOptions).runner
    if (name or "").lower() in _DIRECT_NAMES:
        return local_runner()
    return None  # Dataflow, Flink, Spark...: Beam resolves the name itself


@contextlib.contextmanager
def staged(out: str, storage_options: dict):
    """A fresh run folder for ``out`` (OUTPUT/_runs/<run>); the block commits it. If the
    block fails first, the run's own files go and the previous output stays as it was."""
    staging = output.new_staging(out)
    try:
        yield staging
    except BaseException:
        output.discard(staging, storage_options)
        raise


def _asks_dry_run(options: PipelineOptions) -> bool:
    """Whether the Beam flags say ``--dry_run=True`` (Beam keeps the flag as a string)."""
    from apache_beam.options.pipeline_options import TestOptions

    flag = options.view_as(TestOptions).dry_run
    return str(flag).strip().lower() not in ("", "0", "false", "no", "none")


def check_beam_options(beam_args: list[str]) -> None:
    """Beam's own checks of its flags for the runner they name (Dataflow: a project id, a
    gs:// temp_location, ...), as one ValueError line instead of a traceback at run time."""
    from apache_beam.options.pipeline_options import GoogleCloudOptions
    from apache_beam.options.pipeline_options_validator import PipelineOptionsValidator
    from apache_beam.runners.runner import create_runner

    options = PipelineOptions(beam_args)
    runner = runner_for(options) or create_runner(options.view_as(StandardOptions).runner)
    validator = PipelineOptionsValidator(options, runner)
    if validator.is_service_runner() and _asks_dry_run(options):
        # with neither location valid, Beam would go online to make a default bucket
        gcloud = options.view_as(GoogleCloudOptions)
        bad = [validator.validate_gcs_path(gcloud, name)
               for name in ("temp_location", "staging_location")]
        if all(bad):
            raise ValueError("a dry run needs --temp_location gs://BUCKET/PATH with a valid "
                             f"bucket name ({' '.join(bad[0][0].split())})")
    errors = validator.validate()
    if errors:
        raise ValueError("Beam options: " + "; ".join(" ".join(e.split()) for e in errors))


def _save_dataflow_job(job, folder: str, storage_options: dict | None) -> None:
    """A dry-run Dataflow job as JSON: ``job.json`` (the job description Dataflow would
    receive, with its environment: worker pool, SDK container image, experiments) and
    ``pipeline.json`` (the portable pipeline, every transform)."""
    from apache_beam.io.filesystems import FileSystems
    from apache_beam.options.pipeline_options import GoogleCloudOptions
    from apache_beam.runners.dataflow.internal import apiclient
    from google.protobuf import json_format

    # what DataflowApplicationClient.create_job_description adds, less the staging uploads
    staging = job.options.view_as(GoogleCloudOptions).staging_location
    job.proto.environment = apiclient.Environment(
        packages=[], options=job.options,
        environment_version=apiclient._FNAPI_ENVIRONMENT_MAJOR_VERSION,
        proto_pipeline_staged_url=FileSystems.join(staging, "pipeline.pb"),
        proto_pipeline=job.proto_pipeline).proto
    fs, path = output.fs_and_path(folder, storage_options)
    fs.makedirs(path, exist_ok=True)
    for name, text in (("job.json", job.json()),
                       ("pipeline.json", json_format.MessageToJson(job.proto_pipeline))):
        with fs.open(posixpath.join(path, name), "wt", encoding="utf-8") as f:
            f.write(text + "\n")


def run_pipeline(beam_args: list[str], build, out: str | None = None,
                 storage_options: dict | None = None) -> str | None:
    """Build (``build(p)``) and run a pipeline on the runner the Beam flags name.

    Returns None once the pipeline has run. With ``--dry_run=True`` a runner that honours
    it (Dataflow) only builds the job: nothing runs, the job description and the portable
    pipeline are saved as ``OUT/dataflow/job.json`` and ``pipeline.json``, and that folder
    is returned (the caller then has no stats.json to publish).
    """
    options = PipelineOptions(beam_args)
    with beam.Pipeline(runner=runner_for(options), options=options) as p:
        build(p)
    job = getattr(p.result, "job", None)  # the with block ran (or, dry, only built) it
    if not (_asks_dry_run(options) and job is not None and out is not None):
        return None
    folder = output.join(out, "dataflow")
    _save_dataflow_job(job, folder, storage_options)
    return folder


def in_global_window(value: Any) -> WindowedValue:
    return WindowedValue(value, MIN_TIMESTAMP, [GlobalWindow()])


_trimmer_lock = threading.Lock()
_trimmer_started = False


def return_freed_memory(every_s: float | None = None) -> None:
    """Start, once per process, a thread that gives the system back the heap pages that
    freed objects left (glibc's ``malloc_trim``), every ``every_s`` seconds
    (``SKYPILE_TRIM_SECONDS``, default 1; 0 turns it off). A worker's resident memory then
    follows what it holds, not the highest it ever held: on the local multi-process
    runner, a worker's peak went from 1.29x to 1.06x between 25k and 100k documents
    (BENCHMARKS.md). Elsewhere than glibc, and in a process that preloads jemalloc
    (:func:`worker_allocator`: jemalloc returns freed pages itself), it does nothing."""
    global _trimmer_started
    if _trimmer_started:  # every bundle calls this: the one check it pays
        return
    with _trimmer_lock:
        if _trimmer_started:
            return
        _trimmer_started = True
        if every_s is None:
            try:
                every_s = float(os.environ.get("SKYPILE_TRIM_SECONDS", "1") or 0)
            except ValueError:
                LOG.warning("SKYPILE_TRIM_SECONDS=%r is not a number of seconds; using 1",
                            os.environ["SKYPILE_TRIM_SECONDS"])
                every_s = 1.0
        if every_s <= 0 or "jemalloc" in os.environ.get("LD_PRELOAD", ""):
            return
        try:
            import ctypes

            trim = ctypes.CDLL(None).malloc_trim
        except (OSError, AttributeError):  # not glibc: nothing to trim
            return

        def loop():
            while True:
                time.sleep(every_s)
                trim(0)

        threading.Thread(target=loop, name="skypile-trim", daemon=True).start()


class StageFn(beam.DoFn):
    """Base for a stage DoFn: counts per bundle, emitted as ``stats`` in finish_bundle.

    Subclasses call ``self.keep(stage)`` / ``self.drop(reject)``; the same numbers go to
    Beam Metrics counters named ``<stage>/in``, ``<stage>/kept``, ``<stage>/dropped:<reason>``.
    Its first bundle in a worker process starts :func:`return_freed_memory`.
    """

    def start_bundle(self):
        self._tally = stats.Tally()
        return_freed_memory()

    def keep(self, stage: str) -> None:
        self._ticker().tick(stage, "kept")
        self.kept_many(stage, 1)

    def kept_many(self, stage: str, n: int) -> None:
        """``n`` records kept, counted at once (no progress tick: the caller ticks)."""
        if n:
            self._tally.kept(stage, n)
            self._counter(f"{stage}/in").inc(n)
            self._counter(f"{stage}/kept").inc(n)

    def drop(self, rej: Reject) -> pvalue.TaggedOutput:
        self._tally.dropped(rej.stage, rej.reason)
        self._ticker().tick(rej.stage, "dropped")
        self._counter(f"{rej.stage}/in").inc()
        self._counter(f"{rej.stage}/dropped:{rej.reason.split(':', 1)[-1]}").inc()
        return pvalue.TaggedOutput(REJECTS, rej)

    def _counter(self, name: str):
        """The Beam counter ``name``, made once per DoFn instance: a counter finds the
        running bundle's metrics when it is incremented, and making one per document
        cost as much as a tenth of ``skypile tokenize``'s reading."""
        counters = self.__dict__.setdefault("_counters", {})
        counter = counters.get(name)
        if counter is None:
            counter = counters[name] = Metrics.counter(NAMESPACE, name)
        return counter

    def drop_unmatched(self, unmatched: "Unmatched") -> pvalue.TaggedOutput:
        """An --input pattern that matched nothing on a worker (``read.list_on_workers``):
        its ``read:no-match`` reject, counted as an unreadable file."""
        self._tally.note("files", "unreadable")
        self._counter("files/unreadable").inc()
        return self.drop(unmatched.reject())

    def finish_bundle(self):
        for item in self._tally.items():
            yield pvalue.TaggedOutput(STATS, in_global_window(item))

    def _ticker(self) -> "Progress":
        """This worker's progress line for the stages this DoFn counts (made on first use)."""
        progress = getattr(self, "_progress_line", None)
        if progress is None:
            name = getattr(self, "stage", None) or type(self).__name__.lstrip("_")
            progress = self._progress_line = Progress(name)
        return progress


class ApplyStage(StageFn):
    """Runs one core stage: an element in; what the stage keeps (main) or its Reject out.

    ``make(*args)`` builds the stage once per worker, in setup(): only the factory and its
    small config are pickled, never a model or a process. The stage is called as
    ``stage(element, *side_inputs)`` and returns a Reject to drop, anything else to keep
    (datatrove's keep-or-reason filters). With ``stage`` named, each element is counted
    as ``<stage>/in``, ``/kept``, ``/dropped:<reason>``; scorers, which never drop, pass
    none and are not counted. A stage with a ``close()`` is closed in teardown().
    """

    def __init__(self, make: Callable[..., Callable], *args: Any, stage: str | None = None):
        self.make, self.args, self.stage = make, args, stage

    def setup(self):
        self._stage = self.make(*self.args)

    def process(self, element, *side):
        result = self._stage(element, *side)
        if not self.stage:  # a scorer counts nothing, but still shows signs of life
            self._ticker().tick(getattr(self.make, "__name__", "score"), "scored")
        if isinstance(result, Reject):
            yield self.drop(result)
            return
        if self.stage:
            self.keep(self.stage)
        yield result

    def teardown(self):
        close = getattr(getattr(self, "_stage", None), "close", None)
        if close is not None:
            close()


def with_rejects(fn: StageFn, *side: Any) -> beam.PTransform:
    """``fn`` as a ParDo with the outputs every stage has: ``docs`` (main), rejects, stats."""
    return beam.ParDo(fn, *side).with_outputs(REJECTS, STATS, main="docs")


class Chained(NamedTuple):
    """What :func:`chain` returns: the survivors, and what every stage dropped and counted."""

    docs: Any
    rejects: list
    counts: list
    extra: dict
    """Any further named output of a stage (the quality stages' ``other``)."""


def chain(docs, stages) -> Chained:
    """Applies ``stages``, (label, transform) pairs, one after the other to ``docs``.

    A transform gives either the three stage outputs (a dict or a :func:`with_rejects`
    ParDo: ``docs``, ``rejects``, ``stats``) or one PCollection (a step that drops
    nothing, such as AsDocuments).
    """
    rejects, counts, extra = [], [], {}
    for label, step in stages:
        out = docs | label >> step
        if isinstance(out, beam.PCollection):
            docs = out
            continue
        docs = out["docs"]
        rejects.append(out[REJECTS])
        counts.append(out[STATS])
        if isinstance(out, dict):
            extra.update({k: v for k, v in out.items() if k not in ("docs", REJECTS, STATS)})
    return Chained(docs, rejects, counts, extra)


def write_outputs(staging: str, docs, rejects: list, counts: list, order: tuple[str, ...],
                  extra_stats: dict, storage_options: dict) -> None:
    """The output contract under ``staging``: docs (unless None), rejects and stats.json."""
    so = storage_options
    if docs is not None:
        docs | "WriteDocs" >> WriteJsonl(staging, "docs", so)
    (rejects | "AllRejects" >> beam.Flatten()) | "WriteRejects" >> WriteJsonl(staging, "rejects", so)
    ((counts | "AllCounts" >> beam.Flatten())
     | "WriteStats" >> WriteStats(staging, order, extra_stats, so))


class _WriteBundleFiles(beam.DoFn):
    """Writes each bundle's lines to one gzip file, under its final name in ``folder``
    (``part-<run>-<unique>.jsonl.gz``, never moved); emits (name, lines).

    Only bundles that commit pass their name downstream, so the file of a failed or
    retried bundle is never published: ``_publish`` deletes it.
    """

    def __init__(self, staging: str, kind: str, storage_options: dict):
        self.staging, self.kind, self.storage_options = staging, kind, storage_options

    def setup(self):
        out, self._run_id = output.run_of(self.staging)
        self._folder = output.join(out, self.kind)
        self._final = None

    def start_bundle(self):
        self._drop()  # the file of a bundle that failed on this worker
        self._lines = 0

    def process(self, line: str):
        if self._final is None:
            self._name = output.part_name(self._run_id)
            self._final = output.FinalFile(*output.fs_and_path(
                output.join(self._folder, self._name), self.storage_options))
            self._file = gzip.GzipFile(fileobj=self._final.file, mode="wb", compresslevel=6,
                                       mtime=0)
        self._file.write(line.encode("utf-8") + b"\n")
        self._lines += 1

    def finish_bundle(self):
        if self._final is not None:
            self._file.close()
            self._final.commit()
            self._final = None
            yield in_global_window((self._name, self._lines))

    def teardown(self):
        self._drop()

    def _drop(self):
        if getattr(self, "_final", None) is not None:
            self._final.abandon()
            self._final = None


def _publish(files: list[tuple[str, int]], staging: str, kind: str,
             storage_options: dict) -> dict:
    """Lists the committed bundle files, deletes this run's others; a retry does the same."""
    listing = output.publish_files(staging, kind, files, storage_options)
    LOG.info("wrote %d %s in %d files", listing["records"], kind, len(listing["files"]))
    return listing


class WriteJsonl(beam.PTransform):
    """Objects with ``to_json()`` -> ``OUTPUT/<kind>/part-<run>-<unique>.jsonl.gz`` on any
    fsspec URL (``staging`` is the run folder, OUTPUT/_runs/<run>), one file per bundle,
    written once under its final name; the run's listing of them goes to the run folder,
    and :func:`skypile.files.output.commit` publishes them."""

    def __init__(self, staging: str, kind: str, storage_options: dict | None = None):
        super().__init__()
        self.staging, self.kind = staging, kind
        self.storage_options = storage_options or {}

    def expand(self, pcoll):
        return (pcoll
                | "ToJson" >> beam.Map(lambda x: x.to_json())
                | "WriteBundles" >> beam.ParDo(
                    _WriteBundleFiles(self.staging, self.kind, self.storage_options))
                | "Collect" >> beam.combiners.ToList()  # file names: one per bundle
                | "Publish" >> beam.Map(_publish, self.staging, self.kind,
                                        self.storage_options))


class WriteStats(beam.PTransform):
    """Sums the stages' counts and writes ``<staging>/stats.json`` (plus ``extra``)."""

    def __init__(self, staging: str, order: tuple[str, ...], extra: dict[str, Any],
                 storage_options: dict | None = None):
        super().__init__()
        self.staging, self.order, self.extra = staging, order, extra
        self.storage_options = storage_options or {}

    def expand(self, pcoll):
        return (pcoll
                | "SumPerKey" >> beam.CombinePerKey(sum)
                | "All" >> beam.combiners.ToList()
                | "Write" >> beam.Map(self._write))

    def _write(self, items):
        stages = stats.nest(items, self.order)
        files = stages.pop("files", {})
        data = {"stages": stages,
                "files": {"read": files.get("read", 0), "unreadable": files.get("unreadable", 0)},
                **self.extra}
        output.write_json(output.join(self.staging, "stats.json"), data, self.storage_options)
        return data


class Progress:
    """Logs a worker's progress every ``every`` seconds: long runs show signs of life.

    ``tick(stage, outcome)`` counts one record; the line gives, per stage this worker has
    seen, the records done, how they ended (kept, dropped, ...) and the rate, e.g.
    ``progress [Decide]: exact 1200 (1100 kept, 100 dropped) 40.0/s``.
    """

    EVERY = 30.0
    """Seconds between two lines of one worker."""

    def __init__(self, what: str, every: float | None = None):
        self.what, self.every = what, self.EVERY if every is None else every
        self.n = 0
        self.counts: dict[str, dict[str, int]] = {}
        self.t0 = self.last = time.monotonic()

    def tick(self, stage: str = "", outcome: str = "done") -> None:
        self.n += 1
        per = self.counts.setdefault(stage or self.what, {})
        per[outcome] = per.get(outcome, 0) + 1
        now = time.monotonic()
        if now - self.last >= self.every:
            self.last = now
            LOG.info("%s", self.line(now))

    def line(self, now: float | None = None) -> str:
        seconds = max((now or time.monotonic()) - self.t0, 1e-9)
        parts = []
        for stage, per in self.counts.items():
            done = sum(per.values())
            how = ", ".join(f"{n} {k}" for k, n in per.items())
            parts.append(f"{stage} {done} ({how}) {done / seconds:.1f}/s")
        return f"progress [{self.what}]: " + "; ".join(parts)


# ---- reading, shared by every pipeline --------------------------------------------------

def lists_on_workers(read_opts: Any) -> bool:
    """Whether ``read_opts`` (the config's ``read`` section) asks for listing on workers."""
    return bool(getattr(read_opts, "list_on_workers", False))


def list_inputs(patterns: list[str], read_opts: Any, storage_options: dict,
                keep_folders: bool = False) -> list[str]:
    """The launcher's view of the inputs: the expanded files, or with
    ``read.list_on_workers`` the patterns as given (not even checked: the launcher may not
    see them), for :class:`InputFiles` to expand on workers."""
    if lists_on_workers(read_opts):
        return list(dict.fromkeys(patterns))
    return output.expand_inputs(patterns, storage_options, keep_folders=keep_folders)


@dataclasses.dataclass(frozen=True)
class Unmatched:
    """A pattern that a worker found matching nothing; the reader turns it into a reject."""

    pattern: str

    def reject(self) -> Reject:
        return file_reject(self.pattern, "no-match", pattern=self.pattern,
                           error=f"no input matches {self.pattern}")


def _list_pattern(pattern: str, storage_options: dict, keep_folders: bool, as_bytes: bool):
    """One --input pattern, expanded on a worker: its files, or Unmatched (tagged)."""
    try:
        files = output.expand_inputs([pattern], storage_options, keep_folders=keep_folders)
    except FileNotFoundError:
        LOG.warning("no input matches %s", pattern)
        yield pvalue.TaggedOutput("unmatched", Unmatched(pattern))
        return
    for f in files:
        yield f.encode("utf-8", "surrogateescape") if as_bytes else f


class InputFiles(beam.PTransform):
    """The pipeline's first step: the input files, as the launcher listed them or, with
    ``read.list_on_workers``, listed by workers from the patterns (then :class:`Unmatched`
    for a pattern that matches nothing, and a file that two patterns match read once).

    The caller spreads the names (Reshuffle), so that the files listed by one worker are
    read by many. ``as_bytes`` gives names as UTF-8 bytes (surrogateescape): a name that
    is not UTF-8 survives Beam's coders (``skypile code``).
    """

    def __init__(self, files_or_patterns: list[str], read_opts: Any, storage_options: dict,
                 keep_folders: bool = False, as_bytes: bool = False):
        super().__init__()
        self.items, self.on_workers = list(files_or_patterns), lists_on_workers(read_opts)
        self.so, self.keep_folders, self.as_bytes = storage_options, keep_folders, as_bytes

    def expand(self, pbegin):
        if not self.on_workers:
            return pbegin | "Files" >> beam.Create(
                [f.encode("utf-8", "surrogateescape") for f in self.items] if self.as_bytes
                else self.items)
        listed = (pbegin
                  | "Patterns" >> beam.Create(self.items)
                  | "ListOnWorkers" >> beam.FlatMap(
                      _list_pattern, self.so, self.keep_folders, self.as_bytes
                  ).with_outputs("unmatched", main="files"))
        files = listed.files | "OncePerFile" >> beam.Distinct()
        return (files, listed.unmatched) | "FilesAndUnmatched" >> beam.Flatten()


def split_file(item, read_opts: Any, storage_options: dict):
    """An input file as :class:`FileRange` s of about ``read.split_mb`` MB when it is a
    large plain JSONL file (:func:`~skypile.files.readers.line_ranges`), else as it is:
    the step before the names are spread, so that workers share a large file. A file
    that cannot be opened here goes on whole, for the reader to reject."""
    if not isinstance(item, str):
        yield item
        return
    try:
        ranges = line_ranges(item, read_opts.split_mb << 20, storage_options)
    except (OSError, ValueError):
        ranges = []
    yield from ranges or [item]


class ReadFile(StageFn):
    """A file path in; its document records out, rejects and skipped records counted.

    An :class:`Unmatched` pattern (from :class:`InputFiles` listing on workers) becomes a
    reject ``read:no-match`` naming the pattern, counted as an unreadable input.
    """

    def __init__(self, opts: ReaderOptions, storage_options: dict):
        self.opts, self.storage_options = opts, storage_options

    def process(self, path: "str | FileRange | Unmatched"):
        if isinstance(path, Unmatched):
            yield self.drop_unmatched(path)
            return
        span = path if isinstance(path, FileRange) else None
        path = span.path if span else path
        t0 = time.monotonic()
        rs = ReadStats()
        kept = dropped = 0
        empty = False
        tick = self._ticker().tick
        try:
            for item in read_file(path, self.opts, rs, self.storage_options, span):
                if isinstance(item, Reject):
                    dropped += 1
                    empty = item.reason == "read:empty-file"
                    yield self.drop(item)
                else:
                    kept += 1
                    tick("read", "kept")
                    yield item
        except UnreadableFile as e:
            LOG.warning("cannot read %s", e)
            dropped += 1
            yield self.drop(file_reject(path, "unreadable-file", error=str(e)))
        self.kept_many("read", kept)  # once per file: a counter per record cost as much as parsing it
        for kind, n in rs.skipped.items():
            self._tally.skipped("read", kind, n)
        # an empty file was read (its reject says so); one that gave nothing readable was
        # not. A file read in ranges counts once, by its first range.
        if span is None or span.start == 0:
            readable = empty or kept + sum(rs.skipped.values()) + rs.records > 0
            self._tally.note("files", "read" if readable else "unreadable")
            self._counter("files/read" if readable else "files/unreadable").inc()
        where = f"{path} [bytes {span.start}-{span.end}]" if span else path
        self._file_done(where, kept, dropped, sum(rs.skipped.values()), time.monotonic() - t0)

    FILES_PER_LINE = 100
    """With many inputs, one summary line per this many files of a worker; only a worker's
    first 10 files, and slow ones (over 30 s), get a line of their own."""

    def _file_done(self, path: str, kept: int, dropped: int, skipped: int, seconds: float):
        totals = getattr(self, "_files", None)
        if totals is None:
            totals = self._files = [0, 0, 0, 0, time.monotonic()]
        totals[0] += 1
        totals[1] += kept
        totals[2] += dropped
        totals[3] += skipped
        line = (f"read {path}: {kept} records, {dropped} rejected, {skipped} skipped "
                f"({seconds:.1f}s)")
        LOG.log(logging.INFO if totals[0] <= 10 or seconds > 30 else logging.DEBUG, line)
        if totals[0] % self.FILES_PER_LINE == 0:
            rate = totals[0] / max(time.monotonic() - totals[4], 1e-9)
            LOG.info("read: %d files done (%d records, %d rejected, %d skipped), %.1f files/s",
                     *totals[:4], rate)


def as_document(rec: RawRecord) -> Document:
    """A text record (JSONL, Parquet, WET) as a document, when no extraction runs."""
    return Document(id=rec.id, text=rec.body, url=rec.url, source=rec.source,
                    metadata=dict(rec.metadata))


# ---- the end of a run -------------------------------------------------------------------

def _exists(url: str) -> bool:
    """Whether ``url`` exists, for a message that names only paths that do (False when
    the store cannot be asked without the run's storage options)."""
    try:
        fs, path = output.fs_and_path(url)
        return bool(fs.exists(path))
    except (OSError, ValueError, ImportError):
        return False


def report(result: dict, out: str, seconds: float, prog: str, order: tuple[str, ...]) -> int:
    """Print the per-stage summary; the exit code says whether the run may be trusted."""
    stages, files = result["stages"], result["files"]
    print(f"{prog}: {seconds:.1f}s, {files['read']} files read, "
          f"{files['unreadable']} unreadable, output in {out}")
    for name, s in stages.items():
        drops = ", ".join(f"{r}={n}" for r, n in sorted(s.get("dropped", {}).items(),
                                                         key=lambda kv: -kv[1]))
        print(f"  {name:<10} in={s['in']:<7} kept={s['kept']:<7} dropped={sum(s['dropped'].values())}"
              + (f" ({drops})" if drops else ""))
    if files["read"] == 0:
        rejects = output.join(out, "rejects")
        print(f"{prog}: error: none of the {files['unreadable']} input files could be read"
              + (f"; see {rejects}" if _exists(rejects) else ""), file=sys.stderr)
        return 1
    broken = stats.check_balanced(stages) + stats.check_chain(stages, order)
    if broken:  # a record went missing between stages: never let that pass quietly
        print(f"{prog}: error: record counts do not add up ({'; '.join(broken)})",
              file=sys.stderr)
        return 3
    return 0


# ---- the command skeleton ---------------------------------------------------------------

def _load_config(config_cls: type) -> Callable[[argparse.Namespace, list[str]], Any]:
    return lambda args, overrides: cfglib.load(config_cls, args.config, overrides)


def _expand_inputs(args: argparse.Namespace, cfg: Any) -> list[str]:
    return list_inputs(args.input, getattr(cfg, "read", None), cfg.storage_options)


def publish_run(staging: str, args: argparse.Namespace, cfg: Any) -> dict:
    """Reads back stats.json, saves the resolved config.json, then commits the run: the
    small files to their places, the marker last, then the previous run's files go."""
    so = cfg.storage_options
    result = output.read_json(output.join(staging, "stats.json"), so)
    output.write_json(output.join(staging, "config.json"), cfglib.to_dict(cfg), so)
    output.commit(staging, args.output, so)
    return result


def run_command(argv: list[str] | None, config_cls: type, build: Callable, *,
                parser: argparse.ArgumentParser, order: tuple[str, ...] = (),
                resolve: Callable | None = None, inputs: Callable | None = None,
                publish: Callable = publish_run, summary: Callable | None = None) -> int:
    """What every pipeline command does around its pipeline; returns the exit code.

    Our flags (``parser``) and ``--section.key=value`` overrides are split from Beam's;
    ``resolve(args, overrides)`` gives the checked config (default: --config, then the
    overrides) and ``inputs(args, cfg)`` the input files (default: --input expanded, or
    kept as patterns for the workers to list with ``read.list_on_workers``). A
    ConfigError, FileNotFoundError or ValueError there is one line on stderr and exit 2.
    Then ``build(p, args, files, cfg, staging)`` adds the pipeline, which runs into a
    fresh staging folder; ``publish(staging, args, cfg)`` commits it (default: stats.json,
    config.json, everything) and ``summary(result, args, seconds)`` prints the outcome
    (default: :func:`report` over ``order``).
    """
    args, rest = parser.parse_known_args(argv)
    _absolute_paths(args)
    try:
        overrides, beam_args = split_overrides(rest, config_cls)
        cfg = (resolve or _load_config(config_cls))(args, overrides)
        files = (inputs or _expand_inputs)(args, cfg)
        check_beam_options(beam_args)
    except (cfglib.ConfigError, FileNotFoundError, ValueError) as e:
        print(f"{parser.prog}: error: {e}", file=sys.stderr)
        return 2
    t0 = time.monotonic()
    try:
        result = _run_and_publish(argv, build, parser, publish, args, files, cfg, beam_args)
    except Exception as e:  # noqa: BLE001 - only the failures that explain themselves
        line, code = one_line_failure(e)
        if line is None:
            raise
        print(f"{parser.prog}: error: {line}", file=sys.stderr)
        return code
    if result is None:  # a dry run: built, not run
        return 0
    seconds = time.monotonic() - t0
    if summary is not None:
        return summary(result, args, seconds)
    return report(result, args.output, seconds, parser.prog, order)


def _absolute_paths(args: argparse.Namespace) -> None:
    """Local --input, --output and --tokenizer paths made absolute on the launcher: workers
    (a worker pool, an SDK harness) run in folders of their own. URLs stay as they are."""
    def absolute(value: str) -> str:
        return value if "://" in value else os.path.abspath(os.path.expanduser(value))

    for name in ("output", "tokenizer"):
        if isinstance(getattr(args, name, None), str):
            setattr(args, name, absolute(getattr(args, name)))
    if isinstance(getattr(args, "input", None), list):
        args.input = [absolute(v) for v in args.input]


class NothingRead(RuntimeError):
    """No input file could be read, and an earlier run's output is there: it stays."""


STOPS = {"ModelError": 2, "TokenizerError": 2, "ComponentsNotConverged": 1, "MissingVerdict": 1,
         "NothingRead": 1}
"""Errors a run stops with that say in one line what is wrong (and the exit code): a model
that is missing or not the configured file, components that did not converge, a document
without its verdict, a run that read nothing over an existing output. They are raised on a worker; the in-process runner re-raises the
same type, a multi-process or remote runner passes it on as text."""


def one_line_failure(e: BaseException) -> tuple[str | None, int]:
    """(the one-line message, exit code) of a run failure in :data:`STOPS`, else (None, 1)."""
    for cls in type(e).__mro__:
        if cls.__name__ in STOPS and str(e):
            return str(e).splitlines()[0], STOPS[cls.__name__]
    found = re.search(r"\b(" + "|".join(STOPS) + r"): ([^\n]+)", str(e))
    if found:
        return found.group(2), STOPS[found.group(1)]
    return None, 1


def _run_and_publish(argv, build, parser, publish, args, files, cfg, beam_args) -> dict | None:
    """Runs the pipeline into a fresh staging folder and publishes it; None after a dry run."""
    with staged(args.output, cfg.storage_options) as staging:
        dry = run_pipeline(beam_args, lambda p: build(p, args, files, cfg, staging),
                           args.output, cfg.storage_options)
        if dry is not None:  # the job was built, not run: nothing to publish
            output.discard(staging, cfg.storage_options)
            print(f"{parser.prog}: dry run: the job was built, not submitted; its description "
                  f"and pipeline are in {dry} (job.json, pipeline.json)")
            return None
        # which code, launched how: asked here on the launcher, kept with the counts
        url, so = output.join(staging, "stats.json"), cfg.storage_options
        counts = output.read_json(url, so)
        files_seen = counts.get("files", {})
        if files_seen.get("read", 1) == 0 and output.read_marker(args.output, so) is not None:
            raise NothingRead(f"none of the {files_seen.get('unreadable', 0)} input files could "
                              f"be read; the previous output in {args.output} is left as it was")
        output.write_json(url, {**counts, "skypile_version": code_version(),
                                "command": launch_command(
                                    parser.prog, sys.argv[1:] if argv is None else argv)}, so)
        return publish(staging, args, cfg)
