"""The output contract on any fsspec URL, published whole: a reader sees one run's files.

    OUTPUT/docs/part-<run>-<bundle>.jsonl.gz   kept documents (likewise rejects/, other/)
    OUTPUT/stats.json, config.json, reports/   the small files
    OUTPUT/_SUCCESS.json                       the marker: which run, and its files
    OUTPUT/_runs/<run>/                        a run's small files, while it runs

No data file is ever copied or moved. Each bundle writes its file once, under its final
name in its final folder, with the run id in the name: on object storage one upload,
visible when complete; on a local disk a hidden temporary renamed in its folder. The
small files (stats, reports, config, a shard manifest) go to the run folder. Then:

1. in the pipeline, :func:`publish_files` deletes this run's files that no committed
   bundle reported (failed or retried bundles) and lists the rest in the run folder;
2. after the pipeline, :func:`commit` copies the small files to their places, writes the
   marker last, then deletes what the marker does not list under the contract paths
   (the previous run's files, strays of crashed runs) and the run folders;
3. a run that fails before the marker is :func:`discard`-ed: its own files go.

Until the marker names the new run, the previous run's files stay where they were, and
:func:`current_files` (so every ``--input`` of ours) reads only the files that the marker
lists. Each step may be repeated after a crash or a retry and gives the same result.
One run at a time per output: a commit deletes the files of any other run.
"""

from __future__ import annotations

import collections
import contextlib
import json
import posixpath
import re
import uuid
from typing import Any, Iterator

import fsspec
from fsspec.implementations.local import LocalFileSystem

CONTRACT = ("docs", "rejects", "other", "reports", "stats.json", "config.json")
DATA = ("docs", "rejects", "other")
"""Folders of bundle files, written in place and listed by the marker."""
MARKER = "_SUCCESS.json"
RUNS = "_runs"
LISTINGS = "_files"
"""In a run folder: one listing per data folder, of the files its committed bundles wrote."""
FORMAT = "skypile-output"
_RUN_ID = re.compile(r"[0-9a-f]{12}")


def fs_and_path(url: str, storage_options: dict | None = None
                ) -> tuple[fsspec.AbstractFileSystem, str]:
    """The filesystem and in-filesystem path of a local path or fsspec URL."""
    return fsspec.core.url_to_fs(url, **(storage_options or {}))


def join(url: str, *parts: str) -> str:
    if "://" in url:
        return url.rstrip("/") + "/" + "/".join(parts)
    return posixpath.join(url, *parts)


def new_staging(output: str) -> str:
    """A fresh run folder, ``OUTPUT/_runs/<run id>``, where the run's small files wait."""
    return join(output, RUNS, uuid.uuid4().hex[:12])


def run_of(staging: str) -> tuple[str, str]:
    """(output, run id) of a run folder made by :func:`new_staging`."""
    head, _, run_id = staging.rstrip("/").rpartition("/")
    out, _, runs = head.rpartition("/")
    if runs != RUNS or not out or not _RUN_ID.fullmatch(run_id):
        raise ValueError(f"{staging} is not a run folder (OUTPUT/{RUNS}/<run id>)")
    return out, run_id


def part_name(run_id: str) -> str:
    """A new bundle file's name: ``part-<run id>-<unique>.jsonl.gz``."""
    return f"part-{run_id}-{uuid.uuid4().hex}.jsonl.gz"


def _of_run(name: str, run_id: str) -> bool:
    """A bundle file of ``run_id``, or its local temporary (a hidden name)."""
    return name.lstrip(".").startswith(f"part-{run_id}-")


class FinalFile:
    """A binary file written once, under its final name; on object storage never copied.

    An object store shows an upload only once it is complete, so the file is written
    there directly. A local disk shows a file while it grows, so it is written as a
    hidden temporary in the same folder and renamed (no copy) on :meth:`commit`.
    :meth:`abandon` keeps what was written from ever appearing: the temporary is removed,
    an upload is not completed (and a multipart one is aborted).
    """

    def __init__(self, fs: fsspec.AbstractFileSystem, path: str):
        self.fs, self.path = fs, path
        folder, name = posixpath.split(path)
        self.local = isinstance(fs, LocalFileSystem)
        self.tmp = (posixpath.join(folder, f".{name}.tmp-{uuid.uuid4().hex[:8]}")
                    if self.local else path)
        fs.makedirs(folder, exist_ok=True)
        self.file = fs.open(self.tmp, "wb")

    def write(self, data: bytes) -> int:
        return self.file.write(data)

    def commit(self) -> None:
        self.file.close()
        if self.local:
            self.fs.mv(self.tmp, self.path)

    def abandon(self) -> None:
        if self.local:
            self.file.close()
            if self.fs.exists(self.tmp):
                self.fs.rm(self.tmp)
            return
        discard = getattr(self.file, "discard", None)
        if discard is not None:
            discard()  # s3fs, gcsfs: abort the upload under way
        self.file.closed = True  # never closed, so never completed, even when collected


