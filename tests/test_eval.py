"""Evaluation on models the tests train (our trainer) or build (a random Hugging Face Llama).

Two debug-size models share one tokenizer and one set of shards: ``with`` trains on 400
GSM8K train problems, 15 C-Eval dev questions written as answered prompts, and WikiText;
``without`` trains on WikiText only, for the same number of steps.
"""

import csv
import json
import math
import typing
from pathlib import Path

import pytest
import torch

from skypile import config as cfglib
from skypile.tokens import tokenizer as tk
from skypile.pipelines.tokenize import run as tokenize
from skypile.trainer import evaluate, loading, multiple_choice
from skypile.trainer.config import BenchName, TrainConfig
from skypile.trainer.export import run as export
from skypile.trainer.train import train

pytestmark = pytest.mark.integration

CEVAL_SUBJECTS = ("accountant", "art_studies", "high_school_biology")


def ceval_dev(data_dir):
    out = {}
    for s in CEVAL_SUBJECTS:
        out[s] = multiple_choice.read_questions(data_dir / f"benchmarks/ceval/dev/{s}_dev.csv")
    return out


@pytest.fixture(scope="module")
def setup(data_dir, tmp_path_factory):
    d = tmp_path_factory.mktemp("eval")
    gsm = [json.loads(x) for x in open(data_dir / "gsm8k/train.jsonl", encoding="utf-8")][:400]
    (d / "train400.jsonl").write_text("".join(json.dumps(r) + "\n" for r in gsm))
    with open(d / "docs.jsonl", "w", encoding="utf-8") as f:
        for i, r in enumerate(gsm):
            f.write(json.dumps({"id": f"g{i}", "text": r["question"] + " " + r["answer"],
                                "metadata": {"domain": "stem"}}) + "\n")
        for s, qs in ceval_dev(data_dir).items():
            for i, q in enumerate(qs):
                text = (multiple_choice.build_prompt("ceval", s, [], q) + " "
                        + multiple_choice.LETTERS[q.answer])
                f.write(json.dumps({"id": f"c{s}{i}", "text": text, "metadata": {"domain": "mc"}},
                                   ensure_ascii=False) + "\n")
        raw = open(data_dir / "wiki-en/wiki.test.raw", encoding="utf-8", newline="").read()
        for i, p in enumerate(p.strip() for p in raw.split("\r\n")):
            if len(p) > 200:
                f.write(json.dumps({"id": f"w{i}", "text": p, "metadata": {"domain": "web_en"}}) + "\n")
    tok = tk.train([str(d / "docs.jsonl")], str(d / "tok"), tk.TokenizerTrainConfig(vocab_size=3000))
    assert tokenize(["--input", str(d / "docs.jsonl"), "--tokenizer", str(tok), "--output",
                     str(d / "shards"), "--held_out.fraction=0", "--labels.rules=[]",
                     "--labels.default={domain}"]) == 0
    runs = {}
    for name, weights in (("with", {"stem": 0.45, "mc": 0.3, "web_en": 0.25}), ("without", {"web_en": 1.0})):
        cfg = cfglib.from_dict(TrainConfig, {
            "preset": "debug", "steps": 300, "model": {"vocab_size": 3072, "max_seq_len": 512},
            # the "with" model memorises the few mc questions on purpose: past the 5-pass cap
            "data": {"shards": str(d / "shards"), "seq_len": 256, "batch_size": 8, "weights": weights,
                     "max_repeat": 1000},
            "optim": {"lr": 3e-3, "min_lr": 3e-4, "warmup_steps": 10},
            "checkpoint": {"dir": str(d / name), "every": 0, "keep_last": 1},
            "eval": {"every": 0, "batches": 1}})
        train(cfg, log=lambda *_: None)
        runs[name] = str(d / name)
    return d, tok, runs


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_leakage_test_sees_the_train_split_only_in_the_model_trained_on_it(setup, data_dir, capsys):
    d, _tok, runs = setup
    out = d / "t8"
    assert evaluate.run(["leakage", "--model", runs["with"], "--model", runs["without"],
                         "--name", "with", "--name", "without", "--train", str(d / "train400.jsonl"),
                         "--limit", "400", "--out", str(out)]) == 0
    rows = {r["model"]: r for r in read_csv(out / "table8.csv")}
    w, wo = rows["with"], rows["without"]
    assert float(w["d2_lo"]) > 0.05  # clearly positive: the interval is well above zero
    assert "train split seen" in w["flags"]
    assert float(wo["d2_lo"]) < 0 < float(wo["d2_hi"]) or abs(float(wo["d2"])) < 0.02
    assert "train split seen" not in wo["flags"]
    for r in (w, wo):  # the deltas are the differences of the losses
        assert math.isclose(float(r["d2"]), float(r["l_test"]) - float(r["l_train"]), abs_tol=1e-9)
        assert math.isclose(float(r["d1"]), float(r["l_test"]) - float(r["l_ref"]), abs_tol=1e-9)
        assert float(r["d2_lo"]) <= float(r["d2"]) <= float(r["d2_hi"])
    assert "| with |" in (out / "table8.md").read_text()


