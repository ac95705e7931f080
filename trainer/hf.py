"""Hugging Face Llama weights in and out, one tensor at a time.

In: ``--init-from`` a ``LlamaForCausalLM`` folder (``config.json`` + ``model.safetensors``,
sharded ``model-*.safetensors`` with ``model.safetensors.index.json``, or the older
``pytorch_model*.bin``): ``model_fields`` turns its config into our model's shape, and
``load_into`` copies each tensor into the (possibly FSDP-sharded, possibly pipeline-cut)
model as it is read, so a 13B checkpoint is never held twice in host memory.

Out: ``write_safetensors`` writes tensors it is handed lazily (a name, a shape and a
function that reads it) into safetensors files of at most ``max_bytes`` each, plus
``model.safetensors.index.json`` when there are several. The file layout is planned from
the shapes, so each tensor is read, written and dropped in turn.

The weight layout is Hugging Face's (rotary on the two halves of each head), so names are
all that change: ``NAMES``.
"""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path
from typing import Callable, Iterable, Iterator

import torch
from torch import nn

from skypile import config as cfglib
from skypile.trainer.parallelize import canonical

# ours (inside a layer) -> Hugging Face (inside model.layers.N)
_LAYER_NAMES = {"attention.wq": "self_attn.q_proj", "attention.wk": "self_attn.k_proj",
                "attention.wv": "self_attn.v_proj", "attention.wo": "self_attn.o_proj",
                "feed_forward.w1": "mlp.gate_proj", "feed_forward.w3": "mlp.up_proj",
                "feed_forward.w2": "mlp.down_proj", "attention_norm": "input_layernorm",
                "ffn_norm": "post_attention_layernorm"}
_TOP_NAMES = {"tok_embeddings.weight": "model.embed_tokens.weight",
              "norm.weight": "model.norm.weight", "output.weight": "lm_head.weight"}
ST_DTYPES = {torch.float32: "F32", torch.bfloat16: "BF16", torch.float16: "F16"}


def hf_name(ours: str) -> str:
    """Hugging Face's name of one of our parameters (``layers.3.attention.wq.weight`` ->
    ``model.layers.3.self_attn.q_proj.weight``)."""
    if ours in _TOP_NAMES:
        return _TOP_NAMES[ours]
    _layers, index, rest = ours.split(".", 2)
    module, leaf = rest.rsplit(".", 1)
    return f"model.layers.{index}.{_LAYER_NAMES[module]}.{leaf}"


def is_hf_dir(path: Path) -> bool:
    try:
        return "model_type" in json.loads((Path(path) / "config.json").read_text())
    except (OSError, ValueError):
        return False


