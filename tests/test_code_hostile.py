"""``skypile code`` on hostile inputs (issue 15): names that are not UTF-8, members whose
headers lie about their size, links and device nodes, files in legacy encodings.

Every input is generated here: real folders, tar and zip files written by the test, and
real ``skypile code`` runs for the counts in ``stats.json``.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import stat
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

from skypile.document import Reject
from skypile.files import archives
from skypile.files.readers import RawRecord, ReadStats

def body(prefix: str) -> str:
    """Code no other test file resembles (dedup keeps it)."""
    return "".join(f"def {prefix}_{i}(value):\n    return value * {i} + len('{prefix}')\n\n"
                   for i in range(8))


GOOD = "def add(a, b):\n    \"\"\"Add two numbers.\"\"\"\n    return a + b\n\n\nprint(add(1, 2))\n"
GBK = ("# 这是一个中文注释，说明函数的用途\n"
       "def greet(name):\n    # 返回问候语\n    return '你好，' + name\n\nprint(greet('世界'))\n")
SJIS = ("# ファイルのデータを読み込むクラス\nclass Reader:\n"
        "    def read(self):  # データを返す\n        return self.data\n")
FRENCH = ("# Calcule la moyenne des élèves de la classe\ndef moyenne(notes):\n"
          "    # Attention : liste non vide, sinon on lève une erreur\n"
          "    return sum(notes) / len(notes)  # résultat à virgule\n")


def read(path, stats=None, **kw):
    out = list(archives.read_code(str(path), archives.CodeReadOptions(**kw), None, stats))
    for item in out:  # whatever comes out can be written as UTF-8 JSON
        item_json = (item.to_json() if isinstance(item, Reject)
                     else json.dumps({"id": item.id, "url": item.url, "source": item.source,
                                      "text": item.body, "metadata": item.metadata},
                                     ensure_ascii=False))
        item_json.encode("utf-8")
    return ([r for r in out if isinstance(r, RawRecord)], [r for r in out if isinstance(r, Reject)])


# ---- d) encodings ------------------------------------------------------------------------

@pytest.mark.parametrize("text,encoding", [
    (GBK, "gbk"), (SJIS, "shift_jis"), (FRENCH, "latin-1"), (GOOD + "# é ü ✓\n", "utf-8"),
    (GOOD + "# café\n", "utf-8-sig"), (GOOD + "# 你好\n", "utf-16"),
])
def test_legacy_encodings_decode_to_the_original_text(tmp_path, text, encoding):
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "src.py").write_bytes(text.encode(encoding))
    recs, rejs = read(repo)
    assert rejs == []
    assert recs[0].body == text
    assert ("encoding" in recs[0].metadata) == (encoding != "utf-8")  # recorded unless UTF-8


def test_text_that_no_encoding_explains_is_rejected_not_kept_as_mojibake(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    noise = bytes(b % 255 + 1 for b in os.urandom(4000))  # no NUL: not caught as binary
    (repo / "noise.py").write_bytes(noise)
    (repo / "blob.py").write_bytes(b"\x00\x01\x02" * 100)
    (repo / "short.py").write_bytes("x = 1  # 计数器\n".encode("gbk"))  # GBK? Big5? unsure
    recs, rejs = read(repo)
    assert recs == []
    assert sorted((r.detail["path"], r.reason) for r in rejs) == [
        ("blob.py", "read:binary"), ("noise.py", "read:undecodable"),
        ("short.py", "read:undecodable")]


def test_decode_source_policy():
    assert archives.decode_source("ü".encode("utf-16-be"))[0] is None  # no BOM: not guessed
    assert archives.decode_source(b"\xef\xbb\xbfx = 1\n") == ("x = 1\n", "utf-8-sig")
    # Cyrillic in cp1251 is read as Cyrillic, not as cp1252 accented letters
    text = "# Функция сложения двух чисел\ndef add(a, b):\n    return a + b  # результат\n"
    assert archives.decode_source(text.encode("cp1251")) == (text, "cp1251")


# ---- a) names that are not UTF-8 -----------------------------------------------------------

def _bad_name_folder(tmp_path: Path) -> Path:
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "ok.py").write_text(GOOD)
    raw = os.fsencode(repo)
    for name in (b"bad\xff\xfe.py", b"caf\xe9.py"):
        fd = os.open(os.path.join(raw, name), os.O_WRONLY | os.O_CREAT, 0o644)
        os.write(fd, body("f" + name.hex()).encode())
        os.close(fd)
    return repo


def test_folder_names_that_are_not_utf8_are_repaired_and_flagged(tmp_path):
    recs, rejs = read(_bad_name_folder(tmp_path))
    assert rejs == []
    by_path = {r.metadata["path"]: r for r in recs}
    assert set(by_path) == {"ok.py", "bad\\xff\\xfe.py", "caf\\xe9.py"}
    assert by_path["caf\\xe9.py"].metadata["repaired"] == {"path": "invalid-utf8"}
    assert by_path["caf\\xe9.py"].metadata["language"] == "Python"
    assert "repaired" not in by_path["ok.py"].metadata
    assert len({r.id for r in recs}) == 3


@pytest.mark.parametrize("fmt", [tarfile.GNU_FORMAT, tarfile.PAX_FORMAT, tarfile.USTAR_FORMAT])
def test_tar_member_names_that_are_not_utf8(tmp_path, fmt):
    p = tmp_path / "proj.tar"
    with tarfile.open(p, "w", format=fmt, encoding="utf-8", errors="surrogateescape") as tar:
        for name in ("proj/ok.py", "proj/bad\udcff\udcfe.py", "../evil\udce9.py"):
            info = tarfile.TarInfo(name)
            info.size = len(GOOD)
            tar.addfile(info, io.BytesIO(GOOD.encode()))
    recs, rejs = read(p)
    assert sorted(r.metadata["path"] for r in recs) == ["bad\\xff\\xfe.py", "ok.py"]
    bad = [r for r in recs if r.metadata["path"] != "ok.py"][0]
    assert bad.metadata["repaired"] == {"path": "invalid-utf8"}
    assert [(r.reason, r.detail["member"]) for r in rejs] == [("read:unsafe-path",
                                                                "../evil\\xe9.py")]


def _patched_zip(path: Path, members: dict[str, bytes], patches: dict[bytes, bytes]) -> None:
    """A zip written by zipfile, then names changed byte for byte (local header and
    central directory alike), as a tool that writes legacy names would have written them."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    data = buf.getvalue()
    for old, new in patches.items():
        assert len(old) == len(new) and data.count(old) == 2
        data = data.replace(old, new)
    path.write_bytes(data)