@contextlib.contextmanager
def open_final(url: str, storage_options: dict | None = None) -> Iterator[FinalFile]:
    """``url`` written as a :class:`FinalFile`: it appears whole when the block ends, or
    not at all when the block fails."""
    f = FinalFile(*fs_and_path(url, storage_options))
    try:
        yield f
    except BaseException:
        f.abandon()
        raise
    f.commit()


def _write(fs: fsspec.AbstractFileSystem, path: str, data: bytes) -> None:
    f = FinalFile(fs, path)
    try:
        f.write(data)
    except BaseException:
        f.abandon()
        raise
    f.commit()


def write_bytes(url: str, data: bytes, storage_options: dict | None = None) -> None:
    """``data`` as the whole of ``url``, appearing whole or not at all."""
    _write(*fs_and_path(url, storage_options), data)


def _json_bytes(data: Any) -> bytes:
    from skypile.document import json_safe

    data = json_safe(data, collections.Counter())
    return (json.dumps(data, ensure_ascii=False, allow_nan=False, indent=2, sort_keys=False)
            + "\n").encode("utf-8")


def write_json(url: str, data: Any, storage_options: dict | None = None) -> None:
    """``data`` as strict, valid-UTF-8 JSON (a non-UTF-8 file name in it, kept by Python as
    surrogates, or a NaN, cannot break the write: see :func:`skypile.document.json_safe`),
    appearing whole or not at all."""
    write_bytes(url, _json_bytes(data), storage_options)


def read_json(url: str, storage_options: dict | None = None) -> Any:
    fs, path = fs_and_path(url, storage_options)
    fs.invalidate_cache(path)  # a listing cached before the file was rewritten
    with fs.open(path, "rt", encoding="utf-8") as f:
        return json.load(f)


def _ls(fs: fsspec.AbstractFileSystem, folder: str) -> list[str]:
    """The files directly in ``folder``, as the store has them now; [] when none."""
    fs.invalidate_cache(folder)
    try:
        return sorted(e["name"] for e in fs.ls(folder, detail=True) if e["type"] == "file")
    except FileNotFoundError:
        return []


def _find(fs: fsspec.AbstractFileSystem, path: str) -> list[str]:
    fs.invalidate_cache(path)
    try:
        return sorted(fs.find(path))
    except FileNotFoundError:
        return []


def _rm(fs: fsspec.AbstractFileSystem, paths: list[str]) -> None:
    """Removes ``paths``; one already gone (a retried step removed it) is no error."""
    if paths and not isinstance(fs, LocalFileSystem):
        try:  # an object store deletes in batches; S3 says nothing of a missing key
            fs.rm(paths)
        except FileNotFoundError:  # gcsfs does, when every one of them is gone already
            pass
        return
    for path in paths:
        try:
            fs.rm_file(path)
        except FileNotFoundError:
            pass


def _read_marker(fs: fsspec.AbstractFileSystem, out_path: str) -> dict | None:
    """The marker of the output at ``out_path``; None when there is none (or it is not ours)."""
    path = posixpath.join(out_path, MARKER)
    fs.invalidate_cache(path)
    try:
        with fs.open(path, "rb") as f:
            marker = json.loads(f.read())
    except (FileNotFoundError, ValueError):  # none, or not JSON: not a marker of ours
        return None
    if not isinstance(marker, dict) or marker.get("format") != FORMAT \
            or not isinstance(marker.get("files"), dict):
        return None
    return marker


def read_marker(output: str, storage_options: dict | None = None) -> dict | None:
    """``OUTPUT/_SUCCESS.json``: the run whose files are the output, and those files."""
    return _read_marker(*fs_and_path(output, storage_options))


def publish_files(staging: str, kind: str, files: list[tuple[str, int]],
                  storage_options: dict | None = None) -> dict:
    """Step 1, in the pipeline: ``files`` are the (name, records) of ``OUTPUT/<kind>/``
    that the committed bundles reported. Deletes this run's other files there (bundles
    that failed or were retried), and writes the listing into the run folder. A retry
    deletes nothing more and writes the same listing."""
    out, run_id = run_of(staging)
    fs, folder = fs_and_path(join(out, kind), storage_options)
    committed = dict(files)
    present = {posixpath.basename(p): p for p in _ls(fs, folder)}
    _rm(fs, [p for name, p in present.items() if _of_run(name, run_id) and name not in committed])
    missing = sorted(set(committed) - set(present))
    if missing:  # something else removed a finished file: publishing would lose its records
        raise FileNotFoundError(f"{len(missing)} written files are gone from "
                                f"{join(out, kind)}, e.g. {missing[0]}")
    listing = {"kind": kind, "run": run_id, "records": sum(committed.values()),
               "files": [{"name": n, "records": committed[n]} for n in sorted(committed)]}
    write_json(join(staging, LISTINGS, f"{kind}.json"), listing, storage_options)
    return listing