def model_fields(path: Path) -> dict:
    """Our ``ModelConfig`` fields for a Llama folder's ``config.json`` (ConfigError when it is
    not a model this trainer builds: grouped-query attention, biases, RoPE scaling...)."""
    c = json.loads((Path(path) / "config.json").read_text())
    where = f"--init-from {path}"
    if c.get("model_type") != "llama":
        raise cfglib.ConfigError(f"{where}: model_type {c.get('model_type')!r}; only llama "
                                 "checkpoints map onto this trainer's model")
    heads = c["num_attention_heads"]
    rope = c.get("rope_parameters") or {}  # transformers >= 5; older files: rope_theta, rope_scaling
    refused = {"num_key_value_heads": c.get("num_key_value_heads", heads) != heads,
               "rope_scaling": bool(c.get("rope_scaling")),
               "rope_parameters": rope.get("rope_type", "default") != "default",
               "attention_bias": bool(c.get("attention_bias")), "mlp_bias": bool(c.get("mlp_bias")),
               "hidden_act": c.get("hidden_act", "silu") != "silu",
               "head_dim": c.get("head_dim", c["hidden_size"] // heads) != c["hidden_size"] // heads}
    bad = [k for k, v in refused.items() if v]
    if bad:
        raise cfglib.ConfigError(f"{where}: {bad[0]}={c.get(bad[0])!r} is not supported by "
                                 "this trainer's model (plain multi-head Llama, no biases)")
    return {"dim": c["hidden_size"], "n_layers": c["num_hidden_layers"], "n_heads": heads,
            "ffn_dim": c["intermediate_size"], "vocab_size": c["vocab_size"],
            "max_seq_len": c.get("max_position_embeddings", 4096),
            "norm_eps": c.get("rms_norm_eps", 1e-6),
            "rope_theta": float(c.get("rope_theta") or rope.get("rope_theta") or 10000.0)}


def _files(path: Path) -> dict[str, Path]:
    """Hugging Face tensor name -> the file holding it."""
    for index in ("model.safetensors.index.json", "pytorch_model.bin.index.json"):
        if (path / index).exists():
            weight_map = json.loads((path / index).read_text())["weight_map"]
            return {k: path / v for k, v in weight_map.items()}
    for single in ("model.safetensors", "pytorch_model.bin"):
        if (path / single).exists():
            return {k: path / single for k in _names_in(path / single)}
    raise cfglib.ConfigError(f"--init-from {path}: no model.safetensors, sharded safetensors "
                             "index or pytorch_model.bin in the folder")


def _names_in(file: Path) -> Iterable[str]:
    if file.suffix == ".safetensors":
        from safetensors import safe_open

        with safe_open(str(file), "pt") as f:
            return list(f.keys())
    return list(torch.load(file, map_location="cpu", mmap=True, weights_only=True))


class _Reader:
    """Tensors by name from a folder's files, each file opened once (memory-mapped)."""

    def __init__(self, path: Path):
        self.files, self._open = _files(path), {}

    def get(self, name: str) -> torch.Tensor:
        file = self.files[name]
        if file not in self._open:
            if file.suffix == ".safetensors":
                from safetensors import safe_open

                self._open[file] = safe_open(str(file), "pt")
            else:
                self._open[file] = torch.load(file, map_location="cpu", mmap=True,
                                              weights_only=True)
        f = self._open[file]
        return f.get_tensor(name) if file.suffix == ".safetensors" else f[name]


@torch.no_grad()
def load_into(path: Path, model: nn.Module) -> int:
    """Copy a Hugging Face Llama folder's weights into ``model`` (whole, FSDP2-sharded, or a
    pipeline stage: the parameters it has), one tensor at a time; returns how many."""
    reader = _Reader(Path(path))
    tied = "lm_head.weight" not in reader.files
    n = 0
    for name, param in model.named_parameters():
        theirs = hf_name(canonical(name))
        if tied and theirs == "lm_head.weight":
            theirs = "model.embed_tokens.weight"
        if theirs not in reader.files:
            raise cfglib.ConfigError(f"--init-from {path}: no tensor {theirs} (for our {name})")
        full = reader.get(theirs)
        shape = tuple(getattr(param, "shape"))
        if tuple(full.shape) != shape:
            raise cfglib.ConfigError(f"--init-from {path}: {theirs} has shape "
                                     f"{tuple(full.shape)}, our model {shape}")
        _copy(param, full)
        n += 1
    return n


def _copy(param: torch.Tensor, full: torch.Tensor) -> None:
    from torch.distributed.tensor import DTensor, distribute_tensor

    if isinstance(param, DTensor):
        local = distribute_tensor(full.to(param.device_mesh.device_type), param.device_mesh,
                                  param.placements).to_local()
        param.to_local().copy_(local)
    else:
        param.copy_(full)


# ---- out ---------------------------------------------------------------------------------

Lazy = tuple[str, tuple[int, ...], Callable[[], torch.Tensor]]


def _plan(tensors: list[Lazy], itemsize: int, max_bytes: int) -> list[list[Lazy]]:
    groups: list[list[Lazy]] = [[]]
    size = 0
    for t in tensors:
        n = math.prod(t[1]) * itemsize
        if groups[-1] and size + n > max_bytes:
            groups.append([])
            size = 0
        groups[-1].append(t)
        size += n
    return groups


def write_safetensors(out: Path, tensors: list[Lazy], dtype: torch.dtype,
                      max_bytes: int) -> list[str]:
    """Write ``tensors`` (read one at a time) as safetensors files of at most ``max_bytes``
    (a bigger tensor gets a file alone); returns the file names. Several files are named
    ``model-0000K-of-0000N.safetensors`` and indexed by ``model.safetensors.index.json``."""
    itemsize = torch.empty((), dtype=dtype).element_size()
    groups = _plan(tensors, itemsize, max_bytes)
    names = (["model.safetensors"] if len(groups) == 1 else
             [f"model-{i + 1:05d}-of-{len(groups):05d}.safetensors" for i in range(len(groups))])
    weight_map, total = {}, 0
    for file, group in zip(names, groups):
        header, offset = {"__metadata__": {"format": "pt"}}, 0
        for name, shape, _read in group:
            n = math.prod(shape) * itemsize
            header[name] = {"dtype": ST_DTYPES[dtype], "shape": list(shape),
                            "data_offsets": [offset, offset + n]}
            offset += n
            weight_map[name] = file
        total += offset
        raw = json.dumps(header, separators=(",", ":")).encode("utf-8")
        raw += b" " * (-len(raw) % 8)
        tmp = out / (file + ".tmp")
        with open(tmp, "wb") as f:
            f.write(struct.pack("<Q", len(raw)) + raw)
            for name, shape, read in group:
                t = read().detach().to("cpu", dtype).contiguous()
                if tuple(t.shape) != tuple(shape):
                    raise ValueError(f"{name}: read {tuple(t.shape)}, planned {tuple(shape)}")
                f.write(t.reshape(-1).view(torch.uint8).numpy().tobytes())
                del t
        tmp.replace(out / file)
    if len(names) > 1:
        (out / "model.safetensors.index.json").write_text(json.dumps(
            {"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2))
    return names


def hf_order(ours: Iterable[str]) -> Iterator[str]:
    """Our parameter names in Hugging Face's file order: embeddings, layers by number, the
    final norm, the head."""
    def key(name: str):
        if name.startswith("layers."):
            return (1, int(name.split(".")[1]), name)
        return ({"tok_embeddings.weight": 0, "norm.weight": 2}.get(name, 3), 0, name)
    return iter(sorted(ours, key=key))
