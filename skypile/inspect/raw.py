"""The raw page behind a sampled document, read back from its WARC by byte offset.

Rejects and documents name the file and offset their record came from (``file``,
``offset``: the gzip member offset of a Common Crawl WARC). Only sampled items are read
back, one record each, so the cost does not grow with the corpus. Whatever cannot be
read (the input moved, a JSONL source, a damaged record) gives None: the report says
"raw page not available".
"""

from __future__ import annotations

import re

import fsspec

from skypile.files import payload
from skypile.files.records import ReaderOptions, ReadStats
from skypile.files.warc import WarcParser
from skypile.text.markup import rough_text

GZIP_MAGIC = b"\x1f\x8b"
MAX_RECORDS = 50
"""Records scanned from the offset before giving up (a file gzipped as one member
reports offset 0 for every record)."""


def raw_text(file: str, offset: int, record_id: str, limit: int = 20_000,
             storage_options: dict | None = None) -> str | None:
    """The tag-stripped text of the page with id ``record_id`` at ``offset`` in ``file``."""
    try:
        body = _record_body(file, int(offset), record_id, storage_options)
        if body is None:
            return None
        return _visible_text(body, limit)
    except (OSError, ValueError, EOFError, payload.PayloadError):
        return None


def _record_body(file: str, offset: int, record_id: str,
                 storage_options: dict | None) -> tuple[str, bytes] | None:
    with fsspec.open(file, "rb", **(storage_options or {})) as raw:
        raw.seek(offset)
        gz = raw.read(2) == GZIP_MAGIC
        raw.seek(offset)
        if not gz and raw.read(5) != b"WARC/":
            return None  # not a WARC record there (JSONL, Parquet, WET text...)
        raw.seek(offset)
        parser = WarcParser(file, raw, gz, ReaderOptions(), ReadStats())
        for n, rec in enumerate(parser.records()):
            if n >= MAX_RECORDS:
                return None
            if getattr(rec, "id", None) == record_id and rec.kind in ("http", "html"):
                body = rec.body if isinstance(rec.body, bytes) else rec.body.encode("utf-8")
                return rec.kind, body
    return None


def _visible_text(record: tuple[str, bytes], limit: int) -> str:
    kind, body = record
    content_type = ""
    if kind == "http":
        resp = payload.parse_response(body)
        content_type = resp.headers.get("content-type", "")
        body = resp.body
        if "chunked" in resp.headers.get("transfer-encoding", "").lower():
            body = payload.dechunk(body)
        if resp.headers.get("content-encoding"):
            body = payload.decode_content(body, resp.headers["content-encoding"])
    if payload.sniff_binary(body):
        return "(binary content: " + payload.sniff_binary(body) + ")"
    text, _charset, _source = payload.decode_text(body, content_type)
    return _paragraphs(text, limit)


def _paragraphs(html: str, limit: int) -> str:
    """Visible text, with block elements turned into line breaks so it reads as a page."""
    html = re.sub(r"(?i)<(?:br|/p|/div|/li|/h\d|/tr|/table|/section|/article)\b[^>]*>",
                  "\n\x00", html)
    text = rough_text(html, limit=limit * 2, scan=2_000_000)
    lines = (line.strip() for line in text.split("\x00"))
    return "\n".join(line for line in lines if line)[:limit]
