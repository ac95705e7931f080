"""File readers: WARC / WET (plain or gzip), JSONL (plain, .gz, .zst) and Parquet.

This module picks the reader by the bytes and runs it (warc.py, rows.py; gzip_members.py
for member-wise gzip, records.py for what they share). A reader turns one file (local path or any fsspec URL) into a stream of ``RawRecord``s and
``Reject``s. It never raises for bad content: a broken record becomes a reject naming the
file and the byte offset, and reading goes on with the next good record. Records that are
not documents (WARC request, metadata, warcinfo, revisit) are counted in ``ReadStats.skipped``.
"""

from __future__ import annotations

import io
import zlib
from typing import BinaryIO, Iterator

import fsspec

from skypile.document import Reject
# the public names of every reader live in records.py; importers use them from here
from skypile.files.records import (RawRecord, ReaderOptions, ReadStats,  # noqa: F401
                                   UnreadableFile, file_reject)
from skypile.files.rows import jsonl_records, parquet_records, text_records, tsv_pairs
from skypile.files.warc import WarcParser

# ---- format detection -------------------------------------------------------------------

GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
PARQUET_MAGIC = b"PAR1"
_READ_ERRORS = (EOFError, zlib.error, OSError)


def _strip_compression_suffix(name: str) -> str:
    for suffix in (".gz", ".zst", ".zstd"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def detect_format(path: str, head: bytes) -> str:
    """Name the reader for a file from its leading (decompressed) bytes, then its name."""
    head = head.removeprefix(b"\xef\xbb\xbf")  # a UTF-8 byte order mark says nothing
    if head.startswith(PARQUET_MAGIC):
        return "parquet"
    if head.startswith(b"WARC/"):
        return "warc"
    name = _strip_compression_suffix(path.lower())
    if name.endswith((".jsonl", ".json", ".ndjson")) and head.lstrip()[:1] in (b"{", b""):
        return "jsonl"
    if head.lstrip()[:1] == b"{":
        return "jsonl"
    if name.endswith((".txt", ".raw", ".tokens")):
        return "text"
    if name.endswith(".tsv"):
        return "tsv"
    return "unknown"


# ---- entry point -------------------------------------------------------------------------

def read_file(path: str, opts: ReaderOptions | None = None,
              stats: ReadStats | None = None,
              storage_options: dict | None = None) -> Iterator[RawRecord | Reject]:
    """Every record of one file, as RawRecords and Rejects. Raises only ``UnreadableFile``.

    A file with nothing in it (0 bytes, an empty gzip, only blank lines, no rows) is one
    ``read:empty-file`` reject, so every input is accounted for.
    """
    opts = opts or ReaderOptions()
    stats = stats if stats is not None else ReadStats()
    try:
        raw = fsspec.open(path, "rb", **(storage_options or {})).open()
    except (OSError, ValueError) as e:
        raise UnreadableFile(f"{path}: {e}") from None
    try:
        seen = 0
        for item in _records(path, raw, opts, stats):
            seen += 1
            yield item
        if not seen and not stats.records and not stats.skipped:
            yield file_reject(path, "empty-file")
    finally:
        raw.close()


def _records(path: str, raw: BinaryIO, opts: ReaderOptions, stats: ReadStats
             ) -> Iterator[RawRecord | Reject]:
    """The records of an open file, by the reader its bytes call for."""
    try:
        magic = raw.read(4)
        raw.seek(0)
        head = _decompressed_head(raw, magic)
        raw.seek(0)
    except OSError as e:
        raise UnreadableFile(f"{path}: {e}") from None
    gz = magic.startswith(GZIP_MAGIC)
    fmt = detect_format(path, head)
    if fmt == "unknown":
        raise UnreadableFile(f"{path}: not a WARC, JSONL, Parquet, .txt or .tsv file "
                             f"(starts with {bytes(head[:12])!r})")
    stream, damage, errors = raw, "truncated-gzip" if gz else "read-error", _READ_ERRORS
    if magic.startswith(ZSTD_MAGIC):
        import zstandard
        stream = io.BufferedReader(
            zstandard.ZstdDecompressor().stream_reader(raw, read_across_frames=True))
        damage, errors = "bad-zstd", (*errors, zstandard.ZstdError)
    try:
        if fmt == "warc":
            yield from WarcParser(path, stream, gz, opts, stats).records()
        elif fmt == "jsonl":
            yield from jsonl_records(path, stream, gz, opts, stats)
        elif fmt == "text":
            yield from text_records(path, stream, gz, stats, opts)
        elif fmt == "tsv":
            yield from tsv_pairs(path, stream, gz, stats, opts)
        else:
            yield from parquet_records(path, stream, opts, stats)
    except errors as e:  # damage the format's own reader does not check for
        yield file_reject(path, damage, error=str(e)[:120])


def _decompressed_head(raw: BinaryIO, magic: bytes) -> bytes:
    """The first bytes of the file after gzip / zstd, for format detection."""
    data = raw.read(65536)
    if magic.startswith(GZIP_MAGIC):
        try:
            return zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(data, 64)
        except zlib.error:
            return b""
    if magic.startswith(ZSTD_MAGIC):
        import zstandard
        try:
            return zstandard.ZstdDecompressor().decompressobj().decompress(data)[:64]
        except zstandard.ZstdError:
            return b""
    return data[:64]
