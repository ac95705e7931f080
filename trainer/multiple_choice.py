"""Multiple-choice benchmarks (C-Eval, CMMLU, MMLU) scored by answer log-likelihood.

Each question becomes a k-shot prompt (the subject's first k dev questions with their
answers, then the question and the answer cue); the model's choice is the letter A-D whose
continuation has the highest log-likelihood. When a prompt would not fit the model's
context, shots are dropped (the number used is reported). ``skypile eval mc`` runs
``cmd_mc`` with a ``config.McConfig``.

CSV layouts (as shipped in $SKYPILE_DATA/benchmarks):
  ceval  dev/SUBJECT_dev.csv, val/SUBJECT_val.csv   id,question,A,B,C,D,answer[,explanation]
  cmmlu  dev/SUBJECT.csv, test/SUBJECT.csv          (index),Question,A,B,C,D,Answer
  mmlu   dev/SUBJECT_dev.csv, test/SUBJECT_test.csv question,choice0..3,answer (0-3)
"""

from __future__ import annotations

import csv
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from skypile.trainer.config import McConfig
from skypile.trainer.loading import models
from skypile.trainer.tables import markdown, write_csv

LETTERS = "ABCD"


class BenchError(ValueError):
    pass


@dataclass(frozen=True)
class Bench:
    shots_split: str
    eval_split: str
    suffix: str  # file name = SUBJECT + suffix(split)
    header: str  # with {subject}
    cue: str  # after the options, before the letter


BENCHES = {  # the names are config.BenchName
    "ceval": Bench("dev", "val", "_{split}", "以下是中国关于{subject}考试的单项选择题，请选出其中的正确答案。\n\n", "答案："),
    "cmmlu": Bench("dev", "test", "", "以下是关于{subject}的单项选择题，请直接给出正确答案的选项。\n\n", "答案是："),
    "mmlu": Bench("dev", "test", "_{split}",
                  "The following are multiple choice questions (with answers) about {subject}.\n\n",
                  "Answer:"),
}


@dataclass
class Question:
    text: str
    options: list[str]
    answer: int


def read_questions(path: Path) -> list[Question]:
    out = []
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    if not rows:
        return out
    head = [h.strip().lower() for h in rows[0]]
    try:
        if "choice0" in head:  # mmlu
            q, opts, a = head.index("question"), [head.index(f"choice{i}") for i in range(4)], head.index("answer")
        else:
            q, opts, a = head.index("question"), [head.index(x.lower()) for x in LETTERS], head.index("answer")
    except ValueError:
        raise BenchError(f"{path}: unexpected header {rows[0]}") from None
    for n, r in enumerate(rows[1:], 2):
        if len(r) < len(head):
            raise BenchError(f"{path}:{n}: {len(r)} columns, expected {len(head)}")
        ans = r[a].strip()
        idx = int(ans) if ans.isdigit() else LETTERS.find(ans.upper())
        if not 0 <= idx < 4:
            raise BenchError(f"{path}:{n}: answer {ans!r} is not A-D or 0-3")
        out.append(Question(r[q], [r[i] for i in opts], idx))
    return out


def subjects(root: Path, bench: str) -> dict[str, tuple[Path, Path]]:
    b = BENCHES[bench]
    ev_dir, shot_dir = root / bench / b.eval_split, root / bench / b.shots_split
    suffix_ev = b.suffix.format(split=b.eval_split)
    out = {}
    for p in sorted(ev_dir.glob("*.csv")):
        name = p.stem[:-len(suffix_ev)] if suffix_ev and p.stem.endswith(suffix_ev) else p.stem
        shots = shot_dir / f"{name}{b.suffix.format(split=b.shots_split)}.csv"
        out[name] = (p, shots)
    if not out:
        raise BenchError(f"no {bench} CSV files in {ev_dir}")
    return out


