"""Source code read safely from folders, tar / tar.gz / zip archives and Stack-style rows.

Readers yield one RawRecord per file (``metadata``: repo, path, language, license) and a
Reject for whatever cannot be read safely: path traversal, oversize members, binary or
undecodable files, damaged archives. Archives are read in place, never extracted; links
and special files (devices, FIFOs) are counted in ``ReadStats.skipped`` (``link``,
``device``), never followed or opened, so that files in = kept + rejected + skipped.

Hostile input, in general:
- No member or file is ever read past ``max_file_bytes + 1`` bytes, whatever its header
  says: zip members are inflated by our own bounded loop, not by the size in the header
  (zips.py).
- A name that is not valid UTF-8 (a folder entry, a tar or zip member, the input's own
  name) is kept with the bad bytes written as ``\\xNN`` and ``metadata["repaired"]``
  saying which field was changed (``{"path": "invalid-utf8"}``); its id comes from the
  original bytes, so two such names never collide (names.py).
- Text is strict UTF-8 (a BOM is honoured, UTF-16/32 need one); else a confident
  charset-normalizer guess (``metadata["encoding"]``); else ``read:undecodable``
  (source_text.py).

Here: the entry point that picks the reader for an input, and the folder, tar and row
readers; zips.py reads zips, and members.py turns one file into a record or a reject the
same way for all of them. ``read_code``, ``CodeReadOptions``, ``decode_source``,
``printable`` and ``file_reject`` are imported from here by the pipelines and tests.
"""

from __future__ import annotations

import io
import lzma
import os
import posixpath
import stat
import tarfile
import zlib
from typing import Iterator

import fsspec

from skypile.document import Reject
# the code readers' public names stay importable from here (see above)
from skypile.files.members import (STAGE, Budget, CodeReadOptions,  # noqa: F401
                                   archive_member, file_reject, member_reject,
                                   record, refuse_member, repo_name)
from skypile.files.names import printable  # noqa: F401
from skypile.files.readers import RawRecord, ReaderOptions, ReadStats, read_file
from skypile.files.source_text import MAX_CHAOS, decode_source  # noqa: F401
from skypile.files.zips import zip_members


# ---- tar -------------------------------------------------------------------------------

def _tar_kind(member: tarfile.TarInfo) -> str:
    if member.isfile():
        return "file"
    if member.isdir():
        return "dir"
    if member.issym() or member.islnk():
        return "link"
    return "device"  # character and block devices, FIFOs, unknown types


_TAR_ERRORS = (tarfile.TarError, OSError, EOFError, zlib.error, lzma.LZMAError, ValueError)


def _tar_members(path: str, raw, opts: CodeReadOptions,
                 stats: ReadStats) -> Iterator[RawRecord | Reject]:
    repo = repo_name(path)
    budget = Budget(opts.max_archive_bytes)
    try:
        tar = tarfile.open(fileobj=raw, mode="r|*", encoding="utf-8", errors="surrogateescape")
    except _TAR_ERRORS as e:
        yield file_reject(path, "bad-archive", error=str(e)[:120])
        return
    try:
        for member in tar:
            kind = _tar_kind(member)
            if kind != "file":
                if kind != "dir":  # folders are not records; links and devices are skipped
                    stats.skip(kind)
                continue
            refused = refuse_member(repo, member.name, member.size, path, opts)
            if refused:
                yield refused
                continue
            f = tar.extractfile(member)
            data = f.read(opts.max_file_bytes + 1) if f else b""
            if not budget.spend(len(data)):
                yield file_reject(path, "archive-too-large", cap=opts.max_archive_bytes)
                return
            yield archive_member(repo, member.name, data, path, opts)
    except _TAR_ERRORS as e:
        yield file_reject(path, "truncated-archive", error=str(e)[:120])


# ---- folders -----------------------------------------------------------------------------

def _entry_kind(entry: os.DirEntry) -> str:
    try:
        if entry.is_symlink():
            return "link"
        if entry.is_dir(follow_symlinks=False):
            return "dir"
        return "file" if entry.is_file(follow_symlinks=False) else "device"
    except OSError:  # gone since the listing: opening it will say why
        return "file"


def _walk(base: str, stats: ReadStats) -> Iterator[tuple[str, OSError | None]]:
    """Regular files under ``base`` (relative paths; a folder that cannot be listed comes
    with its error). Links and special files are counted, never followed or opened."""
    stack = [""]
    while stack:
        rel = stack.pop()
        try:
            with os.scandir(os.path.join(base, rel)) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as e:
            yield rel, e
            continue
        subdirs = []
        for entry in entries:
            sub = posixpath.join(rel, entry.name) if rel else entry.name
            kind = _entry_kind(entry)
            if kind == "dir":
                subdirs.append(sub)
            elif kind == "file":
                yield sub, None
            else:
                stats.skip(kind)
        stack.extend(reversed(subdirs))


