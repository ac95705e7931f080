"""``skypile export hf``: a training checkpoint -> a Hugging Face ``LlamaForCausalLM`` folder.

Writes ``model.safetensors`` (our weights under Hugging Face names, same layout), a
``config.json`` that ``transformers`` loads as a Llama, ``generation_config.json`` and the
tokenizer files (``tokenizer.json`` built from the SentencePiece model, plus the model
itself). No network and no ``transformers`` model code are needed to write it.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


from skypile.trainer import lm as lmlib
from skypile.trainer import model as modellib


def export_hf(checkpoint: str, tokenizer: str | None, output: str, dtype: str = "float32") -> Path:
    from safetensors.torch import save_file

    from skypile.tokens import hf_tokenizer
    from skypile.tokens.tokenizer import Tokenizer

    src = Path(checkpoint)
    if not src.exists():
        raise lmlib.ModelLoadError(f"{checkpoint}: no such checkpoint")
    run, step = lmlib.find_checkpoint(src)
    cfg = lmlib.run_config(run)
    tok_path = tokenizer or lmlib.tokenizer_of_run(cfg)
    tok = Tokenizer(tok_path)
    model = lmlib.load_skypile_weights(step, cfg)
    if tok.vocab_size > model.cfg.vocab_size:
        raise lmlib.ModelLoadError(f"tokenizer {tok_path} has {tok.vocab_size} pieces, the model "
                                   f"only {model.cfg.vocab_size}")
    dt = lmlib._dtype(dtype)
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().to(dt).contiguous().clone() for k, v in modellib.hf_state_dict(model).items()}
    save_file(tensors, str(out / "model.safetensors"), metadata={"format": "pt"})
    config = {"architectures": ["LlamaForCausalLM"], "model_type": "llama",
              **modellib.hf_config(model.cfg), "bos_token_id": tok.bos_id if tok.bos_id >= 0 else None,
              "eos_token_id": tok.eos_id, "torch_dtype": dtype, "initializer_range": model.cfg.init_std,
              "use_cache": True, "skypile": {"checkpoint": str(step.resolve()), "tokenizer": str(tok_path)}}
    (out / "config.json").write_text(json.dumps(config, indent=2))
    (out / "generation_config.json").write_text(json.dumps(
        {"bos_token_id": config["bos_token_id"], "eos_token_id": tok.eos_id, "do_sample": False}, indent=2))
    hf_tokenizer.export(tok_path, str(out))
    return out


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="skypile export", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="format", metavar="{hf}")
    p = sub.add_parser("hf", help="Hugging Face LlamaForCausalLM folder (safetensors + config)")
    p.add_argument("--checkpoint", required=True, metavar="DIR",
                   help="a skypile train run folder (its latest step) or one step-N folder")
    p.add_argument("--tokenizer", default=None, metavar="MODEL",
                   help="SentencePiece model (default: the one in the run's shard manifest)")
    p.add_argument("--output", required=True, metavar="DIR")
    p.add_argument("--dtype", default="float32", help="float32 (default), bfloat16, float16")
    return ap


def run(argv: list[str] | None = None) -> int:
    from skypile.tokens.tokenizer import TokenizerError

    ap = _parser()
    args = ap.parse_args(argv)
    if args.format != "hf":
        ap.print_help()
        return 2
    try:
        out = export_hf(args.checkpoint, args.tokenizer, args.output, args.dtype)
    except (lmlib.ModelLoadError, TokenizerError) as e:
        print(f"skypile export hf: error: {e}", file=sys.stderr)
        return 2
    print(f"written: {out} (load with transformers.AutoModelForCausalLM.from_pretrained({str(out)!r}))")
    return 0
