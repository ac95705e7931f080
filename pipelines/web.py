"""The web pipeline: Common Crawl WARC / WET (and JSONL, Parquet) to clean documents.

    skypile web --input GLOB [--input GLOB ...] --output DIR_OR_URL
                [--stages extract] [--config FILE] [--section.key=value ...] [Beam flags]

Stages run in the report's order; this module has ``extract`` (structural extraction).
Output contract: ``OUTPUT/docs/*.jsonl.gz``, ``OUTPUT/rejects/*.jsonl.gz``,
``OUTPUT/stats.json`` and the resolved ``OUTPUT/config.json``, replaced whole on success.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
import time

import apache_beam as beam
from apache_beam.metrics import Metrics
from apache_beam.options.pipeline_options import PipelineOptions

from skypile.pipelines.common import (LOG, NAMESPACE, REJECTS, STATS, Progress, StageFn, WriteJsonl,
                              WriteStats, runner_for)
from skypile import config as cfglib
from skypile import output
from skypile.document import Reject
from skypile.extract import ExtractConfig, Extractor
from skypile.readers import ReaderOptions, ReadStats, UnreadableFile, file_reject, read_file

STAGES = ("extract",)
"""Stages this pipeline knows, in the order they run."""


@dataclasses.dataclass
class WebConfig:
    """Everything ``skypile web`` can be told, by file (--config) or --section.key=value."""

    stages: list[str] = dataclasses.field(default_factory=lambda: ["extract"])
    """Stages to run, in the report's order: extract."""
    read: ReaderOptions = dataclasses.field(default_factory=ReaderOptions)
    extract: ExtractConfig = dataclasses.field(default_factory=ExtractConfig)
    storage_options: dict = dataclasses.field(default_factory=dict)
    """fsspec options for remote inputs and outputs (e.g. {endpoint_url: ...} for S3)."""


# ---- DoFns ------------------------------------------------------------------------------

class ReadFile(StageFn):
    """A file path in; its document records out, rejects and skipped records counted."""

    def __init__(self, opts: ReaderOptions, storage_options: dict):
        self.opts, self.storage_options = opts, storage_options

    def process(self, path: str):
        t0 = time.monotonic()
        rs = ReadStats()
        kept = dropped = 0
        try:
            for item in read_file(path, self.opts, rs, self.storage_options):
                if isinstance(item, Reject):
                    dropped += 1
                    yield self.drop(item)
                else:
                    kept += 1
                    self.keep("read")
                    yield item
        except UnreadableFile as e:
            LOG.warning("cannot read %s", e)
            dropped += 1
            yield self.drop(file_reject(path, "unreadable-file", error=str(e)))
        for kind, n in rs.skipped.items():
            self._tally.skipped("read", kind, n)
        readable = kept + sum(rs.skipped.values()) + rs.records > 0
        self._tally.note("files", "read" if readable else "unreadable")
        Metrics.counter(NAMESPACE, "files/read" if readable else "files/unreadable").inc()
        LOG.info("read %s: %d records, %d rejected, %d skipped (%.1fs)", path, kept, dropped,
                 sum(rs.skipped.values()), time.monotonic() - t0)


class Extract(StageFn):
    """RawRecord in; a Document (main) or a Reject (``rejects``) out."""

    def __init__(self, cfg: ExtractConfig):
        self.cfg = cfg

    def setup(self):
        self._extractor = Extractor(self.cfg)
        self._progress = Progress("extract")

    def process(self, rec):
        result = self._extractor(rec)
        self._progress.tick()
        if isinstance(result, Reject):
            yield self.drop(result)
        else:
            self.keep("extract")
            yield result

    def teardown(self):
        self._extractor.close()


# ---- the pipeline -----------------------------------------------------------------------

def build(p: beam.Pipeline, files: list[str], cfg: WebConfig, staging: str,
          extra_stats: dict) -> None:
    """Adds the web pipeline to ``p``, writing the output contract under ``staging``."""
    read = (p
            | "Inputs" >> beam.Create(files)
            | "SpreadFiles" >> beam.Reshuffle()
            | "Read" >> beam.ParDo(ReadFile(cfg.read, cfg.storage_options))
            .with_outputs(REJECTS, STATS, main="records"))
    docs, rejects, counts = read.records, [read[REJECTS]], [read[STATS]]
    if "extract" in cfg.stages:
        ex = docs | "Extract" >> beam.ParDo(Extract(cfg.extract)).with_outputs(
            REJECTS, STATS, main="docs")
        docs = ex.docs
        rejects.append(ex[REJECTS])
        counts.append(ex[STATS])
    so = cfg.storage_options
    docs | "WriteDocs" >> WriteJsonl(staging, "docs", so)
    (rejects | "AllRejects" >> beam.Flatten()) | "WriteRejects" >> WriteJsonl(staging, "rejects", so)
    ((counts | "AllCounts" >> beam.Flatten())
     | "WriteStats" >> WriteStats(staging, ("read", *STAGES), extra_stats, so))


