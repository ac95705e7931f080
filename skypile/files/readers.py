"""File readers: WARC / WET (plain or gzip), JSONL (plain, .gz, .zst) and Parquet.

A reader turns one file (local path or any fsspec URL) into a stream of ``RawRecord``s and
``Reject``s. It never raises for bad content: a broken record becomes a reject naming the
file and the byte offset, and reading goes on with the next good record. Records that are
not documents (WARC request, metadata, warcinfo, revisit) are counted in ``ReadStats.skipped``.
"""

from __future__ import annotations

import dataclasses
import gzip
import io
import json
import re
import zlib
from typing import Any, BinaryIO, Iterator

import fsspec

from skypile.document import Origin, Reject, stable_id
from skypile.text.chars import preview

STAGE = "read"


@dataclasses.dataclass(slots=True)
class RawRecord:
    """One record as read, before extraction.

    ``kind`` says what ``body`` holds: ``http`` (a raw HTTP response, headers included),
    ``html`` (bare page bytes) or ``text`` (already text: WET, JSONL, Parquet).
    """

    id: str
    url: str
    source: str
    kind: str
    body: bytes | str
    metadata: dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class ReaderOptions:
    """How files are read. Set from the ``read`` section of the pipeline config."""

    text_field: str = "text"
    """JSONL/Parquet column with the document text."""
    id_field: str = "id"
    """JSONL/Parquet column with the document id (a stable id is made when it is missing)."""
    url_field: str = "url"
    """JSONL/Parquet column with the URL, if any."""
    max_record_bytes: int = 20 * 1024 * 1024
    """Records larger than this are rejected (``read:too-large``) without being held in memory."""
    max_header_bytes: int = 64 * 1024
    """A WARC header block longer than this is treated as corruption."""
    text_only: bool = False
    """Accept only text documents (JSONL, Parquet, WET); pages needing extraction are rejected."""
    parallel_fields: list[str] = dataclasses.field(default_factory=list)
    """English-Chinese pairs: two JSONL/Parquet fields (e.g. [en, zh]) joined into one
    document, English first (source_kind=parallel). TSV files are always read as pairs."""


@dataclasses.dataclass
class ReadStats:
    records: int = 0
    skipped: dict[str, int] = dataclasses.field(default_factory=dict)

    def skip(self, kind: str) -> None:
        self.skipped[kind] = self.skipped.get(kind, 0) + 1


class UnreadableFile(Exception):
    """The file as a whole could not be read (missing, permission, not a known format)."""


def file_reject(path: str, reason: str, offset: int | None = None, **detail) -> Reject:
    detail = {"file": path, **({"offset": offset} if offset is not None else {}), **detail}
    return Reject(id=stable_id(path, str(offset), reason), url="", stage=STAGE,
                  reason=f"{STAGE}:{reason}", source=path, detail=detail)


# ---- format detection -------------------------------------------------------------------

GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
PARQUET_MAGIC = b"PAR1"