def test_zip_names_without_the_utf8_flag(tmp_path):
    p = tmp_path / "proj.zip"
    _patched_zip(p, {"proj/ok.py": GOOD, "proj/cafe_.py": GOOD + "a = 1\n",
                     "proj/cafe__.py": GOOD + "b = 2\n"},
                 {b"cafe_.py": b"caf\xe9_.py", b"cafe__.py": b"caf\xc3\xa9_.py"})
    recs, rejs = read(p)
    assert rejs == []
    paths = {r.metadata["path"]: r.metadata.get("repaired") for r in recs}
    # cp437 bytes are kept as bytes, never read as cp437; unflagged UTF-8 is UTF-8
    assert paths == {"ok.py": None, "caf\\xe9_.py": {"path": "invalid-utf8"}, "café_.py": None}


def test_zip_name_flagged_utf8_that_is_not(tmp_path):
    p = tmp_path / "proj.zip"
    _patched_zip(p, {"proj/ok.py": GOOD, "proj/badéé.py": GOOD + "c = 3\n"},
                 {"éé".encode(): b"\xff\xfe\xfd\xfc"})
    with pytest.raises(UnicodeDecodeError):
        zipfile.ZipFile(p)  # what crashed the reader before
    recs, rejs = read(p)
    assert rejs == []
    assert sorted(r.metadata["path"] for r in recs) == ["bad\\xff\\xfe\\xfd\\xfc.py", "ok.py"]
    assert all(r.body.startswith(GOOD) for r in recs)


def test_stack_rows_with_lone_surrogates(tmp_path):
    p = tmp_path / "stack.jsonl"
    p.write_text("\n".join([
        json.dumps({"repo": "a/b", "path": "bad\ud800.py", "content": GOOD}),
        json.dumps({"repo": "a/b", "path": "t.py", "content": "x = '\udcff'\n" + GOOD})]))
    recs, rejs = read(p)  # read() checks that every record encodes as UTF-8
    assert rejs == []
    assert [r.metadata["path"] for r in recs] == ["bad\ufffd.py", "t.py"]
    assert all(r.metadata["repaired"] for r in recs)  # the row reader's repairs are kept


# ---- b) bounded reads --------------------------------------------------------------------

MB = 1 << 20


def _stream_member(zf: zipfile.ZipFile, name: str, method: int, mb: int) -> None:
    info = zipfile.ZipInfo(name)
    info.compress_type = method
    with zf.open(info, "w") as w:
        for _ in range(mb):
            w.write(b"\0" * MB)


