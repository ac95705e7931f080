"""Cheap looks at raw HTML, without a parser: metadata from the head, a nesting-depth
guard, rough visible text for the language gate, unwrapping of unknown root tags, and
whether a text is HTML at all (``looks_like_html``: a JSONL text to extract, or a
document that must not pass as clean text). Each is linear in the page, so a hostile
page cannot make it quadratic.
"""

from __future__ import annotations

import html as htmllib
import re

import numpy as np

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
    """Depth of nested container tags, counted until it passes ``limit`` (a deeper page
    reads as ``limit + 1``).

    Unclosed tags on sloppy pages make this an over-estimate; the limit is set far above
    what real pages reach. A closing tag never takes the depth below zero.
    """
    if html.count("<") <= limit:  # too few tags to nest that deep
        return 0
    closes = _TAG.findall(html)  # "" for an opening tag, "/" for a closing one
    if not closes:
        return 0
    # the depth walk floored at zero, in vectors: depth = running sum - lowest running
    # sum so far (when below zero)
    steps = 1 - 2 * (np.array(closes, dtype="U1") == "/").astype(np.int64)
    total = np.cumsum(steps)
    floor = np.minimum.accumulate(np.minimum(total, 0))
    return min(int((total - floor).max()), limit + 1)


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
    """The visible text of a page, roughly (tags stripped by regex): enough for language id.

    Only as much of the page is stripped as the first ``limit`` characters need: a prefix
    cut just after a '>' ends no tag or entity midway, so its text is the start of the
    whole page's text; the prefix grows until it holds enough.
    """
    visible = _drop_invisible(html[:scan])
    size = 8 * limit
    while True:
        cut = visible.find(">", size) + 1 if size < len(visible) else 0
        piece = visible[:cut] if cut else visible
        text = _SPACES.sub(" ", htmllib.unescape(_ANY_TAG.sub(" ", piece))).strip()
        if len(text) >= limit or not cut:
            return text[:limit]
        size *= 4


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


# ---- does a text still look like markup? ----------------------------------------------

_HTML_TAGS = ("html|head|body|title|meta|link|base|script|style|noscript|template|iframe|"
              "div|span|p|a|br|hr|img|picture|source|video|audio|canvas|svg|path|g|"
              "table|thead|tbody|tfoot|tr|td|th|caption|colgroup|col|ul|ol|li|dl|dt|dd|"
              "h[1-6]|section|article|nav|header|footer|main|aside|figure|figcaption|"
              "form|input|button|select|option|textarea|label|fieldset|legend|"
              "b|i|u|s|em|strong|small|sup|sub|font|center|blockquote|pre|code|"
              "abbr|cite|time|mark|ins|del|q|wbr|object|embed|param|area|map")
# a known tag, open or closed, whose attributes stay on this side of the next '<' (bounded,
# so a stray '<' costs nothing); 'a < b', 'List<T>' and '#include <vector>' are no tags
_KNOWN_TAG = re.compile(rf"<(/?)({_HTML_TAGS})(?=[\s/>])[^<>]{{0,2000}}>|<!--", re.I)
_HIDDEN = ("script", "style")
# the start of a page or fragment: an XML declaration, comments, one wrapper element of any
# name (archive dumps add them), then a page root or a known tag
_STARTS_AS_HTML = re.compile(
    r"\s*(?:<\?xml[^>]*>\s*)?(?:<!--.*?-->\s*)*(?:<[a-z][\w:-]*\b[^<>]*>\s*)?"
    rf"<(?:(!doctype\s+html|html|head|body)|{_HTML_TAGS})(?=[\s/>])", re.I | re.S)
_ENDS_AS_HTML = re.compile(r"</[a-z][\w:-]*\s*>\s*\Z", re.I)

MIN_TAGS = 6
"""Fewer known tags than this and a text is only HTML when it starts as a page: a
sentence that mentions ``<b>`` or ``<div>`` stays a sentence."""
MIN_SHARE = 0.2
"""Share of a text's characters in known tags, comments, scripts and styles from which
it is markup. Extracted article text sits at 0, raw English pages at 0.3 and more; long
Chinese pages, dense in visible characters, can be under 0.1 (their start tells)."""


def markup_profile(text: str, scan: int = 500_000, min_tags: int = MIN_TAGS
                   ) -> tuple[int, float]:
    """(known tags, share of characters that are markup) over the first ``scan`` characters.

    Scripts, styles and comments count whole: their bodies are markup too. One linear
    pass; an element never closed runs to the end of the scan. A text with fewer than
    ``min_tags`` '<' is (0, 0.0) without a look, which keeps the common case cheap.
    """
    text = text[:scan]
    if text.count("<") < min_tags:
        return 0, 0.0
    low = None
    tags = marked = pos = 0
    while (m := _KNOWN_TAG.search(text, pos)) is not None:
        tags += 1
        end, name = m.end(), (m.group(2) or "").lower()
        closer = "-->" if m.group(2) is None else (
            f"</{name}" if not m.group(1) and name in _HIDDEN else None)
        if closer is not None:
            low = text.lower() if low is None else low
            found = low.find(closer, end)
            end = len(text) if found < 0 else found + len(closer)
        marked += end - m.start()
        pos = end
    return tags, marked / max(len(text), 1)


def looks_like_html(text: str, head: int = 20_000) -> bool:
    """A text that is an HTML page or fragment, not prose: extract it, never keep it as is.

    Three ways to tell: it starts as a page (doctype, <html>, <head> or <body>, maybe inside
    a wrapper element) and holds a few more tags; it starts with a known tag and ends with
    a closing tag, with at least :data:`MIN_TAGS` tags between; or, wherever the tags are,
    they make up :data:`MIN_SHARE` of it. Prose quoting ``<b>`` or a short snippet of code
    is none of these.
    """
    start = _STARTS_AS_HTML.match(text[:head])
    if start is not None:
        tags = markup_profile(text, min_tags=3)[0]
        if (tags >= 3 and start.group(1)) or (tags >= MIN_TAGS
                                              and _ENDS_AS_HTML.search(text[-head:])):
            return True
    tags, share = markup_profile(text)
    return tags >= MIN_TAGS and share >= MIN_SHARE
