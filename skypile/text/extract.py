"""Structural extraction: a raw record in, a cleaned Document or a Reject out.

The steps, each with its own reject reason (all prefixed ``extract:``):
HTTP status and media type, Content-Encoding (size-capped), charset, binary sniffing,
a nesting-depth guard, trafilatura inside a time budget, then the clean-up pass of
``skypile.text.cleanup``. Title, date and URL go to ``metadata``.

Text records (JSONL, Parquet, WET) whose text is an HTML page take the same road
(``read.content``). The last step of the stage, for every record, is the markup check: a
document whose text still looks like HTML is rejected (``extract:markup``), so raw markup
never passes as clean text; ``skypile dedup``, which does not extract, runs that check alone
(:func:`text_document`).
"""

from __future__ import annotations

import dataclasses
import functools
import os
import threading
import time
from typing import Any, Callable

from skypile.files import payload
from skypile.text.chars import preview
from skypile.text.cleanup import CleanupConfig, clean_text, units_upto
from skypile.text.markup import (fast_metadata, looks_like_html, markup_profile, nesting_depth,
                                 rough_text, unwrap_unknown_root)
from skypile.text.sandbox import Sandbox, SandboxError
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


# ---- the main text of a page, in or out of a sandbox ------------------------------------

_TARGET = "skypile.text.extract:main_text"
"""What the sandbox's child process runs (it imports this module by name)."""

_patched = False


def _speed_up_trafilatura() -> None:
    """Three changes to how trafilatura runs, made once per process; none changes the
    text it returns (``tests/test_extract.py`` compares with the unchanged library).

    - Its HTML parser gets a class lookup that runs in C. lxml.html's default lookup is a
      Python method called for every element lxml hands to Python (millions per thousand
      pages: an eighth of the extraction time); this one makes every element an
      ``HtmlElement``, all trafilatura uses (form controls lose their form subclasses).
    - Its comparison with readability and justext is skipped where it provably keeps
      trafilatura's own result (:func:`_comparison_is_moot`): a third of its time on the
      pages where it is moot. Only for the trafilatura release this was checked against.
    - Its XPath expressions that test attributes on every element (``re:test`` among them,
      a call back into Python per element in lxml) run as compiled Python loops
      (:mod:`skypile.text.xpath_subset`, :func:`_compile_xpaths`): the same elements in
      the same order, in about a quarter of the time. Expressions outside the subset, and
      those without a predicate, stay with lxml.
    """
    global _patched
    if _patched:
        return
    if os.environ.get(AS_RELEASED_ENV, "").strip() not in ("", "0"):
        _patched = True  # trafilatura as released: to check that the changes keep the text
        return
    import trafilatura
    import trafilatura.core
    from lxml import etree
    from lxml import html as lxml_html
    from trafilatura.utils import HTML_PARSER

    HTML_PARSER.set_element_class_lookup(etree.ElementDefaultClassLookup(
        element=lxml_html.HtmlElement, comment=lxml_html.HtmlComment,
        pi=lxml_html.HtmlProcessingInstruction, entity=lxml_html.HtmlEntity))
    if trafilatura.__version__ == COMPARISON_CHECKED_ON:
        compare = trafilatura.core.compare_extraction
        if getattr(compare, "__wrapped__", None) is None:
            trafilatura.core.compare_extraction = _skip_moot_comparison(compare)
    _compile_xpaths()
    _patched = True


_COMPILED: dict[int, Any] = {}
"""id of one of trafilatura's ``etree.XPath`` objects -> its CompiledXPath (or None when it
stays with lxml). The originals are kept alive by the CompiledXPath."""
XPATH_SWAPS: list[tuple[Any, Any, Any]] = []
"""(module or list, attribute name or index, the original XPath) for every place
:func:`_compile_xpaths` swapped, so a test can put the library back as released."""


