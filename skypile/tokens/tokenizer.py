"""The bilingual tokenizer: SentencePiece BPE, extended with Chinese characters and words.

``train`` makes a base BPE model the way LLaMA's was made (digits split, byte fallback,
whitespace kept as it is). ``extend`` adds the most frequent Chinese characters, then the
most frequent multi-character Chinese words, then reserved control symbols, up to an
exact total: the report's 32,000 + 8,000 + 25,519 + 17 = 65,536 layout for LLaMA's model.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import re
import tempfile
from pathlib import Path
from typing import Iterable, Iterator

from skypile.tokens import spm_model
from skypile.files.output import expand_inputs
from skypile.files.readers import RawRecord, ReaderOptions, UnreadableFile, read_file
from skypile.text.chars import HAN, HAN_CHARS

LOG = logging.getLogger("skypile")

# Chinese characters and the symbols of Chinese text (CJK punctuation, full-width forms)
_HAN = HAN
_ZH_SYMBOL = re.compile(r"[\u3000-\u303f\uff00-\uffef\u2018-\u201f\u2026\u00b7]")
_HAN_WORD = re.compile(f"^[{HAN_CHARS}]{{2,}}$")


class TokenizerError(ValueError):
    """Bad input for training or extension; the message says what to change."""


def cjk_share(text: str) -> float:
    return len(_HAN.findall(text)) / max(len(text), 1)


def iter_texts(patterns: Iterable[str], text_field: str = "text",
               limit_bytes: int | None = None, max_cjk_share: float = 1.0) -> Iterator[str]:
    """Texts of JSONL / Parquet / WET / .txt files, up to ``limit_bytes`` of UTF-8.

    ``max_cjk_share`` skips documents with a larger share of Chinese characters (a base
    model trained for Latin text before the Chinese extension).
    """
    seen = 0
    opts = ReaderOptions(text_field=text_field, text_only=True)
    try:
        paths = expand_inputs(list(patterns))
    except FileNotFoundError as e:
        raise TokenizerError(str(e)) from None
    for path in paths:
        try:
            for rec in read_file(path, opts):
                if not isinstance(rec, RawRecord) or cjk_share(rec.body) > max_cjk_share:
                    continue
                yield rec.body
                seen += len(rec.body.encode("utf-8"))
                if limit_bytes is not None and seen >= limit_bytes:
                    return
        except UnreadableFile as e:
            raise TokenizerError(str(e)) from None


# ---- training ---------------------------------------------------------------------------

@dataclasses.dataclass
class TokenizerTrainConfig:
    """How :func:`train` makes the base BPE model (``skypile tokenizer train``)."""

    vocab_size: int = 32000
    """Pieces in the base model, special and byte pieces included."""
    sample_bytes: int = 200 * 1024 * 1024
    """Text read from the inputs at most (the sample SentencePiece trains on)."""
    character_coverage: float = 0.99995
    """Share of characters covered by pieces; the rest fall back to bytes."""
    max_sentence_length: int = 16384
    """Longer lines are cut to this many bytes before training."""
    threads: int = 2
    """Trainer threads."""
    max_cjk_share: float = 1.0
    """Skip documents whose share of Chinese characters is larger (1.0 keeps everything)."""


def llama_style_options(vocab_size: int) -> dict:
    """LLaMA's SentencePiece settings: BPE, split digits, byte fallback, identity."""
    return dict(model_type="bpe", vocab_size=vocab_size, split_digits=True, byte_fallback=True,
                normalization_rule_name="identity", remove_extra_whitespaces=False,
                add_dummy_prefix=True, allow_whitespace_only_pieces=True,
                split_by_unicode_script=True, split_by_whitespace=True,
                unk_id=0, bos_id=1, eos_id=2, pad_id=-1, hard_vocab_limit=True,
                unk_surface=" \u2047 ", train_extremely_large_corpus=False)