def test_export_gives_the_same_logits_and_tokens_in_transformers(setup, tmp_path):
    from transformers import AutoTokenizer, LlamaForCausalLM

    d, tok_path, runs = setup
    run, step = loading.find_checkpoint(Path(runs["with"]))
    ours = loading.load_skypile_weights(step, loading.run_config(run))
    text = "Natalia sold clips to 48 of her friends. 以下是中国关于会计考试的单项选择题"
    ids = tk.Tokenizer(str(tok_path)).encode(text)
    x = torch.tensor([ids])
    for dtype, atol in (("float32", 1e-4), ("bfloat16", 0.15)):
        out = tmp_path / dtype
        assert export(["hf", "--checkpoint", runs["with"], "--output", str(out), "--dtype", dtype]) == 0
        hf = LlamaForCausalLM.from_pretrained(str(out), local_files_only=True, dtype=torch.float32).eval()
        with torch.no_grad():
            a, b = ours(x), hf(x).logits
        assert torch.allclose(a, b, atol=atol), (dtype, (a - b).abs().max())
        assert AutoTokenizer.from_pretrained(str(out))(text, add_special_tokens=False)["input_ids"] == ids


def test_perplexity_follows_the_protocol_on_ours_export_and_a_random_llama(setup, data_dir, tmp_path):
    from transformers import LlamaConfig, LlamaForCausalLM

    d, tok_path, runs = setup
    hf_dir = tmp_path / "hf"
    assert export(["hf", "--checkpoint", runs["with"], "--output", str(hf_dir)]) == 0
    rand_dir = tmp_path / "random-llama"  # a small random Llama, saved as any HF model is
    torch.manual_seed(0)
    LlamaForCausalLM(LlamaConfig(vocab_size=3072, hidden_size=64, intermediate_size=128,
                                 num_hidden_layers=2, num_attention_heads=4,
                                 max_position_embeddings=4096)).save_pretrained(rand_dir)
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        (rand_dir / name).write_bytes((hf_dir / name).read_bytes())
    sets = [str(data_dir / "skywork-eval/zh_tech.jsonl"), str(data_dir / "skywork-eval/zh_game.jsonl")]
    out = tmp_path / "t6"
    assert evaluate.run(["perplexity", "--model", runs["with"], "--model", str(hf_dir), "--model",
                         str(rand_dir), "--name", "ours", "--name", "exported", "--name", "random",
                         "--sets", *sets, "--limit", "12", "--reference-tokenizer", str(tok_path),
                         "--out", str(out)]) == 0
    rows = read_csv(out / "perplexity.csv")
    by = {(r["model"], r["domain"]): r for r in rows}
    assert {k[1] for k in by} == {"tech", "game"}
    enc = tk.Tokenizer(str(tok_path)).encode
    for domain, path in (("tech", sets[0]), ("game", sets[1])):
        texts = [json.loads(x)["text"] for x in open(path, encoding="utf-8")][:12]
        for model, cap in (("ours", 512), ("random", 4096)):
            r = by[(model, domain)]
            n = [min(len(enc(t[:4096 // 3])), cap) for t in texts]  # first 1365 chars, capped, no BOS
            assert int(r["tokens"]) == sum(n) and int(r["predicted_tokens"]) == sum(n) - len(n)
            assert math.isclose(float(r["loss"]), float(r["nll_sum"]) / int(r["predicted_tokens"]),
                                rel_tol=1e-6)
            assert math.isclose(float(r["ppl"]), math.exp(float(r["loss"])), rel_tol=1e-4)
        assert math.isclose(float(by[("ours", domain)]["ppl"]), float(by[("exported", domain)]["ppl"]),
                            rel_tol=1e-4)
        # a random model is close to uniform over its vocabulary; the trained one is far better
        assert 1500 < float(by[("random", domain)]["ppl"]) < 6000
        # scored with its own tokenizer as reference and no cap hit, rescaling changes nothing
        assert int(by[("random", domain)]["reference_predicted_tokens"]) == int(by[("random", domain)]["predicted_tokens"])
    table = (out / "table6.md").read_text()
    assert "| model | game | tech | avg |" in table and "| random |" in table
    wide = read_csv(out / "table6.csv")
    assert [r["model"] for r in wide] == ["ours", "exported", "random"]


def test_multiple_choice_scores_memorised_questions(setup, data_dir, tmp_path):
    d, _tok, runs = setup
    bench = tmp_path / "bench/ceval"  # the trained dev questions, asked as the evaluation split
    (bench / "val").mkdir(parents=True)
    (bench / "dev").mkdir()
    for s in CEVAL_SUBJECTS:
        src = (data_dir / f"benchmarks/ceval/dev/{s}_dev.csv").read_bytes()
        (bench / f"val/{s}_val.csv").write_bytes(src)
        (bench / f"dev/{s}_dev.csv").write_bytes(src)
    out = tmp_path / "mc"
    assert evaluate.run(["mc", "--model", runs["with"], "--model", runs["without"], "--name", "with",
                         "--name", "without", "--bench", "ceval", "--shots", "0",
                         "--data", str(tmp_path / "bench"), "--out", str(out)]) == 0
    rows = {(r["model"], r["subject"]): r for r in read_csv(out / "mc-ceval.csv")}
    assert int(rows[("with", "OVERALL (micro)")]["questions"]) == 15
    assert float(rows[("with", "OVERALL (micro)")]["accuracy"]) >= 0.8
    assert float(rows[("without", "OVERALL (micro)")]["accuracy"]) <= 0.6
    assert {s for (_m, s) in rows} >= set(CEVAL_SUBJECTS)


def test_mc_reads_every_shipped_layout(data_dir):
    assert set(multiple_choice.BENCHES) == set(typing.get_args(BenchName))  # --bench choices
    for bench, spec in multiple_choice.BENCHES.items():
        table = multiple_choice.subjects(data_dir / "benchmarks", bench)
        ev, shots = next(iter(table.values()))
        assert shots.exists(), (bench, shots)
        q = multiple_choice.read_questions(ev)[0]
        assert len(q.options) == 4 and 0 <= q.answer < 4
        prompt = multiple_choice.build_prompt(bench, "x", multiple_choice.read_questions(shots)[:2], q)
        assert prompt.endswith(spec.cue) and prompt.count(spec.cue) == 3


@pytest.mark.parametrize("argv, message", [
    (["perplexity", "--model", "/nonexistent"], "no such model folder"),
    (["leakage", "--model", ".", "--train", "/nonexistent.jsonl"], "no such file"),
    (["mc", "--model", ".", "--bench", "mmlu", "--subjects", "nope", "--data", "/nonexistent"],
     "no mmlu CSV files"),
])
def test_bad_input_is_one_line(argv, message, capsys, tmp_path):
    assert evaluate.run(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "Traceback" not in err and len(err.splitlines()) == 1


@pytest.mark.parametrize("argv, message", [
    (["mc", "--model", "x", "--bench", "nope"], "invalid choice: 'nope'"),
    (["perplexity", "--model", "x", "--dtype", "half"], "invalid choice: 'half'"),
    (["leakage", "--model", "x", "--limit", "abc"], "expected a number"),
    (["perplexity", "--model", "a", "--name", "x", "--name", "y"], "one --name per --model"),
    (["mc", "--model", "x"], "required: --bench"),
])
def test_bad_flags_are_one_line(argv, message, capsys):
    try:
        code = evaluate.run(argv)
    except SystemExit as e:  # the parser's own errors exit there
        code = e.code
    err = capsys.readouterr().err.strip()
    assert code == 2 and message in err and len(err.splitlines()) == 1, err


def test_data_defaults_are_read_when_the_command_runs(monkeypatch):
    monkeypatch.setenv("SKYPILE_DATA", "/elsewhere")
    for argv, field, value in ((["leakage", "--model", "m"], "train", "/elsewhere/gsm8k/train.jsonl"),
                               (["mc", "--model", "m", "--bench", "mmlu"], "data", "/elsewhere/benchmarks"),
                               (["perplexity", "--model", "m"], "sets",
                                ["/elsewhere/skywork-eval/*.jsonl"])):
        ns = evaluate._parser().parse_args(argv)
        assert getattr(cfglib.from_args(ns.config_type, ns), field) == value
