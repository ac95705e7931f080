"""One combined hostile run: bad records of every kind through ``skypile dedup``, ``code``
and ``tokenize`` as a user would run them (separate processes, default runner).

Checked for each command: exit code 0, ``in == kept + dropped`` for every stage (skipped
records counted apart), peak RSS under 2 GiB, no traceback in the log, every output line
parses with a strict JSON parser, and nothing outside the output folder was created,
changed or deleted.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import resource
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[1]
GIB = 1024 ** 3


def _strict(line: str):
    def refuse(name):
        raise ValueError(f"non-strict JSON constant {name}")
    return json.loads(line, parse_constant=refuse)


def _tree(root: Path) -> dict[str, tuple[int, int]]:
    """Every path under root (links not followed) -> (size, mtime_ns)."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(os.fsencode(root)):
        for name in dirnames + filenames:
            p = os.path.join(dirpath, name)
            st = os.lstat(p)
            out[os.fsdecode(p)] = (st.st_size, st.st_mtime_ns)
    return out


def _run(args: list[str], cwd: Path) -> tuple[int, str, int]:
    """Runs ``skypile ARGS`` in a child; (exit code, log, the child's peak RSS in bytes)."""
    code = ("import resource, sys; from skypile.cli import main; rc = main(sys.argv[1:]); "
            "sys.stdout.flush(); sys.stderr.write('\\nPEAK_RSS_KB=%d\\n' % "
            "resource.getrusage(resource.RUSAGE_SELF).ru_maxrss); sys.exit(rc)")
    proc = subprocess.run([sys.executable, "-c", code, *args], cwd=cwd, capture_output=True,
                          text=True, errors="replace", timeout=900)
    log = proc.stdout + proc.stderr
    peak = [int(line.split("=")[1]) for line in log.splitlines() if line.startswith("PEAK_RSS_KB=")]
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return proc.returncode, log, max(peak + [children]) * 1024


def _rows(folder: Path) -> list[dict]:
    rows = []
    for f in sorted(folder.glob("*.jsonl.gz")):
        with gzip.open(f, "rt", encoding="utf-8") as fh:
            rows += [_strict(line) for line in fh]
    return rows


def _check_output(out: Path) -> tuple[list[dict], list[dict], dict]:
    stats = _strict((out / "stats.json").read_text(encoding="utf-8"))
    docs = _rows(out / "docs") if (out / "docs").exists() else []
    rejects = _rows(out / "rejects")
    for name, s in stats["stages"].items():
        assert s["in"] == s["kept"] + sum(s["dropped"].values()) + s.get("routed", 0), name
    assert sum(sum(s["dropped"].values()) for s in stats["stages"].values()) == len(rejects)
    for d in docs:
        assert isinstance(d["id"], str)
    for r in rejects:
        assert isinstance(r["id"], str) and r["reason"].startswith(r["stage"] + ":")
    return docs, rejects, stats


def _assert_clean_log(rc: int, log: str, peak: int, what: str) -> None:
    assert rc == 0, f"{what} exited {rc}:\n{log[-3000:]}"
    assert "Traceback" not in log, f"{what} printed a traceback:\n{log[-3000:]}"
    assert peak < 2 * GIB, f"{what} peaked at {peak / GIB:.2f} GiB"


# ---- inputs ---------------------------------------------------------------------------

ARTICLE = ("The river rose through the night and by morning the lower town was under water. "
           "Volunteers filled sandbags while the council opened the school as a shelter. ")
HTML_PAGE = ("<!DOCTYPE html><html><head><title>Flood</title><script>var tracker = 1;"
             "document.write('ad');</script><style>p{color:red}</style></head><body>"
             "<nav><a href='/'>Home</a> | <a href='/news'>News</a></nav><article>"
             + "".join(f"<p>{ARTICLE} Paragraph {i} adds detail about the damage.</p>"
                       for i in range(8))
             + "</article><footer>Contact us</footer></body></html>")


_WORDS = ("river harbour council volunteer shelter bridge market school engine garden winter "
          "summer library station doctor farmer teacher painter village mountain forest "
          "island meadow kettle lantern").split()


def _text(seed: int, words: int = 80) -> str:
    """A distinct English-looking text per seed (no two are near-duplicates)."""
    import random
    rng = random.Random(seed)
    return " ".join(rng.choice(_WORDS) for _ in range(words)) + "."


