"""``skypile tokenizer train|extend|export|info``: the bilingual tokenizer from the shell."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from skypile.tokens import tokenizer as tk


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="skypile tokenizer",
        description="Train a SentencePiece BPE model the LLaMA way, extend it with Chinese "
                    "characters and words to an exact size, and export it for Hugging Face.")
    sub = ap.add_subparsers(dest="cmd", required=True, metavar="COMMAND")

    t = sub.add_parser("train", help="train a base BPE model (digits split, byte fallback)")
    t.add_argument("--input", action="append", required=True, metavar="GLOB",
                   help="JSONL/Parquet (text field), WET or .txt files; repeatable")
    t.add_argument("--vocab-size", type=int, default=32000, metavar="N")
    t.add_argument("--output", required=True, metavar="PREFIX",
                   help="writes PREFIX.model and PREFIX.vocab")
    t.add_argument("--text-field", default="text", help="JSONL/Parquet text field (default text)")
    t.add_argument("--sample-mb", type=float, default=200,
                   help="read at most this much text (MB, default 200)")
    t.add_argument("--threads", type=int, default=2)
    t.add_argument("--max-cjk-share", type=float, default=1.0, metavar="F",
                   help="skip documents with more Chinese characters than this share, for a "
                        "Latin base model to extend later (e.g. 0.1; default 1.0 keeps all)")

    e = sub.add_parser("extend", help="add Chinese characters, words and reserved symbols")
    e.add_argument("--base", required=True, metavar="MODEL",
                   help="any SentencePiece model, e.g. LLaMA's tokenizer.model")
    e.add_argument("--corpus", action="append", required=True, metavar="GLOB",
                   help="Chinese (and other) text to mine, as for train; repeatable")
    e.add_argument("--add-chars", type=int, default=8000, metavar="N",
                   help="most frequent Chinese characters and symbols to add (default 8000)")
    e.add_argument("--add-words", type=int, default=None, metavar="N",
                   help="Chinese words to add; default: as many as fill up to --total")
    e.add_argument("--reserved", type=int, default=17, metavar="N",
                   help="reserved control symbols <reserved_i> at the end (default 17)")
    e.add_argument("--total", type=int, default=65536, metavar="N",
                   help="exact size of the result, reserved included (default 65536)")
    e.add_argument("--word-list", default=None, metavar="FILE",
                   help="second source of words, 'word freq [tag]' lines; 'jieba' uses "
                        "jieba's own dictionary")
    e.add_argument("--text-field", default="text")
    e.add_argument("--output", required=True, metavar="PREFIX")

    x = sub.add_parser("export", help="write Hugging Face tokenizer files (tokenizer.json...)")
    x.add_argument("--model", required=True, metavar="MODEL")
    x.add_argument("--output", required=True, metavar="DIR")

    i = sub.add_parser("info", help="print a model's size, Table 2 breakdown and settings")
    i.add_argument("--model", required=True, metavar="MODEL")
    return ap


def run(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.cmd == "train":
            path = tk.train(args.input, args.output,
                            tk.TrainConfig(vocab_size=args.vocab_size, threads=args.threads,
                                           sample_bytes=int(args.sample_mb * 1024 * 1024),
                                           max_cjk_share=args.max_cjk_share),
                            args.text_field)
            print(f"wrote {path} ({args.vocab_size} pieces)\n{tk.breakdown(str(path)).table()}")
        elif args.cmd == "extend":
            b = tk.extend(args.base, args.corpus, args.output, args.add_chars, args.total,
                          args.reserved, args.add_words, args.word_list, args.text_field)
            print(f"wrote {args.output}.model\n{b.table()}")
        elif args.cmd == "export":
            from skypile.tokens.hf_tokenizer import export
            export(args.model, args.output)
            print(f"wrote Hugging Face tokenizer files to {args.output}")
        else:
            if not Path(args.model).is_file():
                raise tk.TokenizerError(f"no model at {args.model}")
            print(f"{args.model}\n{tk.breakdown(args.model).table()}\n"
                  f"sha256 {tk.model_hash(args.model)}")
    except tk.TokenizerError as e:
        print(f"skypile tokenizer: error: {e}", file=sys.stderr)
        return 2
    return 0
