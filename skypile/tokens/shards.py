"""Token shards: a versioned binary format that numpy can memory-map, on any fsspec URL.

Layout of one shard (little endian), documented in docs/shard-format.md:

    offset 0   magic     8 bytes  b"SKYSHARD"
    offset 8   version   uint32   (1)
    offset 12  dtype     uint32   1 = uint16 tokens (vocab <= 65,536), 2 = uint32
    offset 16  n_tokens  uint64
    offset 24  n_docs    uint64
    offset 32  reserved  32 bytes (zero)
    offset 64  tokens    n_tokens x dtype   (each document ends with EOS)
    then       index     (n_docs + 1) x uint64: token offset where each document starts,
                         and the end

The trainer and the tokenize pipeline share this module: one reader, one writer.
"""

from __future__ import annotations

import dataclasses
import fcntl
import hashlib
import io
import mmap
import os
import re
import struct
import tempfile
import threading
from typing import Iterable, Iterator

import numpy as np

from skypile.files.models import version_stamp

MAGIC = b"SKYSHARD"
VERSION = 1
HEADER_BYTES = 64
DTYPES = {1: np.dtype("<u2"), 2: np.dtype("<u4")}
_HEADER = struct.Struct("<8sIIQQ32x")


class ShardError(ValueError):
    """A file that is not a shard of a version this code reads."""


SHARD_NAME = re.compile(r"(train|validation)-\d{5}-of-\d{5}\.bin")
"""A shard's file name in its domain's folder."""


def is_shard_path(rel: str) -> bool:
    """``<domain>/<split>-NNNNN-of-MMMMM.bin``, one folder deep: a manifest path that
    stays inside its shard set (no '..', no absolute path, no other file)."""
    parts = rel.split("/") if isinstance(rel, str) else []
    return (len(parts) == 2 and parts[0] not in ("", ".", "..") and "\\" not in rel
            and SHARD_NAME.fullmatch(parts[1]) is not None)


def dtype_code(vocab_size: int) -> int:
    return 1 if vocab_size <= 1 << 16 else 2


@dataclasses.dataclass(frozen=True)
class Header:
    version: int
    dtype: np.dtype
    n_tokens: int
    n_docs: int

    @property
    def size_bytes(self) -> int:
        return HEADER_BYTES + self.n_tokens * self.dtype.itemsize + (self.n_docs + 1) * 8


def encode(docs: Iterable[list[int]], vocab_size: int) -> bytes:
    """Shard bytes for the given token lists (EOS already appended by the caller)."""
    code = dtype_code(vocab_size)
    dtype = DTYPES[code]
    arrays = [np.asarray(d, dtype=dtype) for d in docs]
    offsets = np.zeros(len(arrays) + 1, dtype="<u8")
    if arrays:
        np.cumsum([len(a) for a in arrays], out=offsets[1:])
    tokens = np.concatenate(arrays) if arrays else np.zeros(0, dtype=dtype)
    buf = io.BytesIO()
    buf.write(_HEADER.pack(MAGIC, VERSION, code, len(tokens), len(arrays)))
    buf.write(tokens.tobytes())
    buf.write(offsets.tobytes())
    return buf.getvalue()


# ---- one shard from documents in any order, in bounded memory ---------------------------

