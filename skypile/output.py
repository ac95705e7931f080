"""The output contract on any fsspec URL: docs/, rejects/, stats.json, replaced whole.

A run writes into a fresh staging folder beside the output. Only when the run has
succeeded are the previous run's contract paths removed and the staged ones moved in,
so a reader never sees a mix of two runs' files (and a failed run leaves the old output).
"""

from __future__ import annotations

import json
import posixpath
import uuid
from typing import Any

import fsspec

CONTRACT = ("docs", "rejects", "stats.json", "config.json")


def fs_and_path(url: str) -> tuple[fsspec.AbstractFileSystem, str]:
    fs, path = fsspec.core.url_to_fs(url)
    return fs, path


def join(url: str, *parts: str) -> str:
    if "://" in url:
        return url.rstrip("/") + "/" + "/".join(parts)
    return posixpath.join(url, *parts)


def new_staging(output: str) -> str:
    return join(output, f"_staging-{uuid.uuid4().hex[:12]}")


def write_json(url: str, data: Any) -> None:
    fs, path = fs_and_path(url)
    fs.makedirs(posixpath.dirname(path), exist_ok=True)
    with fs.open(path, "wt", encoding="utf-8") as f:
        json.dump(data, f, ensure_ascii=False, indent=2, sort_keys=False)
        f.write("\n")


def commit(staging: str, output: str) -> None:
    """Replace the output's contract paths with the staged ones, then drop the staging."""
    fs, out_path = fs_and_path(output)
    _, stage_path = fs_and_path(staging)
    for name in CONTRACT:
        old = posixpath.join(out_path, name)
        if fs.exists(old):
            fs.rm(old, recursive=True)
    for name in CONTRACT:
        new = posixpath.join(stage_path, name)
        if fs.exists(new):
            fs.mv(new, posixpath.join(out_path, name), recursive=True)
    fs.rm(stage_path, recursive=True)


def discard(staging: str) -> None:
    fs, path = fs_and_path(staging)
    if fs.exists(path):
        fs.rm(path, recursive=True)


def expand_inputs(patterns: list[str], storage_options: dict | None = None) -> list[str]:
    """Globs, folders and single files (local or fsspec URLs) to a sorted file list.

    Raises FileNotFoundError naming the first pattern that matches nothing.
    """
    files: list[str] = []
    for pattern in patterns:
        fs, path = fsspec.core.url_to_fs(pattern, **(storage_options or {}))
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
