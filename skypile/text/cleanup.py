"""Line-level clean-up of extracted text: the report's "structural extraction" rules.

trafilatura finds the main block of a page; what it returns still carries layout-table
rows, navigation and breadcrumb lines, copyright and contact blocks, share / subscribe /
comment prompts, the title repeated as a fragment, and very short isolated lines. Each rule
here is language-aware (Chinese counts characters, space-delimited text counts words) and
counts what it removed, so the counts can land in the document's metadata.
"""

from __future__ import annotations

import collections
import dataclasses
import itertools
import re
import unicodedata
from skypile.text.chars import CJK_CHARS

_LETTER = rf"[^\W\d_{CJK_CHARS}]"  # a letter of a space-delimited script
_UNIT = re.compile(rf"[{CJK_CHARS}]|{_LETTER}+(?:['’]{_LETTER}+)?|\d+(?:[.,]\d+)*")
"""One reading unit: a CJK character, a word (with one inner apostrophe) or a number."""
_TERMINAL = tuple(".!?。！？…\"”’)）」』:：;；")


def units(line: str) -> int:
    """Length in reading units: CJK characters plus words of space-delimited scripts."""
    return len(_UNIT.findall(line))


def units_upto(text: str, cap: int) -> int:
    """``min(units(text), cap)``, reading no further into the text than the cap needs
    (a threshold test on a whole page need not count all of it)."""
    return sum(1 for _ in itertools.islice(_UNIT.finditer(text), cap))


@dataclasses.dataclass
class CleanupConfig:
    """Thresholds of the clean-up pass (``extract.cleanup`` in the pipeline config)."""

    min_line_units: int = 3
    """Lines shorter than this (words, or CJK characters) without end punctuation are dropped."""
    nav_min_segments: int = 3
    """A line split by |, ·, >, » etc. into at least this many short segments is navigation."""
    nav_max_segment_units: float = 4.0
    """...when its segments are on average at most this long."""
    boilerplate_max_units: int = 40
    """Copyright / contact / share lines are only dropped when at most this long."""
    min_doc_units: int = 10
    """A page whose cleaned text is shorter than this has no main text."""


_TABLE_SEPARATOR = re.compile(r"^\|?\s*:?-{3,}:?\s*(\|\s*:?-{3,}:?\s*)*\|?\s*$")
_NAV_SPLIT = re.compile(r"\s*(?:\\\||\||｜|·|•|»|«|›|>>|->|＞|>|/\s|\s/|┊|】【|\]\s*\[)\s*")
_BREADCRUMB = re.compile(
    r"^\s*(?:当前位置|您的位置|您现在的位置|你的位置|你现在的位置|现在位置|所在位置|位置)\s*[:：]"
    r"|^\s*(?:首页|主页|home)\s*(?:>|>>|->|»|›|＞|/)", re.I)
_COPYRIGHT = re.compile(
    r"copyright\s*(?:©|\(c\)|\d{4}|@)|©|\(c\)\s*\d{4}|all rights reserved|版权所有|版权声明"
    r"|不得转载|未经授权"
    r"|icp\s*(?:备|证)|京公网安备|增值电信业务", re.I)
_CONTACT = re.compile(
    r"(?:电话|传真|邮编|邮箱|地址|联系人|联系我们|客服|热线|e-?mail|tel\b|phone|fax|contact us)"
    r"\s*[:：]?", re.I)
_CONTACT_VALUE = re.compile(r"[\w.+-]+@[\w-]+\.[\w.]+|(?:\+?\d[\d\s()-]{6,}\d)")
_SHARE = re.compile(
    r"^\W*(?:share\b|share (?:this|on)|tweet\b|email this|print(?: this)?\b|subscribe|sign up|"
    r"follow us|like us on|read more|click here|more from|related (?:articles|posts|stories)|"
    r"tell us what you think|leave a (?:comment|reply)|\d*\s*comments?\b|advertisement\b|"
    r"发表评论|查看评论|网友评论|我要评论|关闭窗口|打印本页|打印|收藏|加入收藏|分享到|分享|"
    r"推荐给朋友|返回顶部|返回首页|上一篇|下一篇|相关(?:内容|文章|新闻|阅读|链接|专题)|"
    r"责任编辑|编辑[:：]|来源[:：]|发表时间|发布时间|更新时间|点击[:：]|阅读次数|字体[:：]?[大中小])",
    re.I)