def train(patterns: list[str], output_prefix: str, cfg: TokenizerTrainConfig,
          text_field: str = "text") -> Path:
    """Train a base BPE model; writes PREFIX.model and PREFIX.vocab."""
    import sentencepiece as spm

    with tempfile.TemporaryDirectory() as tmp:
        sample = Path(tmp) / "sample.txt"
        lines = 0
        with open(sample, "w", encoding="utf-8") as f:
            for text in iter_texts(patterns, text_field, cfg.sample_bytes, cfg.max_cjk_share):
                for line in text.split("\n"):
                    if line.strip():
                        f.write(line[: cfg.max_sentence_length].replace("\r", " ") + "\n")
                        lines += 1
        if lines == 0:
            raise TokenizerError("no text found in the inputs")
        Path(output_prefix).parent.mkdir(parents=True, exist_ok=True)
        LOG.info("training BPE, vocab %d, on %d lines", cfg.vocab_size, lines)
        log_path = Path(tmp) / "train.log"
        try:
            with open(log_path, "w") as log:
                spm.SentencePieceTrainer.train(
                    input=str(sample), model_prefix=output_prefix, num_threads=cfg.threads,
                    character_coverage=cfg.character_coverage, input_sentence_size=0,
                    max_sentence_length=cfg.max_sentence_length, logstream=log,
                    **llama_style_options(cfg.vocab_size))
        except RuntimeError as e:
            raise TokenizerError(training_error(str(e), cfg)) from None
    return Path(output_prefix + ".model")


_TOO_FEW_PIECES = re.compile(r"smaller than required_chars\. (\d+) vs (\d+)")


def training_error(message: str, cfg: TokenizerTrainConfig) -> str:
    """SentencePiece's error in our terms: its advice names its own flag
    (--character_coverage), which ``skypile tokenizer train`` spells --character-coverage."""
    m = _TOO_FEW_PIECES.search(message)
    if not m:
        return f"SentencePiece training failed: {message.strip()}"
    return (f"SentencePiece training failed: {m.group(1)} pieces cannot hold the {m.group(2)} "
            f"characters that --character-coverage {cfg.character_coverage} keeps; raise "
            f"--vocab-size, lower --character-coverage, or skip Chinese-heavy documents for a "
            f"Latin base model with --max-cjk-share (e.g. 0.1)")


# ---- extension --------------------------------------------------------------------------

@dataclasses.dataclass
class Breakdown:
    """The report's Table 2: what the vocabulary is made of."""

    latin: int
    chinese_chars: int
    chinese_words: int
    reserved: int

    @property
    def total(self) -> int:
        return self.latin + self.chinese_chars + self.chinese_words + self.reserved

    def table(self) -> str:
        rows = [("Latin-based words & subwords (base model)", self.latin),
                ("Chinese characters & symbols", self.chinese_chars),
                ("Chinese words", self.chinese_words), ("Reserved symbols", self.reserved),
                ("Total", self.total)]
        return "\n".join(f"  {name:<44}{n:>7,}" for name, n in rows)


def count_chinese(texts: Iterable[str], segment: bool = True
                  ) -> tuple[collections.Counter, collections.Counter]:
    """Counts of Chinese characters / symbols, and of multi-character Chinese words (jieba)."""
    chars: collections.Counter[str] = collections.Counter()
    words: collections.Counter[str] = collections.Counter()
    if segment:
        import jieba

        jieba.setLogLevel(logging.WARNING)
    for text in texts:
        chars.update(c for c in text if _HAN.match(c) or _ZH_SYMBOL.match(c))
        if segment and _HAN.search(text):
            words.update(w for w in jieba.lcut(text) if _HAN_WORD.match(w))
    return chars, words