def format_question(q: Question, cue: str, with_answer: bool) -> str:
    lines = [q.text.strip()] + [f"{L}. {o}" for L, o in zip(LETTERS, q.options)]
    tail = f"{cue} {LETTERS[q.answer]}\n\n" if with_answer else cue
    return "\n".join(lines) + "\n" + tail


def build_prompt(bench: str, subject: str, shots: list[Question], q: Question) -> str:
    b = BENCHES[bench]
    return (b.header.format(subject=subject.replace("_", " "))
            + "".join(format_question(s, b.cue, True) for s in shots)
            + format_question(q, b.cue, False))


def choose(lm, prompt_ids: list[int], conts: list[list[int]]) -> int:
    """Index of the continuation with the highest total log-likelihood after the prompt."""
    seqs = [prompt_ids + c for c in conts]
    nll = lm.sequence_nll(seqs)
    scores = [-x[len(prompt_ids) - 1:].sum() for x in nll]
    return int(np.argmax(scores))


def continuations(lm, prompt: str) -> tuple[list[int], list[list[int]]]:
    """Prompt ids and the ids each letter adds (" A" after the cue, as the shots show it)."""
    ids = lm.encode(prompt)
    conts = []
    for L in LETTERS:
        full = lm.encode(prompt + " " + L)
        conts.append(full[len(ids):] if full[:len(ids)] == ids else lm.encode(" " + L))
    return ids, conts


def evaluate_subject(lm, bench: str, subject: str, questions: list[Question],
                     shots: list[Question], k: int) -> tuple[int, int, int]:
    """(correct, total, fewest shots used)."""
    correct, fewest = 0, k
    for q in questions:
        use = k
        while True:
            ids, conts = continuations(lm, build_prompt(bench, subject, shots[:use], q))
            if len(ids) + max(map(len, conts)) <= lm.max_len or use == 0:
                break
            use -= 1
        fewest = min(fewest, use)
        ids = ids[-(lm.max_len - max(map(len, conts))):]
        correct += choose(lm, ids, conts) == q.answer
    return correct, len(questions), fewest


def cmd_mc(cfg: McConfig) -> int:
    table = subjects(Path(cfg.data), cfg.bench)
    wanted = [s.strip() for s in cfg.subjects.split(",") if s.strip()]
    unknown = [s for s in wanted if s not in table]
    if unknown:
        raise BenchError(f"unknown {cfg.bench} subjects {unknown}; known: {', '.join(table)}")
    chosen = {s: table[s] for s in (wanted or table)}
    rows = []
    for name, lm in models(cfg):
        total_c = total_n = 0
        for subject, (ev, shot_file) in chosen.items():
            t0 = time.time()
            qs = read_questions(ev)[:cfg.limit or None]
            shots = read_questions(shot_file)[:cfg.shots] if cfg.shots and shot_file.exists() else []
            c, n, used = evaluate_subject(lm, cfg.bench, subject, qs, shots, len(shots))
            total_c, total_n = total_c + c, total_n + n
            rows.append([name, subject, n, c, c / n if n else 0.0, used])
            print(f"[mc] {name} {cfg.bench}/{subject}: {c}/{n} = {c / max(n, 1):.3f} "
                  f"(>= {used} shots, {time.time() - t0:.1f} s)", file=sys.stderr)
        macro = np.mean([r[4] for r in rows if r[0] == name]) if rows else 0.0
        rows.append([name, "OVERALL (micro)", total_n, total_c, total_c / max(total_n, 1), ""])
        rows.append([name, "AVERAGE (macro)", total_n, total_c, float(macro), ""])
    header = ["model", "subject", "questions", "correct", "accuracy", "min_shots"]
    text = (f"{cfg.bench}, {cfg.shots}-shot, answer log-likelihood (chance = 0.25)\n\n"
            + markdown(header, rows, "{:.3f}"))
    print(text)
    if cfg.out:
        out = Path(cfg.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / f"mc-{cfg.bench}.md").write_text(text)
        write_csv(out / f"mc-{cfg.bench}.csv", [header] + rows)
    return 0
