"""The HTTP layer of a crawled response: status, transfer and content encodings, charset.

Everything here works on bytes already in memory and never touches the network. Each
failure raises ``PayloadError`` with a short reason; the caller turns it into a reject.
"""

from __future__ import annotations

import codecs
import dataclasses
import re
import zlib

import charset_normalizer

try:  # brotli is a hard dependency in pyproject; the guard keeps the error message clear
    import brotli
except ImportError:  # pragma: no cover
    brotli = None


class PayloadError(Exception):
    """A payload that cannot become text. ``reason`` is a short slug, ``detail`` a dict."""

    def __init__(self, reason: str, **detail):
        super().__init__(reason)
        self.reason = reason
        self.detail = detail


@dataclasses.dataclass(slots=True)
class HttpResponse:
    status: int
    headers: dict[str, str]  # lower-cased names; repeated headers joined with ", "
    body: bytes


@dataclasses.dataclass(slots=True)
class Limits:
    """Hard caps that keep one hostile payload from exhausting a worker."""

    max_payload_bytes: int = 20 * 1024 * 1024
    """Largest body accepted, before and after Content-Encoding is undone."""
    max_header_bytes: int = 64 * 1024
    """Largest HTTP header block."""


_STATUS_RE = re.compile(rb"^HTTP/\d(?:\.\d)?\s+(\d{3})")


def parse_response(block: bytes, limits: Limits = Limits()) -> HttpResponse:
    """Split a raw HTTP/1.x response (status line, headers, body) as stored in a WARC."""
    end = block.find(b"\r\n\r\n")
    sep = 4
    if end < 0 or end > limits.max_header_bytes:
        # some crawlers store bare LF line ends
        end, sep = block.find(b"\n\n"), 2
    if end < 0 or end > limits.max_header_bytes:
        raise PayloadError("http-malformed", why="no end of headers")
    head, body = block[:end], block[end + sep:]
    lines = head.replace(b"\r\n", b"\n").split(b"\n")
    m = _STATUS_RE.match(lines[0])
    if not m:
        raise PayloadError("http-malformed", why="bad status line")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, colon, value = line.partition(b":")
        if not colon:
            continue
        key = name.strip().decode("latin-1").lower()
        val = value.strip().decode("latin-1")
        headers[key] = f"{headers[key]}, {val}" if key in headers else val
    return HttpResponse(int(m.group(1)), headers, body)


def dechunk(body: bytes) -> bytes:
    """Undo ``Transfer-Encoding: chunked``; a truncated stream keeps what arrived."""
    out, pos = bytearray(), 0
    while True:
        eol = body.find(b"\r\n", pos)
        if eol < 0:
            break
        size_field = body[pos:eol].split(b";", 1)[0].strip()
        try:
            size = int(size_field, 16)
        except ValueError:
            raise PayloadError("bad-transfer-encoding") from None
        if size == 0:
            break
        out += body[eol + 2:eol + 2 + size]
        pos = eol + 2 + size + 2
    return bytes(out)


def _inflate(data: bytes, wbits: int, cap: int) -> bytes:
    d = zlib.decompressobj(wbits)
    out = d.decompress(data, cap + 1)
    if len(out) > cap:
        raise PayloadError("decompression-bomb", cap=cap)
    return out + d.flush()


def decode_content(body: bytes, encoding: str, limits: Limits = Limits()) -> bytes:
    """Undo ``Content-Encoding`` (gzip, deflate, br; stacked), never beyond the size cap."""
    cap = limits.max_payload_bytes
    for enc in [e.strip().lower() for e in encoding.split(",") if e.strip()][::-1]:
        try:
            if enc in ("gzip", "x-gzip"):
                body = _inflate(body, 16 + zlib.MAX_WBITS, cap)
            elif enc == "deflate":
                try:
                    body = _inflate(body, zlib.MAX_WBITS, cap)
                except zlib.error:  # servers often send raw deflate without the zlib header
                    body = _inflate(body, -zlib.MAX_WBITS, cap)
            elif enc == "br":
                body = _unbrotli(body, cap)
            elif enc in ("identity", "none"):
                continue
            else:
                raise PayloadError("bad-content-encoding", encoding=enc)
        except (zlib.error, EOFError) as e:
            raise PayloadError("bad-content-encoding", encoding=enc, error=str(e)[:80]) from None
    return body


def _unbrotli(data: bytes, cap: int) -> bytes:
    if brotli is None:  # pragma: no cover
        raise PayloadError("bad-content-encoding", encoding="br", error="brotli not installed")
    dec = brotli.Decompressor()
    out = bytearray()
    step = 1 << 16
    try:
        for i in range(0, max(len(data), 1), step):
            out += dec.process(data[i:i + step])
            if len(out) > cap:
                raise PayloadError("decompression-bomb", cap=cap)
    except brotli.error as e:
        raise PayloadError("bad-content-encoding", encoding="br", error=str(e)[:80]) from None
    return bytes(out)


# ---- what kind of payload is this ------------------------------------------------------

