"""Source code read safely from folders, tar / tar.gz / zip archives and Stack-style rows.

Readers yield one RawRecord per file (``metadata``: repo, path, language, license) and a
Reject for whatever cannot be read safely: path traversal, oversize members, binary
files, damaged archives. Archives are read in place, never extracted; symlinks are
skipped, never followed.
"""

from __future__ import annotations

import dataclasses
import io
import os
import posixpath
import re
import tarfile
import zipfile
import zlib
from typing import Iterator

import fsspec

from skypile.document import Origin, Reject, stable_id
from skypile.files.readers import RawRecord, ReaderOptions, read_file
from skypile.text.code_filters import language_of

STAGE = "read"


@dataclasses.dataclass
class CodeReadOptions:
    """Reading code (``read`` in the code config)."""

    max_file_bytes: int = 1_000_000
    """Files larger than this are rejected (read:too-large)."""
    max_archive_bytes: int = 2_000_000_000
    """An archive whose members add up past this stops with read:archive-too-large."""
    text_field: str = "content"
    """Stack-style rows: the file's text."""


def _is_binary(data: bytes) -> bool:
    head = data[:8192]
    return b"\x00" in head


def _record(repo: str, path: str, data: bytes, source: str, license: str = "",
            where: dict | None = None) -> RawRecord | Reject:
    doc_id = stable_id(source, repo, path)  # the same file in two inputs: two documents
    url = f"{repo}/{path}"
    if _is_binary(data):
        return Reject.of(Origin(doc_id, url, source), STAGE, "binary", repo=repo, path=path,
                         **(where or {}))
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        text = data.decode("latin-1")
    meta = {"repo": repo, "path": path, "language": language_of(path) or "", "source_kind": "code"}
    if license:
        meta["license"] = license
    return RawRecord(id=doc_id, url=url, source=source, kind="text", body=text, metadata=meta)


def _unsafe(name: str) -> bool:
    parts = name.replace("\\", "/").split("/")
    return name.startswith(("/", "\\")) or ".." in parts or bool(re.match(r"^[A-Za-z]:", name))


def _repo_name(path: str) -> str:
    base = posixpath.basename(path.rstrip("/"))
    for suffix in (".tar.gz", ".tgz", ".tar.bz2", ".tar.xz", ".tar", ".zip"):
        if base.endswith(suffix):
            return base[: -len(suffix)]
    return base


def _tar_members(path: str, raw, opts: CodeReadOptions) -> Iterator[RawRecord | Reject]:
    repo = _repo_name(path)
    total = 0
    try:
        tar = tarfile.open(fileobj=raw, mode="r|*")
    except (tarfile.TarError, OSError, EOFError) as e:
        yield _file_reject(path, "bad-archive", error=str(e)[:120])
        return
    try:
        for member in tar:
            name = member.name
            if member.issym() or member.islnk() or not member.isfile():
                continue  # links and special files are skipped, never followed
            refused = _refuse_member(repo, name, member.size, path, opts)
            if refused:
                yield refused
                continue
            total += member.size
            if total > opts.max_archive_bytes:
                yield _file_reject(path, "archive-too-large", cap=opts.max_archive_bytes)
                return
            f = tar.extractfile(member)
            data = f.read() if f else b""
            yield _record(repo, _strip_top(name), data, path, where={"member": name})
    except (tarfile.TarError, OSError, EOFError, zlib.error) as e:
        yield _file_reject(path, "truncated-archive", error=str(e)[:120])


def _member_reject(repo: str, name: str, path: str, reason: str, **detail) -> Reject:
    return Reject.of(Origin(stable_id(repo, name), f"{repo}/{name}", path), STAGE, reason,
                     member=name, **detail)


def _refuse_member(repo: str, name: str, size: int, path: str,
                   opts: CodeReadOptions) -> Reject | None:
    """The archive member checks shared by tar and zip: unsafe path, size cap."""
    if _unsafe(name):
        return _member_reject(repo, name, path, "unsafe-path")
    if size > opts.max_file_bytes:
        return _member_reject(repo, name, path, "too-large", bytes=size)
    return None


def _strip_top(name: str) -> str:
    """Archives of a repository usually hold one top folder: paths are relative to it."""
    parts = name.split("/", 1)
    return parts[1] if len(parts) == 2 and parts[1] else name


def _zip_members(path: str, raw, opts: CodeReadOptions) -> Iterator[RawRecord | Reject]:
    repo = _repo_name(path)
    try:
        zf = zipfile.ZipFile(raw)
    except (zipfile.BadZipFile, OSError) as e:
        yield _file_reject(path, "bad-archive", error=str(e)[:120])
        return
    total = 0
    for info in zf.infolist():
        name = info.filename
        if info.is_dir() or (info.external_attr >> 16) & 0o170000 == 0o120000:
            continue  # folders, and symlinks stored in the zip
        refused = _refuse_member(repo, name, info.file_size, path, opts)
        if refused:
            yield refused
            continue
        total += info.file_size
        if total > opts.max_archive_bytes:
            yield _file_reject(path, "archive-too-large", cap=opts.max_archive_bytes)
            return
        try:
            data = zf.read(info)
        except (zipfile.BadZipFile, zlib.error, OSError, EOFError) as e:
            yield _member_reject(repo, name, path, "damaged-member", error=str(e)[:120])
            continue
        yield _record(repo, _strip_top(name), data, path, where={"member": name})


def _file_reject(path: str, reason: str, **detail) -> Reject:
    return Reject.of(Origin(stable_id(path, reason), "", path), STAGE, reason, file=path,
                     **detail)


def _tree(root: str, opts: CodeReadOptions, storage_options: dict) -> Iterator[RawRecord | Reject]:
    fs, base = fsspec.core.url_to_fs(root, **storage_options)
    repo = _repo_name(base)
    for path in sorted(fs.find(base, withdirs=False)):
        rel = posixpath.relpath(path, base)
        if fs.protocol in ("file", ("file", "local")) and os.path.islink(path):
            continue
        size = fs.size(path)
        if size > opts.max_file_bytes:
            yield Reject.of(Origin(stable_id(repo, rel), f"{repo}/{rel}", root), STAGE,
                            "too-large", bytes=size)
            continue
        yield _record(repo, rel, fs.cat_file(path), root)


def read_code(path: str, opts: CodeReadOptions, storage_options: dict | None = None
              ) -> Iterator[RawRecord | Reject]:
    """Files of a folder, a tar/tar.gz/zip archive, or Stack-style JSONL/Parquet rows."""
    so = storage_options or {}
    fs, p = fsspec.core.url_to_fs(path, **so)
    if fs.isdir(p):
        yield from _tree(path, opts, so)
        return
    name = p.lower()
    with fs.open(p, "rb") as raw:
        if name.endswith(".zip"):
            yield from _zip_members(path, io.BytesIO(raw.read()), opts)
            return
        if name.endswith((".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz")):
            yield from _tar_members(path, raw, opts)
            return
    # Stack-style rows (repo, path, content, license)
    ropts = ReaderOptions(text_field=opts.text_field, id_field="id", url_field="path",
                          text_only=True)
    for rec in read_file(path, ropts, storage_options=so):
        if isinstance(rec, RawRecord):
            repo, fpath = str(rec.metadata.get("repo", "")), rec.url
            rec = _record(repo, fpath, rec.body.encode("utf-8"), path,
                          str(rec.metadata.get("license") or ""))
        yield rec
