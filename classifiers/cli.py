"""``skypile classifiers``: train the models the web pipeline's quality stages use.

    skypile classifiers train --data DATA_DIR --output MODELS_DIR [--kenlm-bin DIR] [--recipe FILE]
    skypile classifiers kenlm-train --input GLOB --lang zh --output DIR
    skypile classifiers quality-train --positives GLOB --negatives GLOB --output FILE
    skypile classifiers stem-train --data DATA_DIR --output FILE
    skypile classifiers cutoffs --sample GLOB --models-config FILE --output cutoff.csv

``train`` makes every model of its recipe (the files under DATA_DIR each model trains on;
the shipped ``recipes/default.yaml`` fits the shared data folder) and writes
``MODELS_DIR/web.yaml``: the model sections, and the stages they make possible, so
``skypile web --config MODELS_DIR/web.yaml ...`` runs every stage. Its model paths are
relative to its folder, each with its sha256, so the folder runs from anywhere it is
copied, object storage included (workers fetch and check the models). One config type per
command; its fields are the command's flags.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from pathlib import Path
from typing import Iterable

import yaml

from skypile import config as cfglib
from skypile.classifiers import perplexity as ppl
from skypile.classifiers import quality, recipe, stem
from skypile.classifiers.langid import LangId
from skypile.cli import subcommands
from skypile.cli.subcommands import arg
from skypile.files import models as modelfiles
from skypile.jobs import web
from skypile.text import cutoffs
from skypile.tokens.tokenizer import TokenizerError, iter_texts

LOG = logging.getLogger("skypile")
PROG = "skypile classifiers"


def resolve_kenlm_bin(flag: str) -> str:
    """--kenlm-bin, else $SKYPILE_KENLM_BIN (make exports it), else .cache/kenlm/bin; read
    when a command runs, never at import."""
    return flag or os.environ.get("SKYPILE_KENLM_BIN", ".cache/kenlm/bin")


@dataclasses.dataclass(kw_only=True)
class ClassifiersTrainCommand:
    """train every model the default web config needs"""

    data: str = arg(metavar="DATA_DIR")
    """the shared data folder"""
    output: str = arg(metavar="MODELS_DIR")
    """folder for the models, cutoff.csv, web.yaml and train_report.json"""
    kenlm_bin: str = arg("", metavar="DIR")
    """folder with lmplz and build_binary (default: $SKYPILE_KENLM_BIN, else .cache/kenlm/bin)"""
    recipe: str = arg("", metavar="FILE")
    """which files under --data each model trains on (default: the shipped
    classifiers/recipes/default.yaml)"""


@dataclasses.dataclass(kw_only=True)
class KenLMTrainCommand:
    """SentencePiece + KenLM n-gram model from reference text"""

    input: list[str] = arg(metavar="GLOB", repeat=True)
    """reference text (JSONL/Parquet text field, WET or .txt); repeatable"""
    lang: str
    """language code: writes LANG.sp.model and LANG.arpa.bin"""
    order: int = 5
    """n-gram order"""
    output: str = arg(metavar="DIR")
    """folder for the two model files"""
    kenlm_bin: str = arg("", metavar="DIR")
    """folder with lmplz and build_binary (default: $SKYPILE_KENLM_BIN, else .cache/kenlm/bin)"""


@dataclasses.dataclass(kw_only=True)
class QualityTrainCommand:
    """fastText classifier: positives vs random web text"""

    positives: list[str] = arg(metavar="GLOB", repeat=True)
    """text of the wanted kind (e.g. Wikipedia); repeatable"""
    negatives: list[str] = arg(metavar="GLOB", repeat=True)
    """random web text; repeatable"""
    output: str = arg(metavar="FILE")
    """the fastText model to write"""


@dataclasses.dataclass(kw_only=True)
class StemTrainCommand:
    """fastText STEM classifier (exercises and solutions vs general text): GSM8K +
    C-Eval/CMMLU dev"""

    data: str = arg(metavar="DATA_DIR")
    """the shared data folder (the recipe's stem sources)"""
    negatives: list[str] | None = arg(None, metavar="GLOB", repeat=True)
    """general text (default: the data folder's Wikipedia and web text)"""
    output: str = arg(metavar="FILE")
    """the fastText model to write"""
    recipe: str = arg("", metavar="FILE")
    """which files under --data are exercises and general text (default: the shipped
    classifiers/recipes/default.yaml)"""


@dataclasses.dataclass(kw_only=True)
class CutoffsCommand:
    """per-language perplexity percentiles (CCNet cutoff.csv)"""

    sample: list[str] = arg(metavar="GLOB", repeat=True)
    """random web text; each document counts for the language fastText gives it"""
    models_config: str = arg(metavar="FILE")
    """a web config with perplexity.models (e.g. MODELS_DIR/web.yaml)"""
    output: str = arg(metavar="CSV")
    """the cutoff.csv to write"""


# ---- what the commands do --------------------------------------------------------------

def compute_cutoffs(samples: dict[str, list[str]], models: dict, out_csv: str,
                    storage_options: dict | None = None) -> dict:
    scorer = ppl.Scorer(ppl.PerplexityConfig(models=models, storage_options=storage_options or {}))
    table = {}
    for lang, texts in samples.items():
        values = [v for v in (scorer.perplexity(t, lang) for t in texts) if v is not None]
        if len(values) < 10:
            raise ValueError(f"only {len(values)} {lang} documents to compute cutoffs from")
        table[lang] = cutoffs.percentiles(values)
    cutoffs.write_cutoffs(out_csv, table)
    return {lang: {"documents": len(samples[lang]), "p30": t[30], "p60": t[60]}
            for lang, t in table.items()}


def train_quality(positives: Iterable[str], negatives: Iterable[str], out_path: str) -> dict:
    """The quality classifier with the default settings; its held-out precision / recall."""
    return quality.train(positives, negatives, out_path, quality.QualityTrainConfig())


def train_stem(positives: Iterable[str], negatives: Iterable[str], out_path: str) -> dict:
    """The STEM classifier: the quality classifier's recipe with the STEM / Main labels."""
    return quality.train(positives, negatives, out_path, quality.QualityTrainConfig(),
                         labels=(stem.STEM, stem.MAIN))


def _perplexity(src: recipe.DataFolder, out: Path, bin_dir: str | None, report: dict) -> dict:
    """KenLM per language and the cutoffs; the web config's perplexity section."""
    models = {}
    for lang, names in src.recipe.kenlm.items():
        t0 = time.monotonic()
        reference = src.texts(names)
        models[lang] = ppl.train(reference, lang, str(out), ppl.KenLMTrainConfig(), bin_dir)
        LOG.info("KenLM %s: %d reference texts, %.0fs", lang, len(reference), time.monotonic() - t0)
        report[f"kenlm_{lang}"] = {"reference_texts": len(reference)}
    # Cutoffs from random web text of each language, as CCNet computes them
    samples = {lang: src.texts(names) for lang, names in src.recipe.cutoffs.items()}
    csv_path = out / "cutoff.csv"
    report["cutoffs"] = compute_cutoffs(samples, models, str(csv_path))
    return {"models": {lang: {**{k: _portable(v, out) for k, v in m.items()},
                              **{f"{k}_sha256": modelfiles.sha256_file(v) for k, v in m.items()}}
                       for lang, m in models.items()},
            "cutoffs": _portable(csv_path, out),
            "cutoffs_sha256": modelfiles.sha256_file(str(csv_path))}


def _portable(path: str | Path, folder: Path) -> str:
    """A model's path as web.yaml holds it: relative to the web.yaml's folder, so the models
    folder can move (or be uploaded to object storage) whole."""
    return modelfiles.relative_to(path, folder)


def web_config(sections: dict, folder: Path) -> dict:
    """The web.yaml (in ``folder``) of these model sections: the default stages, plus each
    scoring stage whose model exists (langid too when a stage needs it), in the pipeline's
    order. Its paths are relative to ``folder``."""
    scoring = set(sections) | ({"langid"} if {"perplexity", "quality"} & set(sections) else set())
    stages = [s for s in web.STAGES if s in web.DEFAULT_STAGES or s in scoring]
    config = {"stages": stages, **sections}
    resolved = modelfiles.rebase_paths(web.WebConfig, config, str(folder / "web.yaml"))
    web.check(cfglib.from_dict(web.WebConfig, resolved))  # what we write must run
    return config


def train_all(data: Path, out: Path, kenlm_bin: str | None,
              recipe_path: str | Path | None = None) -> dict:
    """Every model of the recipe (default: the shipped one) from ``data`` into ``out``,
    with ``out/web.yaml`` and ``out/train_report.json``; returns the report."""
    rcp = recipe.load(recipe_path)
    src = recipe.DataFolder(data, rcp)
    src.check(rcp.uses())
    out.mkdir(parents=True, exist_ok=True)
    report: dict = {"data": str(data)}
    sections: dict = {}
    if rcp.kenlm:
        sections["perplexity"] = _perplexity(src, out, kenlm_bin, report)
    for name, train, ex in (("quality", train_quality, rcp.quality),
                            ("stem", train_stem, rcp.stem)):
        if ex is None:
            continue
        path = out / f"{name}.bin"
        report[name] = train(src.texts(ex.positives), src.texts(ex.negatives), str(path))
        LOG.info("%s classifier: %s", name, report[name])
        sections[name] = {"model": _portable(path, out),
                          "model_sha256": modelfiles.sha256_file(str(path))}
    (out / "web.yaml").write_text(
        "# Written by `skypile classifiers train`; use with skypile web --config THIS_FILE.\n"
        "# Paths are relative to this file's folder: copy the folder anywhere, local or\n"
        "# object storage (--config s3://bucket/models/web.yaml), and it still runs.\n"
        + yaml.safe_dump(web_config(sections, out), sort_keys=False, allow_unicode=True),
        encoding="utf-8")
    (out / "train_report.json").write_text(json.dumps(report, indent=2))
    return report


def run_train(cfg: ClassifiersTrainCommand) -> None:
    report = train_all(Path(cfg.data), Path(cfg.output), resolve_kenlm_bin(cfg.kenlm_bin),
                       cfg.recipe or None)
    print(json.dumps(report, indent=2))
    print(f"models and {cfg.output}/web.yaml written; run: skypile web --config "
          f"{cfg.output}/web.yaml --input ... --output ...")


def run_kenlm(cfg: KenLMTrainCommand) -> None:
    paths = ppl.train(iter_texts(cfg.input), cfg.lang, cfg.output,
                      ppl.KenLMTrainConfig(order=cfg.order), resolve_kenlm_bin(cfg.kenlm_bin))
    print(json.dumps(paths))


def run_quality(cfg: QualityTrainCommand) -> None:
    print(json.dumps(train_quality(iter_texts(cfg.positives), iter_texts(cfg.negatives),
                                    cfg.output)))


def run_stem(cfg: StemTrainCommand) -> None:
    rcp = recipe.load(cfg.recipe or None)
    if rcp.stem is None:
        raise cfglib.ConfigError(f"recipe {cfg.recipe or recipe.DEFAULT} has no stem section")
    src = recipe.DataFolder(Path(cfg.data), rcp)
    src.check(rcp.stem.positives + ([] if cfg.negatives else rcp.stem.negatives))
    negatives = list(iter_texts(cfg.negatives)) if cfg.negatives else src.texts(rcp.stem.negatives)
    print(json.dumps(train_stem(src.texts(rcp.stem.positives), negatives, cfg.output)))


def run_cutoffs(cfg: CutoffsCommand) -> None:
    web_cfg = cfglib.load(web.WebConfig, cfg.models_config)
    models = web_cfg.perplexity.models
    if not models:
        raise cfglib.ConfigError(f"{cfg.models_config} has no perplexity.models (make them "
                                 "with: skypile classifiers train or kenlm-train)")
    lid = LangId()
    samples: dict[str, list[str]] = {lang: [] for lang in models}
    for text in iter_texts(cfg.sample):
        lang = lid.predict(text).lang
        if lang in samples:
            samples[lang].append(text)
    print(json.dumps(compute_cutoffs(samples, models, cfg.output, web_cfg.storage_options)))


COMMANDS: subcommands.Commands = {
    "train": (ClassifiersTrainCommand, run_train),
    "kenlm-train": (KenLMTrainCommand, run_kenlm),
    "quality-train": (QualityTrainCommand, run_quality),
    "stem-train": (StemTrainCommand, run_stem),
    "cutoffs": (CutoffsCommand, run_cutoffs),
}


def run(argv: list[str] | None = None) -> int:
    return subcommands.run(PROG, "Train language, perplexity and quality models.", COMMANDS, argv,
                           (ppl.KenLMError, TokenizerError, FileNotFoundError, ValueError,
                            KeyError, OSError))
