"""The ``skypile`` console script: one command, one subcommand per job.

Subcommands are looked up by module name and imported only when used, so ``skypile
--help`` is instant and the core package never imports Beam or torch by itself.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys

# name -> ("module:function" taking argv and returning the exit code, one-line summary)
COMMANDS = {
    "web": ("skypile.pipelines.web:run",
            "WARC/WET -> clean, deduplicated documents (Beam: extract, exact, minhash, blocks)"),
    "dedup": ("skypile.pipelines.web:run_dedup",
              "deduplicate JSONL/Parquet documents (Beam: exact, minhash; semantic, blocks)"),
    "code": ("skypile.pipelines.code:run",
             "repositories / archives / Stack-style rows -> clean, deduplicated code (Beam)"),
    "tokenize": ("skypile.pipelines.tokenize:run",
                 "documents -> versioned token shards per domain, held-out sets, manifest"),
    "shards": ("skypile.cli.shards:run",
               "inspect / verify token shards, convert to Megatron-LM, plan a mixture"),
    "train": ("skypile.trainer.train:run",
              "train the LLaMA-style model on token shards (CPU or torchrun on GPUs)"),
    "eval": ("skypile.trainer.evaluate:run",
             "per-domain perplexity (Table 6), contamination test (Table 8), C-Eval/CMMLU/MMLU"),
    "export": ("skypile.trainer.export:run",
               "a training checkpoint -> Hugging Face LlamaForCausalLM folder (safetensors)"),
    "report": ("skypile.cli.report:run",
               "one-page Markdown + PNG report over a run of the chain (counts, perplexity, mixture, curves, tables)"),
    "inspect": ("skypile.cli.inspect:run",
                "browsable HTML report of a run: funnels, sampled rejects by reason, scores, clusters, shards"),
    "classifiers": ("skypile.classifiers.cli:run",
                    "train language / KenLM perplexity / quality models; writes a web config"),
    "tokenizer": ("skypile.cli.tokenizer:run",
                  "train / extend (Chinese chars + words) / export the SentencePiece BPE tokenizer"),
}

USAGE = """usage: skypile COMMAND [options]   (skypile COMMAND --help for each)

Build bilingual (English + Chinese) pretraining corpora the Skywork-13B way.

commands:
{commands}

Start with:  skypile web --input 'data/*.warc.gz' --output out/web
"""


def _usage() -> str:
    width = max(map(len, COMMANDS))
    lines = [f"  {name:<{width}}  {summary}" for name, (_, summary) in COMMANDS.items()]
    return USAGE.format(commands="\n".join(lines))


def _quiet_imports() -> None:
    # Beam logs optional-dependency warnings (GCP clients) at import; they are not ours.
    logging.getLogger().setLevel(logging.ERROR)


def main(argv: list[str] | None = None) -> None:
    try:
        _main(argv)
    except BrokenPipeError:  # output piped into `head` and the like: stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(1)


def _main(argv: list[str] | None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(_usage())
        sys.exit(0 if argv else 2)
    if argv[0] in ("-V", "--version"):
        from skypile import __version__
        print(f"skypile {__version__}")
        sys.exit(0)
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"skypile: unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        sys.exit(2)
    _quiet_imports()
    module_name, func = COMMANDS[name][0].split(":")
    entry = getattr(importlib.import_module(module_name), func)
    level = os.environ.get("SKYPILE_LOG", "INFO").upper()
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(message)s",
                        force=True)
    logging.getLogger("skypile").setLevel(level)
    sys.exit(entry(rest))

