"""``skypile export hf``: a training checkpoint -> a Hugging Face ``LlamaForCausalLM`` folder.

Writes the weights under Hugging Face names (same layout) as safetensors files of at most
``--max-shard-gb`` (``model-0000K-of-0000N.safetensors`` + ``model.safetensors.index.json``,
or one ``model.safetensors``), a ``config.json`` that ``transformers`` loads as a Llama,
``generation_config.json`` and the tokenizer files (``tokenizer.json`` built from the
SentencePiece model, plus the model itself). The weights stream from the sharded (DCP)
checkpoint one tensor at a time: the model is never built nor held whole in host memory.
No network and no ``transformers`` model code are needed. The flags are the fields of
``config.ExportConfig``.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Callable

import torch

from skypile import config as cfglib
from skypile.cli.subcommands import fail
from skypile.trainer import cli, hf, loading
from skypile.trainer import model as modellib
from skypile.trainer.config import ExportConfig


def checkpoint_tensors(step: Path) -> list[hf.Lazy]:
    """(Hugging Face name, shape, reader) of each model tensor of a DCP checkpoint, in
    Hugging Face's order; a reader loads that one tensor (whatever the sharding it was
    saved with) when called."""
    import torch.distributed.checkpoint as dcp

    meta = dcp.FileSystemReader(str(step)).read_metadata().state_dict_metadata
    ours = {k[len("model."):]: v for k, v in meta.items() if k.startswith("model.")}

    def reader(name: str, size, dtype) -> Callable[[], torch.Tensor]:
        def read() -> torch.Tensor:
            t = torch.empty(tuple(size), dtype=dtype)
            with warnings.catch_warnings():  # "no process group: one process" is expected
                warnings.simplefilter("ignore")
                dcp.load({"model": {name: t}}, checkpoint_id=str(step))
            return t
        return read

    return [(hf.hf_name(n), tuple(ours[n].size), reader(n, ours[n].size, ours[n].properties.dtype))
            for n in hf.hf_order(ours)]


def export_hf(checkpoint: str, tokenizer: str | None, output: str, dtype: str = "float32",
              max_shard_gb: float = 5.0) -> Path:
    from skypile.tokens import hf_tokenizer
    from skypile.tokens.tokenizer import Tokenizer

    src = Path(checkpoint)
    if not src.exists():
        raise loading.ModelLoadError(f"{checkpoint}: no such checkpoint")
    run, step = loading.find_checkpoint(src)
    cfg = loading.run_config(run)
    mcfg = cfg.model_config()
    tok_path = tokenizer or loading.tokenizer_of_run(cfg)
    tok = Tokenizer(tok_path)
    if tok.vocab_size > mcfg.vocab_size:
        raise loading.ModelLoadError(f"tokenizer {tok_path} has {tok.vocab_size} pieces, "
                                     f"the model only {mcfg.vocab_size}")
    dt = loading.torch_dtype(dtype)
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    for old in [*out.glob("model*.safetensors"), out / "model.safetensors.index.json"]:
        old.unlink(missing_ok=True)  # a previous export's files would mix with these
    hf.write_safetensors(out, checkpoint_tensors(step), dt, int(max_shard_gb * 1e9))
    config = {"architectures": ["LlamaForCausalLM"], "model_type": "llama",
              **modellib.hf_config(mcfg), "bos_token_id": tok.bos_id if tok.bos_id >= 0 else None,
              "eos_token_id": tok.eos_id, "torch_dtype": dtype, "initializer_range": mcfg.init_std,
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
        out = export_hf(cfg.checkpoint, cfg.tokenizer, cfg.output, cfg.dtype, cfg.max_shard_gb)
    except (cfglib.ConfigError, loading.ModelLoadError, TokenizerError) as e:
        return fail("skypile export hf", e)
    print(f"written: {out} (load with transformers.AutoModelForCausalLM.from_pretrained({str(out)!r}))")
    return 0
