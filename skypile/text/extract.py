"""Structural extraction: a raw record in, a cleaned Document or a Reject out.

The steps, each with its own reject reason (all prefixed ``extract:``):
HTTP status and media type, Content-Encoding (size-capped), charset, binary sniffing,
a nesting-depth guard, trafilatura inside a time budget, then the clean-up pass of
``skypile.text.cleanup``. Title, date and URL go to ``metadata``.
"""

from __future__ import annotations

import dataclasses
import html as htmllib
import os
import pickle
import re
import select
import struct
import subprocess
import sys
import time
from typing import Any, Callable

from skypile.files import payload
from skypile.text.chars import preview
from skypile.text.cleanup import CleanupConfig, clean_text, units
from skypile.document import Document, Reject
from skypile.files.readers import RawRecord

STAGE = "extract"


@dataclasses.dataclass
class ExtractConfig:
    """Settings of the extract stage (``extract`` in the pipeline config)."""

    max_page_bytes: int = 20 * 1024 * 1024
    """Pages larger than this, before or after Content-Encoding, are rejected."""
    timeout_s: float = 20.0
    """Wall-time budget of trafilatura for one page; a page over it is rejected."""
    sandbox: bool = True
    """Run trafilatura in a child process so the time budget can be enforced."""
    max_depth: int = 1000
    """Pages whose element nesting goes deeper than this are rejected before parsing."""
    favor_precision: bool = True
    """trafilatura's precision mode: stricter about what belongs to the main text."""
    include_tables: bool = True
    """Keep table text (layout tables carry the article on many older Chinese sites)."""
    short_page_units: int = 150
    """Below this many words / CJK characters, precision mode is checked against balanced."""
    allowed_status: tuple[int, ...] = (200, 203)
    """HTTP statuses whose bodies are documents."""
    metadata: str = "fast"
    """fast: title, site name and date from meta tags and <title>; full: trafilatura's
    metadata pass with htmldate (better dates, about twice the time per page)."""
    lang_gate: str = "auto"
    """Cheap work first: before trafilatura, drop pages whose tag-stripped raw text is
    confidently in another language. "auto": the languages the threshold step keeps, when the
    langid stage runs (and other languages are not routed); "off"; or a list like "en,zh"."""
    lang_gate_min_score: float = 0.5
    """fastText confidence the raw-text language must reach before a page is dropped unread
    (the same bar as the language filter's filter.min_lang_score on extracted text)."""
    cleanup: CleanupConfig = dataclasses.field(default_factory=CleanupConfig)


# rejects for these keep no text: there is none worth keeping, or it is huge / hostile
_NO_TEXT_REASONS = {"binary", "non-html", "decompression-bomb", "too-large"}


class ExtractError(Exception):
    def __init__(self, reason: str, **detail):
        super().__init__(reason)
        self.reason, self.detail = reason, detail


# ---- the trafilatura call, in or out of a sandbox -------------------------------------

def _trafilatura(html: str, url: str, favor_precision: bool,
                 include_tables: bool, full_metadata: bool = False) -> dict[str, Any] | None:
    import trafilatura

    doc = trafilatura.bare_extraction(
        html, url=url or None, favor_precision=favor_precision, include_tables=include_tables,
        include_comments=False, with_metadata=full_metadata,
        date_extraction_params={"extensive_search": False, "original_date": True})
    if doc is None:
        return None
    if full_metadata:
        return {"text": doc.text or "", "title": doc.title or "", "date": doc.date or "",
                "sitename": doc.sitename or ""}
    return {"text": doc.text or "", **fast_metadata(html)}


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


def _send(stream, obj) -> None:
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    stream.write(struct.pack("<Q", len(data)))
    stream.write(data)
    stream.flush()


def _recv(stream):
    head = stream.read(8)
    if len(head) < 8:
        raise EOFError
    (n,) = struct.unpack("<Q", head)
    data = stream.read(n)
    if len(data) < n:
        raise EOFError
    return pickle.loads(data)


def _child_main() -> None:  # pragma: no cover - runs in the child process
    import logging
    logging.disable(logging.CRITICAL)
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    sys.stdout = sys.stderr  # nothing but our frames may reach the pipe
    while True:
        try:
            args = _recv(stdin)
        except EOFError:
            return
        try:
            _send(stdout, ("ok", _trafilatura(*args)))
        except Exception as e:  # sent back and turned into a reject reason, never lost
            _send(stdout, ("error", f"{type(e).__name__}: {e}"[:200]))


