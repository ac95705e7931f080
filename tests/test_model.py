"""The LLaMA-style model on the CPU: shapes, presets, causality, and Hugging Face parity."""

import torch

from skypile.trainer.model import PRESETS, ModelConfig, build, count_params, hf_config, hf_state_dict


def test_preset_parameter_counts():
    # LLaMA2-13B's released checkpoint has exactly this many parameters
    assert count_params(PRESETS["llama2-13b"]) == 13_015_864_320
    assert 13.5e9 < count_params(PRESETS["skywork-13b"]) < 14.0e9
    assert 0.9e8 < count_params(PRESETS["100m"]) < 1.2e8
    assert 0.9e9 < count_params(PRESETS["1b"]) < 1.2e9


def test_model_code_has_no_distributed_imports():
    import ast
    import inspect

    import skypile.trainer.model as m
    tree = ast.parse(inspect.getsource(m))
    imported = [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
    imported += [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
    assert not [name for name in imported if name.startswith("torch.distributed")]


def test_causal_and_deterministic():
    cfg = PRESETS["debug"]
    model = build(cfg, seed=1)
    x = torch.randint(0, cfg.vocab_size, (2, 32))
    y = model(x)
    assert y.shape == (2, 32, cfg.vocab_size)
    x2 = x.clone()
    x2[:, 20:] = torch.randint(0, cfg.vocab_size, (2, 12))
    torch.testing.assert_close(model(x2)[:, :20], y[:, :20])  # the future does not leak back
    torch.testing.assert_close(build(cfg, seed=1)(x), y)


def test_same_logits_as_huggingface_llama():
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = ModelConfig(dim=64, n_layers=2, n_heads=4, ffn_dim=176, vocab_size=500, max_seq_len=64)
    ours = build(cfg, seed=3).eval()
    hf = LlamaForCausalLM(LlamaConfig(**hf_config(cfg))).eval()
    missing, unexpected = hf.load_state_dict(hf_state_dict(ours), strict=False)
    assert not unexpected and all("rotary" in k for k in missing)
    x = torch.randint(0, cfg.vocab_size, (2, 40))
    with torch.no_grad():
        torch.testing.assert_close(hf(x).logits, ours(x), atol=1e-4, rtol=1e-4)
