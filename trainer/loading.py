"""One loader for every model the evaluation commands score (and the export reads).

``load(PATH)`` accepts
  * a training run folder of ``skypile train`` (its latest ``step-N``), or one ``step-N``
    checkpoint (PyTorch distributed checkpoint); the tokenizer is ``--tokenizer`` or, by
    default, the one recorded in the run's shard manifest;
  * any local Hugging Face causal LM folder (``config.json`` with a ``model_type``), ours as
    written by ``skypile export hf`` or anybody's, loaded with ``local_files_only``.

Nothing is downloaded: ``offline()`` switches the Hugging Face hub to offline mode before
``transformers`` is imported (when a model is loaded, not when this module is), and every
``from_pretrained`` is ``local_files_only``. ``models(cfg)`` loads the ``--model`` list of an
eval command, one model at a time.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F

from skypile import config as cfglib
from skypile.trainer import checkpoint
from skypile.trainer import model as modellib
from skypile.trainer.config import ModelsConfig, TrainConfig


def offline() -> None:
    """No downloads: the hub reads these when ``transformers`` is first imported."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


class ModelLoadError(ValueError):
    """The path is not a model this loader understands (one line, no traceback)."""


@dataclass
class LanguageModel:
    name: str
    kind: str  # "skypile" or "hf"
    forward: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (ids, mask) -> logits
    encode: Callable[[str], list[int]]  # no BOS / EOS
    max_len: int
    device: torch.device
    vocab_size: int

    @torch.no_grad()
    def sequence_nll(self, seqs: list[list[int]], batch_tokens: int = 8192) -> list[np.ndarray]:
        """Negative log-likelihood of every predicted token (positions 1..n-1) per sequence.

        Sequences are cut to ``max_len`` tokens, sorted by length and packed into batches of
        at most ``batch_tokens`` (padded) tokens; padding is right-side and masked.
        """
        seqs = [s[:self.max_len] for s in seqs]
        order = sorted(range(len(seqs)), key=lambda i: -len(seqs[i]))
        out: list[np.ndarray] = [np.zeros(0)] * len(seqs)
        i = 0
        while i < len(order):
            width = max(len(seqs[order[i]]), 2)
            n = max(1, min(len(order) - i, batch_tokens // width))
            group = order[i:i + n]
            ids = torch.zeros((n, width), dtype=torch.long)
            mask = torch.zeros((n, width), dtype=torch.long)
            for row, j in enumerate(group):
                ids[row, :len(seqs[j])] = torch.tensor(seqs[j], dtype=torch.long)
                mask[row, :len(seqs[j])] = 1
            ids, mask = ids.to(self.device), mask.to(self.device)
            logits = self.forward(ids, mask)[:, :-1].float()
            nll = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1),
                                  reduction="none").view(n, width - 1)
            nll = nll.double().cpu().numpy()
            for row, j in enumerate(group):
                out[j] = nll[row, :max(len(seqs[j]) - 1, 0)]
            i += n
        return out


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ModelLoadError(f"--device {name}: no CUDA device here")
    return torch.device(name)


def torch_dtype(name: str) -> torch.dtype:
    table = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
    if name not in table:
        raise ModelLoadError(f"--dtype {name}: use one of {', '.join(table)}")
    return table[name]


def is_hf_dir(path: Path) -> bool:
    try:
        return "model_type" in json.loads((path / "config.json").read_text())
    except (OSError, ValueError):
        return False


def find_checkpoint(path: Path) -> tuple[Path, Path]:
    """(run folder, step folder) for a run folder or a ``step-N`` folder."""
    if (path / ".metadata").exists():
        return path.parent, path
    step = checkpoint.latest_checkpoint(path)
    if step is None:
        raise ModelLoadError(f"{path}: neither a Hugging Face model folder (config.json with "
                             "model_type) nor a skypile train run (step-N checkpoints)")
    return path, step


