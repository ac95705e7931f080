"""The bilingual tokenizer: training, extension to an exact size, guarantees, HF export."""

import json
import subprocess
import sys

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from skypile.tokens import spm_model
from skypile.tokens import tokenizer as tk

BASE_VOCAB, CHARS, WORDS, RESERVED = 2000, 1500, 500, 17
TOTAL = BASE_VOCAB + CHARS + WORDS + RESERVED


@pytest.fixture(scope="module")
def models(data_dir, tmp_path_factory):
    d = tmp_path_factory.mktemp("tok")
    base = tk.train([str(data_dir / "wiki-en/wiki.test.raw")], str(d / "base"),
                    tk.TokenizerTrainConfig(vocab_size=BASE_VOCAB))
    b = tk.extend(str(base), [str(data_dir / "wiki-zh/zh_wiki_paragraphs_cmrc2018.jsonl")],
                  str(d / "ext"), add_chars=CHARS, total=TOTAL, reserved=RESERVED)
    return base, d / "ext.model", b, d


def test_extension_fills_exactly_to_the_total(models):
    _base, ext, b, _d = models
    assert (b.latin, b.chinese_chars, b.chinese_words, b.reserved) == (BASE_VOCAB, CHARS, WORDS, RESERVED)
    tok = tk.Tokenizer(ext)
    assert tok.vocab_size == TOTAL
    pieces = spm_model.read_pieces(ext.read_bytes())
    assert [p for p, _s, _k in pieces[-RESERVED:]] == [f"<reserved_{i}>" for i in range(RESERVED)]
    assert all(k == spm_model.CONTROL for _p, _s, k in pieces[-RESERVED:])
    assert spm_model.trainer_spec_value(ext.read_bytes(), 4) == TOTAL  # vocab_size updated
    assert len({p for p, _s, _k in pieces}) == TOTAL  # no piece added twice


def test_new_pieces_are_used_by_the_encoder(models, data_dir):
    base, ext, _b, _d = models
    text = json.loads(open(data_dir / "skywork-eval/zh_tech.jsonl", encoding="utf-8").readline())["text"][:1000]
    n_base, n_ext = len(tk.Tokenizer(base).encode(text)), len(tk.Tokenizer(ext).encode(text))
    assert n_ext < n_base / 2
    sp = tk.Tokenizer(ext).sp
    used = {sp.id_to_piece(i) for i in sp.encode(text) if i >= BASE_VOCAB + CHARS}
    assert any(len(p) >= 2 for p in used)  # multi-character words are produced


def test_too_few_candidates_is_a_clear_error(models, data_dir, tmp_path):
    base, *_ = models
    with pytest.raises(tk.TokenizerError, match="Chinese characters"):
        tk.extend(str(base), [str(data_dir / "wiki-en/wiki.test.raw")], str(tmp_path / "x"),
                  add_chars=100, total=BASE_VOCAB + 200)
    with pytest.raises(tk.TokenizerError, match="not --total"):
        tk.extend(str(base), [str(data_dir / "wiki-zh/zh_wiki_paragraphs_cmrc2018.jsonl")],
                  str(tmp_path / "x"), add_chars=10, add_words=5, total=BASE_VOCAB + 100)


def test_word_list_as_second_source(models, data_dir, tmp_path):
    base, *_ = models
    b = tk.extend(str(base), [str(data_dir / "wiki-zh/zh_wiki_paragraphs_cmrc2018.jsonl")],
                  str(tmp_path / "big"), add_chars=3000, total=BASE_VOCAB + 3000 + 20000 + 17,
                  word_list="jieba")
    assert b.chinese_words == 20000  # more than the corpus alone gives


def test_loads_in_stock_sentencepiece(models):
    import sentencepiece as spm
    _base, ext, *_ = models
    sp = spm.SentencePieceProcessor(model_file=str(ext))
    assert sp.vocab_size() == TOTAL and sp.is_control(TOTAL - 1)


@pytest.fixture(scope="module")
def ext_tok(models):
    return tk.Tokenizer(models[1])


PROPS = settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
TEXT = st.text() | st.text(alphabet="中文数字0123456789 \u2581abc,。") | st.from_regex(
    r"[0-9]{1,12}( [0-9,.]{1,8})*", fullmatch=True)


