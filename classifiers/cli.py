"""``skypile classifiers``: train the models the web pipeline's quality stages use.

    skypile classifiers train --data DATA_DIR --output MODELS_DIR [--kenlm-bin DIR]
    skypile classifiers kenlm-train --input GLOB --lang zh --output DIR
    skypile classifiers quality-train --positives GLOB --negatives GLOB --output FILE
    skypile classifiers stem-train --data DATA_DIR --output FILE
    skypile classifiers cutoffs --sample GLOB --models-config FILE --output cutoff.csv

``train`` makes everything the default web config needs from the shared data folder and
writes ``MODELS_DIR/web.yaml``: ``skypile web --config MODELS_DIR/web.yaml ...`` then runs
every stage.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
import zlib
from pathlib import Path
from typing import Iterable, Iterator

import yaml

from skypile.classifiers import perplexity as ppl
from skypile.classifiers import quality, stem
from skypile.classifiers.langid import LangId
from skypile.tokens.tokenizer import TokenizerError, iter_texts

LOG = logging.getLogger("skypile")


def held_out(text: str, share: float = 0.1) -> bool:
    """Deterministic split by a hash of the text (the same on every run)."""
    return zlib.crc32(text.encode("utf-8")) % 1000 < share * 1000


def _jsonl(path: Path, field: str) -> list[str]:
    """A JSONL file's texts, through the project's one reader."""
    return list(iter_texts([str(path)], text_field=field))


_WIKITEXT_FIXES = [(" @-@ ", "-"), (" @,@ ", ","), (" @.@ ", "."), (" , ", ", "), (" . ", ". "),
                   (" ; ", "; "), (" : ", ": "), (" 's", "'s"), (" n't", "n't"), ("( ", "("),
                   (" )", ")"), (" ' ", "' ")]


def detokenize_wikitext(line: str) -> str:
    """WikiText is tokenized (" @-@ ", " , "); undo that so it reads like web text."""
    for a, b in _WIKITEXT_FIXES:
        line = line.replace(a, b)
    return line.rstrip(" .") + "." if line.endswith(" .") else line


def _fasttext_lines(path: Path, label: str) -> Iterator[str]:
    for line in open(path, encoding="utf-8"):
        if line.startswith(f"__label__{label} "):
            yield line.split(" ", 1)[1].strip()


def _warc_pages(paths: Iterable[Path]) -> Iterator[str]:
    from skypile.document import Document
    from skypile.text.extract import ExtractConfig, Extractor
    from skypile.files.readers import RawRecord, read_file

    logging.getLogger("trafilatura").setLevel(logging.ERROR)
    ex = Extractor(ExtractConfig(sandbox=False))
    for path in paths:
        for rec in read_file(str(path)):
            if isinstance(rec, RawRecord):
                doc = ex(rec)
                if isinstance(doc, Document):
                    yield doc.text


class Sources:
    """The shared data folder's files, by role (see its README)."""

    def __init__(self, data: Path):
        self.data = data
        missing = [p for p in ("wiki-en/wiki.test.raw", "wiki-zh", "web-quality", "warc")
                   if not (data / p).exists()]
        if missing:
            raise FileNotFoundError(f"{data} lacks {', '.join(missing)}: is it the shared data folder?")

    def wiki(self, lang: str) -> list[str]:
        if lang == "en":
            # one paragraph per line; headings (" = Title = ") are short and left out
            return [detokenize_wikitext(p.strip()) for p in (self.data / "wiki-en/wiki.test.raw")
                    .read_text(encoding="utf-8").splitlines() if len(p.strip()) > 50]
        return [t for f in sorted((self.data / "wiki-zh").glob("*.jsonl")) for t in _jsonl(f, "text")]

    def web(self, lang: str) -> list[str]:
        """Random web text of a language (CCNet samples, ChineseWebText, Common Crawl pages)."""
        wq = self.data / "web-quality"
        if lang == "en":
            texts = [t for f in sorted(wq.glob("multiple_files_cc_en_head-*.jsonl")) for t in _jsonl(f, "text")]
            texts += list(_jsonl(wq / "provided_documents_000.json.gz", "text"))
            texts += list(_warc_pages(sorted((self.data / "warc/dolma-wget-warc").glob("*.warc.gz"))))
            return texts
        texts = list(_jsonl(wq / "ccnet_zh_2021-43_cleared1.jsonl", "raw_content"))
        texts += list(_jsonl(wq / "fasttext_clean.jsonl", "text"))
        texts += list(_jsonl(wq / "fasttext_dirty.jsonl", "text"))
        return texts

    def spam_pages(self) -> list[str]:
        return list(_warc_pages(sorted((self.data / "warc/resiliparse-cc-warc").glob("*.warc.gz"))))

    def quality_examples(self) -> tuple[list[str], list[str]]:
        wq = self.data / "web-quality"
        pos = [t for lang in ("en", "zh") for t in self.wiki(lang) if not held_out(t)]
        pos += list(_jsonl(wq / "fasttext_clean.jsonl", "text"))
        pos += list(_fasttext_lines(wq / "fasttext_train.txt", "clean"))
        neg = list(_jsonl(wq / "fasttext_dirty.jsonl", "text"))
        neg += list(_fasttext_lines(wq / "fasttext_train.txt", "dirty"))
        neg += list(_jsonl(wq / "ccnet_zh_2021-43_cleared1.jsonl", "raw_content"))
        neg += [t for f in sorted(wq.glob("multiple_files_cc_en_head-*.jsonl")) for t in _jsonl(f, "text")]
        neg += list(_jsonl(wq / "provided_documents_000.json.gz", "text"))
        neg += self.spam_pages()
        return pos, neg


