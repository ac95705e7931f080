"""Character helpers shared by readers, extraction and the text passes.

``CJK_CHARS`` and ``HAN_CHARS`` are the one definition of which characters count as CJK
(each is one reading unit and one dedup token) and as Chinese characters; ``preview`` is what a reject keeps of a record's body.
"""

from __future__ import annotations

import re

HAN_CHARS = r"\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
"""Han ideographs: extension A, unified and compatibility (a regex character-class body)."""
CJK_CHARS = r"\u3040-\u30ff" + HAN_CHARS + r"\uac00-\ud7af"
"""Kana, the Han ideographs and Hangul syllables."""
CJK = re.compile(f"[{CJK_CHARS}]")
HAN = re.compile(f"[{HAN_CHARS}]")

PREVIEW_CAP = 1 << 20
"""A reject keeps at most this much of the record (characters of text, bytes of a body)."""


def preview(body: bytes | str) -> str:
    """The start of a record's body as text, for a reject: nothing is lost, nothing is huge."""
    if isinstance(body, str):
        return body[:PREVIEW_CAP]
    return body[:PREVIEW_CAP].decode("utf-8", "replace")
