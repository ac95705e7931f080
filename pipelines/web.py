"""The web pipeline: Common Crawl WARC / WET (and JSONL, Parquet) to clean documents.

    skypile web --input GLOB [--input GLOB ...] --output DIR_OR_URL
                [--stages LIST] [--config FILE] [--section.key=value ...] [Beam flags]
    skypile dedup --input GLOB --output DIR_OR_URL [--config FILE]   (documents in)

Stages run in the report's order: ``extract`` (structural extraction), distribution
filtering and deduplication (``blocks``, ``exact``, ``minhash``, ``semantic``), CCNet-style
quality (``langid``, ``perplexity``, ``quality`` and their threshold step), then ``stem``
tagging for the STEM / Main split. Output contract: ``OUTPUT/docs/*.jsonl.gz``,
``OUTPUT/rejects/*.jsonl.gz``, ``OUTPUT/stats.json``, ``OUTPUT/reports/``, ``OUTPUT/other/``
and the resolved ``OUTPUT/config.json``, replaced whole on success.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time

import apache_beam as beam
from apache_beam.metrics import Metrics

from skypile import config as cfglib
from skypile.config import split_overrides
from skypile import stats
from skypile.files import output
from skypile.document import Document, Reject
from skypile.text.extract import ExtractConfig, Extractor
from skypile.pipelines.common import (LOG, NAMESPACE, REJECTS, STATS, Progress, StageFn,
                                      WriteJsonl, WriteStats, run_pipeline, staged)
from skypile.jobs.web import (DEDUP, SCORERS, STAGES, STATS_ORDER, WEB, Command,  # noqa: F401
                              WebConfig, check, gate_languages)
from skypile.pipelines.dedup import (ExactDedup, MinHashDedup, RecurringBlocks, SemanticDedup,
                                     UrlDuplicates)
from skypile.pipelines.quality import OTHER, QualityStages
from skypile.files.readers import (RawRecord, ReaderOptions, ReadStats, UnreadableFile, file_reject,
                             read_file)

# ---- DoFns ------------------------------------------------------------------------------

class ReadFile(StageFn):
    """A file path in; its document records out, rejects and skipped records counted."""

    def __init__(self, opts: ReaderOptions, storage_options: dict, url_stage: bool = False):
        self.opts, self.storage_options, self.url_stage = opts, storage_options, url_stage

    def process(self, path: str, url_losers: dict | None = None):
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
                    if not self.url_stage:
                        yield item
                    elif (verdict := url_losers.get(item.id)) is None:
                        self.keep("url")
                        yield item
                    else:
                        yield self.drop(Reject(id=item.id, url=item.url, stage="url",
                                               reason=verdict[1], text="", source=item.source,
                                               detail=verdict[2]))
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

    def __init__(self, cfg: ExtractConfig, gate_langs: tuple[str, ...] = ()):
        self.cfg, self.gate_langs = cfg, tuple(gate_langs)

    def setup(self):
        self._extractor = Extractor(self.cfg, self.gate_langs)
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

def as_document(rec: RawRecord) -> Document:
    """A text record (JSONL, Parquet, WET) as a document, when no extraction runs."""
    return Document(id=rec.id, text=rec.body, url=rec.url, source=rec.source,
                    metadata=dict(rec.metadata))


def _dedup_stage(name: str, cfg: WebConfig, staging: str) -> beam.PTransform:
    d, so = cfg.dedup, cfg.storage_options
    if name == "blocks":
        return RecurringBlocks(d.blocks, staging, so)
    if name == "exact":
        return ExactDedup(d.exact)
    if name == "minhash":
        return MinHashDedup(d.minhash)
    return SemanticDedup(d.semantic, d.minhash.rounds, staging, so)


def build(p: beam.Pipeline, files: list[str], cfg: WebConfig, staging: str,
          extra_stats: dict) -> None:
    """Adds the pipeline to ``p``, writing the output contract under ``staging``."""
    names = p | "Inputs" >> beam.Create(files) | "SpreadFiles" >> beam.Reshuffle()
    if "extract" in cfg.stages and "exact" in cfg.stages and cfg.dedup.exact.by_url:
        # URL duplicates are known before the pages are read for real: the reader drops them
        # (stage "url"), so their bodies never travel and trafilatura never sees them
        losers = names | "UrlFirst" >> UrlDuplicates(cfg.read, cfg.storage_options)
        read = names | "Read" >> beam.ParDo(ReadFile(cfg.read, cfg.storage_options, url_stage=True),
                                            beam.pvalue.AsDict(losers)).with_outputs(
            REJECTS, STATS, main="records")
    else:
        read = names | "Read" >> beam.ParDo(ReadFile(cfg.read, cfg.storage_options)).with_outputs(
            REJECTS, STATS, main="records")
    rejects, counts = [read[REJECTS]], [read[STATS]]
    records = read.records
    if "extract" in cfg.stages:
        ex = records | "Extract" >> beam.ParDo(Extract(cfg.extract, gate_languages(cfg))).with_outputs(
            REJECTS, STATS, main="docs")
        docs = ex.docs
        rejects.append(ex[REJECTS])
        counts.append(ex[STATS])
    else:  # the reader was told to accept text documents only
        docs = records | "AsDocuments" >> beam.Map(as_document)
    so = cfg.storage_options
    for name in ("blocks", "exact", "minhash", "semantic"):
        if name in cfg.stages:
            out = docs | name.capitalize() >> _dedup_stage(name, cfg, staging)
            docs = out["docs"]
            rejects.append(out["rejects"])
            counts.append(out["stats"])
    if any(s in cfg.stages for s in SCORERS):
        out = docs | "QualityFiltering" >> QualityStages(cfg.stages, cfg.langid, cfg.perplexity,
                                                         cfg.quality, cfg.filter, cfg.stem)
        docs = out["docs"]
        rejects.append(out["rejects"])
        counts.append(out["stats"])
        out[OTHER] | "WriteOther" >> WriteJsonl(staging, OTHER, so)
    docs | "WriteDocs" >> WriteJsonl(staging, "docs", so)
    (rejects | "AllRejects" >> beam.Flatten()) | "WriteRejects" >> WriteJsonl(staging, "rejects", so)
    ((counts | "AllCounts" >> beam.Flatten())
     | "WriteStats" >> WriteStats(staging, STATS_ORDER, extra_stats, so))


# ---- command line -----------------------------------------------------------------------

_COMMON_HELP = (
    "Runs locally by default (in-process DirectRunner); any flag we do not know is passed to "
    "Beam, e.g. --runner DataflowRunner --project P --region R --temp_location gs://B/tmp, or "
    "--runner FlinkRunner --flink_master HOST:8081. Local parallelism: --direct_num_workers 2 "
    "--direct_running_mode multi_processing.\n\n"
    "Output: OUTPUT/docs/*.jsonl.gz (kept documents), OUTPUT/rejects/*.jsonl.gz (every "
    "dropped record with stage and reason), OUTPUT/stats.json (per stage: in, kept, dropped "
    "by reason), OUTPUT/reports/ (recurring blocks, semantic clusters), OUTPUT/config.json "
    "(the resolved config). A re-run replaces them whole.\n\n"
    "Settings: --config FILE (YAML/TOML/JSON) and --section.key=value, e.g. "
    "--extract.timeout_s=5 --dedup.minhash.threshold=0.5 --read.text_field=content. "
    "Unknown keys are an error.")


def make_parser(cmd: Command = WEB) -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog=cmd.prog, description=cmd.description,
                                 epilog=_COMMON_HELP)
    ap.add_argument("--input", action="append", required=True, metavar="GLOB",
                    help="input files: a glob, folder or file, local or fsspec URL "
                         "(s3://, gs://); repeat for more")
    ap.add_argument("--output", required=True, metavar="DIR_OR_URL",
                    help="output folder, local or fsspec URL")
    ap.add_argument("--stages", default=None, metavar="LIST",
                    help=f"comma-separated stages, of: {', '.join(cmd.stages)} (they run in "
                         f"that order; default {','.join(cmd.default_stages)})")
    ap.add_argument("--config", default=None, metavar="FILE",
                    help="pipeline config (YAML, TOML or JSON)")
    return ap


def resolve(args: argparse.Namespace, overrides: list[str], cmd: Command = WEB) -> WebConfig:
    """The config from --config, the overrides and --stages, checked for this command."""
    base = {"stages": list(cmd.default_stages)}
    cfg = cfglib.load(WebConfig, args.config, overrides, base=base)
    if args.stages is not None:
        cfg.stages = [s.strip() for s in args.stages.split(",") if s.strip()]
    for warning in check(cfg, cmd):
        LOG.warning("%s", warning)
    return cfg


def run(argv: list[str] | None = None, cmd: Command = WEB) -> int:
    args, rest = make_parser(cmd).parse_known_args(argv)
    try:
        overrides, beam_args = split_overrides(rest, WebConfig)
        cfg = resolve(args, overrides, cmd)
        files = output.expand_inputs(args.input, cfg.storage_options)
    except (cfglib.ConfigError, FileNotFoundError, ValueError) as e:
        print(f"{cmd.prog}: error: {e}", file=sys.stderr)
        return 2
    LOG.info("%s: %d input files, stages %s, output %s", cmd.prog, len(files),
             ",".join(s for s in STAGES if s in cfg.stages), args.output)
    t0 = time.monotonic()
    so = cfg.storage_options
    with staged(args.output, so) as staging:
        run_pipeline(beam_args, lambda p: build(p, files, cfg, staging, {"inputs": files}))
        result = output.read_json(output.join(staging, "stats.json"), so)
        output.write_json(output.join(staging, "config.json"), cfglib.to_dict(cfg), so)
        output.commit(staging, args.output, so)
    return report(result, args.output, time.monotonic() - t0, cmd.prog)


def run_dedup(argv: list[str] | None = None) -> int:
    return run(argv, DEDUP)


def report(result: dict, out: str, seconds: float, prog: str,
           order: tuple[str, ...] = STATS_ORDER) -> int:
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
        print(f"{prog}: error: none of the {files['unreadable']} input files could "
              f"be read; see {out}/rejects", file=sys.stderr)
        return 1
    broken = stats.check_balanced(stages) + stats.check_chain(stages, order)
    if broken:  # a record went missing between stages: never let that pass quietly
        print(f"{prog}: error: record counts do not add up ({'; '.join(broken)})",
              file=sys.stderr)
        return 3
    return 0