def read_word_list(path: str) -> collections.Counter:
    """``word frequency [tag]`` lines (jieba's dict.txt format); ``jieba`` names jieba's own."""
    if path == "jieba":
        import jieba

        path = str(Path(jieba.__file__).parent / "dict.txt")
    counts: collections.Counter[str] = collections.Counter()
    try:
        with open(path, encoding="utf-8") as f:
            for line in f:
                parts = line.split()
                if len(parts) >= 2 and _HAN_WORD.match(parts[0]) and parts[1].isdigit():
                    counts[parts[0]] += int(parts[1])
    except OSError as e:
        raise TokenizerError(f"cannot read word list {path}: {e}") from None
    return counts


def _reachable(word: str, vocab: set[str]) -> bool:
    """BPE builds a piece by merging two existing pieces: some split must be in the vocab."""
    return any(word[:k] in vocab and word[k:] in vocab for k in range(1, len(word)))


def choose_words(ranked: list[str], vocab: set[str], n: int) -> list[str]:
    """The first ``n`` words, by rank, that BPE merges can reach (adding makes more reachable)."""
    chosen: list[str] = []
    pending = [w for w in ranked if w not in vocab]
    while len(chosen) < n and pending:
        left = []
        for w in pending:
            if len(chosen) >= n:
                break
            if _reachable(w, vocab):
                chosen.append(w)
                vocab.add(w)
            else:
                left.append(w)
        if len(left) == len(pending):
            break
        pending = left
    return chosen


def extend(base_model: str, corpus: list[str], output_prefix: str, add_chars: int,
           total: int, reserved: int = 17, add_words: int | None = None,
           word_list: str | None = None, text_field: str = "text",
           sample_bytes: int | None = 500 * 1024 * 1024) -> Breakdown:
    """Extend a SentencePiece model with Chinese characters, words and reserved symbols."""
    try:
        model = Path(base_model).read_bytes()
        base = spm_model.read_pieces(model)
    except (OSError, ValueError, IndexError) as e:
        raise TokenizerError(f"{base_model} is not a SentencePiece model: {e}") from None
    if not base:
        raise TokenizerError(f"{base_model} is not a SentencePiece model (no pieces)")
    if spm_model.trainer_spec_value(model, 3) not in (None, 2):  # model_type 2 = BPE
        LOG.warning("%s is not a BPE model; added words may not be used by its encoder",
                    base_model)
    if not spm_model.trainer_spec_value(model, 35):
        LOG.warning("%s has no byte fallback: unknown characters will map to <unk>", base_model)
    n_words = total - len(base) - add_chars - reserved
    if add_words is not None and add_words != n_words:
        raise TokenizerError(
            f"{len(base)} base + {add_chars} characters + {add_words} words + {reserved} reserved "
            f"= {len(base) + add_chars + add_words + reserved}, not --total {total}; "
            f"leave out --add-words to fill up to the total ({n_words} words)")
    if n_words < 0:
        raise TokenizerError(f"--total {total} is smaller than the base model ({len(base)}) "
                             f"plus {add_chars} characters and {reserved} reserved symbols")
    vocab = {p for p, _s, _k in base}
    chars, words = count_chinese(iter_texts(corpus, text_field, sample_bytes), segment=n_words > 0)
    new_chars = [c for c, _ in chars.most_common() if c not in vocab][:add_chars]
    if len(new_chars) < add_chars:
        raise TokenizerError(
            f"the corpus has only {len(new_chars)} Chinese characters and symbols that the base "
            f"model lacks; {add_chars} were asked for (--add-chars). Give more Chinese text "
            f"(--corpus) or ask for fewer characters.")
    vocab.update(new_chars)
    ranked = [w for w, c in words.most_common() if c >= 2]
    if word_list:
        listed = read_word_list(word_list)
        ranked += [w for w, _ in listed.most_common() if w not in words]
    new_words = choose_words(ranked, vocab, n_words)
    if len(new_words) < n_words:
        raise TokenizerError(
            f"only {len(new_words)} Chinese words could be added ({n_words} needed to reach "
            f"--total {total}): give more Chinese text, add a word list (--word-list jieba), "
            f"or lower --total")
    # New pieces score below every base piece, so base merges keep their priority; among
    # themselves the more frequent word merges first.
    floor = min(s for _p, s, k in base if k == spm_model.NORMAL) if any(
        k == spm_model.NORMAL for _p, _s, k in base) else 0.0
    pieces = [(c, floor - 1 - i, spm_model.NORMAL) for i, c in enumerate(new_chars)]
    start = floor - 1 - len(new_chars)
    pieces += [(w, start - i, spm_model.NORMAL) for i, w in enumerate(new_words)]
    pieces += [(f"<reserved_{i}>", 0.0, spm_model.CONTROL) for i in range(reserved)]
    out = Path(output_prefix + ".model")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(spm_model.extend(model, pieces))
    _write_vocab(out)
    return Breakdown(len(base), len(new_chars), len(new_words), reserved)