HTML_TYPES = ("text/html", "application/xhtml+xml", "application/xml", "text/xml")
TEXT_TYPES = ("text/plain",)

_MAGIC = (
    (b"%PDF", "application/pdf"), (b"\x89PNG", "image/png"), (b"GIF8", "image/gif"),
    (b"\xff\xd8\xff", "image/jpeg"), (b"PK\x03\x04", "application/zip"),
    (b"\x1f\x8b", "application/gzip"), (b"RIFF", "application/riff"),
    (b"\x00\x00\x01\x00", "image/x-icon"), (b"OggS", "application/ogg"),
    (b"ID3", "audio/mpeg"), (b"\x7fELF", "application/x-elf"),
)
_BOMS = (codecs.BOM_UTF8, codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)
_CONTROL = bytes(range(0, 9)) + bytes(range(14, 32))


def media_type(content_type: str) -> str:
    return content_type.split(";", 1)[0].strip().lower()


def sniff_binary(body: bytes) -> str | None:
    """Name the binary format of a payload, or None when it looks like text."""
    head = body[:16]
    for magic, name in _MAGIC:
        if head.startswith(magic):
            return name
    if head.startswith(_BOMS):
        return None
    sample = body[:8192]
    if not sample:
        return None
    ctrl = sum(sample.count(bytes([c])) for c in _CONTROL)
    # a stray NUL or escape happens in real pages; binary data is full of them
    if sample.count(b"\x00") / len(sample) > 0.01 or ctrl / len(sample) > 0.05:
        return "application/octet-stream"
    return None


# ---- charset -----------------------------------------------------------------------------

_META_RE = re.compile(rb"""<meta[^>]{0,512}?charset\s*=\s*["']?\s*([a-zA-Z0-9_.:\-]+)""", re.I)
# an encoding attribute on an XML declaration or on an archive's wrapper element
_XML_RE = re.compile(rb"""<[?a-z][^>]{0,300}?\bencoding\s*=\s*["']([a-zA-Z0-9_.:\-]+)""", re.I)

# What browsers actually use for the labels pages declare (WHATWG Encoding Standard).
_ALIASES = {
    "gb2312": "gb18030", "gbk": "gb18030", "x-gbk": "gb18030", "gb_2312-80": "gb18030",
    "big5": "big5hkscs", "iso-8859-1": "cp1252", "latin1": "cp1252", "ascii": "cp1252",
    "us-ascii": "cp1252", "unicode": "utf-16", "utf8": "utf-8", "x-sjis": "shift_jis",
}


def _normalise_charset(label: str | None) -> str | None:
    if not label:
        return None
    label = label.strip().strip("\"'").lower()
    label = _ALIASES.get(label, label)
    try:
        return codecs.lookup(label).name
    except LookupError:
        return None


def header_charset(content_type: str) -> str | None:
    m = re.search(r"charset\s*=\s*[\"']?([^\s;\"']+)", content_type or "", re.I)
    return _normalise_charset(m.group(1)) if m else None


def meta_charset(body: bytes) -> str | None:
    head = body[:8192]
    m = _META_RE.search(head) or _XML_RE.search(head)
    return _normalise_charset(m.group(1).decode("ascii", "ignore")) if m else None


def _try_decode(body: bytes, charset: str, tolerance: float) -> str | None:
    try:
        return body.decode(charset)
    except UnicodeDecodeError:
        text = body.decode(charset, errors="replace")
        bad = text.count("\ufffd")
        return text if bad <= tolerance * max(len(text), 1) else None
    except LookupError:
        return None


def decode_text(body: bytes, content_type: str = "") -> tuple[str, str, str]:
    """Bytes to text: HTTP header charset, then the page's meta tag, then detection.

    A declared charset that does not fit the bytes (more than 0.5% invalid sequences) is
    passed over for the next source. Returns (text, charset, where it came from).
    """
    for bom, name in ((codecs.BOM_UTF8, "utf-8-sig"), (codecs.BOM_UTF16_LE, "utf-16"),
                      (codecs.BOM_UTF16_BE, "utf-16")):
        if body.startswith(bom):
            return body.decode(name, errors="replace"), name, "bom"
    for source, cs in (("header", header_charset(content_type)), ("meta", meta_charset(body))):
        if cs:
            text = _try_decode(body, cs, 0.005)
            if text is not None:
                return text, cs, source
    text = _try_decode(body, "utf-8", 0.0)
    if text is not None:
        return text, "utf-8", "detected"
    best = charset_normalizer.from_bytes(body[:65536]).best()
    cs = _normalise_charset(best.encoding) if best is not None else None
    if cs:
        text = _try_decode(body, cs, 0.02)
        if text is not None:
            return text, cs, "detected"
    return body.decode("utf-8", errors="replace"), "utf-8", "fallback"


_BAD_CHARS = re.compile("[\x00-\x08\x0b\x0e-\x1f\x7f\ufffe\uffff]")


def strip_control(text: str) -> str:
    """Drop C0 controls (keeping tab, newline, form feed, CR), DEL and non-characters."""
    return _BAD_CHARS.sub("", text)