def commit(staging: str, output: str, storage_options: dict | None = None,
           names: tuple[str, ...] = CONTRACT) -> dict:
    """Step 2, after the pipeline: publishes the run in ``staging`` as ``output``'s paths
    ``names``; returns the marker.

    The marker is written first: until then the previous run is the output, whole (its
    data files, and its small files too). Then the small files under ``names`` are
    copied from the run folder to their places, every file under ``names`` that the
    marker does not list is removed, and the run folders. Run again after a crash, at
    any point, it rolls forward to the same output.
    """
    _, run_id = run_of(staging)
    fs, out_path = fs_and_path(output, storage_options)
    _, run_path = fs_and_path(staging, storage_options)
    marker = _read_marker(fs, out_path)
    if marker is None or marker.get("run") != run_id:
        marker = _write_marker(fs, out_path, run_path, run_id, names)
    for rel in marker["small"]:  # until the run folder is gone (a retry copies them again)
        src = posixpath.join(run_path, rel)
        if fs.exists(src):
            _write(fs, posixpath.join(out_path, rel), fs.cat_file(src))
    keep = {posixpath.join(out_path, rel) for rel in marker["small"]}
    keep |= {posixpath.join(out_path, kind, e["name"])
             for kind, listing in marker["files"].items() for e in listing["files"]}
    for name in names:
        path = posixpath.join(out_path, name)
        found = _find(fs, path)
        if any(p in keep for p in found):
            _rm(fs, [p for p in found if p not in keep])
        elif fs.exists(path):
            fs.rm(path, recursive=True)  # nothing of this run: the folder goes too
    runs = posixpath.join(out_path, RUNS)
    _rm(fs, _find(fs, runs))
    if fs.exists(runs):  # a local folder; object stores have none once it is empty
        fs.rm(runs, recursive=True)
    return marker


def _write_marker(fs, out_path: str, run_path: str, run_id: str,
                  names: tuple[str, ...]) -> dict:
    found = _find(fs, run_path)
    if not found:
        raise FileNotFoundError(f"nothing to publish: {run_path} is empty or gone")
    listings, small = {}, []
    for path in found:
        rel = posixpath.relpath(path, run_path)
        if rel.startswith(LISTINGS + "/"):
            with fs.open(path, "rb") as f:
                listing = json.loads(f.read())
            listings[listing["kind"]] = listing
        elif rel.split("/", 1)[0] in names:
            small.append(rel)
    empty = {"records": 0, "files": []}
    files = {kind: {k: listings.get(kind, empty)[k] for k in ("records", "files")}
             for kind in sorted(set(listings) | {n for n in names if n in DATA})}
    marker = {"format": FORMAT, "version": 1, "run": run_id, "files": files, "small": small}
    _write(fs, posixpath.join(out_path, MARKER), _json_bytes(marker))
    return marker


def discard(staging: str, storage_options: dict | None = None) -> None:
    """After a failed run: removes its data files and its run folder. A run whose marker
    is already written is the output now, and is left as it is."""
    out, run_id = run_of(staging)
    fs, out_path = fs_and_path(out, storage_options)
    marker = _read_marker(fs, out_path)
    if marker is not None and marker.get("run") == run_id:
        return
    _, run_path = fs_and_path(staging, storage_options)
    kinds = set(DATA) | {posixpath.basename(p)[:-len(".json")]
                         for p in _ls(fs, posixpath.join(run_path, LISTINGS))}
    for kind in sorted(kinds):
        folder = posixpath.join(out_path, kind)
        _rm(fs, [p for p in _ls(fs, folder) if _of_run(posixpath.basename(p), run_id)])
        _rmdir_if_empty(fs, folder)  # a local folder this run made
    _rm(fs, _find(fs, run_path))
    if fs.exists(run_path):
        fs.rm(run_path, recursive=True)
    _rmdir_if_empty(fs, posixpath.join(out_path, RUNS))


def _rmdir_if_empty(fs: fsspec.AbstractFileSystem, folder: str) -> None:
    if isinstance(fs, LocalFileSystem) and fs.isdir(folder) and not fs.ls(folder):
        fs.rmdir(folder)


def current_files(fs: fsspec.AbstractFileSystem, paths: list[str]) -> list[str]:
    """``paths`` less other runs' files: a file in a data folder (``docs/``, ...) of an
    output with a marker is kept only when the marker lists it, so a reader of a folder
    that a run is rewriting sees the last published run. Without a marker (an output of
    an older version, or not ours) every path is kept."""
    listed: dict[str, set[str] | None] = {}
    kept = []
    for path in paths:
        folder, name = posixpath.split(path)
        root, kind = posixpath.split(folder)
        if kind not in DATA:
            kept.append(path)
            continue
        if folder not in listed:
            marker = _read_marker(fs, root)
            files = (marker or {}).get("files", {}).get(kind)
            listed[folder] = None if files is None else {e["name"] for e in files["files"]}
        if listed[folder] is None or name in listed[folder]:
            kept.append(path)
    return kept


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
        matched = current_files(fs, matched)  # a folder being rewritten: its last published run
        if not matched:
            raise FileNotFoundError(f"no input matches {pattern}")
        files += [fs.unstrip_protocol(p) if "://" in pattern else p for p in sorted(matched)]
    seen: set[str] = set()
    return [f for f in files if not (f in seen or seen.add(f))]