def run_config(run: Path) -> TrainConfig:
    try:
        return cfglib.from_dict(TrainConfig, json.loads((run / "config.json").read_text()))
    except FileNotFoundError:
        raise ModelLoadError(f"{run}/config.json is missing: the model shape of this checkpoint "
                             "is unknown (it is written by skypile train)") from None


def tokenizer_of_run(cfg) -> str:
    """A local path of the run's tokenizer: the copy in its shard set (``tokenizer.model``,
    fetched when the set is remote), or what an older manifest recorded."""
    from skypile.tokens.manifest import tokenizer_file
    from skypile.tokens.shards import ShardSet

    try:
        return tokenizer_file(ShardSet(cfg.data.shards, verify=False))
    except Exception as e:  # noqa: BLE001 - any failure means: ask for --tokenizer
        raise ModelLoadError(f"cannot find the run's tokenizer through data.shards "
                             f"({cfg.data.shards}): {e}; pass --tokenizer") from None


def load_skypile_weights(step: Path, cfg: TrainConfig) -> modellib.Transformer:
    """Our model on the CPU in float32 with the weights of one DCP checkpoint."""
    import warnings

    model = modellib.build(cfg.model_config(), "cpu")
    with warnings.catch_warnings():  # "no process group: loading on one process" is expected
        warnings.simplefilter("ignore")
        checkpoint.load_weights(step, model)
    return model.eval()


def load(path: str, tokenizer: str | None = None, device: str = "auto",
         dtype: str = "float32") -> LanguageModel:
    p = Path(path)
    if not p.exists():
        raise ModelLoadError(f"{path}: no such model folder")
    dev, dt = _device(device), torch_dtype(dtype)
    if is_hf_dir(p):
        return _load_hf(p, tokenizer, dev, dt)
    run, step = find_checkpoint(p)
    cfg = run_config(run)
    tok_path = tokenizer or tokenizer_of_run(cfg)
    from skypile.tokens.tokenizer import Tokenizer, TokenizerError

    try:
        tok = Tokenizer(tok_path)
    except TokenizerError as e:
        raise ModelLoadError(str(e)) from None
    model = load_skypile_weights(step, cfg).to(device=dev, dtype=dt)
    if tok.vocab_size > model.cfg.vocab_size:
        raise ModelLoadError(f"tokenizer {tok_path} has {tok.vocab_size} pieces, the model "
                             f"only {model.cfg.vocab_size}: wrong --tokenizer?")
    return LanguageModel(name=f"{run.name}/{step.name}", kind="skypile",
                         forward=lambda ids, mask: model(ids), encode=tok.encode,
                         max_len=model.cfg.max_seq_len, device=dev, vocab_size=model.cfg.vocab_size)


def _load_hf(p: Path, tokenizer: str | None, dev: torch.device, dt: torch.dtype) -> LanguageModel:
    offline()
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    try:
        tok = AutoTokenizer.from_pretrained(tokenizer or str(p), local_files_only=True)
        model = AutoModelForCausalLM.from_pretrained(str(p), local_files_only=True, dtype=dt)
    except (OSError, ValueError) as e:
        raise ModelLoadError(f"cannot load the Hugging Face model in {p}: "
                             f"{str(e).splitlines()[0]}") from None
    model.to(dev).eval()

    def encode(text: str) -> list[int]:
        return tok(text, add_special_tokens=False)["input_ids"]

    def forward(ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return model(input_ids=ids, attention_mask=mask).logits

    max_len = int(getattr(model.config, "max_position_embeddings", 4096) or 4096)
    return LanguageModel(name=p.name, kind="hf", forward=forward, encode=encode,
                         max_len=max_len, device=dev, vocab_size=model.config.vocab_size)


def models(cfg: ModelsConfig) -> Iterator[tuple[str, LanguageModel]]:
    """(row name, loaded model) for each ``--model``, in order (``--name`` labels them); one
    model is loaded at a time, when the caller asks for the next."""
    names = list(cfg.name)
    for path in cfg.model:
        lm = load(path, cfg.tokenizer, cfg.device, cfg.dtype)
        yield (names.pop(0) if names else lm.name), lm