def _set_sizes(data: bytearray, names: set[str], size: int) -> None:
    """Writes ``size`` as the uncompressed size of ``names`` in both zip headers."""
    for info in zipfile.ZipFile(io.BytesIO(bytes(data))).infolist():
        if info.filename in names:
            data[info.header_offset + 22:info.header_offset + 26] = size.to_bytes(4, "little")
    pos = data.find(b"PK\x01\x02")
    while data[pos:pos + 4] == b"PK\x01\x02":
        n, m, k = (int.from_bytes(data[pos + i:pos + i + 2], "little") for i in (28, 30, 32))
        if data[pos + 46:pos + 46 + n].decode() in names:
            data[pos + 24:pos + 28] = size.to_bytes(4, "little")
        pos += 46 + n + m + k


def _lying_zip(path: Path) -> None:
    """Members of zeros (200 MB deflated, 64 MB bzip2) whose headers say 100 bytes."""
    with zipfile.ZipFile(path, "w", compresslevel=1) as zf:
        zf.writestr("proj/ok.py", GOOD)
        _stream_member(zf, "proj/bomb.py", zipfile.ZIP_DEFLATED, 200)
        _stream_member(zf, "proj/bz.py", zipfile.ZIP_BZIP2, 64)
    data = bytearray(path.read_bytes())
    _set_sizes(data, {"proj/bomb.py", "proj/bz.py"}, 100)
    path.write_bytes(bytes(data))


_MEASURE = """
import json, resource, sys
from skypile.document import Reject
from skypile.files import archives
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
out = list(archives.read_code(sys.argv[1], archives.CodeReadOptions(max_file_bytes=1_000_000)))
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"grew_kb": after - before,
                  "rejects": sorted((r.detail.get("member"), r.reason) for r in out
                                    if isinstance(r, Reject)),
                  "kept": [r.metadata["path"] for r in out if not isinstance(r, Reject)]}))
"""


def test_zip_members_whose_headers_understate_their_size(tmp_path):
    p = tmp_path / "bomb.zip"
    _lying_zip(p)
    assert all(i.file_size == 100 for i in zipfile.ZipFile(p).infolist()[1:])
    proc = subprocess.run([sys.executable, "-c", _MEASURE, str(p)], capture_output=True,
                          text=True, timeout=300, check=True)
    result = json.loads(proc.stdout)
    assert result["kept"] == ["ok.py"]
    assert result["rejects"] == [["proj/bomb.py", "read:too-large"],
                                 ["proj/bz.py", "read:too-large"]]
    assert result["grew_kb"] < 40 * 1024  # a few times the 1 MB cap, not 200 MB


def test_zip_member_larger_than_its_header_but_under_the_cap_is_damaged(tmp_path):
    p = tmp_path / "proj.zip"
    with zipfile.ZipFile(p, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("proj/a.py", GOOD * 10)
    data = bytearray(p.read_bytes())
    _set_sizes(data, {"proj/a.py"}, len(GOOD))
    p.write_bytes(bytes(data))
    recs, rejs = read(p)
    assert recs == [] and [r.reason for r in rejs] == ["read:damaged-member"]


def test_every_zip_compression_is_read(tmp_path):
    p = tmp_path / "proj.zip"
    with zipfile.ZipFile(p, "w") as zf:
        for method in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2,
                       zipfile.ZIP_LZMA):
            zf.writestr(f"proj/m{method}.py", GOOD + f"# method {method}\n",
                        compress_type=method)
    recs, rejs = read(p)
    assert rejs == []
    assert sorted(r.body for r in recs) == sorted(GOOD + f"# method {m}\n" for m in (0, 8, 12, 14))


def test_folder_file_over_the_cap(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "big.py").write_bytes(b"x = 1\n" * 50_000)
    (repo / "ok.py").write_text(GOOD)
    recs, rejs = read(repo, max_file_bytes=100_000)
    assert [r.metadata["path"] for r in recs] == ["ok.py"]
    assert [(r.reason, r.detail["bytes_read"]) for r in rejs] == [("read:too-large", 100_001)]


# ---- c) links and devices counted; a real run --------------------------------------------