def _compile_xpaths() -> None:
    """Puts a CompiledXPath in place of each of trafilatura's module-level XPath objects
    (alone or in lists) that has predicates and that the subset covers."""
    import sys

    from lxml import etree

    from skypile.text.xpath_subset import CompiledXPath, Unsupported

    def swap(x):
        if id(x) not in _COMPILED:
            new = None
            if "[" in x.path:  # a bare path (.//header) is as fast in lxml
                try:
                    new = CompiledXPath(x)
                except Unsupported:
                    pass
            _COMPILED[id(x)] = new
        return _COMPILED[id(x)]

    for name, module in list(sys.modules.items()):
        if name != "trafilatura" and not name.startswith("trafilatura."):
            continue
        for attr, value in list(vars(module).items()):
            if isinstance(value, etree.XPath) and (new := swap(value)) is not None:
                setattr(module, attr, new)
                _record(module, attr, value)
            elif isinstance(value, list) and value and isinstance(value[0], etree.XPath):
                for i, item in enumerate(value):
                    if isinstance(item, etree.XPath) and (new := swap(item)) is not None:
                        value[i] = new
                        _record(value, i, item)


def _record(where: Any, key: Any, original: Any) -> None:
    if not any(w is where and k == key for w, k, _ in XPATH_SWAPS):
        XPATH_SWAPS.append((where, key, original))


AS_RELEASED_ENV = "SKYPILE_TRAFILATURA_AS_RELEASED"
"""Set to 1 (in the environment of the workers and sandboxes) to run trafilatura without
the changes of :func:`_speed_up_trafilatura`: the same commit's "routes off" run, whose
kept documents must be the same (BENCHMARKS.md)."""

COMPARISON_CHECKED_ON = "2.3.1"
"""The trafilatura release whose ``compare_extraction`` :func:`_comparison_is_moot` mirrors."""

_page = threading.local()
"""The parsed page that ``main_text`` is extracting in this thread (for the text bound)."""

_VISIBLE_TEXT = None


def _page_text_bound() -> int:
    """Most characters readability can return for the current page: the page's text
    without scripts and styles (which readability drops), whitespace runs collapsed as
    trafilatura's ``trim`` does. Readability keeps a subset of the page's elements (it
    moves, never copies them), and trafilatura hands it a pruned copy of the page."""
    global _VISIBLE_TEXT
    if _page.bound is None:
        if _VISIBLE_TEXT is None:
            from lxml import etree

            _VISIBLE_TEXT = etree.XPath("//text()[not(parent::script or parent::style)]",
                                       smart_strings=False)  # plain strings: no parent links
        _page.bound = len(" ".join("".join(_VISIBLE_TEXT(_page.tree)).split()))
    return _page.bound


def _comparison_is_moot(body, text: str, options) -> bool:
    """Whether trafilatura 2.3.1's ``compare_extraction`` would return ``body, text``
    unchanged, told without running readability or justext.

    It runs justext when its own text is short or holds leftovers (``SANITIZED_XPATH``);
    it takes readability's text when that is more than twice as long, or when its own body
    is structurally poor (no paragraph text, more tables than paragraphs) and readability
    has over twice the minimum size; recall mode has more ways. Readability's text is at
    most the page's text (:func:`_page_text_bound`), which settles the rest.
    """
    from trafilatura.external import SANITIZED_XPATH

    n, floor = len(text), options.min_extracted_size
    if options.focus == "recall" or n < floor or body.xpath(SANITIZED_XPATH):
        return False
    bound = _page_text_bound()
    if bound > 2 * n:
        return False
    poor = not body.xpath(".//p//text()") or len(body.findall(".//table")) > len(body.findall(".//p"))
    return not poor or bound <= 2 * floor


def _skip_moot_comparison(compare):
    @functools.wraps(compare)
    def compare_unless_moot(cleaned_tree, raw_tree, body, text, options):
        if getattr(_page, "tree", None) is not None and _comparison_is_moot(body, text, options):
            return body, text
        return compare(cleaned_tree, raw_tree, body, text, options)
    return compare_unless_moot


def _trafilatura(tree, html: str, url: str, favor_precision: bool, include_tables: bool,
                 full_metadata: bool) -> dict[str, Any] | None:
    import trafilatura

    doc = trafilatura.bare_extraction(
        tree, url=url or None, favor_precision=favor_precision, include_tables=include_tables,
        include_comments=False, with_metadata=full_metadata,
        date_extraction_params={"extensive_search": False, "original_date": True})
    if doc is None:
        return None
    if full_metadata:
        return {"text": doc.text or "", "title": doc.title or "", "date": doc.date or "",
                "sitename": doc.sitename or ""}
    return {"text": doc.text or "", **fast_metadata(html)}


