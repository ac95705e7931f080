"""Model files by URL: a local path, or any fsspec URL (s3://, gs://, https://...).

A local path is used where it is. Any other URL is fetched once per machine into a local
cache, because fastText, KenLM and SentencePiece each open a local file: the cache is
``$SKYPILE_MODEL_CACHE``, else ``~/.cache/skypile/models``. An entry is named by a hash of
the URL and the expected sha256 (without one, of the remote object's size and version
tag, so a replaced object is fetched again), then the file's own name. A download goes to
a temporary name beside the entry and is renamed in only once complete and checked, under
a file lock: two worker processes fetching at once download it once, and neither ever
opens half a file.

With an expected sha256 (``classifiers train`` writes one next to each path), the file
must match it, or :class:`ModelError` says which model is wrong in one line. A local
file's check is remembered in the cache (by path, size and modification time), so a big
KenLM model is hashed once per machine, not once per worker.

Config files name models relative to their own folder: :func:`rebase_paths` is the hook
:func:`skypile.config.load` calls, for the fields a config marks with ``PATH`` metadata.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import posixpath
import types
import typing
import uuid
from pathlib import Path
from typing import Any

from skypile.errors import ConfigError

LOG = logging.getLogger("skypile")

PATH = {"path": True}
"""Dataclass field metadata: the field holds a model path or URL (or a mapping of them,
whose ``*_sha256`` keys are digests), relative to the config file that sets it."""
_CHUNK = 8 * 1024 * 1024
_fetched: dict[tuple, str] = {}  # this process's fetches: (url, sha256) -> local path


class ModelError(ConfigError):
    """A model that is missing, unreadable or not the file the config names (one line)."""


def is_local(url: str) -> bool:
    return "://" not in url or url.startswith("file://")


def _local(url: str) -> str:
    return url[len("file://"):] if url.startswith("file://") else url


def cache_dir() -> Path:
    """Where fetched models live on this machine (read when a model is fetched)."""
    return Path(os.environ.get("SKYPILE_MODEL_CACHE")
                or Path.home() / ".cache" / "skypile" / "models")


def sha256_file(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _mismatch(name: str, url: str, actual: str, expected: str) -> ModelError:
    return ModelError(f"{name} {url} has sha256 {actual}, but {name}_sha256 in the config is "
                      f"{expected}: point {name} at the file it was trained as, or retrain "
                      "(skypile classifiers train)")


def _check_local(path: str, sha256: str, name: str) -> None:
    """``path`` exists and, when ``sha256`` is given, matches it (remembered per machine)."""
    try:
        st = os.stat(path)
    except OSError:
        raise ModelError(f"{name}: {path} does not exist") from None
    if not sha256:
        return
    key = hashlib.sha256(f"{os.path.abspath(path)}\0{st.st_size}\0{st.st_mtime_ns}\0"
                         f"{sha256.lower()}".encode()).hexdigest()[:32]
    marker = cache_dir() / "verified" / key
    if marker.exists():
        return
    actual = sha256_file(path)
    if actual != sha256.lower():
        raise _mismatch(name, path, actual, sha256)
    try:  # only a note that saves hashing again: a cache that cannot be written costs time
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.touch()
    except OSError:
        pass


def _remote_info(url: str, storage_options: dict | None, name: str):
    import fsspec

    try:
        fs, path = fsspec.core.url_to_fs(url, **(storage_options or {}))
        info = fs.info(path)
    except FileNotFoundError:
        raise ModelError(f"{name}: {url} does not exist") from None
    except Exception as e:  # noqa: BLE001 - a store's own errors (no credentials, ...) too
        raise ModelError(f"{name}: cannot reach {url}: {_first_line(e)}") from None
    if info.get("type") == "directory":
        raise ModelError(f"{name}: {url} is a folder, not a model file")
    return fs, path, info


def fetch(url: str, storage_options: dict | None = None, sha256: str = "",
          name: str = "model") -> str:
    """A local path of the model at ``url``: the path itself when local, else the cached
    copy, fetched now if this machine has none. ``name`` (the config key, e.g.
    ``quality.model``) names the model in errors."""
    if not url:
        raise ModelError(f"{name} is not set")
    if is_local(url):
        path = _local(url)
        if (path, sha256) not in _fetched:
            _check_local(path, sha256, name)
            _fetched[(path, sha256)] = path
        return path
    known = _fetched.get((url, sha256))
    if known and os.path.exists(known):
        return known
    folder = cache_dir()
    if sha256:  # the content is known: a cached copy needs no word with the store
        final = _entry(folder, url, sha256.lower())
        if not final.exists():
            fs, path, _info = _remote_info(url, storage_options, name)
            _download(fs, path, final, url, sha256, name)
    else:  # the object's version names the entry, so a replaced object is fetched anew
        fs, path, info = _remote_info(url, storage_options, name)
        final = _entry(folder, url, version_stamp(info))
        if not final.exists():
            _download(fs, path, final, url, sha256, name)
    _fetched[(url, sha256)] = str(final)
    return str(final)


_VERSION_KEYS = ("size", "ETag", "etag", "generation", "md5Hash", "LastModified", "mtime",
                 "updated", "VersionId", "crc32c")


def version_stamp(info: dict) -> str:
    """Every version field a store reports for a file (``fs.info``), in one string: S3's
    LastModified is to the second, so a rewrite within that second differs only in its
    ETag; GCS adds a generation; a local file has its mtime."""
    return "\0".join(str(info.get(k, "")) for k in _VERSION_KEYS)


def _entry(folder: Path, url: str, version: str) -> Path:
    key = hashlib.sha256(f"{url}\0{version}".encode()).hexdigest()[:24]
    return folder / f"{key}-{posixpath.basename(url.rstrip('/')) or 'model'}"


def _first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0]


def _download(fs, path: str, final: Path, url: str, sha256: str, name: str) -> None:
    """``url`` into ``final``, under a lock beside it: whoever holds it first downloads
    (to a temporary name, renamed when complete and checked); the others find it there."""
    import fcntl

    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        lock = open(final.with_name(final.name.split("-", 1)[0] + ".lock"), "a")
    except OSError as e:
        raise ModelError(f"{name}: the model cache {final.parent} cannot be written "
                         f"({_first_line(e)}): set SKYPILE_MODEL_CACHE") from None
    with lock as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # another process may be fetching the same file
        if final.exists():
            return
        tmp = final.with_name(f"{final.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
        digest = hashlib.sha256()
        try:
            with fs.open(path, "rb") as src, open(tmp, "wb") as dst:
                while chunk := src.read(_CHUNK):
                    digest.update(chunk)
                    dst.write(chunk)
            if sha256 and digest.hexdigest() != sha256.lower():
                raise _mismatch(name, url, digest.hexdigest(), sha256)
            os.replace(tmp, final)
        except OSError as e:
            raise ModelError(f"{name}: cannot fetch {url}: {_first_line(e)}") from None
        finally:
            tmp.unlink(missing_ok=True)
    LOG.info("%s: fetched %s into %s", name, url, final)


def check_exists(url: str, storage_options: dict | None = None, sha256: str = "",
                 name: str = "model") -> None:
    """What the launcher asks before a run: the model is there (ModelError otherwise); a
    local one also matches ``sha256``. A remote one is not read: workers check its sha256."""
    if is_local(url):
        _check_local(_local(url), sha256, name)
    else:
        _remote_info(url, storage_options, name)


# ---- paths in config files -----------------------------------------------------------

def _join(folder: str, path: str) -> str:
    if "://" in folder:
        return folder.rstrip("/") + "/" + path
    return os.path.normpath(os.path.join(folder, path))


def _rebase(value: Any, folder: str, key: str = "") -> Any:
    if isinstance(value, dict):
        return {k: _rebase(v, folder, str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [_rebase(v, folder) for v in value]
    if (isinstance(value, str) and value and not key.endswith("sha256") and is_local(value)
            and not os.path.isabs(_local(value)) and not value.startswith("~")):
        return _join(folder, _local(value))
    return value


def config_folder(config_path: str) -> str:
    """The folder a config file's relative paths are relative to."""
    if "://" in config_path and not config_path.startswith("file://"):
        return config_path.rsplit("/", 1)[0]
    return os.path.dirname(os.path.abspath(_local(config_path)))


def rebase_paths(cls: type, data: dict, config_path: str) -> dict:
    """``data`` (read from ``config_path``, for dataclass ``cls``) with the relative paths
    of the fields marked ``PATH`` made relative to the file's folder."""
    return _rebase_fields(cls, data, config_folder(config_path))


def _rebase_fields(cls: type, data: Any, folder: str) -> Any:
    if not isinstance(data, dict) or not dataclasses.is_dataclass(cls):
        return data
    hints = typing.get_type_hints(cls)
    out = dict(data)
    for f in dataclasses.fields(cls):
        if f.name not in out:
            continue
        if f.metadata.get("path"):
            out[f.name] = _rebase(out[f.name], folder)
        else:  # a section: its own fields may be paths
            tp = hints[f.name]
            if typing.get_origin(tp) in (typing.Union, types.UnionType):
                tp = next(a for a in typing.get_args(tp) if a is not type(None))
            out[f.name] = _rebase_fields(tp, out[f.name], folder)
    return out


def relative_to(path: str | Path, folder: str | Path) -> str:
    """``path`` as written into a config file in ``folder`` (POSIX separators)."""
    return Path(os.path.relpath(Path(path).resolve(), Path(folder).resolve())).as_posix()