def _hostile_inputs(tmp_path: Path) -> tuple[list[str], dict[str, int]]:
    """A folder, a tar.gz and a zip with files, links and special files; the inputs and
    how many members of each kind they hold (folders not counted)."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.py").write_text(GOOD + "secret = 1\n")
    repo = _bad_name_folder(tmp_path)  # 3 files
    (repo / "gbk.py").write_bytes(GBK.encode("gbk"))
    (repo / "noise.py").write_bytes(bytes(b % 255 + 1 for b in os.urandom(3000)))
    os.symlink("/etc/passwd", repo / "passwd.py")
    os.symlink(outside, repo / "escape")
    os.mkfifo(repo / "pipe.py")
    tgz = tmp_path / "proj.tar.gz"
    with tarfile.open(tgz, "w:gz") as tar:
        for name, kind in (("proj/a.py", tarfile.REGTYPE), ("proj/s.py", tarfile.SYMTYPE),
                           ("proj/h.py", tarfile.LNKTYPE), ("proj/tty", tarfile.CHRTYPE),
                           ("proj/disk", tarfile.BLKTYPE), ("proj/fifo", tarfile.FIFOTYPE),
                           ("proj/sub", tarfile.DIRTYPE)):
            info = tarfile.TarInfo(name)
            info.type = kind
            info.linkname = {tarfile.SYMTYPE: "../../etc/passwd", tarfile.LNKTYPE: "proj/a.py"
                             }.get(kind, "")
            data = GOOD.encode() if kind == tarfile.REGTYPE else b""
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    zpath = tmp_path / os.fsdecode(b"pkg\xff.zip")  # the input's own name is not UTF-8
    with zipfile.ZipFile(zpath, "w") as zf:
        zf.writestr("pkg/m.py", GOOD + "m = 1\n")
        zf.writestr("pkg/sub/", "")
        for name, mode in (("pkg/l.py", stat.S_IFLNK), ("pkg/dev", stat.S_IFCHR)):
            info = zipfile.ZipInfo(name)
            info.external_attr = (mode | 0o644) << 16
            zf.writestr(info, "/etc/passwd")
    members = {"folder": 5 + 3, "tar": 6, "zip": 3}
    return [str(repo), str(tgz), str(zpath)], members


def test_links_and_devices_are_counted_never_followed(tmp_path):
    inputs, _ = _hostile_inputs(tmp_path)
    stats = ReadStats()
    recs, rejs = [], []
    for path in inputs:
        r, j = read(path, stats)
        recs += r
        rejs += j
    assert stats.skipped == {"link": 2 + 2 + 1, "device": 1 + 3 + 1}
    assert not any("secret" in r.body or "root:" in r.body for r in recs)


def _listing(root: Path) -> dict[bytes, tuple[int, int]]:
    """Every path under root, links not followed: (size, mtime)."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(os.fsencode(root)):
        for name in dirnames + filenames:
            st = os.lstat(os.path.join(dirpath, name))
            out[os.path.join(dirpath, name)] = (st.st_size, st.st_mtime_ns)
    return out


def _lines(folder: Path) -> list[dict]:
    out = []
    for f in sorted(folder.glob("*.jsonl.gz")):
        with gzip.open(f, "rb") as fh:
            out += [json.loads(line.decode("utf-8")) for line in fh]  # strict UTF-8
    return out


def test_skypile_code_accounts_for_every_member(tmp_path):
    from skypile.pipelines.code import run

    inputs, members = _hostile_inputs(tmp_path)
    before = _listing(tmp_path)
    out = tmp_path / "out"
    assert run([arg for i in inputs for arg in ("--input", i)] + ["--output", str(out)]) == 0
    stats = json.loads((out / "stats.json").read_text(encoding="utf-8"))
    read_stage = stats["stages"]["read"]
    assert read_stage["skipped"] == {"link": 5, "device": 5}
    assert read_stage["in"] == read_stage["kept"] + sum(read_stage["dropped"].values())
    assert read_stage["in"] + sum(read_stage["skipped"].values()) == sum(members.values())
    assert read_stage["dropped"] == {"read:undecodable": 1}
    docs, rejects = _lines(out / "docs"), _lines(out / "rejects")
    paths = {d["metadata"]["path"]: d for d in docs}
    assert paths["gbk.py"]["text"] == GBK
    assert paths["gbk.py"]["metadata"]["encoding"] in ("gbk", "gb18030")
    assert paths["caf\\xe9.py"]["metadata"]["repaired"] == {"path": "invalid-utf8"}
    assert any(r["reason"] == "read:undecodable" and r["detail"]["path"] == "noise.py"
               for r in rejects)
    assert any(d["url"] == "pkg\\xff/m.py" and d["metadata"]["repaired"] == {
        "source": "invalid-utf8", "repo": "invalid-utf8"} for d in docs + rejects)
    assert stats["inputs"][2].endswith("pkg\\xff.zip")
    after = _listing(tmp_path)
    mine = os.fsencode(out)
    assert {p: v for p, v in after.items()
            if p != mine and not p.startswith(mine + b"/")} == before
