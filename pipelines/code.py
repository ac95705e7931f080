"""``skypile code``: source files to clean, deduplicated code documents (Apache Beam).

    skypile code --input PATH_OR_GLOB [--input ...] --output DIR_OR_URL [--config FILE]

Inputs: folders (a repository each), tar / tar.gz / zip archives of repositories, and
Stack-style JSONL/Parquet rows (repo, path, content, license). Stages: ``code`` (the
heuristics and the data-format sampling), then ``exact`` and ``minhash`` from the dedup
stages. Output: the web pipeline's contract, with metadata.repo, path, language, license,
and ``OUTPUT/reports/formats.json`` (per extension: files seen, kept, sampling rate,
share of kept bytes).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time

import apache_beam as beam

from skypile.text import code_filters as codelib
from skypile import config as cfglib
from skypile.files import output
from skypile.text.dedup import MinHashConfig
from skypile.document import Document, Reject
from skypile.files.readers import file_reject
from skypile.pipelines.common import (REJECTS, STATS, StageFn, WriteJsonl, WriteStats,
                                      run_pipeline, staged)
from skypile.pipelines.dedup import ExactConfig, ExactDedup, MinHashDedup
from skypile.pipelines.web import report, split_overrides

STAGES = ("code", "exact", "minhash")
STATS_ORDER = ("read", *STAGES)


@dataclasses.dataclass
class CodeDedupConfig:
    """Deduplication of code files (``dedup``)."""

    exact: ExactConfig = dataclasses.field(default_factory=lambda: ExactConfig(by_url=False))
    minhash: MinHashConfig = dataclasses.field(default_factory=lambda: MinHashConfig(threshold=0.7))


@dataclasses.dataclass
class CodeConfig:
    """Everything ``skypile code`` can be told (--config FILE, --section.key=value)."""

    stages: list[str] = dataclasses.field(default_factory=lambda: list(STAGES))
    """Stages to run: code, exact, minhash."""
    read: codelib.CodeReadOptions = dataclasses.field(default_factory=codelib.CodeReadOptions)
    filter: codelib.CodeFilterConfig = dataclasses.field(default_factory=codelib.CodeFilterConfig)
    dedup: CodeDedupConfig = dataclasses.field(default_factory=CodeDedupConfig)
    storage_options: dict = dataclasses.field(default_factory=dict)
    """fsspec options for remote inputs and outputs."""


class ReadCode(StageFn):
    def __init__(self, opts: codelib.CodeReadOptions, storage_options: dict):
        self.opts, self.so = opts, storage_options

    def process(self, path: str):
        try:
            for item in codelib.read_code(path, self.opts, self.so):
                if isinstance(item, Reject):
                    yield self.drop(item)
                else:
                    self.keep("read")
                    yield item
        except OSError as e:  # missing, unreadable: named in the rejects, the run goes on
            yield self.drop(file_reject(path, "unreadable-file", error=str(e)[:200]))
            self._tally.note("files", "unreadable")
            return
        self._tally.note("files", "read")


class FilterCode(StageFn):
    def __init__(self, cfg: codelib.CodeFilterConfig):
        self.cfg = cfg

    def process(self, rec):
        meta = dict(rec.metadata)
        reason = codelib.check(meta, rec.body, self.cfg)
        ext = meta["path"].rsplit(".", 1)[-1].lower() if "." in meta["path"] else ""
        yield beam.pvalue.TaggedOutput("formats", (ext, (1, 0 if reason else 1,
                                                         0 if reason else len(rec.body))))
        if reason:
            yield self.drop(Reject(id=rec.id, url=rec.url, stage="code", reason=reason,
                                   text=rec.body, source=rec.source,
                                   detail={k: meta[k] for k in ("repo", "path", "language")}))
            return
        self.keep("code")
        yield Document(id=rec.id, text=rec.body, url=rec.url, source=rec.source, metadata=meta)


def _sum3(values):
    values = list(values)
    return tuple(sum(v[i] for v in values) for i in range(3))


def _format_report(rows, rates: dict, staging: str, so: dict):
    kept_bytes = sum(b for _e, (_n, _k, b) in rows) or 1
    report = {ext or "(none)": {"files": n, "kept": k, "rate": rates.get(ext, 1.0),
                                "share_of_kept_bytes": round(b / kept_bytes, 4)}
              for ext, (n, k, b) in sorted(rows, key=lambda r: -r[1][2])}
    output.write_json(output.join(staging, "reports", "formats.json"), report, so)


def build(p, files: list[str], cfg: CodeConfig, staging: str) -> None:
    so = cfg.storage_options
    read = (p | "Inputs" >> beam.Create(files) | "SpreadFiles" >> beam.Reshuffle()
            | "Read" >> beam.ParDo(ReadCode(cfg.read, so)).with_outputs(REJECTS, STATS, main="records"))
    rejects, counts = [read[REJECTS]], [read[STATS]]
    filtered = read.records | "Code" >> beam.ParDo(FilterCode(cfg.filter)).with_outputs(
        REJECTS, STATS, "formats", main="docs")
    if "code" in cfg.stages:
        docs = filtered.docs
        rejects.append(filtered[REJECTS])
        counts.append(filtered[STATS])
        (filtered["formats"] | "SumFormats" >> beam.CombinePerKey(_sum3)
         | "AllFormats" >> beam.combiners.ToList()
         | "FormatReport" >> beam.Map(_format_report, cfg.filter.format_rates, staging, so))
    else:
        docs = read.records | "AsDocuments" >> beam.Map(
            lambda r: Document(id=r.id, text=r.body, url=r.url, source=r.source,
                               metadata=dict(r.metadata)))
    for name, transform in (("exact", lambda: ExactDedup(cfg.dedup.exact)),
                            ("minhash", lambda: MinHashDedup(cfg.dedup.minhash))):
        if name in cfg.stages:
            out = docs | name.capitalize() >> transform()
            docs = out["docs"]
            rejects.append(out["rejects"])
            counts.append(out["stats"])
    docs | "WriteDocs" >> WriteJsonl(staging, "docs", so)
    (rejects | "AllRejects" >> beam.Flatten()) | "WriteRejects" >> WriteJsonl(staging, "rejects", so)
    ((counts | "AllCounts" >> beam.Flatten())
     | "WriteStats" >> WriteStats(staging, STATS_ORDER, {"inputs": files}, so))


def run(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="skypile code",
        description="Source code to clean, deduplicated documents: folders, tar/zip archives "
                    "of repositories, Stack-style JSONL/Parquet (repo, path, content, license).",
        epilog="Output: OUTPUT/docs, OUTPUT/rejects (every dropped file with its reason), "
               "OUTPUT/stats.json, OUTPUT/reports/formats.json. Settings: --config FILE and "
               "--section.key=value, e.g. --filter.max_line_length=2000 "
               "--filter.format_rates='{json: 0.2}'. Other flags go to Beam.")
    ap.add_argument("--input", action="append", required=True, metavar="PATH_OR_GLOB",
                    help="a repository folder, an archive, or JSONL/Parquet; repeatable")
    ap.add_argument("--output", required=True, metavar="DIR_OR_URL")
    ap.add_argument("--stages", default=None, metavar="LIST",
                    help="comma-separated, of: code, exact, minhash (default all)")
    ap.add_argument("--config", default=None, metavar="FILE")
    args, rest = ap.parse_known_args(argv)
    try:
        overrides, beam_args = split_overrides(rest)
        cfg = cfglib.load(CodeConfig, args.config, overrides)
        if args.stages is not None:
            cfg.stages = [s.strip() for s in args.stages.split(",") if s.strip()]
        unknown = [s for s in cfg.stages if s not in STAGES]
        if unknown:
            raise cfglib.ConfigError(f"unknown stage {unknown[0]!r} (known: {', '.join(STAGES)})")
        files = output.expand_inputs(args.input, cfg.storage_options, keep_folders=True)
    except (cfglib.ConfigError, FileNotFoundError, ValueError) as e:
        print(f"skypile code: error: {e}", file=sys.stderr)
        return 2
    so = cfg.storage_options
    t0 = time.monotonic()
    with staged(args.output, so) as staging:
        run_pipeline(beam_args, lambda p: build(p, files, cfg, staging))
        result = output.read_json(output.join(staging, "stats.json"), so)
        output.write_json(output.join(staging, "config.json"), cfglib.to_dict(cfg), so)
        output.commit(staging, args.output, so)
    return report(result, args.output, time.monotonic() - t0, "skypile code", STATS_ORDER)