def _read_local(path: str, limit: int) -> bytes | None:
    """Up to ``limit`` bytes of a regular file; None when it is not one (any more)."""
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    fd = os.open(path, flags)  # O_NONBLOCK: a FIFO put in its place cannot hang us
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        return f.read(limit)


def _remote_files(fs, base: str, stats: ReadStats) -> Iterator[tuple[str, OSError | None]]:
    for path, info in sorted(fs.find(base, withdirs=False, detail=True).items()):
        if info.get("type") == "file" and not info.get("islink"):
            yield posixpath.relpath(path, base), None
        else:
            stats.skip("link" if info.get("islink") or info.get("type") == "link" else "device")


def _tree(root: str, opts: CodeReadOptions, storage_options: dict,
          stats: ReadStats) -> Iterator[RawRecord | Reject]:
    fs, base = fsspec.core.url_to_fs(root, **storage_options)
    repo, limit = repo_name(base), opts.max_file_bytes + 1
    protocols = fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,)
    local = "file" in protocols or "local" in protocols
    files = _walk(base, stats) if local else _remote_files(fs, base, stats)
    for rel, error in files:
        data = None
        if error is None:
            try:
                if local:
                    data = _read_local(os.path.join(base, rel), limit)
                else:
                    with fs.open(posixpath.join(base, rel), "rb") as f:
                        data = f.read(limit)
            except OSError as e:
                error = e
        if error is not None:
            yield member_reject(repo, rel, root, "unreadable", error=str(error)[:200])
        elif data is None:
            stats.skip("device")
        elif len(data) > opts.max_file_bytes:
            yield member_reject(repo, rel, root, "too-large", bytes_read=len(data))
        else:
            yield record(repo, rel, data, root)


# ---- entry point -------------------------------------------------------------------------

_TARS = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz")


def _row_record(rec: RawRecord, path: str, opts: CodeReadOptions) -> RawRecord | Reject:
    repo, fpath = str(rec.metadata.get("repo", "")), rec.url
    try:
        data = rec.body.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate ("\ud800" in JSON) left in: not text
        return member_reject(repo, fpath, path, "undecodable", error="lone surrogates")
    if len(data) > opts.max_file_bytes:
        return member_reject(repo, fpath, path, "too-large", bytes=len(data))
    return record(repo, fpath, data, path, str(rec.metadata.get("license") or ""),
                  repaired=rec.metadata.get("repaired"))


def _rows(path: str, opts: CodeReadOptions, so: dict,
          stats: ReadStats) -> Iterator[RawRecord | Reject]:
    """Stack-style rows (repo, path, content, license)."""
    ropts = ReaderOptions(text_field=opts.text_field, id_field="id", url_field="path",
                          text_only=True)
    for rec in read_file(path, ropts, stats, storage_options=so):
        yield _row_record(rec, path, opts) if isinstance(rec, RawRecord) else rec


def _archive(path: str, fs, p: str, opts: CodeReadOptions,
             stats: ReadStats) -> Iterator[RawRecord | Reject]:
    with fs.open(p, "rb") as raw:
        if not p.lower().endswith(".zip"):
            yield from _tar_members(path, raw, opts, stats)
            return
        if not raw.seekable():  # zip needs seeking: hold it, up to the archive cap
            data = raw.read(opts.max_archive_bytes + 1)
            if len(data) > opts.max_archive_bytes:
                yield file_reject(path, "archive-too-large", cap=opts.max_archive_bytes)
                return
            raw = io.BytesIO(data)
        yield from zip_members(path, raw, opts, stats)


def read_code(path: str, opts: CodeReadOptions, storage_options: dict | None = None,
              stats: ReadStats | None = None) -> Iterator[RawRecord | Reject]:
    """Files of a folder, a tar/tar.gz/zip archive, or Stack-style JSONL/Parquet rows.

    Links and special files are counted in ``stats.skipped`` (``link``, ``device``).
    """
    so = storage_options or {}
    stats = stats if stats is not None else ReadStats()
    fs, p = fsspec.core.url_to_fs(path, **so)
    if fs.isdir(p):
        yield from _tree(path, opts, so, stats)
    elif p.lower().endswith((".zip", *_TARS)):
        yield from _archive(path, fs, p, opts, stats)
    else:
        yield from _rows(path, opts, so, stats)
