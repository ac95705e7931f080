"""What one source file becomes, wherever it was read from: a record or a reject.

Folders, tar, zip and Stack-style rows all end in the same few steps (check the path and
the size, decode the bytes, name the file printably, pick a stable id), so that a file
is judged the same way whichever container held it; this module holds those steps and
the options that bound them.
"""

from __future__ import annotations

import dataclasses
import posixpath
import re

from skypile.document import Origin, Reject, stable_id
from skypile.files.names import printable, printable_detail, shown
from skypile.files.readers import RawRecord
from skypile.files.source_text import decode_source
from skypile.text.code_filters import language_of

STAGE = "read"


@dataclasses.dataclass
class CodeReadOptions:
    """Reading code (``read`` in the code config)."""

    max_file_bytes: int = 1_000_000
    """Files larger than this are rejected (read:too-large); never more than this plus one
    byte of a file or archive member is read, whatever its header claims."""
    max_archive_bytes: int = 2_000_000_000
    """An archive whose members add up past this stops with read:archive-too-large."""
    text_field: str = "content"
    """Stack-style rows: the file's text."""
    list_on_workers: bool = False
    """Leave --input patterns to the workers to list (``read.list_on_workers`` of the web
    config): for inputs the launcher cannot see, such as gs:// without its credentials."""


def record(repo: str, path: str, data: bytes, source: str, license: str = "",
           where: dict | None = None, repaired: dict | None = None) -> RawRecord | Reject:
    """A file's record; ``repaired``: what the row reader already changed (rows only)."""
    doc_id = stable_id(source, repo, path)  # the same file in two inputs: two documents
    names, renamed = shown(source=source, repo=repo, path=path)
    repaired = {**(repaired or {}), **renamed}
    url = f"{names['repo']}/{names['path']}"
    text, how = decode_source(data)
    if text is None:  # how: binary / undecodable
        return Reject.of(Origin(doc_id, url, names["source"]), STAGE, how,
                         repo=names["repo"], path=names["path"], bytes=len(data),
                         **printable_detail(where or {}),
                         **({"repaired": repaired} if repaired else {}))
    meta = {"repo": names["repo"], "path": names["path"],
            "language": language_of(names["path"]) or "", "source_kind": "code"}
    if license:
        meta["license"] = printable(license)[0]
    if how != "utf-8":  # the encoding the text was decoded from
        meta["encoding"] = how
    if repaired:
        meta["repaired"] = repaired
    return RawRecord(id=doc_id, url=url, source=names["source"], kind="text", body=text,
                     metadata=meta)


def member_reject(repo: str, name: str, path: str, reason: str, **detail) -> Reject:
    """A reject for one file of an input (a folder entry, an archive member, a row)."""
    names, repaired = shown(source=path, repo=repo, member=name)
    detail = printable_detail(detail)  # an OSError's text names the path
    if repaired:
        detail["repaired"] = repaired
    return Reject.of(Origin(stable_id(path, repo, name), f"{names['repo']}/{names['member']}",
                            names["source"]), STAGE, reason, member=names["member"], **detail)


def file_reject(path: str, reason: str, **detail) -> Reject:
    """A reject for a whole input (archive, folder), its name made printable."""
    shown_path, changed = printable(path)
    detail = printable_detail(detail)
    if changed:
        detail["repaired"] = {"file": "invalid-utf8"}
    return Reject.of(Origin(stable_id(path, reason), "", shown_path), STAGE, reason,
                     file=shown_path, **detail)


def _unsafe(name: str) -> bool:
    parts = name.replace("\\", "/").split("/")
    return name.startswith(("/", "\\")) or ".." in parts or bool(re.match(r"^[A-Za-z]:", name))


def repo_name(path: str) -> str:
    """The repository an input holds, named after it without its archive suffix."""
    base = posixpath.basename(path.rstrip("/"))
    for suffix in (".tar.gz", ".tgz", ".tar.bz2", ".tar.xz", ".tar", ".zip"):
        if base.endswith(suffix):
            return base[: -len(suffix)]
    return base


def _strip_top(name: str) -> str:
    """Archives of a repository usually hold one top folder: paths are relative to it."""
    parts = name.split("/", 1)
    return parts[1] if len(parts) == 2 and parts[1] else name


def refuse_member(repo: str, name: str, size: int, path: str,
                  opts: CodeReadOptions) -> Reject | None:
    """The archive member checks shared by tar and zip: unsafe path, declared size."""
    if _unsafe(name):
        return member_reject(repo, name, path, "unsafe-path")
    if size > opts.max_file_bytes:
        return member_reject(repo, name, path, "too-large", bytes=size)
    return None


class Budget:
    """An archive's running total of bytes read, against ``max_archive_bytes``."""

    def __init__(self, cap: int):
        self.cap, self.total = cap, 0

    def spend(self, n: int) -> bool:
        self.total += n
        return self.total <= self.cap


def archive_member(repo: str, name: str, data: bytes, path: str, opts: CodeReadOptions
                   ) -> RawRecord | Reject:
    """A member's bytes (at most cap + 1 of them) as a record, or too-large."""
    if len(data) > opts.max_file_bytes:
        return member_reject(repo, name, path, "too-large", bytes_read=len(data))
    return record(repo, _strip_top(name), data, path, where={"member": name})
