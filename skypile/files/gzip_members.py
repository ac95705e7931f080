"""Member-by-member gzip reading: Common Crawl writes one gzip member per WARC record, so
a damaged member costs one record, and each record's member offset can be reported."""

from __future__ import annotations

import zlib
from typing import BinaryIO, Iterator

class GzipMembers:
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
