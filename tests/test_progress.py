"""Every counting stage logs a periodic progress line: records done, how they ended, rate."""

import json
import logging

from skypile.pipelines import common
from skypile.pipelines.web import run_dedup


def test_progress_lines_name_every_stage(tmp_path, caplog, monkeypatch):
    monkeypatch.setattr(common.Progress, "EVERY", 0.0)  # a line per record
    rows = [{"id": f"d{i}", "text": f"document number {i} " + "shared words here " * 20}
            for i in range(6)]
    rows.append(dict(rows[0], id="copy"))
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with caplog.at_level(logging.INFO, logger="skypile"):
        rc = run_dedup(["--input", str(src), "--output", str(tmp_path / "out"),
                        "--stages", "exact,minhash"])
    assert rc == 0
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("progress [")]
    for stage in ("read", "exact", "minhash"):
        assert any(f" {stage} " in f" {line.split(']: ', 1)[1]}" and "kept" in line
                   and "/s" in line for line in lines), (stage, lines[:5])
    assert any("dropped" in line and "exact" in line for line in lines)


def test_progress_line_format():
    p = common.Progress("Decide", every=1e9)
    for _ in range(3):
        p.tick("exact", "kept")
    p.tick("exact", "dropped")
    assert p.line().startswith("progress [Decide]: exact 4 (3 kept, 1 dropped) ")


def test_many_input_files_give_summary_lines(tmp_path, caplog, monkeypatch):
    monkeypatch.setattr(common.ReadFile, "FILES_PER_LINE", 20)
    src = tmp_path / "in"
    src.mkdir()
    for i in range(45):
        (src / f"part-{i:03d}.jsonl").write_text(
            json.dumps({"id": f"d{i}", "text": f"text of file {i} " * 10}) + "\n")
    with caplog.at_level(logging.INFO, logger="skypile"):
        rc = run_dedup(["--input", str(src), "--output", str(tmp_path / "out"),
                        "--stages", "exact"])
    assert rc == 0
    messages = [r.getMessage() for r in caplog.records if r.levelno >= logging.INFO]
    per_file = [m for m in messages if m.startswith("read ") and m.split(":")[0].endswith(".jsonl")]
    summaries = [m for m in messages if m.startswith("read: ") and "files done" in m]
    assert len(per_file) <= 10
    assert [m.split(" files done")[0] for m in summaries] == ["read: 20", "read: 40"]