def _write_vocab(model_path: Path) -> None:
    pieces = spm_model.read_pieces(model_path.read_bytes())
    model_path.with_suffix(".vocab").write_text(
        "".join(f"{p}\t{s:g}\n" for p, s, _k in pieces), encoding="utf-8")


def model_hash(path: str) -> str:
    from skypile.files.models import sha256_file

    return sha256_file(path)


def breakdown(model_path: str) -> Breakdown:
    """Table 2 for any model: byte/control/unknown pieces count with the Latin part."""
    pieces = spm_model.read_pieces(Path(model_path).read_bytes())
    reserved = sum(1 for p, _s, k in pieces if k == spm_model.CONTROL and p.startswith("<reserved_"))
    chars = sum(1 for p, _s, k in pieces if k == spm_model.NORMAL and len(p) == 1
                and (_HAN.match(p) or _ZH_SYMBOL.match(p)))
    words = sum(1 for p, _s, k in pieces if k == spm_model.NORMAL and _HAN_WORD.match(p))
    return Breakdown(len(pieces) - reserved - chars - words, chars, words, reserved)


# ---- encoding ---------------------------------------------------------------------------

_META = "\u2581"
CHUNK_CHARS = 1 << 20
"""Characters encoded in one SentencePiece call at most (:meth:`Tokenizer.encode_array`)."""


def _pieces(text: str, size: int) -> Iterator[str]:
    """``text`` in consecutive pieces of at most ``size`` characters for separate encoding.

    A piece ends, by preference, before a single space between two words: the next piece
    starts at the word, and SentencePiece's word-start mark stands for the space, so the
    tokens are exactly those of one call. Without such a space in the second half of the
    window, it ends after a line break (the next piece then gains a word-start mark), and
    failing that at ``size`` characters.
    """
    start, n = 0, len(text)
    while start < n:
        end = min(start + size, n)
        if end == n:
            yield text[start:]
            return
        lo = start + size // 2
        cut = _single_space.search(text[lo:end][::-1])
        if cut:  # searched backwards: the last single space of the window
            at = end - cut.start() - 2
            yield text[start:at]
            start = at + 1
            continue
        nl = text.rfind("\n", lo, end)
        end = nl + 1 if nl >= 0 else end
        yield text[start:end]
        start = end


_single_space = re.compile(r"\S \S")
_PLACEHOLDERS = [chr(c) for c in range(0xF8FF, 0xF800, -1)]  # private use: never in a vocab


