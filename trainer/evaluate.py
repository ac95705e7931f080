"""``skypile eval``: per-domain perplexity (Table 6), the leakage test (Table 8), and
multiple-choice benchmarks, for our checkpoints and any local Hugging Face causal LM.

Perplexity follows the Skywork report's protocol: each document is cut to its first
``4096 // 3`` characters, tokenized without BOS and capped at 4,096 tokens (or the model's
context, if shorter); the NLL of every predicted token of a domain is summed and divided
by their count; perplexity is exp of that. The token counts are written out, so that models
with different tokenizers can be compared on one reference tokenizer's count
(``--reference-tokenizer``: loss = NLL sum / reference tokens).

The leakage test scores three sets the same way: every sample is one sequence (question and
worked solution together for GSM8K's {question, answer} rows, the ``text`` field otherwise),
its loss is the mean NLL over its predicted tokens, and a set's loss is the mean over its
samples. Δ1 = L_test - L_ref, Δ2 = L_test - L_train, with percentile bootstrap intervals
that resample every set's samples.

Each subcommand has a typed config (``config.PerplexityConfig``, ``LeakageConfig``,
``McConfig``) whose fields are its flags; multiple choice lives in ``multiple_choice``.
"""

from __future__ import annotations

import glob
import json
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from skypile import config as cfglib
from skypile.cli.subcommands import fail
from skypile.trainer import cli, multiple_choice
from skypile.trainer.config import LeakageConfig, McConfig, PerplexityConfig, default_sets
from skypile.trainer.loading import ModelLoadError, models, offline
from skypile.trainer.tables import markdown, write_csv

CHAR_LIMIT = 4096 // 3
TOKEN_LIMIT = 4096
REPORT_DOMAINS = ("tech", "movie", "government", "game", "finance", "general")


class EvalError(ValueError):
    pass