def _jsonl_lines() -> list[bytes]:
    lines = [
        json.dumps({"id": "good-1", "text": _text(101), "url": "http://a.example/1",
                    "lang": "en"}),
        # a metadata value that a domain template turns into a path
        json.dumps({"id": "dots", "text": "Up two levels. " + _text(110), "lang": ".."}),
        json.dumps({"id": "slash", "text": "Absolute path. " + _text(111), "lang": "/tmp/x"}),
        # a lone surrogate in the text and in the id (valid JSON, invalid Unicode)
        '{"id": "sur-\\ud800", "text": "broken \\udc00 text ' + _text(102) + '"}',
        '{"id": "sur-2", "text": "' + _text(103) + ' \\ud83d alone"}',
        # non-finite numbers in metadata and as an id
        '{"id": "nan-meta", "text": "' + _text(104) + ' nan", "score": NaN, "w": Infinity}',
        '{"id": NaN, "text": "' + _text(105) + ' a document whose id is NaN"}',
        # repeated ids: distinct texts, and an exact repeat
        json.dumps({"id": "same", "text": "First text under a shared id. " + _text(106)}),
        json.dumps({"id": "same", "text": "Second, different text under the id. " + _text(107)}),
        json.dumps({"id": "same", "text": "First text under a shared id. " + _text(106)}),
        # control, private-use and odd characters
        json.dumps({"id": "ctl", "text": "bell\x07 nul\x00 pua\ue000\U000F0000 " + _text(109)}),
        # an HTML page as text
        json.dumps({"id": "html-1", "text": HTML_PAGE, "url": "http://h.example/1"}),
        # not JSON, not an object, no text
        "{not json",
        "[1, 2, 3]",
        json.dumps({"id": "no-text", "body": "x"}),
        # a row over the reader's size cap (the run sets read.max_record_bytes=1000000)
        json.dumps({"id": "huge", "text": "word " * 400_000}),
        # a big document under the cap: MinHash must stay in bounded memory
        json.dumps({"id": "big", "text": " ".join(f"w{i}" for i in range(150_000))}),
    ]
    return [line.encode("utf-8", "surrogatepass") + b"\n" for line in lines]


