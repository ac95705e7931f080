"""A LLaMA-style decoder: RoPE, pre-norm RMSNorm, SwiGLU, no biases.

Free of torch.distributed: parallelism (FSDP2, pipeline stages, activation checkpointing,
compile) is applied from outside. Build on the meta device (``build_meta``), cut or shard,
then allocate and initialise only what this process keeps (``materialize`` here for a
whole model, ``parallelize.materialize`` for a stage or a shard). Each parameter's initial
value comes from its own generator, seeded by (seed, its name in the full model)
(``init_parameter_``), so a pipeline stage or an FSDP shard gets exactly the values a
one-process build with the same seed has, without drawing the rest of the model.
Attention goes through flash-attn when it imports, runs on CUDA and q/k/v are bf16 or fp16
(under autocast the block's input stays float32, its projections do not), otherwise
through ``F.scaled_dot_product_attention``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math

import torch
import torch.nn.functional as F
from torch import nn

try:  # optional: only on CUDA machines where its wheel was built
    from flash_attn import flash_attn_func
except ImportError:  # pragma: no cover - the CPU path
    flash_attn_func = None


@dataclasses.dataclass
class ModelConfig:
    """Model shape (``model`` in the training config, or a preset name)."""

    dim: int = 256
    """Hidden size."""
    n_layers: int = 4
    """Transformer blocks."""
    n_heads: int = 4
    """Attention heads (dim must be a multiple)."""
    ffn_dim: int = 688
    """SwiGLU inner size (about 8/3 of dim, rounded)."""
    vocab_size: int = 65536
    """Vocabulary size (the tokenizer's)."""
    max_seq_len: int = 4096
    """Longest sequence the RoPE tables cover."""
    norm_eps: float = 1e-6
    """RMSNorm epsilon."""
    rope_theta: float = 10000.0
    """RoPE base."""
    init_std: float = 0.02
    """Standard deviation of the normal initialisation."""

    @property
    def head_dim(self) -> int:
        return self.dim // self.n_heads


def _ffn(dim: int, multiple: int = 256) -> int:
    hidden = int(8 * dim / 3)
    return multiple * ((hidden + multiple - 1) // multiple)


PRESETS = {
    "debug": ModelConfig(dim=128, n_layers=2, n_heads=4, ffn_dim=352, vocab_size=4096, max_seq_len=256),
    "100m": ModelConfig(dim=512, n_layers=12, n_heads=8, ffn_dim=_ffn(512), max_seq_len=2048),
    "1b": ModelConfig(dim=2048, n_layers=16, n_heads=16, ffn_dim=_ffn(2048), max_seq_len=4096),
    # the report's Table 3; LLaMA2-13B's released FFN is 13,824 (the table prints 13,696)
    "skywork-13b": ModelConfig(dim=4608, n_layers=52, n_heads=36, ffn_dim=12288,
                               vocab_size=65536, max_seq_len=4096),
    "llama2-13b": ModelConfig(dim=5120, n_layers=40, n_heads=40, ffn_dim=13824,
                              vocab_size=32000, max_seq_len=4096, norm_eps=1e-5),
}


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        normed = x.float() * torch.rsqrt(x.float().pow(2).mean(-1, keepdim=True) + self.eps)
        return normed.type_as(x) * self.weight


def rope_tables(cfg: ModelConfig, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin of shape (max_seq_len, head_dim // 2), in float32."""
    inv = 1.0 / (cfg.rope_theta ** (torch.arange(0, cfg.head_dim, 2, device=device,
                                                 dtype=torch.float32) / cfg.head_dim))
    angles = torch.outer(torch.arange(cfg.max_seq_len, device=device, dtype=torch.float32), inv)
    return angles.cos(), angles.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate pairs (first half, second half) of each head, as LLaMA's HF weights expect."""
    seq = x.shape[1]
    cos, sin = cos[:seq, None, :], sin[:seq, None, :]
    x1, x2 = x.float().chunk(2, dim=-1)
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1).type_as(x)


FLASH_DEVICES = ("cuda",)


def use_flash(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> bool:
    """flash-attn takes fp16/bf16 CUDA tensors: decided on q/k/v, which autocast makes bf16
    while the block's input (the float32 residual stream) is not."""
    return (flash_attn_func is not None and q.device.type in FLASH_DEVICES
            and q.dtype in (torch.float16, torch.bfloat16) and q.dtype == k.dtype == v.dtype)


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.n_heads, self.head_dim = cfg.n_heads, cfg.head_dim
        self.wq = nn.Linear(cfg.dim, cfg.dim, bias=False)
        self.wk = nn.Linear(cfg.dim, cfg.dim, bias=False)
        self.wv = nn.Linear(cfg.dim, cfg.dim, bias=False)
        self.wo = nn.Linear(cfg.dim, cfg.dim, bias=False)

    def forward(self, x, cos, sin):
        b, s, _ = x.shape
        q = apply_rope(self.wq(x).view(b, s, self.n_heads, self.head_dim), cos, sin)
        k = apply_rope(self.wk(x).view(b, s, self.n_heads, self.head_dim), cos, sin)
        v = self.wv(x).view(b, s, self.n_heads, self.head_dim)
        if use_flash(q, k, v):
            out = flash_attn_func(q, k, v, causal=True)
        else:
            out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2),
                                                 v.transpose(1, 2), is_causal=True).transpose(1, 2)
        return self.wo(out.reshape(b, s, -1))


class FeedForward(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.w1 = nn.Linear(cfg.dim, cfg.ffn_dim, bias=False)  # gate
        self.w3 = nn.Linear(cfg.dim, cfg.ffn_dim, bias=False)  # up
        self.w2 = nn.Linear(cfg.ffn_dim, cfg.dim, bias=False)  # down

    def forward(self, x):
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.attention_norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.attention = Attention(cfg)
        self.ffn_norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.feed_forward = FeedForward(cfg)

    def forward(self, x, cos, sin):
        x = x + self.attention(self.attention_norm(x), cos, sin)
        return x + self.feed_forward(self.ffn_norm(x))


class Transformer(nn.Module):
    """Layers live in a ModuleDict keyed "0".."n-1", so pipeline stages can delete theirs."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.tok_embeddings = nn.Embedding(cfg.vocab_size, cfg.dim)
        self.layers = nn.ModuleDict({str(i): Block(cfg) for i in range(cfg.n_layers)})
        self.norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.output = nn.Linear(cfg.dim, cfg.vocab_size, bias=False)
        cos, sin = rope_tables(cfg)
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        h = self.tok_embeddings(tokens) if self.tok_embeddings is not None else tokens
        for layer in self.layers.values():
            h = layer(h, self.rope_cos, self.rope_sin)
        h = self.norm(h) if self.norm is not None else h
        return self.output(h) if self.output is not None else h

    @torch.no_grad()
    def init_weights(self, seed: int = 0) -> None:
        """Every parameter by ``init_parameter_`` (its own generator), then the RoPE tables."""
        for name, p in self.named_parameters():
            init_parameter_(name, p, self.cfg, seed)
        self.reset_buffers()

    @torch.no_grad()
    def reset_buffers(self) -> None:
        cos, sin = rope_tables(self.cfg, self.rope_cos.device)
        self.rope_cos.copy_(cos)
        self.rope_sin.copy_(sin)


def _seed_of(seed: int, name: str) -> int:
    return int.from_bytes(hashlib.sha256(f"{seed}/{name}".encode()).digest()[:8], "little") >> 1


@torch.no_grad()
def init_parameter_(name: str, tensor: torch.Tensor, cfg: ModelConfig, seed: int) -> torch.Tensor:
    """Fill ``tensor`` (the whole parameter ``name``, named as in the full, unwrapped model)
    with its initial value: ones for norms; normal(0, init_std) for matrices and the
    embedding, the std scaled by 1/sqrt(2 n_layers) for the residual outputs (wo, w2).
    Drawn from a generator seeded by (seed, name), so it does not depend on what else this
    process builds."""
    if name.endswith("norm.weight"):
        return tensor.fill_(1.0)
    std = cfg.init_std
    if name.endswith((".wo.weight", ".w2.weight")):
        std = std / math.sqrt(2 * cfg.n_layers)
    gen = torch.Generator(device=tensor.device).manual_seed(_seed_of(seed, name))
    return tensor.normal_(0.0, std, generator=gen)


def build_meta(cfg: ModelConfig) -> Transformer:
    """The model on the meta device: shapes only, no memory (cut or shard it, then
    materialise)."""
    with torch.device("meta"):
        return Transformer(cfg)


def build(cfg: ModelConfig, device: str | torch.device = "cpu", seed: int = 0) -> Transformer:
    """Build on the meta device, then allocate on ``device`` and initialise."""
    return materialize(build_meta(cfg), device, seed)


def materialize(model: Transformer, device, seed: int = 0) -> Transformer:
    model.to_empty(device=device)
    model.init_weights(seed)
    return model


def count_params(cfg: ModelConfig) -> int:
    """Parameters of a model of this shape, counted on the meta device (no memory)."""
    with torch.device("meta"):
        return sum(p.numel() for p in Transformer(cfg).parameters())


def hf_state_dict(model: Transformer) -> dict[str, torch.Tensor]:
    """Our weights under Hugging Face ``LlamaForCausalLM`` names (same layout, no copies)."""
    names = {"attention.wq": "self_attn.q_proj", "attention.wk": "self_attn.k_proj",
             "attention.wv": "self_attn.v_proj", "attention.wo": "self_attn.o_proj",
             "feed_forward.w1": "mlp.gate_proj", "feed_forward.w3": "mlp.up_proj",
             "feed_forward.w2": "mlp.down_proj", "attention_norm": "input_layernorm",
             "ffn_norm": "post_attention_layernorm"}
    out = {"model.embed_tokens.weight": model.tok_embeddings.weight,
           "model.norm.weight": model.norm.weight, "lm_head.weight": model.output.weight}
    for i, layer in model.layers.items():
        for ours, theirs in names.items():
            out[f"model.layers.{i}.{theirs}.weight"] = layer.get_submodule(ours).weight
    return out


def hf_config(cfg: ModelConfig) -> dict:
    """The matching ``LlamaConfig`` fields."""
    return {"hidden_size": cfg.dim, "intermediate_size": cfg.ffn_dim,
            "num_hidden_layers": cfg.n_layers, "num_attention_heads": cfg.n_heads,
            "num_key_value_heads": cfg.n_heads, "vocab_size": cfg.vocab_size,
            "max_position_embeddings": cfg.max_seq_len, "rms_norm_eps": cfg.norm_eps,
            "rope_theta": cfg.rope_theta, "tie_word_embeddings": False, "hidden_act": "silu",
            "attention_bias": False, "mlp_bias": False}