@PROPS
@given(TEXT)
def test_roundtrip_any_unicode(ext_tok, text):
    assert ext_tok.decode(ext_tok.encode(text)) == text


@PROPS
@given(TEXT)
def test_every_digit_is_its_own_token(ext_tok, text):
    sp = ext_tok.sp
    for i in ext_tok.encode(text):
        if sp.is_byte(i):
            continue
        piece = sp.id_to_piece(i).replace("\u2581", "")
        if any(c.isdigit() for c in piece):
            assert len(piece) == 1, piece


@PROPS
@given(TEXT | st.sampled_from(["<reserved_0>", "x <reserved_16> y", "<s></s><unk>"]))
def test_reserved_and_control_never_come_from_text(ext_tok, text):
    sp = ext_tok.sp
    assert not any(sp.is_control(i) for i in ext_tok.encode(text))


def test_ids_are_stable_across_runs(models, data_dir, tmp_path):
    base, ext, _b, _d = models
    again = tk.train([str(data_dir / "wiki-en/wiki.test.raw")], str(tmp_path / "base"),
                     tk.TokenizerTrainConfig(vocab_size=BASE_VOCAB))
    # the same pieces with the same scores in the same order: the same ids
    assert spm_model.read_pieces(again.read_bytes()) == spm_model.read_pieces(base.read_bytes())
    tk.extend(str(again), [str(data_dir / "wiki-zh/zh_wiki_paragraphs_cmrc2018.jsonl")],
              str(tmp_path / "ext"), add_chars=CHARS, total=TOTAL)
    assert spm_model.read_pieces((tmp_path / "ext.model").read_bytes()) == \
        spm_model.read_pieces(ext.read_bytes())


def test_huggingface_export_gives_the_same_ids(models, data_dir, tmp_path):
    from transformers import AutoTokenizer

    from skypile.tokens.hf_tokenizer import export
    _base, ext, *_ = models
    export(str(ext), str(tmp_path / "hf"))
    hf = AutoTokenizer.from_pretrained(str(tmp_path / "hf"), local_files_only=True)
    sp = tk.Tokenizer(ext)
    texts = ["中华人民共和国成立于1949年。Hello world 12345 🙂", "  two  spaces\nnew line",
             "<reserved_3> <s> literal", ""]
    texts += [json.loads(line)["text"][:800] for line in
              list(open(data_dir / "skywork-eval/zh_finance.jsonl", encoding="utf-8"))[:30]]
    texts += open(data_dir / "wiki-en/wiki.test.raw", encoding="utf-8").read().split("\n")[:100]
    for t in texts:
        assert hf.encode(t, add_special_tokens=False) == sp.encode(t), t[:50]
    assert hf.decode(sp.encode(texts[0])) == texts[0]


def test_cli_train_extend_info(data_dir, tmp_path):
    def cli(*args):
        return subprocess.run([sys.executable, "-m", "skypile.cli", "tokenizer", *args],
                              capture_output=True, text=True)
    p = cli("train", "--input", str(data_dir / "wiki-en/wiki.test.raw"), "--vocab-size", "1000",
            "--output", str(tmp_path / "b"))
    assert p.returncode == 0, p.stderr
    p = cli("extend", "--base", str(tmp_path / "b.model"), "--corpus",
            str(data_dir / "wiki-zh/zh_wiki_paragraphs_cmrc2018.jsonl"), "--add-chars", "500",
            "--total", "1800", "--reserved", "17", "--output", str(tmp_path / "e"))
    assert p.returncode == 0, p.stderr
    assert "Chinese characters & symbols" in p.stdout and "1,800" in p.stdout
    p = cli("extend", "--base", str(tmp_path / "nope.model"), "--corpus", "x", "--output", "y")
    assert p.returncode == 2 and "not a SentencePiece model" in p.stderr
    assert "Traceback" not in p.stderr