_NON_WORD = re.compile(r"\W+")
_CELL_SPLIT = re.compile(r"(?<!\\)\|")
_NUMERIC_CELL = re.compile(r"[\W\d_]*\d[\W\d_]*\w{0,3}")
_BLANKS = re.compile(r"[ \t\u00a0\u3000]+")
_ODD_BLANK = re.compile(r"[\t\u00a0\u3000]|  ")


def _norm(s: str) -> str:
    return _NON_WORD.sub("", unicodedata.normalize("NFKC", s).lower())


def _split_table_row(line: str) -> list[str] | None:
    """Cells of a markdown table row as trafilatura renders layout tables, else None."""
    s = line.strip()
    if not (s.startswith("|") and s.endswith("|")) or len(s) < 2:
        return None
    cells = [c.replace("\\|", "|").strip() for c in _CELL_SPLIT.split(s[1:-1])]
    return [c for c in cells if c]


def _is_data_row(cells: list[str]) -> bool:
    """A row of a real data table: several cells, at least half of them numeric."""
    numeric = sum(1 for c in cells if _NUMERIC_CELL.fullmatch(c))
    return len(cells) >= 3 and numeric * 2 >= len(cells)


_NAV_MARK = re.compile(r"[|｜·•»«›>＞/┊】\]]")
"""A character that every separator of ``_NAV_SPLIT`` contains: a line without one is a
single segment, told without splitting it."""


def _is_navigation(line: str, n_units: int, cfg: CleanupConfig) -> bool:
    if n_units <= cfg.boilerplate_max_units and _BREADCRUMB.search(line):
        return True
    if cfg.nav_min_segments > 1 and not _NAV_MARK.search(line):
        return False
    segments = [s for s in _NAV_SPLIT.split(line) if s.strip()]
    if len(segments) < cfg.nav_min_segments:
        return False
    sizes = [units(s) for s in segments]
    return sum(sizes) / len(sizes) <= cfg.nav_max_segment_units


class _Title:
    """A page title, measured once per page rather than once per line."""

    __slots__ = ("norm", "max_units")

    def __init__(self, title: str):
        self.norm = _norm(title) if title else ""
        self.max_units = 2 * units(title) + 2 if title else -1

    def repeats(self, line: str, n: int) -> bool:
        """Whether a line of ``n`` units is the title, or a fragment of it, again."""
        if n > self.max_units:
            return False
        line_norm = _norm(line)
        return bool(line_norm) and (line_norm == self.norm or self.norm.startswith(line_norm)
                                    or line_norm.startswith(self.norm))


def classify_line(line: str, title: str, cfg: CleanupConfig) -> str | None:
    """The rule that removes this line, or None to keep it."""
    return _classify(line, _Title(title), cfg)


def _classify(line: str, title: _Title, cfg: CleanupConfig) -> str | None:
    n = units(line)
    if n == 0:
        return "empty"
    if _is_navigation(line, n, cfg):
        return "navigation"
    if n <= cfg.boilerplate_max_units:
        if _COPYRIGHT.search(line):
            return "copyright"
        if _CONTACT.search(line) and _CONTACT_VALUE.search(line):
            return "contact"
        if _SHARE.search(line):
            return "share"
    if title.repeats(line, n):
        return "title"
    if n < cfg.min_line_units and not line.rstrip().endswith(_TERMINAL):
        return "short"
    return None


def clean_text(text: str, title: str = "",
               cfg: CleanupConfig | None = None) -> tuple[str, dict[str, int]]:
    """Clean extracted text line by line. Returns (text, removed line counts by rule)."""
    cfg = cfg or CleanupConfig()
    removed: collections.Counter[str] = collections.Counter()
    out: list[str] = []
    page_title = _Title(title)
    for raw in text.splitlines():
        if _TABLE_SEPARATOR.match(raw.strip()):
            removed["table-rule"] += 1
            continue
        cells = _split_table_row(raw)
        if cells is not None:
            if _is_data_row(cells):
                out.append(raw.strip())
                continue
            # a row of short word-only cells is a menu; long cells are page layout
            if len(cells) >= cfg.nav_min_segments and \
                    sum(map(units, cells)) / len(cells) <= cfg.nav_max_segment_units:
                removed["navigation"] += 1
                continue
            pieces = cells
        else:
            pieces = [raw]
        for piece in pieces:
            # only runs of blanks other than one space change under the substitution
            line = (_BLANKS.sub(" ", piece) if _ODD_BLANK.search(piece) else piece).strip()
            rule = _classify(line, page_title, cfg)
            if rule is None:
                out.append(line)
            elif rule != "empty":
                removed[rule] += 1
    return "\n".join(out), dict(removed)
