"""File and member names made safe to write, without hiding what they were.

A name from the file system, a tar or a zip may hold bytes that are not UTF-8 (Python
gives them as lone surrogates); such a name cannot go into UTF-8 JSON as it is, and
dropping or replacing the bytes would make two names look alike. So the bad bytes are
shown as ``\\xNN`` and the record says which field was changed; ids are made from the
original names elsewhere, so they never collide.
"""

from __future__ import annotations


def printable(name: str) -> tuple[str, bool]:
    """``name`` as valid Unicode, and whether it had to change.

    Names from the file system and tar come with undecodable bytes as lone surrogates
    (``surrogateescape``); those bytes are shown as ``\\xNN`` so that the name can be
    written as UTF-8 JSON and still says what the bytes were.
    """
    try:
        name.encode("utf-8")
        return name, False
    except UnicodeEncodeError:
        pass
    try:
        raw = name.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # a surrogate that is no escaped byte (JSON "\ud800")
        raw = name.encode("utf-8", "surrogatepass")
    return raw.decode("utf-8", "backslashreplace"), True


def shown(**names: str) -> tuple[dict[str, str], dict[str, str]]:
    """Printable versions of ``names``, and ``{field: "invalid-utf8"}`` for those changed."""
    out, repaired = {}, {}
    for field, value in names.items():
        out[field], changed = printable(value)
        if changed:
            repaired[field] = "invalid-utf8"
    return out, repaired


def printable_detail(detail: dict) -> dict:
    """A reject's detail with its text values printable (an OSError's text names the path)."""
    return {k: printable(v)[0] if isinstance(v, str) else v for k, v in detail.items()}
