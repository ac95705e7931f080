"""``skypile tokenizer train|extend|export|info``: the bilingual tokenizer from the shell.

One config type per command; its fields are the command's flags.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from skypile.cli import subcommands
from skypile.cli.subcommands import arg
from skypile.tokens import tokenizer as tk

PROG = "skypile tokenizer"


@dataclasses.dataclass(kw_only=True)
class TokenizerTrainCommand:
    """train a base BPE model (digits split, byte fallback)"""

    input: list[str] = arg(metavar="GLOB", repeat=True)
    """JSONL/Parquet (text field), WET or .txt files; repeatable"""
    vocab_size: int = arg(32000, metavar="N")
    """pieces in the base model, special and byte pieces included"""
    output: str = arg(metavar="PREFIX")
    """writes PREFIX.model and PREFIX.vocab"""
    text_field: str = "text"
    """JSONL/Parquet text field"""
    sample_mb: float = 200
    """read at most this much text (MB)"""
    threads: int = 2
    """SentencePiece trainer threads"""
    max_cjk_share: float = arg(1.0, metavar="F")
    """skip documents with more Chinese characters than this share, for a Latin base model
    to extend later (e.g. 0.1; 1.0 keeps all)"""
    character_coverage: float = arg(tk.TokenizerTrainConfig.character_coverage, metavar="F")
    """share of the sample's characters that get pieces of their own; the rarest others
    fall back to bytes (lower it when the vocabulary cannot hold every character)"""

    def tokenizer_config(self) -> tk.TokenizerTrainConfig:
        return tk.TokenizerTrainConfig(vocab_size=self.vocab_size, threads=self.threads,
                                       sample_bytes=int(self.sample_mb * 1024 * 1024),
                                       max_cjk_share=self.max_cjk_share,
                                       character_coverage=self.character_coverage)


@dataclasses.dataclass(kw_only=True)
class TokenizerExtendCommand:
    """add Chinese characters, words and reserved symbols"""

    base: str = arg(metavar="MODEL")
    """any SentencePiece model, e.g. LLaMA's tokenizer.model"""
    corpus: list[str] = arg(metavar="GLOB", repeat=True)
    """Chinese (and other) text to mine, as for train; repeatable"""
    add_chars: int = arg(8000, metavar="N")
    """most frequent Chinese characters and symbols to add"""
    add_words: int | None = arg(None, metavar="N")
    """Chinese words to add; default: as many as fill up to --total"""
    reserved: int = arg(17, metavar="N")
    """reserved control symbols <reserved_i> at the end"""
    total: int = arg(65536, metavar="N")
    """exact size of the result, reserved included"""
    word_list: str | None = arg(None, metavar="FILE")
    """second source of words, 'word freq [tag]' lines; 'jieba' uses jieba's own dictionary"""
    text_field: str = "text"
    """JSONL/Parquet text field"""
    output: str = arg(metavar="PREFIX")
    """writes PREFIX.model and PREFIX.vocab"""


@dataclasses.dataclass(kw_only=True)
class TokenizerExportCommand:
    """write Hugging Face tokenizer files (tokenizer.json...)"""

    model: str = arg(metavar="MODEL")
    """the SentencePiece model to export"""
    output: str = arg(metavar="DIR")
    """folder for tokenizer.json, tokenizer_config.json and the rest"""


@dataclasses.dataclass(kw_only=True)
class TokenizerInfoCommand:
    """print a model's size, Table 2 breakdown and settings"""

    model: str = arg(metavar="MODEL")
    """the SentencePiece model to describe"""


def train(cfg: TokenizerTrainCommand) -> None:
    path = tk.train(cfg.input, cfg.output, cfg.tokenizer_config(), cfg.text_field)
    print(f"wrote {path} ({cfg.vocab_size} pieces)\n{tk.breakdown(str(path)).table()}")


def extend(cfg: TokenizerExtendCommand) -> None:
    b = tk.extend(cfg.base, cfg.corpus, cfg.output, cfg.add_chars, cfg.total, cfg.reserved,
                  cfg.add_words, cfg.word_list, cfg.text_field)
    print(f"wrote {cfg.output}.model\n{b.table()}")


def export(cfg: TokenizerExportCommand) -> None:
    from skypile.tokens.hf_tokenizer import export as hf_export

    hf_export(cfg.model, cfg.output)
    print(f"wrote Hugging Face tokenizer files to {cfg.output}")


def info(cfg: TokenizerInfoCommand) -> None:
    if not Path(cfg.model).is_file():
        raise tk.TokenizerError(f"no model at {cfg.model}")
    print(f"{cfg.model}\n{tk.breakdown(cfg.model).table()}\nsha256 {tk.model_hash(cfg.model)}")


COMMANDS: subcommands.Commands = {
    "train": (TokenizerTrainCommand, train),
    "extend": (TokenizerExtendCommand, extend),
    "export": (TokenizerExportCommand, export),
    "info": (TokenizerInfoCommand, info),
}


def run(argv: list[str] | None = None) -> int:
    return subcommands.run(
        PROG, "Train a SentencePiece BPE model the LLaMA way, extend it with Chinese "
              "characters and words to an exact size, and export it for Hugging Face.",
        COMMANDS, argv, (tk.TokenizerError,))
