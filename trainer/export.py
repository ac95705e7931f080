"""``skypile export hf``: a training checkpoint -> a Hugging Face ``LlamaForCausalLM`` folder.

Writes ``model.safetensors`` (our weights under Hugging Face names, same layout), a
``config.json`` that ``transformers`` loads as a Llama, ``generation_config.json`` and the
tokenizer files (``tokenizer.json`` built from the SentencePiece model, plus the model
itself). No network and no ``transformers`` model code are needed to write it. The flags
are the fields of ``config.ExportConfig``.
"""

from __future__ import annotations

import json
from pathlib import Path

from skypile import config as cfglib
from skypile.cli.subcommands import fail
from skypile.trainer import cli, loading
from skypile.trainer import model as modellib
from skypile.trainer.config import ExportConfig


def export_hf(checkpoint: str, tokenizer: str | None, output: str, dtype: str = "float32") -> Path:
    from safetensors.torch import save_file

    from skypile.tokens import hf_tokenizer
    from skypile.tokens.tokenizer import Tokenizer

    src = Path(checkpoint)
    if not src.exists():
        raise loading.ModelLoadError(f"{checkpoint}: no such checkpoint")
    run, step = loading.find_checkpoint(src)
    cfg = loading.run_config(run)
    tok_path = tokenizer or loading.tokenizer_of_run(cfg)
    tok = Tokenizer(tok_path)
    model = loading.load_skypile_weights(step, cfg)
    if tok.vocab_size > model.cfg.vocab_size:
        raise loading.ModelLoadError(f"tokenizer {tok_path} has {tok.vocab_size} pieces, "
                                     f"the model only {model.cfg.vocab_size}")
    dt = loading.torch_dtype(dtype)
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


def _parser() -> cli.Parser:
    ap = cli.Parser(prog="skypile export", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="format", metavar="{hf}")
    cfglib.add_flags(sub.add_parser(
        "hf", help="Hugging Face LlamaForCausalLM folder (safetensors + config)"), ExportConfig)
    return ap


def run(argv: list[str] | None = None) -> int:
    from skypile.tokens.tokenizer import TokenizerError

    ap = _parser()
    args = ap.parse_args(argv)
    if args.format != "hf":
        ap.print_help()
        return 2
    try:
        cfg = cfglib.from_args(ExportConfig, args)
        out = export_hf(cfg.checkpoint, cfg.tokenizer, cfg.output, cfg.dtype)
    except (cfglib.ConfigError, loading.ModelLoadError, TokenizerError) as e:
        return fail("skypile export hf", e)
    print(f"written: {out} (load with transformers.AutoModelForCausalLM.from_pretrained({str(out)!r}))")
    return 0