def compute_cutoffs(samples: dict[str, list[str]], models: dict, out_csv: str) -> dict:
    scorer = ppl.Scorer(ppl.PerplexityConfig(models=models))
    table = {}
    for lang, texts in samples.items():
        values = [v for v in (scorer.perplexity(t, lang) for t in texts) if v is not None]
        if len(values) < 10:
            raise ValueError(f"only {len(values)} {lang} documents to compute cutoffs from")
        table[lang] = ppl.percentiles(values)
    ppl.write_cutoffs(out_csv, table)
    return {lang: {"documents": len(samples[lang]), "p30": t[30], "p60": t[60]}
            for lang, t in table.items()}


def train_all(data: Path, out: Path, kenlm_bin: str | None) -> dict:
    src = Sources(data)
    out.mkdir(parents=True, exist_ok=True)
    report: dict = {"data": str(data)}
    models = {}
    for lang in ("en", "zh"):
        t0 = time.monotonic()
        reference = [t for t in src.wiki(lang) if not held_out(t)]
        models[lang] = ppl.train(reference, lang, str(out), ppl.KenLMTrainConfig(), kenlm_bin)
        LOG.info("KenLM %s: %d reference texts, %.0fs", lang, len(reference), time.monotonic() - t0)
        report[f"kenlm_{lang}"] = {"reference_texts": len(reference)}
    # Cutoffs from random web text of each language, as CCNet computes them
    samples = {lang: src.web(lang) for lang in ("en", "zh")}
    cutoffs = out / "cutoff.csv"
    report["cutoffs"] = compute_cutoffs(samples, models, str(cutoffs))
    pos, neg = src.quality_examples()
    report["quality"] = quality.train(pos, neg, str(out / "quality.bin"), quality.QualityTrainConfig())
    LOG.info("quality classifier: %s", report["quality"])
    general = [t for lang in ("en", "zh") for t in src.wiki(lang)] + samples["en"] + samples["zh"]
    report["stem"] = stem.train_from_data(data, general, str(out / "stem.bin"))
    LOG.info("STEM classifier: %s", report["stem"])
    config = {
        "stages": ["extract", "blocks", "exact", "minhash", "langid", "perplexity", "quality",
                   "stem"],
        "perplexity": {"models": {lang: {k: str(Path(v).resolve()) for k, v in m.items()}
                                  for lang, m in models.items()},
                       "cutoffs": str(cutoffs.resolve())},
        "quality": {"model": str((out / "quality.bin").resolve())},
        "stem": {"model": str((out / "stem.bin").resolve())},
    }
    (out / "web.yaml").write_text(
        "# Written by `skypile classifiers train`; use with skypile web --config THIS_FILE\n"
        + yaml.safe_dump(config, sort_keys=False, allow_unicode=True), encoding="utf-8")
    (out / "train_report.json").write_text(json.dumps(report, indent=2))
    return report


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="skypile classifiers",
                                 description="Train language, perplexity and quality models.")
    sub = ap.add_subparsers(dest="cmd", required=True, metavar="COMMAND")
    default_bin = os.environ.get("SKYPILE_KENLM_BIN", ".cache/kenlm/bin")
    t = sub.add_parser("train", help="train every model the default web config needs")
    t.add_argument("--data", required=True, metavar="DATA_DIR", help="the shared data folder")
    t.add_argument("--output", required=True, metavar="MODELS_DIR")
    t.add_argument("--kenlm-bin", default=default_bin, metavar="DIR",
                   help=f"folder with lmplz and build_binary (default {default_bin})")
    k = sub.add_parser("kenlm-train", help="SentencePiece + KenLM n-gram model from reference text")
    k.add_argument("--input", action="append", required=True, metavar="GLOB")
    k.add_argument("--lang", required=True)
    k.add_argument("--order", type=int, default=5)
    k.add_argument("--output", required=True, metavar="DIR")
    k.add_argument("--kenlm-bin", default=default_bin, metavar="DIR")
    q = sub.add_parser("quality-train", help="fastText classifier: positives vs random web text")
    q.add_argument("--positives", action="append", required=True, metavar="GLOB")
    q.add_argument("--negatives", action="append", required=True, metavar="GLOB")
    q.add_argument("--output", required=True, metavar="FILE")
    s = sub.add_parser("stem-train", help="fastText STEM classifier (exercises and solutions "
                                          "vs general text): GSM8K + C-Eval/CMMLU dev")
    s.add_argument("--data", required=True, metavar="DATA_DIR")
    s.add_argument("--negatives", action="append", metavar="GLOB",
                   help="general text (default: the data folder's Wikipedia and web text)")
    s.add_argument("--output", required=True, metavar="FILE")
    c = sub.add_parser("cutoffs", help="per-language perplexity percentiles (CCNet cutoff.csv)")
    c.add_argument("--sample", action="append", required=True, metavar="GLOB")
    c.add_argument("--models-config", required=True, metavar="FILE",
                   help="a web config with perplexity.models (e.g. MODELS_DIR/web.yaml)")
    c.add_argument("--output", required=True, metavar="CSV")
    return ap


