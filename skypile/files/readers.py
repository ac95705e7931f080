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
from skypile.files.records import (FileRange, RawRecord, ReaderOptions,  # noqa: F401
                                   ReadStats, UnreadableFile, file_reject)
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
              storage_options: dict | None = None,
              span: FileRange | None = None) -> Iterator[RawRecord | Reject]:
    """Every record of one file (or of ``span``, a range of its lines from
    :func:`line_ranges`), as RawRecords and Rejects. Raises only ``UnreadableFile``.

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
        for item in _records(path, raw, opts, stats, span):
            seen += 1
            yield item
        if not seen and not stats.records and not stats.skipped and not stats.part:
            yield file_reject(path, "empty-file")
    finally:
        raw.close()


def line_ranges(path: str, step: int, storage_options: dict | None = None) -> list[FileRange]:
    """A plain JSONL file over ``2 * step`` bytes as ranges of about ``step`` bytes, each
    starting at a line, with that line's number: one pass over the file, counting its
    newlines. Any other file (compressed, another format by its name or first bytes,
    small): ``[]``, read whole."""
    name = path.lower()
    if step <= 0 or not name.endswith((".jsonl", ".json", ".ndjson")):
        return []
    fs, local = fsspec.core.url_to_fs(path, **(storage_options or {}))
    size = fs.size(local)
    with fs.open(local, "rb") as f:
        if size <= 2 * step or f.read(4).startswith((GZIP_MAGIC, ZSTD_MAGIC, PARQUET_MAGIC)):
            return []
        f.seek(0)
        starts, base, lines, target = [(0, 1)], 0, 0, step
        while chunk := f.read(8 << 20):
            while target - 1 < base + len(chunk):
                at = chunk.find(b"\n", max(target - 1 - base, 0))
                if at < 0:
                    break  # the line goes on in the next chunk
                start = base + at + 1
                if size - start < step // 2:  # a last range this short joins the one before
                    target = size + 1
                    break
                starts.append((start, lines + chunk.count(b"\n", 0, at + 1) + 1))
                target = start + step
            lines += chunk.count(b"\n")
            base += len(chunk)
    ends = [s for s, _ in starts[1:]] + [size]
    return [FileRange(path, s, e, line) for (s, line), e in zip(starts, ends)]


def _records(path: str, raw: BinaryIO, opts: ReaderOptions, stats: ReadStats,
             span: FileRange | None = None) -> Iterator[RawRecord | Reject]:
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
    if span is not None and (fmt != "jsonl" or gz or magic.startswith(ZSTD_MAGIC)):
        if span.start > 0:  # not a plain JSONL file after all: the first range reads it whole
            stats.part = True
            return
        span = None
    stats.part = span is not None
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
            yield from jsonl_records(path, stream, gz, opts, stats, span)
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
