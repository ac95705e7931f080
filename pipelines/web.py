"""The web pipeline: Common Crawl WARC / WET (and JSONL, Parquet) to clean documents.

    skypile web --input GLOB [--input GLOB ...] --output DIR_OR_URL
                [--stages LIST] [--config FILE] [--section.key=value ...] [Beam flags]
    skypile dedup --input GLOB --output DIR_OR_URL [--config FILE]   (documents in)

Stages run in the report's order: ``read``, ``url`` (raw records that repeat a normalised
URL, dropped before extraction when ``exact`` checks URLs), ``extract`` (structural
extraction), distribution filtering and deduplication (``exact``, ``minhash``,
``semantic``, then ``blocks``: recurring blocks counted over the documents dedup kept, so
copies collapse first), CCNet-style
quality (``langid``, ``perplexity``, ``quality`` and their threshold step), then ``stem``
tagging for the STEM / Main split. Output contract: ``OUTPUT/docs/*.jsonl.gz``,
``OUTPUT/rejects/*.jsonl.gz``, ``OUTPUT/stats.json``, ``OUTPUT/reports/``, ``OUTPUT/other/``
and the resolved ``OUTPUT/config.json``, replaced whole on success.
"""

from __future__ import annotations

import argparse
import functools

import apache_beam as beam

from skypile import config as cfglib
from skypile.classifiers.langid import LangId
from skypile.jobs.scoring import LangIdConfig
from skypile.jobs.web import (DEDUP, DEDUP_STAGES, SCORERS, STAGES, STATS_ORDER, WEB, Command,
                              WebConfig, check, gate_languages)
from skypile.pipelines.common import (LOG, ApplyStage, InputFiles, ReadFile, WriteJsonl, chain,
                                      lists_on_workers, run_command, with_rejects,
                                      write_outputs)
from skypile.pipelines.dedup import (ExactDedup, MinHashDedup, RecurringBlocks, SemanticDedup,
                                     UrlDuplicates)
from skypile.pipelines.quality import OTHER, QualityStages
from skypile.text.extract import ExtractConfig, Extractor, text_document


def make_extractor(cfg: ExtractConfig, langid: LangIdConfig | None = None,
                   gate_langs: tuple[str, ...] = (), content: str = "auto") -> Extractor:
    """The ``extract`` stage of one worker (ApplyStage calls this in setup()).

    With ``gate_langs``, its pre-extraction language gate is the configured language-id
    model (``langid``), loaded here once per worker, not the bundled default. ``content``
    is ``read.content``: which text records hold HTML pages to extract.
    """
    gate = LangId(langid or LangIdConfig()).top if gate_langs else None
    return Extractor(cfg, gate, tuple(gate_langs), content)


def make_text_check():
    """``skypile dedup``'s ``extract`` step, which extracts nothing: text records become
    documents, and HTML pages among them rejects (``extract:markup``)."""
    return text_document


# ---- the pipeline -----------------------------------------------------------------------

def _dedup_stage(name: str, cfg: WebConfig, staging: str) -> beam.PTransform:
    d, so = cfg.dedup, cfg.storage_options
    if name == "blocks":
        return RecurringBlocks(d.blocks, staging, so)
    if name == "exact":
        return ExactDedup(d.exact)
    if name == "minhash":
        return MinHashDedup(d.minhash)
    return SemanticDedup(d.semantic, d.minhash.max_rounds, staging, so)


def _stages(cfg: WebConfig, staging: str):
    """(label, transform) of every configured stage, in the report's order."""
    yield "Read", with_rejects(ReadFile(cfg.read, cfg.storage_options))
    if "extract" in cfg.stages and "exact" in cfg.stages and cfg.dedup.exact.by_url:
        # raw records meet the others of their URL (stage "url") before extraction, in the
        # one read of the corpus: trafilatura never sees a URL duplicate
        yield "Url", UrlDuplicates()
    if "extract" in cfg.stages:
        yield "Extract", with_rejects(ApplyStage(make_extractor, cfg.extract, cfg.langid,
                                                 gate_languages(cfg), cfg.read.content,
                                                 stage="extract"))
    else:  # the reader was told to accept text documents only; HTML is still no text
        yield "AsDocuments", with_rejects(ApplyStage(make_text_check, stage="extract"))
    for name in DEDUP_STAGES:
        if name in cfg.stages:
            yield name.capitalize(), _dedup_stage(name, cfg, staging)
    if any(s in cfg.stages for s in SCORERS):
        yield "QualityFiltering", QualityStages(cfg.stages, cfg.langid, cfg.perplexity,
                                                cfg.quality, cfg.filter, cfg.stem)


def build(p: beam.Pipeline, files: list[str], cfg: WebConfig, staging: str,
          extra_stats: dict) -> None:
    """Adds the pipeline to ``p``, writing the output contract under ``staging``.

    ``files`` are the input files, or with ``read.list_on_workers`` the patterns."""
    so = cfg.storage_options
    names = (p | "Inputs" >> InputFiles(files, cfg.read, so)
             | "SpreadFiles" >> beam.Reshuffle())
    out = chain(names, _stages(cfg, staging))
    if OTHER in out.extra:
        out.extra[OTHER] | "WriteOther" >> WriteJsonl(staging, OTHER, so)
    write_outputs(staging, out.docs, out.rejects, out.counts, STATS_ORDER, extra_stats, so)


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


def _build_run(cmd: Command, p: beam.Pipeline, args: argparse.Namespace, files: list[str],
               cfg: WebConfig, staging: str) -> None:
    what = "input patterns, listed on workers" if lists_on_workers(cfg.read) else "input files"
    LOG.info("%s: %d %s, stages %s, output %s", cmd.prog, len(files), what,
             ",".join(s for s in STAGES if s in cfg.stages), args.output)
    build(p, files, cfg, staging, {"inputs": files})  # the patterns, when workers list


def run(argv: list[str] | None = None, cmd: Command = WEB) -> int:
    return run_command(argv, WebConfig, functools.partial(_build_run, cmd),
                       parser=make_parser(cmd), order=STATS_ORDER,
                       resolve=functools.partial(resolve, cmd=cmd))


def run_dedup(argv: list[str] | None = None) -> int:
    return run(argv, DEDUP)