def _strip_compression_suffix(name: str) -> str:
    for suffix in (".gz", ".zst", ".zstd"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def detect_format(path: str, head: bytes) -> str:
    """Name the reader for a file from its leading (decompressed) bytes, then its name."""
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


# ---- gzip members ------------------------------------------------------------------------

class _GzipMembers:
    """Decompresses a multi-member gzip stream, remembering where each member starts.

    Common Crawl writes one gzip member per record; the member offsets are what its index
    points at, so they are what errors report. A corrupt member is skipped by searching
    for the next gzip header.
    """

    CHUNK = 1 << 20
    FEED = 1 << 16  # small feeds, so a corrupt member still yields what came before the damage

    def __init__(self, raw: BinaryIO):
        self.raw = raw
        self.pos = 0          # compressed bytes consumed from raw
        self.pending = b""    # compressed bytes read but not yet fed
        self.member_start = 0
        self.dec = zlib.decompressobj(16 + zlib.MAX_WBITS)

    def chunks(self) -> Iterator[tuple[int, bytes, str | None]]:
        """Yields (member offset, decompressed bytes, error or None).

        An error (``corrupt-gzip``, ``truncated-gzip``) means the data of that member stops
        there; what follows comes from the next intact member.
        """
        while True:
            if not self.pending:
                self.pending = self.raw.read(self.CHUNK)
                if not self.pending:
                    if self.dec is not None and self.pos > self.member_start:
                        yield self.member_start, b"", "truncated-gzip"
                    return
            data, self.pending = self.pending[:self.FEED], self.pending[self.FEED:]
            try:
                out = self.dec.decompress(data)
            except zlib.error:
                yield self.member_start, b"", "corrupt-gzip"
                self._resync(data + self.pending)
                continue
            self.pos += len(data) - len(self.dec.unused_data)
            if out:
                yield self.member_start, out, None
            if self.dec.eof:
                self.pending = self.dec.unused_data + self.pending
                self.member_start = self.pos
                self.dec = zlib.decompressobj(16 + zlib.MAX_WBITS)
                if not self.pending and not self._peek():
                    return

    def _peek(self) -> bool:
        self.pending = self.raw.read(self.CHUNK)
        return bool(self.pending)

    def _resync(self, data: bytes) -> None:
        """Skip to the next plausible gzip header after a corrupt member."""
        buf = data[1:]
        skipped = 1
        while True:
            i = buf.find(b"\x1f\x8b\x08")
            if i >= 0:
                self.pos = self.pos + skipped + i
                self.member_start = self.pos
                self.pending = buf[i:]
                self.dec = zlib.decompressobj(16 + zlib.MAX_WBITS)
                return
            skipped += len(buf)
            more = self.raw.read(self.CHUNK)
            if not more:
                self.pos += skipped
                self.dec = None
                return
            buf = buf[-2:] + more
            skipped -= 2


# ---- WARC --------------------------------------------------------------------------------

_DOC_TYPES = {"response", "resource", "conversion"}
_WEB_URL = re.compile(r"(?:https?|ftp)://", re.I)


_NEXT_RECORD = re.compile(rb"\r?\n(?=WARC/1\.\d\r?\n)")
_TRAILER = re.compile(rb"\r?\n$")
_AFTER_BODY = re.compile(rb"(?:\r?\n)*WARC/")


@dataclasses.dataclass(slots=True)
class _Head:
    """A parsed WARC record header, as the body and record steps need it."""

    start: int
    body_start: int
    headers: dict[str, str]
    rid: str
    rtype: str
    url: str
    doc_id: str
    where: dict
    length: int  # declared Content-Length, -1 when missing or invalid


class _WarcParser:
    """Parses WARC records from a byte stream, gzip-member aware, never raising.

    The declared Content-Length is trusted when the next record starts right after it.
    When it does not, the record ends at the next blank line followed by a WARC version
    line; the record is kept and flagged with ``metadata.warc_length_mismatch``. A body
    that runs past the end of the file is rejected.
    """

    def __init__(self, path: str, raw: BinaryIO, gz: bool, opts: ReaderOptions,
                 stats: ReadStats):
        self.path, self.opts, self.stats = path, opts, stats
        self.gz = _GzipMembers(raw) if gz else None
        self.raw = raw
        self.buf = bytearray()
        self.base = 0       # stream offset (decompressed) of buf[0]
        self.marks: list[tuple[int, int]] = []  # (stream offset, compressed member offset)
        self.cuts: list[list] = []  # [stream offset, reason, member offset, reported]
        self.done = False
        self._chunks = self.gz.chunks() if self.gz else None

    def _fill(self) -> bool:
        if self.done:
            return False
        if self._chunks is not None:
            try:
                member_off, data, error = next(self._chunks)
            except StopIteration:
                self.done = True
                return False
            if error:
                self.cuts.append([self.base + len(self.buf), error, member_off, False])
                return True
            if not self.marks or self.marks[-1][1] != member_off:
                self.marks.append((self.base + len(self.buf), member_off))
            self.buf += data
            return True
        data = self.raw.read(1 << 20)
        if not data:
            self.done = True
            return False
        self.buf += data
        return True

    def _consume(self, n: int) -> None:
        del self.buf[:n]
        self.base += n
        while len(self.marks) > 1 and self.marks[1][0] <= self.base:
            self.marks.pop(0)

    def _offset(self, stream_pos: int) -> int:
        """Offset to report: the compressed offset of the gzip member, else the byte offset."""
        if self.gz is None:
            return stream_pos
        best = 0
        for pos, coff in self.marks:
            if pos <= stream_pos:
                best = coff
        return best

    def _reason_at_eof(self, default: str) -> str:
        return self.cuts[-1][1] if self.cuts else default

    def _cut_within(self, start: int, end: int) -> list | None:
        """A gzip error between stream offsets start and end: the data there is damaged."""
        for cut in self.cuts:
            if start < cut[0] <= end:
                cut[3] = True
                return cut
        return None

    def _unreported_cuts(self) -> Iterator[Reject]:
        """Damage that fell between records (a whole member lost) or at the end of the file."""
        for cut in self.cuts:
            if not cut[3] and (cut[0] <= self.base or self.done):
                cut[3] = True
                yield file_reject(self.path, cut[1], cut[2])

    def records(self) -> Iterator[RawRecord | Reject]:
        while True:
            while len(self.buf) < 8 and self._fill():
                pass
            yield from self._unreported_cuts()
            if not self.buf:
                return
            if not self.buf.startswith(b"WARC/"):
                idx = self._find_record_start()
                if idx is None:
                    if self.buf.strip():
                        yield file_reject(self.path, "junk-bytes", self._offset(self.base),
                                          bytes=len(self.buf))
                    yield from self._unreported_cuts()
                    return
                if self.buf[:idx].strip():  # blank lines between records are normal
                    yield file_reject(self.path, "junk-bytes", self._offset(self.base), bytes=idx)
                self._consume(idx)
                continue
            yield from self._one_record()

    def _find_record_start(self) -> int | None:
        while True:
            m = _AFTER_BODY.match(self.buf)
            if m:
                return m.end() - len(b"WARC/")
            i = self.buf.find(b"\nWARC/")
            if i >= 0:
                return i + 1
            if not self._fill():
                return None
            if len(self.buf) > (8 << 20):  # a long run of junk: drop it, keep a short tail
                self._consume(len(self.buf) - 16)

    def _need(self, n: int) -> bool:
        while len(self.buf) < n:
            if not self._fill():
                return False
        return True

    def _one_record(self) -> Iterator[RawRecord | Reject]:
        """One record in three steps: its header, the real end of its body, the record."""
        head = yield from self._header()
        if head is None:
            return
        got = yield from self._body(head)
        if got is not None:
            yield from self._record(head, *got)

    def _header(self) -> Iterator[Reject]:
        """Parse the next record's header; returns a _Head, or None (a reject was yielded)."""
        start = self.base
        head_end, sep = _header_end(self.buf)
        while head_end < 0 and len(self.buf) <= self.opts.max_header_bytes and self._fill():
            head_end, sep = _header_end(self.buf)
        if head_end < 0 or head_end > self.opts.max_header_bytes:
            reason = self._reason_at_eof("truncated") if self.done else "bad-header"
            yield file_reject(self.path, reason, self._offset(start))
            self._consume(5)  # past "WARC/", then resynchronise
            return None
        cut = self._cut_within(start, start + head_end + sep)
        if cut:
            yield file_reject(self.path, cut[1], cut[2])
            self._consume(cut[0] - self.base)
            return None
        headers = _parse_warc_headers(bytes(self.buf[:head_end]))
        rid = headers.get("warc-record-id", "").strip()
        try:
            length = int(headers.get("content-length", ""))
        except ValueError:
            length = -1
        return _Head(
            start=start, body_start=head_end + sep, headers=headers, rid=rid,
            rtype=headers.get("warc-type", "").lower(),
            url=headers.get("warc-target-uri", "").strip().strip("<>"),
            doc_id=stable_id(rid) if rid else stable_id(self.path, str(self._offset(start))),
            where={"file": self.path, "offset": self._offset(start)},
            length=max(length, -1))

    def _reject_body(self, head: "_Head", reason: str, body: bytes, **detail) -> Iterator[Reject]:
        """A damaged body: a document record becomes a reject keeping what arrived."""
        if head.rtype in _DOC_TYPES:
            self.stats.records += 1
            yield Reject.of(Origin(head.doc_id, head.url, self.path), STAGE, reason,
                            text=preview(body), **detail)
        else:
            yield file_reject(self.path, reason, detail["offset"], warc_type=head.rtype)

    def _body(self, head: "_Head") -> Iterator[Reject]:
        """Find where the body really ends; returns (body, length mismatch or None), or None."""
        body_start, length = head.body_start, head.length
        if length > self.opts.max_record_bytes:
            self._skip_bytes(body_start + length)
            if head.rtype in _DOC_TYPES:
                self.stats.records += 1
                yield Reject.of(Origin(head.doc_id, head.url, self.path), STAGE, "too-large",
                                **head.where, bytes=length, cap=self.opts.max_record_bytes)
            else:
                self.stats.skip(head.rtype or "unknown")
            return None
        end = body_start + length
        self._need(end + 16)
        cut = self._cut_within(head.start, head.start + max(end, body_start))
        if cut:  # the record's gzip member is damaged: keep what arrived in a reject
            body = bytes(self.buf[body_start:cut[0] - self.base])
            yield from self._reject_body(head, cut[1], body, file=self.path, offset=cut[2],
                                         declared=length, available=len(body))
            self._consume(max(cut[0] - self.base, body_start))
            return None
        flagged = None
        if length < 0 or not self._looks_like_end(end):
            # the declared length does not land on a record boundary: find the real one
            real = self._scan_for_next_record(body_start)
            if real is None:
                body = bytes(self.buf[body_start:])
                reason = self._reason_at_eof("content-length-overrun")
                yield from self._reject_body(head, reason, body, **head.where,
                                             declared=length, available=len(body))
                self._consume(len(self.buf))
                return None
            flagged = {"declared": length, "actual": real - body_start}
            end = real
        body = bytes(self.buf[body_start:end])
        if flagged:  # the scan stopped at the line break before the next record
            body = _TRAILER.sub(b"", body)
        self._consume(end)
        return body, flagged

    def _record(self, head: "_Head", body: bytes, flagged: dict | None
                ) -> Iterator[RawRecord | Reject]:
        """A complete record: skipped (not a document), rejected, or a RawRecord."""
        rtype, url, headers, where = head.rtype, head.url, head.headers, head.where
        is_doc = rtype in _DOC_TYPES
        if is_doc and rtype == "resource" and url and not _WEB_URL.match(url):
            # crawler bookkeeping stored as resources (wget's log and arguments)
            is_doc, rtype = False, "resource-non-web"
        if not is_doc:
            self.stats.skip(rtype or "unknown")
            return
        self.stats.records += 1
        origin = Origin(head.doc_id, url, self.path)
        if not url:
            yield Reject.of(origin, STAGE, "no-target-uri", text=preview(body), **where)
            return
        meta = {"warc_record_id": head.rid, "warc_date": headers.get("warc-date", ""), **where}
        if flagged:
            meta["warc_length_mismatch"] = flagged
        ctype = headers.get("content-type", "").lower()
        if rtype == "conversion":
            kind, body = "text", body.decode("utf-8", "replace")
        elif rtype == "response" and "application/http" in ctype:
            kind = "http"
        else:
            kind = "html"
            meta["content_type"] = headers.get("content-type", "")
        if headers.get("warc-identified-payload-type"):
            meta["identified_type"] = headers["warc-identified-payload-type"]
        if self.opts.text_only and kind != "text":
            yield Reject.of(origin, STAGE, "needs-extraction", **where)
            return
        if isinstance(body, str) and not body.strip():
            yield Reject.of(origin, STAGE, "empty-text", **where)
            return
        yield RawRecord(id=head.doc_id, url=url, source=self.path, kind=kind, body=body,
                        metadata=meta)

    def _looks_like_end(self, end: int) -> bool:
        """True when a declared body end is followed by the next record or by the file end."""
        self._need(end + 16)
        if end > len(self.buf):
            return False
        tail = bytes(self.buf[end:end + 16])
        if tail.startswith((b"\r\n\r\n", b"\n\n")) or _AFTER_BODY.match(tail):
            return True  # the record trailer, or the next record: the length was right
        return self.done and not tail.strip(b"\r\n") and len(self.buf) - end <= 16

    def _scan_for_next_record(self, body_start: int) -> int | None:
        pos = body_start
        while True:
            m = _NEXT_RECORD.search(self.buf, pos)
            if m:
                return m.start()
            pos = max(body_start, len(self.buf) - 16)
            if len(self.buf) - body_start > self.opts.max_record_bytes or not self._fill():
                return None

    def _skip_bytes(self, n: int) -> None:
        """Stream past n bytes without holding them all."""
        while n > 0:
            if not self.buf and not self._fill():
                return
            k = min(n, len(self.buf))
            self._consume(k)
            n -= k




def _header_end(buf: bytearray) -> tuple[int, int]:
    """Where the header block ends and how long its separator is (CRLF or bare LF files)."""
    crlf, lf = buf.find(b"\r\n\r\n"), buf.find(b"\n\n")
    if lf >= 0 and (crlf < 0 or lf < crlf):
        return lf, 2
    return crlf, 4


def _parse_warc_headers(block: bytes) -> dict[str, str]:
    headers: dict[str, str] = {}
    for line in block.replace(b"\r\n", b"\n").split(b"\n")[1:]:
        name, colon, value = line.partition(b":")
        if colon:
            headers[name.strip().decode("utf-8", "replace").lower()] = \
                value.strip().decode("utf-8", "replace")
    return headers


# ---- JSONL and Parquet ---------------------------------------------------------------------

def _pair_text(first, second) -> str | None:
    if isinstance(first, str) and isinstance(second, str) and first.strip() and second.strip():
        return f"{first.strip()}\n{second.strip()}"
    return None


def _row_record(row: dict, path: str, where: str, opts: ReaderOptions) -> RawRecord | Reject:
    if opts.parallel_fields:
        a, b = opts.parallel_fields[:2]
        text = _pair_text(row.get(a), row.get(b))
        row = {**row, "source_kind": "parallel"}
    else:
        text = row.get(opts.text_field)
    raw_id = row.get(opts.id_field)
    doc_id = str(raw_id) if raw_id not in (None, "") else stable_id(path, where)
    url = row.get(opts.url_field) or ""
    if not isinstance(text, str):
        return Reject(id=doc_id, url=str(url), stage=STAGE,
                      reason=f"{STAGE}:no-text-field", source=path,
                      text=json.dumps(row, ensure_ascii=False, default=str)[:1 << 20],
                      detail={"file": path, "at": where,
                              "field": opts.parallel_fields or opts.text_field})
    if not text.strip():
        return Reject(id=doc_id, url=str(url), stage=STAGE, reason=f"{STAGE}:empty-text",
                      source=path, detail={"file": path, "at": where})
    # our own output rows carry a metadata object: keep it flat, not nested
    meta = dict(row["metadata"]) if isinstance(row.get("metadata"), dict) else {}
    meta.update({k: v for k, v in row.items()
                 if k not in (opts.text_field, opts.id_field, opts.url_field, "metadata",
                              *opts.parallel_fields) and _jsonable(v)})
    meta.update({"file": path, "at": where})
    return RawRecord(id=doc_id, url=str(url), source=path, kind="text", body=text, metadata=meta)


def _jsonable(v: Any) -> bool:
    return isinstance(v, (str, int, float, bool, type(None), list, dict))


def _jsonl_records(path: str, stream: BinaryIO, gz: bool, opts: ReaderOptions,
                   stats: ReadStats) -> Iterator[RawRecord | Reject]:
    text_stream = gzip.GzipFile(fileobj=stream) if gz else stream
    lineno, offset = 0, 0
    try:
        for line in text_stream:
            lineno += 1
            here = offset
            offset += len(line)
            if not line.strip():
                continue
            stats.records += 1
            try:
                row = json.loads(line)
                if not isinstance(row, dict):
                    raise ValueError("not an object")
            except ValueError as e:
                yield Reject(id=stable_id(path, str(lineno)), url="", stage=STAGE,
                             reason=f"{STAGE}:bad-json", source=path,
                             text=line[:1 << 20].decode("utf-8", "replace"),
                             detail={"file": path, "line": lineno, "offset": here,
                                     "error": str(e)[:120]})
                continue
            yield _row_record(row, path, f"line {lineno}", opts)
    except (EOFError, zlib.error, OSError) as e:
        yield file_reject(path, "truncated-gzip" if gz else "read-error", offset,
                          line=lineno, error=str(e)[:120])


def _parquet_records(path: str, stream: BinaryIO, opts: ReaderOptions,
                     stats: ReadStats) -> Iterator[RawRecord | Reject]:
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(stream)
    except Exception as e:  # pyarrow raises several unrelated types for a bad footer
        yield file_reject(path, "bad-parquet", error=str(e)[:120])
        return
    row_no = 0
    for group in range(pf.num_row_groups):
        try:
            table = pf.read_row_group(group)
        except Exception as e:  # a damaged row group; the others may still be fine
            yield file_reject(path, "bad-parquet", row_group=group, error=str(e)[:120])
            continue
        for row in table.to_pylist():
            stats.records += 1
            yield _row_record(row, path, f"row {row_no}", opts)
            row_no += 1


def _text_records(path: str, stream: BinaryIO, gz: bool, stats: ReadStats
                  ) -> Iterator[RawRecord | Reject]:
    """Plain UTF-8 text: one document per paragraph (blank-line separated)."""
    fh = io.TextIOWrapper(gzip.GzipFile(fileobj=stream) if gz else stream, encoding="utf-8",
                          errors="replace")
    para: list[str] = []
    start = number = 0
    for lineno, line in enumerate(fh, 1):
        if line.strip():
            if not para:
                start = lineno
            para.append(line.rstrip("\n"))
            continue
        if para:
            number += 1
            stats.records += 1
            yield RawRecord(id=stable_id(path, str(start)), url="", source=path, kind="text",
                            body="\n".join(para), metadata={"file": path, "at": f"line {start}"})
            para = []
    if para:
        stats.records += 1
        yield RawRecord(id=stable_id(path, str(start)), url="", source=path, kind="text",
                        body="\n".join(para), metadata={"file": path, "at": f"line {start}"})


def _tsv_pairs(path: str, stream: BinaryIO, gz: bool, stats: ReadStats
               ) -> Iterator[RawRecord | Reject]:
    """Parallel text: ``english<TAB>chinese`` per line, each pair one document."""
    fh = io.TextIOWrapper(gzip.GzipFile(fileobj=stream) if gz else stream, encoding="utf-8",
                          errors="replace")
    for lineno, line in enumerate(fh, 1):
        if not line.strip():
            continue
        stats.records += 1
        cols = line.rstrip("\n").split("\t")
        text = _pair_text(*cols[:2]) if len(cols) >= 2 else None
        rid = stable_id(path, str(lineno))
        if text is None:
            yield Reject(id=rid, url="", stage=STAGE, reason=f"{STAGE}:not-a-pair", text=line,
                         source=path, detail={"file": path, "line": lineno})
            continue
        yield RawRecord(id=rid, url="", source=path, kind="text", body=text,
                        metadata={"file": path, "at": f"line {lineno}", "source_kind": "parallel"})


# ---- entry point -------------------------------------------------------------------------

def read_file(path: str, opts: ReaderOptions | None = None,
              stats: ReadStats | None = None,
              storage_options: dict | None = None) -> Iterator[RawRecord | Reject]:
    """Every record of one file, as RawRecords and Rejects. Raises only ``UnreadableFile``."""
    opts = opts or ReaderOptions()
    stats = stats if stats is not None else ReadStats()
    try:
        raw = fsspec.open(path, "rb", **(storage_options or {})).open()
    except (OSError, ValueError) as e:
        raise UnreadableFile(f"{path}: {e}") from None
    try:
        magic = raw.read(4)
        raw.seek(0)
        gz = magic.startswith(GZIP_MAGIC)
        head = _decompressed_head(raw, magic)
        raw.seek(0)
        fmt = detect_format(path, head)
        if fmt == "unknown":
            raise UnreadableFile(f"{path}: not a WARC, JSONL, Parquet, .txt or .tsv file "
                                 f"(starts with {bytes(head[:12])!r})")
        stream = raw
        if magic.startswith(ZSTD_MAGIC):
            import zstandard
            stream = io.BufferedReader(
                zstandard.ZstdDecompressor().stream_reader(raw, read_across_frames=True))
        if fmt == "warc":
            yield from _WarcParser(path, stream, gz, opts, stats).records()
        elif fmt == "jsonl":
            yield from _jsonl_records(path, stream, gz, opts, stats)
        elif fmt == "text":
            yield from _text_records(path, stream, gz, stats)
        elif fmt == "tsv":
            yield from _tsv_pairs(path, stream, gz, stats)
        else:
            yield from _parquet_records(path, stream, opts, stats)
    finally:
        raw.close()


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
