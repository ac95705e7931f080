"""Beam plumbing shared by every pipeline: runner choice, the output contract, stats.

The DoFns here are thin: the work happens in ``skypile`` functions they wrap.
"""

from __future__ import annotations

import contextlib
import gzip
import logging
import posixpath
import time
import uuid
from typing import Any

import apache_beam as beam
from apache_beam import pvalue
from apache_beam.metrics import Metrics
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.transforms.window import GlobalWindow
from apache_beam.utils.timestamp import MIN_TIMESTAMP
from apache_beam.utils.windowed_value import WindowedValue

from skypile import stats
from skypile.files import output
from skypile.document import Reject

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
    """
    from apache_beam.runners.portability.fn_api_runner import fn_runner

    return fn_runner.FnApiRunner()


def runner_for(options: PipelineOptions):
    name = options.view_as(StandardOptions).runner
    if (name or "").lower() in _DIRECT_NAMES:
        return local_runner()
    return None  # Dataflow, Flink, Spark...: Beam resolves the name itself


@contextlib.contextmanager
def staged(out: str, storage_options: dict):
    """A fresh staging folder for ``out``, removed if the block fails; the block commits."""
    staging = output.new_staging(out)
    try:
        yield staging
    except BaseException:
        output.discard(staging, storage_options)
        raise


def run_pipeline(beam_args: list[str], build) -> None:
    """Build (``build(p)``) and run a pipeline on the runner the Beam flags name."""
    options = PipelineOptions(beam_args)
    with beam.Pipeline(runner=runner_for(options), options=options) as p:
        build(p)


def in_global_window(value: Any) -> WindowedValue:
    return WindowedValue(value, MIN_TIMESTAMP, [GlobalWindow()])


class StageFn(beam.DoFn):
    """Base for a stage DoFn: counts per bundle, emitted as ``stats`` in finish_bundle.

    Subclasses call ``self.keep(stage)`` / ``self.drop(reject)``; the same numbers go to
    Beam Metrics counters named ``<stage>/in``, ``<stage>/kept``, ``<stage>/dropped:<reason>``.
    """

    def start_bundle(self):
        self._tally = stats.Tally()

    def keep(self, stage: str) -> None:
        self._tally.kept(stage)
        Metrics.counter(NAMESPACE, f"{stage}/in").inc()
        Metrics.counter(NAMESPACE, f"{stage}/kept").inc()

    def drop(self, rej: Reject) -> pvalue.TaggedOutput:
        self._tally.dropped(rej.stage, rej.reason)
        Metrics.counter(NAMESPACE, f"{rej.stage}/in").inc()
        Metrics.counter(NAMESPACE, f"{rej.stage}/dropped:{rej.reason.split(':', 1)[-1]}").inc()
        return pvalue.TaggedOutput(REJECTS, rej)

    def finish_bundle(self):
        for item in self._tally.items():
            yield pvalue.TaggedOutput(STATS, in_global_window(item))


class _WriteBundleFiles(beam.DoFn):
    """Writes each bundle's lines to one temporary gzip file; emits (path, lines).

    Only bundles that commit pass their file downstream, so a retried bundle's partial
    file is never published: ``_Publish`` renames exactly the reported files.
    """

    def __init__(self, tmp_dir: str, kind: str, storage_options: dict):
        self.tmp_dir, self.kind, self.storage_options = tmp_dir, kind, storage_options

    def start_bundle(self):
        self._file = self._raw = None
        self._lines = 0

    def process(self, line: str):
        if self._file is None:
            self._path = output.join(self.tmp_dir, f"{self.kind}-{uuid.uuid4().hex}.jsonl.gz")
            fs, path = output.fs_and_path(self._path, self.storage_options)
            fs.makedirs(posixpath.dirname(path), exist_ok=True)
            self._raw = fs.open(path, "wb")
            self._file = gzip.GzipFile(fileobj=self._raw, mode="wb", compresslevel=6, mtime=0)
        self._file.write(line.encode("utf-8") + b"\n")
        self._lines += 1

    def finish_bundle(self):
        if self._file is not None:
            self._file.close()
            self._raw.close()
            yield in_global_window((self._path, self._lines))


def _publish(files: list[tuple[str, int]], final_dir: str, kind: str,
             storage_options: dict) -> list[tuple[str, int]]:
    fs, final_path = output.fs_and_path(final_dir, storage_options)
    fs.makedirs(final_path, exist_ok=True)
    published = []
    for i, (path, n) in enumerate(sorted(files)):
        dest = output.join(final_dir, f"part-{i:05d}.jsonl.gz")
        fs.mv(output.fs_and_path(path, storage_options)[1],
              output.fs_and_path(dest, storage_options)[1])
        published.append((dest, n))
    LOG.info("wrote %d %s in %d files", sum(n for _, n in files), kind, len(files))
    return published


class WriteJsonl(beam.PTransform):
    """Objects with ``to_json()`` -> ``<staging>/<kind>/part-NNNNN.jsonl.gz`` on any fsspec URL."""

    def __init__(self, staging: str, kind: str, storage_options: dict | None = None):
        super().__init__()
        self.staging, self.kind = staging, kind
        self.storage_options = storage_options or {}

    def expand(self, pcoll):
        tmp = output.join(self.staging, "_tmp")
        return (pcoll
                | "ToJson" >> beam.Map(lambda x: x.to_json())
                | "WriteBundles" >> beam.ParDo(
                    _WriteBundleFiles(tmp, self.kind, self.storage_options))
                | "Collect" >> beam.combiners.ToList()
                | "Publish" >> beam.Map(_publish, output.join(self.staging, self.kind),
                                        self.kind, self.storage_options))


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
    """Logs a worker's progress every ``every`` seconds: long runs show signs of life."""

    def __init__(self, what: str, every: float = 30.0):
        self.what, self.every = what, every
        self.n = 0
        self.t0 = self.last = time.monotonic()

    def tick(self) -> None:
        self.n += 1
        now = time.monotonic()
        if now - self.last >= self.every:
            self.last = now
            LOG.info("%s: %d done, %.1f/s", self.what, self.n, self.n / (now - self.t0))