def run(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.cmd == "train":
            report = train_all(Path(args.data), Path(args.output), args.kenlm_bin)
            print(json.dumps(report, indent=2))
            print(f"models and {args.output}/web.yaml written; run: skypile web --config "
                  f"{args.output}/web.yaml --input ... --output ...")
        elif args.cmd == "kenlm-train":
            paths = ppl.train(iter_texts(args.input), args.lang, args.output,
                              ppl.KenLMTrainConfig(order=args.order), args.kenlm_bin)
            print(json.dumps(paths))
        elif args.cmd == "stem-train":
            src = Sources(Path(args.data))
            negatives = list(iter_texts(args.negatives)) if args.negatives else (
                [t for lang in ("en", "zh") for t in src.wiki(lang) + src.web(lang)])
            print(json.dumps(stem.train_from_data(Path(args.data), negatives, args.output)))
        elif args.cmd == "quality-train":
            print(json.dumps(quality.train(iter_texts(args.positives), iter_texts(args.negatives),
                                           args.output, quality.QualityTrainConfig())))
        else:
            cfg = yaml.safe_load(open(args.models_config, encoding="utf-8"))
            models = cfg["perplexity"]["models"]
            lid = LangId()
            samples: dict[str, list[str]] = {lang: [] for lang in models}
            for text in iter_texts(args.sample):
                lang = lid.predict(text).lang
                if lang in samples:
                    samples[lang].append(text)
            print(json.dumps(compute_cutoffs(samples, models, args.output)))
    except (ppl.KenLMError, TokenizerError, FileNotFoundError, ValueError, KeyError, OSError) as e:
        print(f"skypile classifiers: error: {e}", file=sys.stderr)
        return 2
    return 0
