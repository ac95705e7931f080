"""Export a SentencePiece BPE model as Hugging Face tokenizer files.

The ``tokenizers`` BPE model is built from the SentencePiece pieces directly: the vocab is
the piece list (ids unchanged), and the merges are every split of a normal piece into two
existing pieces, ranked by the piece's score, which is how SentencePiece's BPE encoder
picks its next merge. Byte fallback, the dummy-prefix ``▁`` and whitespace escaping follow
the model's own settings. ``AutoTokenizer.from_pretrained(DIR)`` then loads it offline.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from skypile.tokens import spm_model
from skypile.tokens.tokenizer import TokenizerError


def merges_from_pieces(pieces: list[tuple[str, float, int]]) -> list[tuple[str, str]]:
    vocab = {p: i for i, (p, _s, _k) in enumerate(pieces)}
    ranked = []
    for i, (piece, score, kind) in enumerate(pieces):
        if kind != spm_model.NORMAL or len(piece) < 2:
            continue
        for k in range(1, len(piece)):
            left, right = piece[:k], piece[k:]
            if left in vocab and right in vocab:
                ranked.append((-score, i, vocab[left], (left, right)))
    ranked.sort()
    return [pair for *_key, pair in ranked]


def build(model_path: str):
    """A ``tokenizers.Tokenizer`` equivalent to the SentencePiece model."""
    from tokenizers import Tokenizer, decoders, normalizers
    from tokenizers.models import BPE

    model = Path(model_path).read_bytes()
    pieces = spm_model.read_pieces(model)
    if not pieces:
        raise TokenizerError(f"{model_path} is not a SentencePiece model")
    if spm_model.trainer_spec_value(model, 3) not in (None, 2):
        raise TokenizerError(f"{model_path} is not a BPE model; only BPE models are exported")
    vocab = {p: i for i, (p, _s, _k) in enumerate(pieces)}
    unk = next((p for p, _s, k in pieces if k == spm_model.UNKNOWN), None)
    tok = Tokenizer(BPE(vocab=vocab, merges=merges_from_pieces(pieces), unk_token=unk,
                        fuse_unk=True, byte_fallback=bool(spm_model.trainer_spec_value(model, 35))))
    tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"),
                                           normalizers.Replace(" ", "▁")])
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(),
                                     decoders.Fuse(), decoders.Strip(" ", 1, 0)])
    return tok, pieces


def export(model_path: str, out_dir: str) -> Path:
    """Write tokenizer.json, tokenizer_config.json, special_tokens_map.json, tokenizer.model."""
    from tokenizers import AddedToken

    tok, pieces = build(model_path)
    specials = {k: p for p, _s, kind in pieces for k, want in
                (("unk_token", spm_model.UNKNOWN),) if kind == want}
    names = {"<s>": "bos_token", "</s>": "eos_token"}
    for p, _s, kind in pieces:
        if kind == spm_model.CONTROL and p in names:
            specials[names[p]] = p
    # bos / eos are special tokens; reserved control symbols stay ordinary vocab entries so
    # that, as in SentencePiece, they never come out of plain text
    tok.add_special_tokens([AddedToken(p, special=True, normalized=False)
                            for p in specials.values()])
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tok.save(str(out / "tokenizer.json"))
    shutil.copyfile(model_path, out / "tokenizer.model")
    config = {"tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": 4096,
              "add_bos_token": False, "add_eos_token": False, "clean_up_tokenization_spaces": False,
              # as in SentencePiece, "<s>" typed in text is text, not the BOS token
              "split_special_tokens": True,
              **specials}
    (out / "tokenizer_config.json").write_text(json.dumps(config, indent=2, ensure_ascii=False))
    (out / "special_tokens_map.json").write_text(json.dumps(specials, indent=2))
    return out