def _clean(result: dict[str, Any] | None, cfg: CleanupConfig) -> tuple[str, dict[str, int]]:
    if not result:
        return "", {}
    return clean_text(result["text"], result["title"], cfg)


def main_text(html: str, url: str, cfg: ExtractConfig) -> dict[str, Any]:
    """trafilatura and the clean-up on one decoded page: what the sandbox child runs.

    Precision mode first; a short result gets a second look in balanced mode and the
    longer clean text wins. The page is parsed once for both passes (trafilatura copies
    the tree it is given), and both passes and the clean-up make one round trip to the
    child. Returns the clean ``text``, the ``removed`` line counts, ``found`` (whether
    trafilatura returned any text at all) and the title, date and site name.
    """
    from trafilatura.utils import load_html

    _speed_up_trafilatura()
    tree = load_html(html)
    full = cfg.metadata == "full"
    result = None
    _page.tree, _page.bound = tree, None
    try:
        if tree is not None:  # trafilatura returns nothing for a page it cannot parse
            result = _trafilatura(tree, html, url, cfg.favor_precision, cfg.include_tables, full)
        text, removed = _clean(result, cfg.cleanup)
        n = units_upto(text, cfg.short_page_units)
        if tree is not None and cfg.favor_precision and n < cfg.short_page_units:
            # precision mode sometimes settles on a teaser block; balanced mode gets a
            # second look at short results and the longer clean text wins
            second = _trafilatura(tree, html, url, False, cfg.include_tables, full)
            text2, removed2 = _clean(second, cfg.cleanup)
            if units_upto(text2, n + 1) > n:  # n is the whole count here: it is under the cap
                result, text, removed = second, text2, removed2
    finally:
        _page.tree = _page.bound = None
    found = bool(result and result["text"].strip())
    meta = {k: result[k] for k in ("title", "date", "sitename")} if result else {}
    return {"text": text, "removed": removed, "found": found, **meta}



# ---- the stage ----------------------------------------------------------------------------

