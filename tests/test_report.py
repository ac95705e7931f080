"""skypile report over a real (small) run: counts from stats.json, curves, tables."""

import json

from skypile.pipelines.web import run as web
from skypile.cli.report import build


def test_report_collects_what_the_chain_wrote(data_dir, tmp_path):
    run = tmp_path / "run"
    assert web(["--input", str(data_dir / "warc/resiliparse-cc-warc/*.warc.gz"),
                "--output", str(run / "web")]) == 0
    stats = json.loads((run / "web/stats.json").read_text())["stages"]
    for stage, rows in (("stage1", "step,web_en,stem\n10,7.0,6.5\n20,6.0,6.1\n"),
                        ("stage2", "step,web_en,stem\n10,5.9,5.0\n")):
        (run / "train" / stage).mkdir(parents=True)
        (run / "train" / stage / "validation.csv").write_text(rows)
    (run / "eval/leakage").mkdir(parents=True)
    (run / "eval/leakage/table8.md").write_text("| model | L_test |\n|---|---|\n| m | 1.0 |\n")
    report = build(run, run / "report")
    text = report.read_text()
    ex = stats["extract"]
    assert f"| extract | {ex['in']} | {ex['kept']} | {sum(ex['dropped'].values())} |" in text
    assert "## Contamination test (Table 8)" in text and "| m | 1.0 |" in text
    assert "Per-domain perplexity" not in text  # no table6.md: the section is left out
    assert (run / "report/validation.png").stat().st_size > 5000