class Sandbox:
    """One long-lived child process running trafilatura, killed when a page overruns.

    The child is a plain ``python -c`` subprocess (not multiprocessing), so it works under
    any main module, inside Beam workers and from notebooks. It starts lazily (Beam
    pickles the DoFn that owns it) and is restarted after a kill.
    """

    def __init__(self, timeout_s: float):
        self.timeout_s = timeout_s
        self._proc: subprocess.Popen | None = None

    def _start(self) -> None:
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
        self._proc = subprocess.Popen(
            [sys.executable, "-c", "from skypile.text.extract import _child_main; _child_main()"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env)

    def run(self, *args) -> dict[str, Any] | None:
        if self._proc is None or self._proc.poll() is not None:
            self._start()
        try:
            _send(self._proc.stdin, args)
            ready, _, _ = select.select([self._proc.stdout], [], [], self.timeout_s)
            if not ready:
                self.close()
                raise ExtractError("timeout", budget_s=self.timeout_s)
            status, value = _recv(self._proc.stdout)
        except (EOFError, BrokenPipeError, ConnectionError, pickle.UnpicklingError):
            self.close()  # the child died (out of memory, a crash inside lxml)
            raise ExtractError("extractor-crashed") from None
        if status == "error":
            raise ExtractError("extractor-error", error=value)
        return value

    def close(self) -> None:
        if self._proc is not None:
            self._proc.kill()
            self._proc.wait(timeout=10)
            for stream in (self._proc.stdin, self._proc.stdout):
                stream.close()
        self._proc = None

    def __getstate__(self):
        return {"timeout_s": self.timeout_s}

    def __setstate__(self, state):
        self.__init__(state["timeout_s"])


# ---- guards -----------------------------------------------------------------------------

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


# ---- the stage ----------------------------------------------------------------------------

class Extractor:
    """Turns RawRecords into Documents or Rejects. Holds the sandbox; reuse one per worker."""

    def __init__(self, cfg: ExtractConfig | None = None,
                 gate: Callable[[str], tuple[str, float]] | None = None,
                 gate_langs: tuple[str, ...] = ()):
        """``gate``: a language identifier, text -> (lang, probability), injected by the
        caller from the configured model (the core does not load models); ``gate_langs``:
        the languages the gate lets through (empty: no gate; see ExtractConfig.lang_gate)."""
        self.cfg = cfg or ExtractConfig()
        self.limits = payload.Limits(max_payload_bytes=self.cfg.max_page_bytes)
        self._sandbox = Sandbox(self.cfg.timeout_s) if self.cfg.sandbox else None
        self.gate_langs = tuple(gate_langs)
        self._lid = gate if self.gate_langs else None

    def close(self) -> None:
        if self._sandbox is not None:
            self._sandbox.close()

    def __call__(self, rec: RawRecord) -> Document | Reject:
        t0 = time.perf_counter()
        try:
            doc = self._extract(rec)
        except (ExtractError, payload.PayloadError) as e:
            keep_text = e.reason not in _NO_TEXT_REASONS
            return Reject(id=rec.id, url=rec.url, stage=STAGE, reason=f"{STAGE}:{e.reason}",
                          text=_preview(rec.body) if keep_text else "", source=rec.source,
                          detail={**e.detail, **_where(rec)})
        doc.metadata["extract_ms"] = round((time.perf_counter() - t0) * 1000, 1)
        return doc

    def _extract(self, rec: RawRecord) -> Document:
        meta = dict(rec.metadata)
        if rec.kind == "text":
            text = payload.strip_control(rec.body if isinstance(rec.body, str)
                                      else rec.body.decode("utf-8", "replace"))
            if not text.strip():
                raise ExtractError("empty-body")
            return Document(id=rec.id, text=text, url=rec.url, source=rec.source, metadata=meta)
        body = rec.body if isinstance(rec.body, bytes) else rec.body.encode("utf-8")
        content_type = meta.pop("content_type", "")
        if rec.kind == "http":
            resp = payload.parse_response(body, self.limits)
            meta["http_status"] = resp.status
            if resp.status not in self.cfg.allowed_status:
                raise ExtractError("http-status", status=resp.status)
            content_type = resp.headers.get("content-type", "")
            body = resp.body
            if len(body) > self.cfg.max_page_bytes:
                raise ExtractError("too-large", bytes=len(body), cap=self.cfg.max_page_bytes)
            if "chunked" in resp.headers.get("transfer-encoding", "").lower():
                body = payload.dechunk(body)
            if resp.headers.get("content-encoding"):
                body = payload.decode_content(body, resp.headers["content-encoding"], self.limits)
        if len(body) > self.cfg.max_page_bytes:
            raise ExtractError("too-large", bytes=len(body), cap=self.cfg.max_page_bytes)
        if not body.strip():
            raise ExtractError("empty-body")
        mtype = payload.media_type(content_type) or payload.media_type(meta.get("identified_type", ""))
        binary = payload.sniff_binary(body)
        if binary:
            raise ExtractError("binary" if mtype in payload.HTML_TYPES + payload.TEXT_TYPES or not mtype
                               else "non-html", content_type=mtype or binary, sniffed=binary)
        if mtype and mtype not in payload.HTML_TYPES + payload.TEXT_TYPES:
            raise ExtractError("non-html", content_type=mtype)
        text, charset, charset_from = payload.decode_text(body, content_type)
        text = payload.strip_control(text)
        if text.count("\ufffd") > 0.1 * max(len(text), 1):
            raise ExtractError("undecodable", charset=charset)
        meta.update(charset=charset, charset_source=charset_from)
        if mtype in payload.TEXT_TYPES:
            return Document(id=rec.id, text=text.strip(), url=rec.url, source=rec.source,
                            metadata=meta)
        depth = nesting_depth(text, self.cfg.max_depth)
        if depth > self.cfg.max_depth:
            raise ExtractError("too-deep", depth=f">{self.cfg.max_depth}")
        if self._lid is not None:
            self._gate(text)
        return self._from_html(rec, text, meta)

    def _gate(self, html: str) -> None:
        sample = rough_text(html)
        if len(sample) < 200:  # too little to be sure of anything: let trafilatura look
            return
        lang, score = self._lid(sample)
        if lang not in self.gate_langs and score >= self.cfg.lang_gate_min_score:
            raise ExtractError("lang-gate", lang=lang, lang_score=round(score, 4))

    def _run(self, html: str, url: str, favor_precision: bool) -> dict[str, Any] | None:
        args = (html, url, favor_precision, self.cfg.include_tables, self.cfg.metadata == "full")
        return self._sandbox.run(*args) if self._sandbox else _trafilatura(*args)

    def _from_html(self, rec: RawRecord, html: str, meta: dict) -> Document:
        html = unwrap_unknown_root(html)
        result = self._run(html, rec.url, self.cfg.favor_precision)
        text, removed = self._clean(result)
        if self.cfg.favor_precision and units(text) < self.cfg.short_page_units:
            # precision mode sometimes settles on a teaser block; balanced mode gets a
            # second look at short results and the longer clean text wins
            second = self._run(html, rec.url, False)
            text2, removed2 = self._clean(second)
            if units(text2) > units(text):
                result, text, removed = second, text2, removed2
        if not result or not result["text"].strip():
            raise ExtractError("no-main-text")
        if units(text) < self.cfg.cleanup.min_doc_units:
            raise ExtractError("boilerplate-only", removed=removed)
        meta.update(title=result["title"], date=result["date"], cleanup_removed=removed)
        if result["sitename"]:
            meta["sitename"] = result["sitename"]
        return Document(id=rec.id, text=text, url=rec.url, source=rec.source, metadata=meta)


    def _clean(self, result: dict[str, Any] | None) -> tuple[str, dict[str, int]]:
        if not result:
            return "", {}
        return clean_text(result["text"], result["title"], self.cfg.cleanup)


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


def _where(rec: RawRecord) -> dict[str, Any]:
    return {k: rec.metadata[k] for k in ("file", "offset", "at") if k in rec.metadata}


def _preview(body: bytes | str) -> str:
    """What a reject keeps of the record: its text, capped (control characters of raw bytes
    stripped, as extraction would)."""
    text = preview(body)
    return text if isinstance(body, str) else payload.strip_control(text)
