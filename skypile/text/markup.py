"""Cheap looks at raw HTML, without a parser: metadata from the head, a nesting-depth
guard, rough visible text for the language gate, and unwrapping of unknown root tags.
Each is linear in the page, so a hostile page cannot make it quadratic.
"""

from __future__ import annotations

import html as htmllib
import re

_META = re.compile(r"<meta\s[^>]*>", re.I)
_ATTR = re.compile(r"""([\w:.-]+)\s*=\s*("[^"]*"|'[^']*'|[^\s"'>]+)""")
_TITLE = re.compile(r"<title[^>]*>(.*?)</title\s*>", re.I | re.S)
_DAY = re.compile(r"(\d{4})-(\d{2})-(\d{2})")
_DATE_KEYS = ("article:published_time", "datepublished", "og:published_time", "pubdate",
              "publishdate", "date", "dc.date", "dc.date.issued", "dcterms.date",
              "dcterms.created", "sailthru.date", "article:modified_time", "datemodified")


def fast_metadata(html: str, scan: int = 200_000) -> dict[str, str]:
    """Title, site name and date from the page head (meta tags, <title>): no htmldate run.

    trafilatura's own metadata pass (with_metadata, htmldate) costs more than the text
    extraction itself; ``extract.metadata = full`` still uses it.
    """
    head = html[:scan]
    metas: dict[str, str] = {}
    for tag in _META.findall(head):
        attrs = {k.lower(): v.strip("\"'") for k, v in _ATTR.findall(tag)}
        key = (attrs.get("property") or attrs.get("name") or attrs.get("itemprop") or "").lower()
        if key and "content" in attrs and key not in metas:
            metas[key] = htmllib.unescape(attrs["content"]).strip()
    title = metas.get("og:title") or metas.get("twitter:title") or ""
    if not title and (m := _TITLE.search(head)):
        title = _SPACES.sub(" ", htmllib.unescape(_ANY_TAG.sub(" ", m.group(1)))).strip()
    date = ""
    for key in _DATE_KEYS:
        if key in metas and (m := _DAY.search(metas[key])):
            date = "-".join(m.groups())
            break
    return {"title": title[:500], "date": date,
            "sitename": (metas.get("og:site_name") or metas.get("application-name") or "")[:200]}


_TAG = re.compile(r"<(/?)(?:div|span|table|td|tr|ul|ol|li|section|article|blockquote|font|b|i|"
                  r"em|strong|p|a|center|form|dl|dd|nav|header|footer|main|aside)[\s>]", re.I)


def nesting_depth(html: str, limit: int) -> int:
    """Depth of nested container tags, counted until it passes ``limit``.

    Unclosed tags on sloppy pages make this an over-estimate; the limit is set far above
    what real pages reach.
    """
    if html.count("<") <= limit:  # too few tags to nest that deep
        return 0
    depth = peak = 0
    for m in _TAG.finditer(html):
        depth = depth - 1 if m.group(1) else depth + 1
        if depth > peak:
            peak = depth
            if peak > limit:
                break
        depth = max(depth, 0)
    return peak


_INVISIBLE_OPEN = re.compile(r"<(script|style|noscript|template|svg|head)\b|<!--", re.I)
_ANY_TAG = re.compile(r"<[^>]*>")
_SPACES = re.compile(r"\s+")


def _drop_invisible(html: str) -> str:
    """Scripts, styles, the head and comments cut out in one linear pass (an element that
    is never closed hides the rest of the page, as it would in a browser)."""
    low, out, pos = html.lower(), [], 0
    while (m := _INVISIBLE_OPEN.search(html, pos)) is not None:
        out.append(html[pos:m.start()])
        if m.group(1) is None:  # a comment
            end = low.find("-->", m.end())
            pos = -1 if end < 0 else end + 3
        else:
            end = low.find(f"</{m.group(1).lower()}", m.end())
            pos = -1 if end < 0 else (low.find(">", end) + 1 or len(html))
        if pos < 0:
            return " ".join(out)
        out.append(" ")
    out.append(html[pos:])
    return "".join(out)


def rough_text(html: str, limit: int = 3000, scan: int = 300_000) -> str:
    """The visible text of a page, roughly (tags stripped by regex): enough for language id."""
    text = htmllib.unescape(_ANY_TAG.sub(" ", _drop_invisible(html[:scan])))
    return _SPACES.sub(" ", text).strip()[:limit]


_HTML_ROOTS = re.compile(r"\s*(?:<!--.*?-->\s*)*<(?:!doctype|\?xml|html|head|body|meta|title|"
                         r"link|script|style|div|table|p|form|center|frameset|base)\b", re.I | re.S)
_WRAPPER = re.compile(r"\s*<([a-z][\w:-]*)\b[^>]*>", re.I)


def unwrap_unknown_root(html: str) -> str:
    """Swap a non-HTML wrapper element around a page (as some archive dumps add) for <html>.

    lxml treats an unknown root element as the document and the page inside it is lost.
    """
    if _HTML_ROOTS.match(html):
        return html
    m = _WRAPPER.match(html)
    if not m:
        return html
    close = re.compile(rf"</{re.escape(m.group(1))}\s*>\s*$", re.I)
    return "<html>" + close.sub("</html>", html[m.end():])