@pytest.fixture(scope="module")
def hostile_inputs(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("hostile-run")
    docs = root / "in" / "docs"
    docs.mkdir(parents=True)
    (docs / "rows.jsonl").write_bytes(b"".join(_jsonl_lines()))
    (docs / "rows.jsonl.gz").write_bytes(gzip.compress(b"".join(_jsonl_lines()[:5]))[:-20])
    (docs / "empty.jsonl").write_bytes(b"")
    (docs / "garbage.jsonl").write_bytes(os.urandom(2000))
    import pyarrow as pa
    import pyarrow.parquet as pq
    pq.write_table(pa.table({"id": ["p1", "p2", "p3"],
                             "text": [_text(112) + " parquet one", None, "word " * 300_000],
                             "score": [float("nan"), float("inf"), 1.0]}),
                   docs / "rows.parquet")
    _code_inputs(root / "in" / "code")
    return root


def _code_inputs(code: Path) -> None:
    repo = code / "repo"
    repo.mkdir(parents=True)
    (repo / "main.py").write_text("def main():\n    return 'ok'\n" * 20)
    (repo / "gbk.py").write_bytes("# 这是一个中文注释，说明函数的用途\nprint('你好，世界')\n"
                                  .encode("gbk") * 10)
    os.symlink("/etc/passwd", repo / "link.py")
    try:
        (Path(os.fsdecode(os.fsencode(str(repo)) + b"/bad\xff\xfename.py"))
         .write_text("x = 1\n" * 30))
    except OSError:  # a filesystem that refuses non-UTF-8 names
        pass
    # a zip whose member expands far past every cap (a header-independent bomb)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("proj/ok.py", "print('fine')\n" * 10)
        zf.writestr("proj/bomb.py", b"\0" * (300 * 1024 * 1024))
    (code / "bomb.zip").write_bytes(buf.getvalue())
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        data = b"print('in tar')\n" * 10
        info = tarfile.TarInfo("proj/tar_ok.py")
        info.size = len(data)
        tf.addfile(info, io.BytesIO(data))
        for name, kind in (("proj/sym.py", tarfile.SYMTYPE), ("proj/dev", tarfile.CHRTYPE),
                           ("../escape.py", tarfile.REGTYPE)):
            info = tarfile.TarInfo(name)
            info.type = kind
            info.linkname = "/etc/passwd" if kind == tarfile.SYMTYPE else ""
            tf.addfile(info, io.BytesIO(b"") if kind == tarfile.REGTYPE else None)
    (code / "proj.tar.gz").write_bytes(buf.getvalue())


# ---- the run ----------------------------------------------------------------------------

def test_hostile_run(hostile_inputs, tmp_path):
    root = hostile_inputs
    work = tmp_path / "work"
    work.mkdir()
    bystander = work / "notes.bin"  # next to the outputs, owned by the user
    bystander.write_text("mine")
    before = _tree(root) | _tree(work)

    dedup_out = work / "dedup"
    rc, log, peak = _run(["dedup", "--input", str(root / "in" / "docs"), "--output",
                          str(dedup_out), "--stages", "exact,minhash",
                          "--read.max_record_bytes=1000000"], work)
    _assert_clean_log(rc, log, peak, "skypile dedup")
    docs, rejects, stats = _check_output(dedup_out)
    texts = " ".join(d["text"] for d in docs)
    assert "<script" not in texts and "document.write" not in texts
    assert "First text under a shared id" in texts and "Second, different text" in texts
    reasons = {r["reason"] for r in rejects}
    assert {"read:too-large", "read:empty-file", "read:bad-json", "extract:markup"} <= reasons
    assert all("\ud800" not in d["text"] and "\udc00" not in d["text"] for d in docs)

    code_out = work / "code"
    rc, log, peak = _run(["code", "--input", str(root / "in" / "code" / "repo"),
                          "--input", str(root / "in" / "code" / "bomb.zip"),
                          "--input", str(root / "in" / "code" / "proj.tar.gz"),
                          "--output", str(code_out)], work)
    _assert_clean_log(rc, log, peak, "skypile code")
    docs, rejects, stats = _check_output(code_out)
    read = stats["stages"]["read"]
    assert {"link", "device"} <= set(read.get("skipped", {}))
    gbk = [d for d in docs if d["metadata"].get("path", "").endswith("gbk.py")]
    assert gbk and "你好，世界" in gbk[0]["text"]

    tok = _tokenizer(work)
    shards_out = work / "shards"
    (shards_out / "export").mkdir(parents=True)
    (shards_out / "export" / "megatron_text_document.bin").write_bytes(b"\0" * 64)
    (shards_out / "user-notes.bin.txt").write_text("keep me")
    kept_in_out = _tree(shards_out)
    for attempt in range(2):  # the second run is a re-run over its own output
        rc, log, peak = _run(["tokenize", "--input", str(dedup_out / "docs"),
                              "--input", str(root / "in" / "docs" / "rows.jsonl"),
                              "--tokenizer", tok, "--output", str(shards_out),
                              "--labels.default={lang}", "--read.max_record_bytes=1000000"], work)
        _assert_clean_log(rc, log, peak, f"skypile tokenize (run {attempt + 1})")
    stats = _strict((shards_out / "stats.json").read_text(encoding="utf-8"))
    for name, s in stats["stages"].items():
        assert s["in"] == s["kept"] + sum(s["dropped"].values()), name
    _strict((shards_out / "manifest.json").read_text(encoding="utf-8"))
    for path in kept_in_out:  # the user's files inside the output survive the re-run
        assert os.path.lexists(path), path
    for p in shards_out.rglob("*"):
        assert p.resolve().is_relative_to(shards_out.resolve()), p
    rejects = _rows(shards_out / "rejects")
    assert {r["id"] for r in rejects if r["reason"] == "tokenize:bad-domain"} >= {"dots", "slash"}

    after = _tree(root) | _tree(work)
    outputs = [str(dedup_out), str(code_out), str(shards_out), str(work / "tok")]
    outside = {p: v for p, v in after.items() if not any(p.startswith(o) for o in outputs)}
    outside_before = {p: v for p, v in before.items() if not any(p.startswith(o) for o in outputs)}
    assert outside == outside_before


def _tokenizer(work: Path) -> str:
    from skypile.tokens.tokenizer import TokenizerTrainConfig, train

    corpus = work / "tok" / "corpus.txt"
    corpus.parent.mkdir()
    corpus.write_text((ARTICLE + "\n") * 200 + "你好，世界。这是一个测试。\n" * 200)
    prefix = work / "tok" / "tok"
    train([str(corpus)], str(prefix), TokenizerTrainConfig(vocab_size=400))
    return f"{prefix}.model"
