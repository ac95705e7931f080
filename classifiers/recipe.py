"""What ``skypile classifiers train`` trains each model on: a recipe of files under --data.

A recipe is a YAML file (the shipped one is ``recipes/default.yaml``, which documents the
format): named sources, each a glob under the data folder and how to read it, and per
model the sources it learns from. File names live there, not in the commands, so another
data folder needs another recipe, not another code path.
"""

from __future__ import annotations

import dataclasses
import logging
import zlib
from pathlib import Path
from typing import Iterable, Iterator, Literal

from skypile import config as cfglib
from skypile.classifiers import stem
from skypile.tokens.tokenizer import iter_texts

DEFAULT = Path(__file__).with_name("recipes") / "default.yaml"
"""The shipped recipe, for the shared data folder."""


def held_out(text: str, share: float = 0.1) -> bool:
    """Deterministic split by a hash of the text (the same on every run)."""
    return zlib.crc32(text.encode("utf-8")) % 1000 < share * 1000


@dataclasses.dataclass
class Source:
    """Some files under the data folder and how to read them."""

    files: str
    """Glob under the data folder (for ``read: exam``, the folder of CSV files)."""
    read: Literal["jsonl", "wikitext", "fasttext", "warc", "gsm8k", "exam"] = "jsonl"
    """How to read each file; recipes/default.yaml says what each means."""
    field: str = "text"
    """jsonl: the text field of each row."""
    label: str = ""
    """fasttext: keep the lines ``__label__LABEL text``."""
    split: Literal["all", "train", "held_out"] = "all"
    """Everything, or the part kept for training / held out by :func:`held_out`."""


@dataclasses.dataclass
class Examples:
    """The two classes of a binary classifier, as source names."""

    positives: list[str]
    """Sources of the positive class."""
    negatives: list[str]
    """Sources of the negative class."""


@dataclasses.dataclass
class Recipe:
    """Per model, the sources it trains on; a model left out is not trained."""

    sources: dict[str, dict] = dataclasses.field(default_factory=dict)
    """name -> a :class:`Source` (files, read, field, label, split)."""
    kenlm: dict[str, list[str]] = dataclasses.field(default_factory=dict)
    """language -> reference text of its SentencePiece + KenLM model."""
    cutoffs: dict[str, list[str]] = dataclasses.field(default_factory=dict)
    """language -> random web text its perplexity percentiles come from."""
    quality: Examples | None = None
    """The quality classifier's classes."""
    stem: Examples | None = None
    """The STEM classifier's classes."""

    def source(self, name: str) -> Source:
        return cfglib.from_dict(Source, self.sources[name], f"sources.{name}")

    def uses(self) -> list[str]:
        """Every source name the models refer to, in order of first use."""
        names = [n for group in (self.kenlm, self.cutoffs) for ns in group.values() for n in ns]
        for ex in (self.quality, self.stem):
            names += ex.positives + ex.negatives if ex else []
        return list(dict.fromkeys(names))


def load(path: str | Path | None = None) -> Recipe:
    """A recipe file (default: the shipped one), checked: every name a model uses is a
    source, sources fit :class:`Source`, and perplexity has cutoffs for each language."""
    path = str(path or DEFAULT)
    recipe = cfglib.load(Recipe, path)
    for name in recipe.sources:
        if Path(recipe.source(name).files).is_absolute():
            raise cfglib.ConfigError(f"recipe {path}: sources.{name}.files must be relative "
                                     "to the data folder (--data)")
    unknown = [n for n in recipe.uses() if n not in recipe.sources]
    if unknown:
        raise cfglib.ConfigError(f"recipe {path}: unknown source {unknown[0]!r} "
                                 f"(sources: {', '.join(recipe.sources)})")
    if set(recipe.kenlm) != set(recipe.cutoffs):
        raise cfglib.ConfigError(f"recipe {path}: kenlm and cutoffs must name the same "
                                 f"languages ({sorted(recipe.kenlm)} vs {sorted(recipe.cutoffs)})")
    return recipe


_WIKITEXT_FIXES = [(" @-@ ", "-"), (" @,@ ", ","), (" @.@ ", "."), (" , ", ", "), (" . ", ". "),
                   (" ; ", "; "), (" : ", ": "), (" 's", "'s"), (" n't", "n't"), ("( ", "("),
                   (" )", ")"), (" ' ", "' ")]


def detokenize_wikitext(line: str) -> str:
    """WikiText is tokenized (" @-@ ", " , "); undo that so it reads like web text."""
    for a, b in _WIKITEXT_FIXES:
        line = line.replace(a, b)
    return line.rstrip(" .") + "." if line.endswith(" .") else line


def _wikitext(path: Path) -> Iterator[str]:
    # one paragraph per line; headings (" = Title = ") are short and left out
    for p in path.read_text(encoding="utf-8").splitlines():
        if len(p.strip()) > 50:
            yield detokenize_wikitext(p.strip())


def _fasttext_lines(path: Path, label: str) -> Iterator[str]:
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.startswith(f"__label__{label} "):
                yield line.split(" ", 1)[1].strip()


def _warc_pages(path: Path) -> Iterator[str]:
    from skypile.document import Document
    from skypile.files.readers import RawRecord, read_file
    from skypile.text.extract import ExtractConfig, Extractor

    logging.getLogger("trafilatura").setLevel(logging.ERROR)
    ex = Extractor(ExtractConfig(sandbox=False))
    for rec in read_file(str(path)):
        if isinstance(rec, RawRecord):
            doc = ex(rec)
            if isinstance(doc, Document):
                yield doc.text


def _read(path: Path, src: Source) -> Iterable[str]:
    if src.read == "wikitext":
        return _wikitext(path)
    if src.read == "fasttext":
        return _fasttext_lines(path, src.label)
    if src.read == "warc":
        return _warc_pages(path)
    if src.read == "gsm8k":
        return stem.gsm8k(path)
    if src.read == "exam":
        return stem.exam_questions(path)
    return iter_texts([str(path)], text_field=src.field)


class DataFolder:
    """A data folder read through a recipe; each source is read once, then kept."""

    def __init__(self, root: Path, recipe: Recipe):
        self.root, self.recipe = root, recipe
        self._texts: dict[str, list[str]] = {}

    def check(self, names: Iterable[str]) -> None:
        """FileNotFoundError naming the first source with no file, before any training."""
        for name in names:
            src = self.recipe.source(name)
            if not self._paths(src):
                raise FileNotFoundError(f"{self.root} lacks {src.files} (source {name} of the "
                                        "recipe): is it the shared data folder?")

    def _paths(self, src: Source) -> list[Path]:
        return sorted(self.root.glob(src.files))

    def read(self, src: Source) -> list[str]:
        texts = [t for path in self._paths(src) for t in _read(path, src)]
        if src.split == "all":
            return texts
        return [t for t in texts if held_out(t) == (src.split == "held_out")]

    def texts(self, names: Iterable[str]) -> list[str]:
        """The texts of these sources, one after the other."""
        out: list[str] = []
        for name in names:
            if name not in self._texts:
                self._texts[name] = self.read(self.recipe.source(name))
            out += self._texts[name]
        return out
