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
import hashlib
import io
import struct
from typing import Iterable

import numpy as np

MAGIC = b"SKYSHARD"
VERSION = 1
HEADER_BYTES = 64
DTYPES = {1: np.dtype("<u2"), 2: np.dtype("<u4")}
_HEADER = struct.Struct("<8sIIQQ32x")


class ShardError(ValueError):
    """A file that is not a shard of a version this code reads."""


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

class ShardSet:
    """The shards a manifest lists, on any fsspec URL, checksums verified on first read.

    Local shards are memory-mapped; remote ones are read whole (and cached) once.
    """

    def __init__(self, root: str, storage_options: dict | None = None, verify: bool = True):
        import json

        import fsspec

        self.root, self.so, self.verify = root.rstrip("/"), storage_options or {}, verify
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
        self._cache: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    def domains(self) -> list[str]:
        return sorted(self.manifest["domains"])

    def entries(self, domain: str, split: str = "train") -> list[dict]:
        return self.manifest["domains"].get(domain, {}).get(split, {}).get("shards", [])

    def tokens(self, domain: str, split: str = "train") -> int:
        return self.manifest["domains"].get(domain, {}).get(split, {}).get("tokens", 0)

    def load(self, entry: dict) -> tuple[np.ndarray, np.ndarray]:
        """(tokens, offsets) of one shard entry, verified against the manifest."""
        key = entry["path"]
        if key not in self._cache:
            path = f"{self._root_path}/{key}"
            if "file" in self.fs.protocol:
                if self.verify:
                    with open(path, "rb") as f:
                        digest = hashlib.file_digest(f, "sha256").hexdigest()
                    self._check(entry, digest)
                shard = Shard(path)
                self._cache[key] = (shard.tokens, shard.offsets)
            else:
                data = self.fs.cat_file(path)
                if self.verify:
                    self._check(entry, sha256(data))
                _h, tokens, offsets = decode(data, key)
                self._cache[key] = (tokens, offsets)
        return self._cache[key]

    def _check(self, entry: dict, digest: str) -> None:
        if digest != entry["sha256"]:
            raise ShardError(f"{self.root}/{entry['path']} does not match its checksum in the "
                             f"manifest (corrupt or partly written): re-run skypile tokenize")

    def documents(self, domain: str, split: str = "train"):
        """Every document's tokens, shard by shard, in order."""
        for entry in self.entries(domain, split):
            tokens, offsets = self.load(entry)
            for i in range(len(offsets) - 1):
                yield tokens[offsets[i]:offsets[i + 1]]


# ---- Megatron-LM's indexed dataset --------------------------------------------------------

_MEGATRON_MAGIC = b"MMIDIDX\x00\x00"


def to_megatron(shard_set: ShardSet, domain: str, split: str, prefix: str) -> tuple[str, str]:
    """Write PREFIX.bin / PREFIX.idx (Megatron-LM MMapIndexedDataset), one document per sequence."""
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