def doc_keys(tokens: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Each packed document's place in a shard: a 128-bit BLAKE2b hash of its tokens (in
    the shard's dtype), as (n, 2) big-endian uint64. Two documents with one key have the
    same tokens, so which of them comes first changes no byte."""
    data = memoryview(np.ascontiguousarray(tokens)).cast("B")
    ends = np.cumsum(lengths, dtype=np.int64) * tokens.dtype.itemsize
    digests, start = [], 0
    for end in ends.tolist():
        digests.append(hashlib.blake2b(data[start:end], digest_size=16).digest())
        start = end
    return np.frombuffer(b"".join(digests), dtype=">u8").reshape(-1, 2)


class ShardWriter:
    """One shard from packed documents (tokens one after the other, and each one's length)
    that come in any order and grouping, in memory that does not grow with the shard's
    tokens: they go to an unnamed local spill file as they come (:meth:`add`), or stay
    where they are when they already lie in a local file (:meth:`add_view`), and only an
    index entry per document (its key, length and place: 36 bytes, about 120 while
    writing) stays in memory. :meth:`write` streams the shard in pieces of at most
    ``chunk_tokens`` (or one document, if longer), its documents in key order
    (:func:`doc_keys`), so the bytes depend only on the set of documents.

    Use as a context manager (the spill file goes on exit)."""

    MAX_VIEWS = 256
    """At most this many arrays left in place (each a memory map: a file descriptor);
    documents of further ones are copied to the spill file."""

    def __init__(self, vocab_size: int, spill_dir: str | None = None,
                 chunk_tokens: int = 1 << 22):
        self.code = dtype_code(vocab_size)
        self.dtype, self.chunk_tokens = DTYPES[self.code], chunk_tokens
        self._spill = tempfile.TemporaryFile(dir=spill_dir)
        self._spilled = 0  # tokens in the spill file
        self._views: list[np.ndarray] = []  # source i + 1 (source 0: the spill file)
        # per document, in blocks: key, length, source, first token in the source
        self._index: list[list[np.ndarray]] = [[], [], [], []]
        self._packed = 0  # blocks [:_packed] each join 1024 blocks
        self.n_tokens = self.n_docs = 0

    def __enter__(self) -> "ShardWriter":
        return self

    def __exit__(self, *exc) -> None:
        self._views = []
        self._spill.close()

    @staticmethod
    def _check(tokens: np.ndarray, lengths: np.ndarray) -> None:
        if int(lengths.sum()) != len(tokens) or (lengths < 0).any():
            raise ValueError(f"{len(tokens)} tokens, but the lengths add up to {lengths.sum()}")

    def add(self, tokens: np.ndarray, lengths: np.ndarray) -> None:
        """Documents packed as ``tokens`` (their tokens one after the other, EOS included)
        and ``lengths`` (each one's token count), copied to the spill file."""
        tokens = np.ascontiguousarray(tokens, dtype=self.dtype)
        lengths = np.asarray(lengths, dtype=np.int64)
        self._check(tokens, lengths)
        self._spill.write(memoryview(tokens).cast("B"))
        self._add_index(doc_keys(tokens, lengths), lengths, 0, self._spilled + doc_starts(lengths))
        self._spilled += len(tokens)

    def add_view(self, tokens: np.ndarray, lengths: np.ndarray,
                 keep: np.ndarray | None = None) -> None:
        """Documents packed as in :meth:`add`, left where they are: ``tokens`` (in the
        shard's dtype) must stay valid and unchanged until :meth:`write` is done, as a
        read-only memory map of a local file does. ``keep``: which documents to take (a
        mask; the others are left out). After MAX_VIEWS views, as :meth:`add`."""
        lengths = np.asarray(lengths, dtype=np.int64)
        if tokens.dtype != self.dtype:
            raise ValueError(f"tokens are {tokens.dtype}, the shard holds {self.dtype}")
        self._check(tokens, lengths)
        if len(self._views) >= self.MAX_VIEWS:
            if keep is not None:
                tokens, lengths = tokens[np.repeat(keep, lengths)], lengths[keep]
            self.add(tokens, lengths)
            return
        tokens = tokens.view(np.ndarray)  # a memory map's slices cost more than a plain array's
        keys, starts = doc_keys(tokens, lengths), doc_starts(lengths)
        if keep is not None:
            keys, lengths, starts = keys[keep], lengths[keep], starts[keep]
        self._views.append(tokens)
        self._add_index(keys, lengths, len(self._views), starts)

    def _add_index(self, keys: np.ndarray, lengths: np.ndarray, source: int,
                   starts: np.ndarray) -> None:
        block = (keys, lengths, np.full(len(lengths), source, np.int32), starts)
        for column, values in zip(self._index, block):
            column.append(values)
        self.n_tokens += int(lengths.sum())
        self.n_docs += len(lengths)
        if len(self._index[0]) - self._packed >= 1024:  # many small blocks: one array each 1024
            for column in self._index:
                column[self._packed:] = [np.concatenate(column[self._packed:])]
            self._packed += 1

    @property
    def size_bytes(self) -> int:
        return HEADER_BYTES + self.n_tokens * self.dtype.itemsize + (self.n_docs + 1) * 8

    def write(self, f=None) -> str:
        """Write the shard to ``f`` (a binary file; None: write nothing) and return its
        sha256."""
        h = hashlib.sha256()

        def emit(data) -> None:
            h.update(data)
            if f is not None:
                f.write(data)

        keys, lengths, sources, starts = (
            np.concatenate(column) if column else np.zeros(shape, dtype)
            for column, shape, dtype in zip(self._index, ((0, 2), 0, 0, 0),
                                            (">u8", np.int64, np.int32, np.int64)))
        order = np.lexsort((keys[:, 1], keys[:, 0]))  # stable: equal keys, equal tokens
        emit(_HEADER.pack(MAGIC, VERSION, self.code, self.n_tokens, self.n_docs))
        self._spill.flush()
        view = (mmap.mmap(self._spill.fileno(), 0, access=mmap.ACCESS_READ)
                if self._spilled else b"")
        # plain arrays: slices cost less
        arrays = [np.frombuffer(view, dtype=self.dtype), *self._views]
        docs = (arrays[source][start:start + n] for source, start, n in
                zip(sources[order].tolist(), starts[order].tolist(), lengths[order].tolist()))
        for chunk in joined(docs, self.chunk_tokens):
            emit(memoryview(chunk).cast("B"))
        del arrays, docs
        if self._spilled:
            view.close()
        offsets = np.zeros(self.n_docs + 1, dtype="<u8")
        np.cumsum(lengths[order], out=offsets[1:])
        emit(offsets.tobytes())
        return h.hexdigest()


def doc_starts(lengths: np.ndarray) -> np.ndarray:
    """Where each packed document starts: 0, then the running sum of the lengths."""
    starts = np.zeros(len(lengths), dtype=np.int64)
    np.cumsum(lengths[:-1], out=starts[1:])
    return starts


def joined(docs: Iterable[np.ndarray], chunk_tokens: int) -> Iterator[np.ndarray]:
    """``docs`` (token arrays) joined into arrays of at least ``chunk_tokens`` tokens (the
    last one shorter), in order: few large writes, never all of them in memory."""
    parts, held = [], 0
    for doc in docs:
        parts.append(doc)
        held += len(doc)
        if held >= chunk_tokens:
            yield np.concatenate(parts)
            parts, held = [], 0
    if parts:
        yield np.concatenate(parts)


def file_sha256(fs, path: str, block: int = 8 << 20) -> str:
    """sha256 of a file on an fsspec filesystem, read in ``block``-byte pieces."""
    h = hashlib.sha256()
    with fs.open(path, "rb", block_size=block, cache_type="none") as f:
        while chunk := f.read(block):
            h.update(chunk)
    return h.hexdigest()


def parse_header(head: bytes, name: str = "shard") -> Header:
    if len(head) < HEADER_BYTES or head[:8] != MAGIC:
        raise ShardError(f"{name} is not a SkyPile token shard (bad magic); was it written by "
                         f"`skypile tokenize`?")
    magic, version, code, n_tokens, n_docs = _HEADER.unpack(head[:HEADER_BYTES])
    if version != VERSION:
        raise ShardError(f"{name} is shard format version {version}; this SkyPile reads "
                         f"version {VERSION}. Re-tokenize, or use the SkyPile release that wrote it.")
    if code not in DTYPES:
        raise ShardError(f"{name} has an unknown token dtype code {code}")
    return Header(version, DTYPES[code], n_tokens, n_docs)


class Shard:
    """A memory-mapped shard: ``tokens`` (numpy array) and ``doc(i)``."""

    def __init__(self, path: str):
        with open(path, "rb") as f:
            self.header = parse_header(f.read(HEADER_BYTES), path)
        h = self.header
        self.path = path
        self.tokens = np.memmap(path, dtype=h.dtype, mode="r", offset=HEADER_BYTES,
                                shape=(h.n_tokens,))
        self.offsets = np.memmap(path, dtype="<u8", mode="r",
                                 offset=HEADER_BYTES + h.n_tokens * h.dtype.itemsize,
                                 shape=(h.n_docs + 1,))

    def __len__(self) -> int:
        return self.header.n_docs

    def doc(self, i: int) -> np.ndarray:
        return self.tokens[self.offsets[i]:self.offsets[i + 1]]


def decode(data: bytes, name: str = "shard") -> tuple[Header, np.ndarray, np.ndarray]:
    """Header, tokens and offsets of shard bytes (for remote files read whole)."""
    h = parse_header(data, name)
    if len(data) != h.size_bytes:
        raise ShardError(f"{name} is truncated or has trailing bytes "
                         f"({len(data)} bytes, header says {h.size_bytes})")
    tokens = np.frombuffer(data, dtype=h.dtype, count=h.n_tokens, offset=HEADER_BYTES)
    offsets = np.frombuffer(data, dtype="<u8", count=h.n_docs + 1,
                            offset=HEADER_BYTES + h.n_tokens * h.dtype.itemsize)
    return h, tokens, offsets


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# ---- a manifest's shards -----------------------------------------------------------------

class RemoteTokens:
    """A remote shard's tokens, read by range (``tokens[a:b]``) through fsspec's block cache:
    only the blocks that a window touches are fetched, never the whole file."""

    def __init__(self, f, header: Header, lock: threading.Lock):
        self._f, self._lock, self.dtype = f, lock, header.dtype
        self.shape = (header.n_tokens,)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key: slice) -> np.ndarray:
        if not isinstance(key, slice):
            raise TypeError("remote shard tokens are read by slices, e.g. tokens[a:b]")
        start, stop, step = key.indices(len(self))
        if step != 1:
            raise ValueError("remote shard tokens are read in steps of 1")
        n = max(stop - start, 0)
        with self._lock:  # one file position, shared with the prefetch thread
            self._f.seek(HEADER_BYTES + start * self.dtype.itemsize)
            data = self._f.read(n * self.dtype.itemsize)
        return np.frombuffer(data, dtype=self.dtype, count=n)


class ShardSet:
    """The shards a manifest lists, on any fsspec URL, opened lazily (on first use).

    Local shards are memory-mapped; remote ones are read by range through a block cache
    (``block_size`` bytes a block), never whole. Each shard is checked against the manifest
    when first opened: size and header always, the sha256 when ``verify``. With
    ``check_cache`` (a node-local folder) a passed check leaves a marker there, keyed by the
    shard's URL, size, version fields (modification time, ETag, generation) and sha256, so
    every process of a node (and a restarted run) finds it and only the first one hashes
    the file.
    """

    def __init__(self, root: str, storage_options: dict | None = None, verify: bool = True,
                 check_cache: str | None = None, block_size: int = 1 << 20):
        import json

        import fsspec

        self.root, self.so, self.verify = root.rstrip("/"), storage_options or {}, verify
        self.check_cache, self.block_size = check_cache, block_size
        self.fs, self._root_path = fsspec.core.url_to_fs(self.root, **self.so)
        try:
            with self.fs.open(f"{self._root_path}/manifest.json", "rt") as f:
                self.manifest = json.load(f)
        except FileNotFoundError:
            raise ShardError(f"no manifest.json in {root}: is it a `skypile tokenize` output?") from None
        if self.manifest.get("format") != "skypile-token-shards":
            raise ShardError(f"{root}/manifest.json is not a SkyPile shard manifest")
        if self.manifest.get("version") != VERSION:
            raise ShardError(f"{root} holds shard format version {self.manifest.get('version')}; "
                             f"this SkyPile reads version {VERSION}: re-tokenize")
        self._cache: dict[str, tuple] = {}
        self._lock = threading.Lock()

    @property
    def local(self) -> bool:
        return "file" in self.fs.protocol

    def domains(self) -> list[str]:
        return sorted(self.manifest["domains"])

    def entries(self, domain: str, split: str = "train") -> list[dict]:
        return self.manifest["domains"].get(domain, {}).get(split, {}).get("shards", [])

    def tokens(self, domain: str, split: str = "train") -> int:
        return self.manifest["domains"].get(domain, {}).get(split, {}).get("tokens", 0)

    def url(self, relative: str) -> str:
        """The URL of a file of the set (a shard, the tokenizer), from its manifest path."""
        return f"{self.root}/{relative}"

    def load(self, entry: dict) -> tuple:
        """(tokens, offsets) of one shard entry, opened and checked on first use: tokens
        is a memory map (local) or a ``RemoteTokens`` (remote); both slice to numpy."""
        key = entry["path"]
        with self._lock:  # the prefetch thread and the main thread may ask together
            if key not in self._cache:
                self._cache[key] = self._open(entry)
        return self._cache[key]

    def _open(self, entry: dict) -> tuple:
        if not is_shard_path(entry.get("path")):
            raise ShardError(f"{self.root}/manifest.json lists {entry.get('path')!r}, which is "
                             "not a shard path of the set (<domain>/<split>-NNNNN-of-MMMMM.bin)")
        path = f"{self._root_path}/{entry['path']}"
        info = self.fs.info(path)
        if "bytes" in entry and info["size"] != entry["bytes"]:
            raise ShardError(f"{self.url(entry['path'])} has {info['size']} bytes, the manifest "
                             f"says {entry['bytes']} (partly written?): re-run skypile tokenize")
        if self.verify:
            self._verify_once(entry, path, info)
        if self.local:
            shard = Shard(path)
            return shard.tokens, shard.offsets
        f = self.fs.open(path, "rb", block_size=self.block_size, cache_type="blockcache",
                         cache_options={"maxblocks": 8})
        h = parse_header(f.read(HEADER_BYTES), self.url(entry["path"]))
        if h.size_bytes != info["size"]:
            raise ShardError(f"{self.url(entry['path'])} is truncated or has trailing bytes")
        f.seek(HEADER_BYTES + h.n_tokens * h.dtype.itemsize)
        offsets = np.frombuffer(f.read((h.n_docs + 1) * 8), dtype="<u8")
        return RemoteTokens(f, h, threading.Lock()), offsets

    def _verify_once(self, entry: dict, path: str, info: dict) -> None:
        if not self.check_cache:
            return self._check(entry, self._digest(path))
        stamp = version_stamp(info)
        key = sha256(json_bytes([self.url(entry["path"]), info["size"], stamp, entry["sha256"]]))
        folder = os.path.join(self.check_cache, "verified")
        os.makedirs(folder, exist_ok=True)
        marker = os.path.join(folder, key)
        with open(marker + ".lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # the node's other processes wait, then see it
            if not os.path.exists(marker):
                self._check(entry, self._digest(path))
                with open(marker + ".tmp", "w") as f:
                    f.write(self.url(entry["path"]) + "\n")
                os.replace(marker + ".tmp", marker)

    def _digest(self, path: str) -> str:
        """sha256 of a shard, streamed in 8 MiB pieces (constant memory, local or remote)."""
        return file_sha256(self.fs, path)

    def _check(self, entry: dict, digest: str) -> None:
        if digest != entry["sha256"]:
            raise ShardError(f"{self.root}/{entry['path']} does not match its checksum in the "
                             f"manifest (corrupt or partly written): re-run skypile tokenize")

    def documents(self, domain: str, split: str = "train"):
        """Every document's tokens, shard by shard, in order."""
        for entry in self.entries(domain, split):
            tokens, offsets = self.load(entry)
            for i in range(len(offsets) - 1):
                yield tokens[int(offsets[i]):int(offsets[i + 1])]


def json_bytes(value) -> bytes:
    import json

    return json.dumps(value, sort_keys=True).encode("utf-8")


# ---- Megatron-LM's indexed dataset --------------------------------------------------------

_MEGATRON_MAGIC = b"MMIDIDX\x00\x00"


def to_megatron(shard_set: ShardSet, domain: str, split: str, prefix: str) -> tuple[str, str]:
    """Write PREFIX.bin / PREFIX.idx (Megatron-LM MMapIndexedDataset), one document per
    sequence; PREFIX's folder is made when missing."""
    if prefix.endswith(("/", os.sep)) or os.path.isdir(prefix):
        raise ShardError(f"{prefix} is a folder; give a prefix in it, e.g. "
                         f"{os.path.join(prefix, domain + '_' + split)}")
    os.makedirs(os.path.dirname(os.path.abspath(prefix)), exist_ok=True)
    sizes: list[int] = []
    dtype = None
    with open(prefix + ".bin", "wb") as out:
        for doc in shard_set.documents(domain, split):
            dtype = doc.dtype
            out.write(np.ascontiguousarray(doc).tobytes())
            sizes.append(len(doc))
    dtype = dtype or np.dtype("<u2")
    code = 8 if dtype.itemsize == 2 else 4  # Megatron: 8 = uint16, 4 = int32
    sizes_arr = np.asarray(sizes, dtype="<i4")
    pointers = np.zeros(len(sizes), dtype="<i8")
    if len(sizes) > 1:
        np.cumsum(sizes_arr[:-1].astype("<i8") * dtype.itemsize, out=pointers[1:])
    doc_idx = np.arange(len(sizes) + 1, dtype="<i8")
    with open(prefix + ".idx", "wb") as f:
        f.write(_MEGATRON_MAGIC)
        f.write(struct.pack("<Q", 1))
        f.write(struct.pack("<B", code))
        f.write(struct.pack("<Q", len(sizes)))
        f.write(struct.pack("<Q", len(doc_idx)))
        f.write(sizes_arr.tobytes())
        f.write(pointers.tobytes())
        f.write(doc_idx.tobytes())
    return prefix + ".bin", prefix + ".idx"
