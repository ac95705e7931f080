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

import apache_beam as beam

from skypile import config as cfglib
from skypile.files import output
from skypile.files.readers import ReadStats, UnreadableFile
from skypile.document import Reject
from skypile.jobs.code import STATS_ORDER, CodeConfig, CodeFilter, check
from skypile.pipelines.common import (REJECTS, STATS, ApplyStage, InputFiles, StageFn,
                                      Unmatched, as_document, chain, list_inputs, run_command,
                                      with_rejects, write_outputs)
from skypile.pipelines.dedup import ExactDedup, MinHashDedup
from skypile.files import archives
from skypile.text import code_filters as codelib


class ReadCode(StageFn):
    """An input (folder, archive, rows file) in; its files' records out, rejects dropped,
    links and special files counted as ``read`` skipped (``link``, ``device``), so that
    files in = kept + rejected + skipped."""

    def __init__(self, opts: archives.CodeReadOptions, storage_options: dict):
        self.opts, self.so = opts, storage_options

    def process(self, name: bytes | str | Unmatched):
        if isinstance(name, Unmatched):  # --read.list_on_workers: a pattern matched nothing
            yield self.drop_unmatched(name)
            return
        path = name.decode("utf-8", "surrogateescape") if isinstance(name, bytes) else name
        rs = ReadStats()
        readable = True
        try:
            for item in archives.read_code(path, self.opts, self.so, rs):
                if isinstance(item, Reject):
                    yield self.drop(item)
                else:
                    self.keep("read")
                    yield item
        except (OSError, UnreadableFile) as e:  # missing, unreadable: a reject, the run goes on
            readable = False
            yield self.drop(archives.file_reject(path, "unreadable-file", error=str(e)[:200]))
        for kind, n in rs.skipped.items():
            self._tally.skipped("read", kind, n)
        self._tally.note("files", "read" if readable else "unreadable")


def _sum3(values):
    values = list(values)
    return tuple(sum(v[i] for v in values) for i in range(3))


def _format_report(rows, rates: dict, staging: str, so: dict):
    kept_bytes = sum(b for _e, (_n, _k, b) in rows) or 1
    report = {ext or "(none)": {"files": n, "kept": k, "rate": rates.get(ext, 1.0),
                                "share_of_kept_bytes": round(b / kept_bytes, 4)}
              for ext, (n, k, b) in sorted(rows, key=lambda r: -r[1][2])}
    output.write_json(output.join(staging, "reports", "formats.json"), report, so)


class FilterCode(beam.PTransform):
    """The ``code`` stage (file heuristics, data formats sampled), and
    ``reports/formats.json``: per extension, files seen and kept, and bytes kept."""

    def __init__(self, cfg: codelib.CodeFilterConfig, staging: str, storage_options: dict):
        super().__init__()
        self.cfg, self.staging, self.so = cfg, staging, storage_options

    def expand(self, records):
        out = records | "Filter" >> with_rejects(ApplyStage(CodeFilter, self.cfg, stage="code"))
        kept = out.docs | "KeptFormats" >> beam.Map(
            lambda d: (codelib.extension(d.metadata["path"]), (1, 1, len(d.text))))
        dropped = out[REJECTS] | "DroppedFormats" >> beam.Map(
            lambda r: (codelib.extension(r.detail["path"]), (1, 0, 0)))
        ((kept, dropped) | "Formats" >> beam.Flatten()
         | "SumFormats" >> beam.CombinePerKey(_sum3)
         | "AllFormats" >> beam.combiners.ToList()
         | "FormatReport" >> beam.Map(_format_report, self.cfg.format_rates, self.staging,
                                      self.so))
        return {"docs": out.docs, "rejects": out[REJECTS], "stats": out[STATS]}


def _stages(cfg: CodeConfig, staging: str):
    so = cfg.storage_options
    yield "Read", with_rejects(ReadCode(cfg.read, so))
    if "code" in cfg.stages:
        yield "Code", FilterCode(cfg.filter, staging, so)
    else:
        yield "AsDocuments", beam.Map(as_document)
    if "exact" in cfg.stages:
        yield "Exact", ExactDedup(cfg.dedup.exact)
    if "minhash" in cfg.stages:
        yield "Minhash", MinHashDedup(cfg.dedup.minhash)


def build(p, files: list[str], cfg: CodeConfig, staging: str) -> None:
    # as bytes: a file name that is not UTF-8 (lone surrogates in Python) would break Beam's
    # str coder; ReadCode decodes it back, and every name it outputs is printable
    names = (p | "Inputs" >> InputFiles(files, cfg.read, cfg.storage_options,
                                        keep_folders=True, as_bytes=True)
             | "SpreadFiles" >> beam.Reshuffle())
    out = chain(names, _stages(cfg, staging))
    inputs = [archives.printable(f)[0] for f in files]  # a name may hold non-UTF-8 bytes
    write_outputs(staging, out.docs, out.rejects, out.counts, STATS_ORDER, {"inputs": inputs},
                  cfg.storage_options)


def make_parser() -> argparse.ArgumentParser:
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
    return ap


def resolve(args: argparse.Namespace, overrides: list[str]) -> CodeConfig:
    """The config from --config, the overrides and --stages, checked."""
    cfg = cfglib.load(CodeConfig, args.config, overrides)
    if args.stages is not None:
        cfg.stages = [s.strip() for s in args.stages.split(",") if s.strip()]
    check(cfg)
    return cfg


def _inputs(args: argparse.Namespace, cfg: CodeConfig) -> list[str]:
    # a folder named on its own is one repository, read whole by ReadCode
    return list_inputs(args.input, cfg.read, cfg.storage_options, keep_folders=True)


def run(argv: list[str] | None = None) -> int:
    return run_command(argv, CodeConfig,
                       lambda p, _args, files, cfg, staging: build(p, files, cfg, staging),
                       parser=make_parser(), order=STATS_ORDER, resolve=resolve, inputs=_inputs)