class Extractor:
    """Turns RawRecords into Documents or Rejects. Holds the sandbox; reuse one per worker."""

    def __init__(self, cfg: ExtractConfig | None = None,
                 gate: Callable[[str], tuple[str, float]] | None = None,
                 gate_langs: tuple[str, ...] = (), content: str = "auto"):
        """``gate``: a language identifier, text -> (lang, probability), injected by the
        caller from the configured model (the core does not load models); ``gate_langs``:
        the languages the gate lets through (empty: no gate; see ExtractConfig.lang_gate);
        ``content``: what text records hold, auto / html / text (ReaderOptions.content)."""
        if content not in CONTENT:
            raise ValueError(f"content={content!r}: use one of {', '.join(CONTENT)}")
        self.cfg, self.content = cfg or ExtractConfig(), content
        self.limits = payload.Limits(max_payload_bytes=self.cfg.max_page_bytes)
        self._sandbox = Sandbox(self.cfg.timeout_s, _TARGET) if self.cfg.sandbox else None
        self.gate_langs = tuple(gate_langs)
        self._lid = gate if self.gate_langs else None

    def close(self) -> None:
        if self._sandbox is not None:
            self._sandbox.close()

    def __call__(self, rec: RawRecord) -> Document | Reject:
        t0 = time.perf_counter()
        try:
            doc = self._extract(rec)
            extracted = rec.kind != "text" or doc.metadata.get("payload") == "html"
            _check_markup(doc.text, extracted, "" if extracted else
                          f"read.content={self.content} kept this text record unextracted")
        except (ExtractError, payload.PayloadError) as e:
            keep_text = e.reason not in _NO_TEXT_REASONS
            return Reject.of(rec, STAGE, e.reason, text=_preview(rec.body) if keep_text else "",
                             **e.detail, **_where(rec))
        doc.metadata["extract_ms"] = round((time.perf_counter() - t0) * 1000, 1)
        return doc

    def _extract(self, rec: RawRecord) -> Document:
        meta = dict(rec.metadata)
        if rec.kind == "text":
            return self._from_text(rec, meta)
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
        return self._page(rec, text, meta)

    def _from_text(self, rec: RawRecord, meta: dict) -> Document:
        """A record that is text already: kept as it is, or, when it holds an HTML page
        (``content``: html, or auto and it looks like one), extracted like a page. Its
        text is a decoded string: no charset step, whatever its <meta charset> says."""
        text = payload.strip_control(rec.body if isinstance(rec.body, str)
                                     else rec.body.decode("utf-8", "replace"))
        if not text.strip():
            raise ExtractError("empty-body")
        if self.content == "html" or self.content == "auto" and looks_like_html(text):
            if len(text) > self.cfg.max_page_bytes:
                raise ExtractError("too-large", chars=len(text), cap=self.cfg.max_page_bytes)
            meta["payload"] = "html"
            return self._page(rec, text, meta)
        return Document(id=rec.id, text=text, url=rec.url, source=rec.source, metadata=meta)

    def _page(self, rec: RawRecord, html: str, meta: dict) -> Document:
        """A decoded HTML page: depth guard, language gate, then trafilatura."""
        depth = nesting_depth(html, self.cfg.max_depth)
        if depth > self.cfg.max_depth:
            raise ExtractError("too-deep", depth=f">{self.cfg.max_depth}")
        if self._lid is not None:
            self._gate(html)
        return self._from_html(rec, html, meta)

    def _gate(self, html: str) -> None:
        sample = rough_text(html)
        if len(sample) < 200:  # too little to be sure of anything: let trafilatura look
            return
        lang, score = self._lid(sample)
        if lang not in self.gate_langs and score >= self.cfg.lang_gate_min_score:
            raise ExtractError("lang-gate", lang=lang, lang_score=round(score, 4))

    def _run(self, html: str, url: str) -> dict[str, Any]:
        if self._sandbox is None:
            return main_text(html, url, self.cfg)
        try:
            return self._sandbox.run(html, url, self.cfg)
        except SandboxError as e:
            raise ExtractError(e.reason, **e.detail) from None

    def _from_html(self, rec: RawRecord, html: str, meta: dict) -> Document:
        result = self._run(unwrap_unknown_root(html), rec.url)
        if not result["found"]:
            raise ExtractError("no-main-text")
        text, removed = result["text"], result["removed"]
        if units_upto(text, self.cfg.cleanup.min_doc_units) < self.cfg.cleanup.min_doc_units:
            raise ExtractError("boilerplate-only", removed=removed)
        meta.update(title=result["title"], date=result["date"], cleanup_removed=removed)
        if result["sitename"]:
            meta["sitename"] = result["sitename"]
        return Document(id=rec.id, text=text, url=rec.url, source=rec.source, metadata=meta)


CONTENT = ("auto", "html", "text")
"""What text records may hold (ReaderOptions.content)."""


def _check_markup(text: str, extracted: bool, hint: str = "") -> None:
    """The last step for every document: a text that still looks like HTML is no document.

    It catches what extraction let through and, above all, HTML kept as text: a text
    record under ``read.content=text``, or in ``skypile dedup``, which does not extract.
    """
    if looks_like_html(text):
        tags, share = markup_profile(text, min_tags=1)
        raise ExtractError("markup", tags=tags, markup_share=round(share, 3),
                           extracted=extracted, **({"hint": hint} if hint else {}))


def text_document(rec: RawRecord) -> Document | Reject:
    """A text record as a document when no extraction runs (``skypile dedup``): its text
    as it is, or the ``extract:markup`` reject when it is an HTML page, not text."""
    text = rec.body if isinstance(rec.body, str) else rec.body.decode("utf-8", "replace")
    try:
        _check_markup(text, False, "skypile dedup does not extract HTML: run skypile web on it")
    except ExtractError as e:
        return Reject.of(rec, STAGE, e.reason, text=_preview(text), **e.detail, **_where(rec))
    return Document(id=rec.id, text=text, url=rec.url, source=rec.source,
                    metadata=dict(rec.metadata))


def _where(rec: RawRecord) -> dict[str, Any]:
    return {k: rec.metadata[k] for k in ("file", "offset", "at") if k in rec.metadata}


def _preview(body: bytes | str) -> str:
    """What a reject keeps of the record: its text, capped (control characters of raw bytes
    stripped, as extraction would)."""
    text = preview(body)
    return text if isinstance(body, str) else payload.strip_control(text)
