"""The WARC / WET parser: records found by their headers, bodies ended by Content-Length
when it lands on a record boundary and by a scan for the next record when it does not;
every broken record becomes a reject naming the file and byte offset."""

from __future__ import annotations

import dataclasses
import re
from typing import BinaryIO, Iterator

from skypile.document import Origin, Reject, stable_id
from skypile.files.gzip_members import GzipMembers
from skypile.files.records import STAGE, RawRecord, ReaderOptions, ReadStats, file_reject
from skypile.text.chars import preview

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


class WarcParser:
    """Parses WARC records from a byte stream, gzip-member aware, never raising.

    The declared Content-Length is trusted when the next record starts right after it.
    When it does not, the record ends at the next blank line followed by a WARC version
    line; the record is kept and flagged with ``metadata.warc_length_mismatch``. A body
    that runs past the end of the file is rejected.
    """

    def __init__(self, path: str, raw: BinaryIO, gz: bool, opts: ReaderOptions,
                 stats: ReadStats):
        self.path, self.opts, self.stats = path, opts, stats
        self.gz = GzipMembers(raw) if gz else None
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