def test_too_small_vocabulary_names_real_flags(data_dir, tmp_path):
    """SentencePiece's advice names its own --character_coverage; ours names our flags,
    and --character-coverage reaches the trainer (fewer characters must be covered)."""
    def cli(*args):
        return subprocess.run([sys.executable, "-m", "skypile.cli", "tokenizer", "train",
                               "--input", str(data_dir / "wiki-zh/zh_wiki_paragraphs_cmrc2018.jsonl"),
                               "--vocab-size", "1000", "--sample-mb", "0.3",
                               "--output", str(tmp_path / "t"), *args],
                              capture_output=True, text=True)
    p = cli()
    assert p.returncode == 2 and "Traceback" not in p.stderr
    err = p.stderr.strip().splitlines()[-1]
    assert "--character_coverage" not in p.stderr
    assert "--character-coverage 0.99995" in err and "--max-cjk-share" in err
    assert "--vocab-size" in err
    # every flag the message names exists
    help_text = subprocess.run([sys.executable, "-m", "skypile.cli", "tokenizer", "train",
                                "--help"], capture_output=True, text=True).stdout
    assert all(flag in help_text for flag in ("--character-coverage", "--max-cjk-share",
                                              "--vocab-size"))
    needed = int(err.split(" characters")[0].rsplit(" ", 1)[1])
    p = cli("--character-coverage", "0.98")
    lowered = int(p.stderr.strip().splitlines()[-1].split(" characters")[0].rsplit(" ", 1)[1])
    assert p.returncode == 2 and "--character-coverage 0.98 " in p.stderr and lowered < needed


def test_long_texts_encode_in_pieces_with_the_same_tokens(tmp_path):
    """encode_array cuts a long text at single spaces between words: the tokens equal one
    SentencePiece call; a text with no such space is cut after a line break instead."""
    import random

    import numpy as np

    from skypile.tokens.tokenizer import Tokenizer, TokenizerTrainConfig, _pieces, train

    corpus = tmp_path / "c.txt"
    rng = random.Random(7)
    words = ["river", "harbour", "council", "shelter", "9", "42", "你好", "世界", "x\u2581y"]
    corpus.write_text("\n".join(" ".join(rng.choice(words) for _ in range(12))
                                for _ in range(400)))
    train([str(corpus)], str(tmp_path / "t"), TokenizerTrainConfig(vocab_size=300))
    tok = Tokenizer(str(tmp_path / "t.model"))
    for trial in range(60):
        text = " ".join(rng.choice(words) for _ in range(rng.randint(50, 400)))
        pieces = list(_pieces(text, 40))
        assert " ".join(pieces) == text and all(len(p) <= 40 for p in pieces)
        got = tok.encode_array(text, np.uint16, chunk_chars=40)
        assert got.dtype == np.uint16
        assert got.tolist() == tok.encode(text), trial
    cjk = "\n".join("你好世界" * rng.randint(3, 8) for _ in range(50))  # no spaces at all
    pieces = list(_pieces(cjk, 40))
    assert "".join(pieces) == cjk and all(len(p) <= 40 for p in pieces)
    assert tok.decode(tok.encode_array(cjk, np.uint16, chunk_chars=40).tolist()) \
        .replace(" ", "") == cjk.replace(" ", "")


def test_a_document_at_the_size_cap_encodes_in_bounded_memory(tmp_path):
    """A 20 MB text (the readers' default cap) with a tiny vocabulary, about one token per
    byte: the encoder's peak stays well under 1 GiB above the process's baseline."""
    import subprocess
    import sys

    from skypile.tokens.tokenizer import TokenizerTrainConfig, train

    corpus = tmp_path / "c.txt"
    corpus.write_text("hello world this is text\n" * 300)
    train([str(corpus)], str(tmp_path / "t"), TokenizerTrainConfig(vocab_size=300))
    code = f"""
import random, resource
from skypile.jobs.tokenize import Encoder, TokenizeConfig
from skypile.document import Document
enc = Encoder({str(tmp_path / 't.model')!r}, TokenizeConfig())
rng = random.Random(1)
words = [f"w{{i}}" for i in range(50000)]
text = " ".join(rng.choice(words) for _ in range(3_000_000))
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
out = enc(Document(id="big", text=text), set())
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(len(text.encode()), len(out[1][1]), (peak - base) // 1024)
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    size, tokens, grew_mib = map(int, proc.stdout.split())
    assert size > 19_000_000 and tokens > 15_000_000
    assert grew_mib < 512, f"encoding grew the process by {grew_mib} MiB"