# ---------------------------------------------------------------- reading samples
def read_texts(path: str, limit: int = 0) -> list[str]:
    """Samples of a JSONL file: ``text``, or ``question`` + " " + ``answer`` (GSM8K rows)."""
    texts = []
    try:
        with open(path, encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except ValueError:
                    raise EvalError(f"{path}:{n}: not a JSON line") from None
                if isinstance(row.get("text"), str):
                    texts.append(row["text"])
                elif isinstance(row.get("question"), str) and isinstance(row.get("answer"), str):
                    texts.append(row["question"] + " " + row["answer"])
                else:
                    raise EvalError(f"{path}:{n}: needs a 'text' field or 'question' + 'answer'")
                if limit and len(texts) >= limit:
                    break
    except FileNotFoundError:
        raise EvalError(f"{path}: no such file") from None
    if not texts:
        raise EvalError(f"{path}: no samples")
    return texts


def domain_of(path: str) -> str:
    stem = Path(path).name.split(".")[0]
    return stem[3:] if stem[:3] in ("zh_", "en_") else stem


# ---------------------------------------------------------------- perplexity
@dataclass
class DomainScore:
    model: str
    domain: str
    docs: int
    tokens: int  # tokens fed to the model (after the caps)
    predicted: int  # tokens whose NLL is summed: tokens - docs
    nll_sum: float
    truncated: int  # documents that hit the token cap
    ref_predicted: int = 0

    @property
    def loss(self) -> float:
        return self.nll_sum / max(self.predicted, 1)

    @property
    def ppl(self) -> float:
        return math.exp(self.loss)

    @property
    def rescaled_ppl(self) -> float | None:
        return math.exp(self.nll_sum / self.ref_predicted) if self.ref_predicted else None


def score_domain(lm, name: str, domain: str, texts: list[str], batch_tokens: int,
                 ref_encode=None) -> DomainScore:
    cap = min(TOKEN_LIMIT, lm.max_len)
    cut = [t[:CHAR_LIMIT] for t in texts]
    seqs = [lm.encode(t) for t in cut]
    lengths = [len(s) for s in seqs]
    truncated = sum(n > cap for n in lengths)
    seqs = [s[:cap] for s in seqs]
    nll = lm.sequence_nll(seqs, batch_tokens)
    score = DomainScore(model=name, domain=domain, docs=len(seqs), tokens=sum(map(len, seqs)),
                        predicted=sum(len(x) for x in nll), nll_sum=float(sum(x.sum() for x in nll)),
                        truncated=truncated)
    if ref_encode is not None:  # the text actually scored (a capped document's fitting prefix)
        scored = [scored_prefix(lm.encode, t, cap) if n > cap else t for t, n in zip(cut, lengths)]
        score.ref_predicted = sum(max(len(ref_encode(t)[:TOKEN_LIMIT]) - 1, 0) for t in scored)
    return score


def scored_prefix(encode, text: str, cap: int) -> str:
    """The longest prefix of ``text`` that encodes to at most ``cap`` tokens (binary search)."""
    lo, hi = 0, len(text)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if len(encode(text[:mid])) <= cap:
            lo = mid
        else:
            hi = mid - 1
    return text[:lo]


def average_ppl(ppls: list[float]) -> float:
    """The report's Average: exp of the mean domain loss, i.e. the geometric mean of the
    domains' perplexities (not their arithmetic mean, which the hardest domain dominates)."""
    return math.exp(sum(math.log(p) for p in ppls) / len(ppls))


def table6(scores: list[DomainScore], rescaled: bool = False) -> tuple[list[str], list[list]]:
    """One row per model, one column per domain, then the Average as the report computes
    it (``average_ppl``, over the domains the model was scored on)."""
    domains = list(dict.fromkeys(s.domain for s in scores))
    header = ["model", *domains, "avg"]
    rows = []
    for model in dict.fromkeys(s.model for s in scores):
        by = {s.domain: s for s in scores if s.model == model}
        vals = [(by[d].rescaled_ppl if rescaled else by[d].ppl) if d in by else None for d in domains]
        known = [v for v in vals if v is not None]
        rows.append([model, *vals, average_ppl(known) if known else None])
    return header, rows


def cmd_perplexity(cfg: PerplexityConfig) -> int:
    files = sorted({f for pattern in cfg.sets for f in glob.glob(pattern)})
    if not files:
        raise EvalError(f"--sets {' '.join(cfg.sets)} matches no file (the default reads "
                        "$SKYPILE_DATA, ../shared/data unless set)")
    if cfg.sets == [default_sets()]:
        files = [f for f in files if domain_of(f) in REPORT_DOMAINS] or files
    sets = {domain_of(f): read_texts(f, cfg.limit) for f in files}
    ref_encode = _reference_encoder(cfg.reference_tokenizer) if cfg.reference_tokenizer else None
    scores = []
    for name, lm in models(cfg):
        for domain, texts in sets.items():
            t0 = time.time()
            s = score_domain(lm, name, domain, texts, cfg.batch_tokens, ref_encode)
            scores.append(s)
            print(f"[perplexity] {name} {domain}: ppl {s.ppl:.2f} over {s.predicted} tokens "
                  f"({s.docs} docs, {s.truncated} hit the {min(TOKEN_LIMIT, lm.max_len)}-token cap, "
                  f"{time.time() - t0:.1f} s)", file=sys.stderr)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    write_csv(out / "perplexity.csv", [PERPLEXITY_COLUMNS] + [
        [s.model, s.domain, s.docs, s.tokens, s.predicted, f"{s.nll_sum:.6f}", f"{s.loss:.6f}",
         f"{s.ppl:.4f}", s.truncated, s.ref_predicted or "",
         f"{s.rescaled_ppl:.4f}" if s.rescaled_ppl else ""] for s in scores])
    header, rows = table6(scores)
    text = "Perplexity per domain (Skywork Table 6 protocol)\n\n" + markdown(header, rows)
    if ref_encode is not None:
        header_r, rows_r = table6(scores, rescaled=True)
        text += ("\nRescaled to the reference tokenizer's token count "
                 f"({cfg.reference_tokenizer})\n\n" + markdown(header_r, rows_r))
    write_csv(out / "table6.csv", [header] + [
        [r[0]] + [f"{v:.4f}" if v is not None else "" for v in r[1:]] for r in rows])
    (out / "table6.md").write_text(text)
    print(text)
    print(f"written: {out}/table6.md, table6.csv, perplexity.csv (token counts per domain)")
    return 0


PERPLEXITY_COLUMNS = ["model", "domain", "docs", "tokens", "predicted_tokens", "nll_sum", "loss",
                      "ppl", "truncated_docs", "reference_predicted_tokens", "rescaled_ppl"]


def _reference_encoder(path: str):
    from skypile.tokens.tokenizer import Tokenizer

    if Path(path).is_dir():
        offline()
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(path, local_files_only=True)
        return lambda t: tok(t, add_special_tokens=False)["input_ids"]
    return Tokenizer(path).encode


# ---------------------------------------------------------------- leakage
def sample_losses(lm, texts: list[str], batch_tokens: int) -> np.ndarray:
    nll = lm.sequence_nll([lm.encode(t) for t in texts], batch_tokens)
    return np.array([x.mean() for x in nll if len(x)])


@dataclass
class Leakage:
    model: str
    l_train: float
    l_test: float
    l_ref: float
    d1: float
    d1_ci: tuple[float, float]
    d2: float
    d2_ci: tuple[float, float]
    flags: list[str] = field(default_factory=list)


def bootstrap_delta(a: np.ndarray, b: np.ndarray, n: int, rng: np.random.Generator,
                    level: float = 0.95) -> tuple[float, float]:
    """Percentile interval of mean(a) - mean(b), each set resampled with replacement."""
    ma = a[rng.integers(0, len(a), (n, len(a)))].mean(axis=1)
    mb = b[rng.integers(0, len(b), (n, len(b)))].mean(axis=1)
    lo, hi = np.quantile(ma - mb, [(1 - level) / 2, 1 - (1 - level) / 2])
    return float(lo), float(hi)


def leakage(name: str, train: np.ndarray, test: np.ndarray, ref: np.ndarray,
            tolerance: float, rounds: int = 2000, seed: int = 0) -> Leakage:
    rng = np.random.default_rng(seed)
    r = Leakage(model=name, l_train=float(train.mean()), l_test=float(test.mean()),
                l_ref=float(ref.mean()), d1=float(test.mean() - ref.mean()),
                d1_ci=bootstrap_delta(test, ref, rounds, rng), d2=float(test.mean() - train.mean()),
                d2_ci=bootstrap_delta(test, train, rounds, rng))
    # flagged only when the whole 95% interval lies beyond the tolerance band
    if r.d2_ci[0] > tolerance:
        r.flags.append("train split seen (Δ2 > 0: lower loss on train than on test)")
    if r.d2_ci[1] < -tolerance:
        r.flags.append("test split seen (Δ2 < 0: lower loss on test than on train)")
    if r.d1_ci[1] < -tolerance:
        r.flags.append("test split or text in its format seen (Δ1 < 0: lower loss on test "
                       "than on fresh reference text)")
    return r


def leakage_table(rows: list[Leakage]) -> str:
    header = ["model", "L_test", "L_train", "L_ref", "Δ1 = L_test - L_ref", "Δ2 = L_test - L_train",
              "flag"]
    body = [[r.model, r.l_test, r.l_train, r.l_ref,
             f"{r.d1:+.4f} [{r.d1_ci[0]:+.4f}, {r.d1_ci[1]:+.4f}]",
             f"{r.d2:+.4f} [{r.d2_ci[0]:+.4f}, {r.d2_ci[1]:+.4f}]",
             "; ".join(r.flags) or "-"] for r in rows]
    return markdown(header, body, "{:.4f}")


def cmd_leakage(cfg: LeakageConfig) -> int:
    sets = {k: read_texts(getattr(cfg, k), cfg.limit) for k in ("train", "test", "ref")}
    rows = []
    for name, lm in models(cfg):
        losses = {}
        for k, texts in sets.items():
            t0 = time.time()
            losses[k] = sample_losses(lm, texts, cfg.batch_tokens)
            print(f"[leakage] {name} {k}: loss {losses[k].mean():.4f} over {len(losses[k])} samples "
                  f"({time.time() - t0:.1f} s)", file=sys.stderr)
        rows.append(leakage(name, losses["train"], losses["test"], losses["ref"], cfg.tolerance,
                            cfg.bootstrap, cfg.seed))
    text = ("Loss-based contamination test (Skywork Table 8): 95% bootstrap intervals "
            f"({cfg.bootstrap} rounds); flagged when an interval lies beyond ±{cfg.tolerance}\n\n"
            + leakage_table(rows))
    print(text)
    if cfg.out:
        out = Path(cfg.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "table8.md").write_text(text)
        write_csv(out / "table8.csv", [LEAKAGE_COLUMNS] + [
            [r.model, r.l_test, r.l_train, r.l_ref, r.d1, *r.d1_ci, r.d2, *r.d2_ci,
             "; ".join(r.flags)] for r in rows])
        print(f"written: {out}/table8.md, table8.csv")
    return 0


LEAKAGE_COLUMNS = ["model", "l_test", "l_train", "l_ref", "d1", "d1_lo", "d1_hi", "d2", "d2_lo",
                   "d2_hi", "flags"]


# ---------------------------------------------------------------- command line
# name -> (config type, command, one-line help, description)
SUBCOMMANDS = {
    "perplexity": (PerplexityConfig, cmd_perplexity,
                   "per-domain perplexity table (Table 6 protocol)",
                   "Perplexity per domain file (one JSONL file = one domain, field 'text'), as "
                   "the Skywork report measures it. Writes OUT/table6.md, table6.csv and "
                   "perplexity.csv (token counts)."),
    "leakage": (LeakageConfig, cmd_leakage, "loss-based contamination test (Table 8)",
                "L_train, L_test, L_ref, Δ1 = L_test - L_ref and Δ2 = L_test - L_train with "
                "bootstrap intervals. Samples: the 'text' field, or question + ' ' + answer "
                "for GSM8K rows, scored whole."),
    "mc": (McConfig, multiple_choice.cmd_mc,
           "multiple-choice benchmarks (C-Eval, CMMLU, MMLU)",
           "k-shot multiple choice scored by the log-likelihood of each answer letter; "
           "accuracy per subject and overall."),
}


def _parser() -> cli.Parser:
    ap = cli.Parser(prog="skypile eval", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="command", metavar="{" + ",".join(SUBCOMMANDS) + "}")
    for name, (config_type, func, summary, description) in SUBCOMMANDS.items():
        p = sub.add_parser(name, help=summary, description=description)
        cfglib.add_flags(p, config_type)
        p.set_defaults(func=func, config_type=config_type)
    return ap


def run(argv: list[str] | None = None) -> int:
    ap = _parser()
    args = ap.parse_args(argv)
    if not args.command:
        ap.print_help()
        return 2
    try:
        return args.func(cfglib.from_args(args.config_type, args))
    except (cfglib.ConfigError, EvalError, ModelLoadError, multiple_choice.BenchError) as e:
        return fail(f"skypile eval {args.command}", e)