# ---- command line -----------------------------------------------------------------------

def make_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="skypile web",
        description="Turn Common Crawl WARC/WET files (or JSONL/Parquet documents) into clean "
                    "documents, on Apache Beam. Runs locally by default (in-process "
                    "DirectRunner); any flag we do not know is passed to Beam, e.g. "
                    "--runner DataflowRunner --project P --region R --temp_location gs://B/tmp, "
                    "or --runner FlinkRunner --flink_master HOST:8081.",
        epilog="Output: OUTPUT/docs/*.jsonl.gz (kept documents), OUTPUT/rejects/*.jsonl.gz "
               "(every dropped record with stage and reason), OUTPUT/stats.json (per stage: "
               "in, kept, dropped by reason), OUTPUT/config.json (the resolved config). "
               "A re-run replaces them whole. Settings: --config FILE (YAML/TOML/JSON) and "
               "--section.key=value, e.g. --extract.timeout_s=5 --read.text_field=content. "
               "Local parallelism: --direct_num_workers 2 --direct_running_mode multi_processing.",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--input", action="append", required=True, metavar="GLOB",
                    help="input files: a glob, folder or file, local or fsspec URL "
                         "(s3://, gs://); repeat for more")
    ap.add_argument("--output", required=True, metavar="DIR_OR_URL",
                    help="output folder, local or fsspec URL")
    ap.add_argument("--stages", default=None, metavar="LIST",
                    help=f"comma-separated stages to run, of: {', '.join(STAGES)} "
                         "(default: the config's, which is extract)")
    ap.add_argument("--config", default=None, metavar="FILE",
                    help="pipeline config (YAML, TOML or JSON)")
    return ap


def split_overrides(rest: list[str]) -> tuple[list[str], list[str]]:
    """``--section.key=value`` (a dotted name) is ours; everything else goes to Beam."""
    ours, beam_args = [], []
    it = iter(rest)
    for arg in it:
        name = arg[2:].split("=", 1)[0] if arg.startswith("--") else ""
        if "." in name and not name.startswith("."):
            if "=" not in arg:
                value = next(it, None)
                if value is None:
                    raise cfglib.ConfigError(f"{arg} needs a value")
                arg = f"{arg}={value}"
            ours.append(arg[2:])
        else:
            beam_args.append(arg)
    return ours, beam_args


def resolve(args: argparse.Namespace, overrides: list[str]) -> WebConfig:
    cfg = cfglib.load(WebConfig, args.config, overrides)
    if args.stages is not None:
        cfg.stages = [s.strip() for s in args.stages.split(",") if s.strip()]
    unknown = [s for s in cfg.stages if s not in STAGES]
    if unknown:
        raise cfglib.ConfigError(f"unknown stage {unknown[0]!r} (known: {', '.join(STAGES)})")
    return cfg


def run(argv: list[str] | None = None) -> int:
    args, rest = make_parser().parse_known_args(argv)
    try:
        overrides, beam_args = split_overrides(rest)
        cfg = resolve(args, overrides)
        files = output.expand_inputs(args.input, cfg.storage_options)
    except (cfglib.ConfigError, FileNotFoundError, ValueError) as e:
        print(f"skypile web: error: {e}", file=sys.stderr)
        return 2
    options = PipelineOptions(beam_args)
    staging = output.new_staging(args.output)
    LOG.info("web: %d input files, stages %s, output %s", len(files), ",".join(cfg.stages),
             args.output)
    t0 = time.monotonic()
    extra = {"inputs": files}
    so = cfg.storage_options
    try:
        with beam.Pipeline(runner=runner_for(options), options=options) as p:
            build(p, files, cfg, staging, extra)
        result = output.read_json(output.join(staging, "stats.json"), so)
        output.write_json(output.join(staging, "config.json"), cfglib.to_dict(cfg), so)
        output.commit(staging, args.output, so)
    except BaseException:
        output.discard(staging, so)
        raise
    return report(result, args.output, time.monotonic() - t0)


def report(result: dict, out: str, seconds: float) -> int:
    stages, files = result["stages"], result["files"]
    print(f"skypile web: {seconds:.1f}s, {files['read']} files read, "
          f"{files['unreadable']} unreadable, output in {out}")
    for name, s in stages.items():
        drops = ", ".join(f"{r}={n}" for r, n in sorted(s.get("dropped", {}).items(),
                                                         key=lambda kv: -kv[1]))
        print(f"  {name:<10} in={s['in']:<7} kept={s['kept']:<7} dropped={sum(s['dropped'].values())}"
              + (f" ({drops})" if drops else ""))
    if files["read"] == 0:
        print(f"skypile web: error: none of the {files['unreadable']} input files could "
              f"be read; see {out}/rejects", file=sys.stderr)
        return 1
    return 0


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    sys.exit(run())


if __name__ == "__main__":
    main()
