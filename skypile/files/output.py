"""The output contract on any fsspec URL: docs/, rejects/, stats.json, replaced whole.

A run writes into a fresh staging folder beside the output. Only when the run has
succeeded are the previous run's contract paths removed and the staged ones moved in,
so a reader never sees a mix of two runs' files (and a failed run leaves the old output).
"""

from __future__ import annotations

import collections
import json
import posixpath
import uuid
from typing import Any

import fsspec

CONTRACT = ("docs", "rejects", "other", "reports", "stats.json", "config.json")


def fs_and_path(url: str, storage_options: dict | None = None
                ) -> tuple[fsspec.AbstractFileSystem, str]:
    """The filesystem and in-filesystem path of a local path or fsspec URL."""
    return fsspec.core.url_to_fs(url, **(storage_options or {}))


def join(url: str, *parts: str) -> str:
    if "://" in url:
        return url.rstrip("/") + "/" + "/".join(parts)
    return posixpath.join(url, *parts)


def new_staging(output: str) -> str:
    return join(output, f"_staging-{uuid.uuid4().hex[:12]}")


def write_json(url: str, data: Any, storage_options: dict | None = None) -> None:
    """``data`` as strict, valid-UTF-8 JSON (a non-UTF-8 file name in it, kept by Python as
    surrogates, or a NaN, cannot break the write: see :func:`skypile.document.json_safe`)."""
    from skypile.document import json_safe

    data = json_safe(data, collections.Counter())
    fs, path = fs_and_path(url, storage_options)
    fs.makedirs(posixpath.dirname(path), exist_ok=True)
    with fs.open(path, "wt", encoding="utf-8") as f:
        json.dump(data, f, ensure_ascii=False, allow_nan=False, indent=2, sort_keys=False)
        f.write("\n")


def read_json(url: str, storage_options: dict | None = None) -> Any:
    fs, path = fs_and_path(url, storage_options)
    with fs.open(path, "rt", encoding="utf-8") as f:
        return json.load(f)


def commit(staging: str, output: str, storage_options: dict | None = None,
           names: tuple[str, ...] = CONTRACT) -> None:
    """Replace the output's contract paths with the staged ones, then drop the staging."""
    fs, out_path = fs_and_path(output, storage_options)
    _, stage_path = fs_and_path(staging, storage_options)
    for name in names:
        old = posixpath.join(out_path, name)
        if fs.exists(old):
            fs.rm(old, recursive=True)
    for name in names:
        new = posixpath.join(stage_path, name)
        # file by file: object stores have no folders to rename
        for src in fs.find(new):
            dest = (posixpath.join(out_path, name, posixpath.relpath(src, new))
                    if src != new else posixpath.join(out_path, name))
            fs.makedirs(posixpath.dirname(dest), exist_ok=True)
            fs.mv(src, dest)
    discard(staging, storage_options)


def discard(staging: str, storage_options: dict | None = None) -> None:
    """Remove a staging folder and whatever is left in it (files of failed bundles)."""
    fs, path = fs_and_path(staging, storage_options)
    leftovers = fs.find(path)
    if leftovers:
        fs.rm(leftovers)
    if fs.exists(path):  # a local folder; object stores have none left once empty
        fs.rm(path, recursive=True)


def expand_inputs(patterns: list[str], storage_options: dict | None = None,
                  keep_folders: bool = False) -> list[str]:
    """Globs, folders and single files (local or fsspec URLs) to a sorted file list.

    ``keep_folders`` leaves a folder named on its own as one input (a code repository).
    Raises FileNotFoundError naming the first pattern that matches nothing.
    """
    files: list[str] = []
    for pattern in patterns:
        fs, path = fsspec.core.url_to_fs(pattern, **(storage_options or {}))
        if keep_folders and fs.isdir(path):
            files.append(pattern)
            continue
        if fs.isdir(path):
            matched = [p for p in fs.find(path) if not posixpath.basename(p).startswith(".")]
        elif any(c in path for c in "*?["):
            matched = [p for p in fs.glob(path) if fs.isfile(p)]
        else:
            matched = [path] if fs.exists(path) else []
        if not matched:
            raise FileNotFoundError(f"no input matches {pattern}")
        files += [fs.unstrip_protocol(p) if "://" in pattern else p for p in sorted(matched)]
    seen: set[str] = set()
    return [f for f in files if not (f in seen or seen.add(f))]
