"""Source files' bytes to text: the encoding policy of the code readers.

Most source is UTF-8, but a corpus of repositories also holds legacy encodings (cp1252,
cp1251, GBK, ...). Decoding those lossily would put mojibake into training text, and
guessing on ambiguous bytes would do the same with more confidence; so a file is text
only when strict UTF-8 (or a BOM) says so, or when charset-normalizer is sure, and is
otherwise rejected as ``binary`` or ``undecodable``.
"""

from __future__ import annotations

import codecs
import re

_BOMS = ((codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32"),
         (codecs.BOM_UTF8, "utf-8-sig"), (codecs.BOM_UTF16_LE, "utf-16"),
         (codecs.BOM_UTF16_BE, "utf-16"))
MAX_CHAOS = 0.1
"""charset-normalizer's mess ratio above which a guess is not trusted."""
_LETTER_RUN = re.compile(r"[^\x00-\x7f]{3,}")


def decode_source(data: bytes) -> tuple[str | None, str]:
    """``(text, encoding)``; or ``(None, reason)`` with reason ``binary`` / ``undecodable``.

    UTF-8 first (strict; a BOM selects UTF-8/16/32), then charset-normalizer on the bytes,
    taken only when confident (:func:`_guess`). Never a lossy decode: no mojibake.
    """
    for bom, enc in _BOMS:
        if data.startswith(bom):
            try:
                return data.decode(enc), enc
            except UnicodeDecodeError:
                return None, "undecodable"
    if b"\x00" in data[:8192]:
        return None, "binary"
    try:
        return data.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        pass
    enc = _guess(data)
    if enc is None:
        return None, "undecodable"
    try:
        return data.decode(enc), enc
    except (UnicodeDecodeError, LookupError):
        return None, "undecodable"


def _guess(data: bytes) -> str | None:
    """A legacy encoding for ``data`` when charset-normalizer is sure of the text.

    Its best guess must be clean (mess ratio <= MAX_CHAOS), and the guesses as clean as
    it must all give the same text; short samples are often ambiguous (GBK bytes are
    also valid Big5) and those are refused. One tie is broken on purpose: when cp1252
    (Western European, latin-1's superset) is among them and its text reads like
    Western text (accented letters alone, not whole words of them as in Cyrillic
    mojibake), it wins: it is by far the most common legacy encoding of source files.
    """
    from charset_normalizer import from_bytes  # a heavy import, only for non-UTF-8 files

    matches = from_bytes(data)
    best = matches.best()
    if best is None or best.chaos > MAX_CHAOS:
        return None
    ties = [m for m in matches if m.chaos <= best.chaos + 0.01]
    if any("cp1252" in m.could_be_from_charset for m in ties):
        try:
            text = data.decode("cp1252")
        except UnicodeDecodeError:
            text = ""
        if text and not _LETTER_RUN.search(text):
            return "cp1252"
    if len({str(m) for m in ties}) == 1:
        return best.encoding
    return None