class Tokenizer:
    """Encode / decode with a SentencePiece model, lossless on any Unicode text.

    SentencePiece writes spaces as U+2581, so a U+2581 in the text itself would come back
    as a space. We encode it as its UTF-8 byte pieces instead (byte fallback), which
    decode back to U+2581: ``decode(encode(x)) == x`` for every string.
    """

    def __init__(self, model_path: str, storage_options: dict | None = None):
        import sentencepiece as spm

        from skypile.files import models

        # a local path is read in place; any fsspec URL is fetched once per machine
        try:
            self.local_path = models.fetch(str(model_path), storage_options, name="tokenizer")
            self.sp = spm.SentencePieceProcessor(model_file=self.local_path)
        except (OSError, RuntimeError, models.ModelError) as e:
            raise TokenizerError(f"cannot load tokenizer {model_path}: {e}") from None
        self.path = str(model_path)
        self.sha256 = model_hash(self.local_path)  # on the launcher: travels with a pickle
        self.vocab_size = self.sp.vocab_size()
        self.eos_id, self.bos_id = self.sp.eos_id(), self.sp.bos_id()
        byte_ids = [self.sp.piece_to_id(f"<0x{b:02X}>") for b in _META.encode("utf-8")]
        self._meta_ids = byte_ids if all(self.sp.is_byte(i) for i in byte_ids) else None

    def encode(self, text: str) -> list[int]:
        if _META not in text or self._meta_ids is None:
            return self.sp.encode(text)
        holder = next(c for c in _PLACEHOLDERS if c not in text and self.sp.piece_to_id(c) == self.sp.unk_id())
        ids = self.sp.encode(text.replace(_META, holder))
        pattern = [self.sp.piece_to_id(f"<0x{b:02X}>") for b in holder.encode("utf-8")]
        out, i, n = [], 0, len(pattern)
        while i < len(ids):
            if ids[i:i + n] == pattern:
                out += self._meta_ids
                i += n
            else:
                out.append(ids[i])
                i += 1
        return out

    def encode_array(self, text: str, dtype, chunk_chars: int = CHUNK_CHARS) -> "np.ndarray":
        """``encode(text)`` as a numpy array of ``dtype``, in bounded memory.

        SentencePiece needs tens of bytes per token while it encodes, so a 20 MB text
        (one token per byte in the worst case) would take a worker over a gigabyte. A text
        longer than ``chunk_chars`` is encoded in pieces (:func:`_pieces`): cut at a space
        between words the tokens are exactly those of one call; a text with no such space
        (Chinese without spaces) is cut after a line break, where the next piece gains a
        word-start mark. Shorter texts encode exactly as :meth:`encode`.
        """
        import numpy as np

        if len(text) <= chunk_chars:
            return np.asarray(self.encode(text), dtype=dtype)
        parts = []
        for piece in _pieces(text, chunk_chars):
            parts.append(np.asarray(self.encode(piece), dtype=dtype))
        return np.concatenate(parts)

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        if any(_META in t for t in texts):
            return [self.encode(t) for t in texts]
        return self.sp.encode(texts)

    def encode_packed(self, texts: list[str], dtype, end: int | None = None,
                      chunk_chars: int = CHUNK_CHARS) -> tuple["np.ndarray", "np.ndarray"]:
        """Every text's tokens, each followed by ``end`` (e.g. EOS) when given, packed one
        after the other into one array of ``dtype``, and the number of tokens of each.

        Exactly ``encode_array`` text by text, made faster: the texts that need no special
        care (no U+2581, at most ``chunk_chars`` characters) go to SentencePiece's batch
        encoder in one call, on this thread only, which returns numpy buffers instead of
        Python lists.
        """
        import numpy as np

        parts: list = [None] * len(texts)
        plain = [i for i, t in enumerate(texts) if len(t) <= chunk_chars and _META not in t]
        if plain:
            ids = self.sp.encode([texts[i] for i in plain], num_threads=1, return_type="numpy")
            for i, a in zip(plain, ids):
                parts[i] = a
        for i, part in enumerate(parts):
            if part is None:
                parts[i] = self.encode_array(texts[i], dtype, chunk_chars)
        lengths = np.fromiter((len(p) for p in parts), dtype=np.int64, count=len(parts))
        if end is not None:
            tail = np.asarray([end], dtype=dtype)
            parts = [x for p in parts for x in (p, tail)]
            lengths += 1
        if not parts:
            return np.zeros(0, dtype=dtype), lengths
        return np.concatenate(parts, dtype=dtype, casting="unsafe"), lengths

    def decode(self, ids: list[int]) -> str:
        return self.sp.decode(ids)
