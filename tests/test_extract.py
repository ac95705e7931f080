import gzip
import json

import pytest

from skypile.document import Document, Reject
from skypile.text.extract import ExtractConfig, Extractor
from skypile.text.markup import nesting_depth, unwrap_unknown_root
from skypile.files.readers import RawRecord
from warcgen import ARTICLE, ARTICLE_ZH, http_response


@pytest.fixture(scope="module")
def ex():
    e = Extractor(ExtractConfig(sandbox=False))
    yield e
    e.close()


def rec(body, kind="http", url="http://example.com/a", **meta):
    return RawRecord(id="r1", url=url, source="test", kind=kind, body=body, metadata=meta)


def reason(result):
    assert isinstance(result, Reject), result
    return result.reason


def test_article_is_extracted_and_cleaned(ex):
    doc = ex(rec(http_response(ARTICLE)))
    assert isinstance(doc, Document)
    assert "shore of the lake" in doc.text
    assert "Copyright" not in doc.text and "Home" not in doc.text
    assert doc.metadata["title"] == "A day at the lake"
    assert doc.metadata["http_status"] == 200 and doc.url == "http://example.com/a"


def test_gbk_page_without_header_charset(ex):
    doc = ex(rec(http_response(ARTICLE_ZH, headers={"Content-Type": "text/html"})))
    assert isinstance(doc, Document)
    assert "湖水平静而清澈" in doc.text
    assert "关于我们" not in doc.text and "版权所有" not in doc.text
    assert doc.metadata["charset"] == "gb18030" and doc.metadata["charset_source"] == "meta"


def test_gzip_content_encoding(ex):
    body = http_response(gzip.compress(ARTICLE), headers={"Content-Encoding": "gzip"})
    assert isinstance(ex(rec(body)), Document)


def test_chunked_transfer_encoding(ex):
    chunked = b"".join(b"%x\r\n%s\r\n" % (len(ARTICLE[i:i + 500]), ARTICLE[i:i + 500])
                       for i in range(0, len(ARTICLE), 500)) + b"0\r\n\r\n"
    body = http_response(chunked, headers={"Transfer-Encoding": "chunked"})
    assert "shore of the lake" in ex(rec(body)).text


@pytest.mark.parametrize("body,expected", [
    (http_response(ARTICLE, status="404 Not Found"), "extract:http-status"),
    (http_response(ARTICLE, status="301 Moved Permanently"), "extract:http-status"),
    (http_response(b"\x89PNG\r\n\x1a\n" + bytes(200), headers={"Content-Type": "image/png"}),
     "extract:non-html"),
    (http_response(b"%PDF-1.4 " + bytes(200), headers={"Content-Type": "application/pdf"}),
     "extract:non-html"),
    (http_response(b""), "extract:empty-body"),
    (http_response(b"   \r\n  "), "extract:empty-body"),
    (http_response(bytes(range(256)) * 40), "extract:binary"),
    (http_response(gzip.compress(b"<p>" + b"a" * (30 * 1024 * 1024)),
                   headers={"Content-Encoding": "gzip"}), "extract:decompression-bomb"),
    (http_response(b"not gzip", headers={"Content-Encoding": "gzip"}),
     "extract:bad-content-encoding"),
    (b"this is not an http response at all", "extract:http-malformed"),
    (http_response(b"<html><body><nav>Home | News | Sport | About</nav></body></html>"),
     "extract:boilerplate-only"),
    (http_response(b"<html><body><script>var x = 1;</script></body></html>"),
     "extract:no-main-text"),
])
def test_bad_payloads_have_reasons(ex, body, expected):
    assert reason(ex(rec(body))) == expected


def test_binary_reject_keeps_no_text(ex):
    r = ex(rec(http_response(bytes(range(256)) * 40)))
    assert r.text == "" and r.detail["sniffed"] == "application/octet-stream"


def test_page_over_20_mb(ex):
    big = b"<html><body>" + b"<p>word word word</p>" * (21 * 1024 * 1024 // 20) + b"</body></html>"
    assert len(big) > 20 * 1024 * 1024
    assert reason(ex(rec(http_response(big)))) == "extract:too-large"


def test_deep_nesting_is_refused_before_parsing(ex):
    html = b"<html><body>" + b"<div>" * 100_000 + b"<p>deep</p>" + b"</div>" * 100_000
    r = ex(rec(http_response(html)))
    assert reason(r) == "extract:too-deep" and r.detail["depth"] == ">1000"


def test_nesting_depth_counts_containers():
    assert nesting_depth("<div><div><p class='a'>x</p></div><div></div></div>", 5) == 3
    assert nesting_depth("<div><br/><img/></div>", 0) == 1
    assert nesting_depth("<div>" * 50, 10) == 11  # stops counting past the limit
    # stray closing tags never take the depth below zero
    assert nesting_depth("</div></div></div><div><div><span>x</span></div></div>", 0) == 1
    assert nesting_depth("</div></div></div><div><div><span>x</span></div></div>", 5) == 3
    assert nesting_depth("<p>no containers deep enough</p>", 5) == 0


def test_invalid_bytes_and_control_characters_are_cleaned(ex):
    dirty = ARTICLE.replace(b"calm and clear", b"calm\x00 and\x07 clear \xff\xfe")
    doc = ex(rec(http_response(dirty)))
    assert isinstance(doc, Document)
    assert "\x00" not in doc.text and "\x07" not in doc.text
    assert "calm and clear" in doc.text


def test_text_records_pass_through(ex):
    doc = ex(rec("纯文本\x00内容", kind="text"))
    assert doc.text == "纯文本内容"
    assert reason(ex(rec("   ", kind="text"))) == "extract:empty-body"


def test_unknown_wrapper_element_is_swapped_for_html():
    page = '<text id="x" encoding="gb2312"><div><p>body</p></div></text>'
    assert unwrap_unknown_root(page) == "<html><div><p>body</p></div></html>"
    normal = "<!DOCTYPE html><html><body>x</body></html>"
    assert unwrap_unknown_root(normal) == normal


def test_sandbox_enforces_the_time_budget():
    ex = Extractor(ExtractConfig(sandbox=True, timeout_s=0.05))
    try:
        big = (b"<html><body>" + b"<p>" + b"lorem ipsum dolor sit amet " * 50 + b"</p>\n") * 4000
        r = ex(rec(http_response(big + b"</body></html>")))
        assert reason(r) == "extract:timeout"
        # the sandbox restarts and the next page is fine
        ex._sandbox.timeout_s = 60
        assert isinstance(ex(rec(http_response(ARTICLE))), Document)
    finally:
        ex.close()


def test_rough_text_for_the_language_gate_skips_invisible_parts():
    from skypile.text.markup import rough_text

    page = ("<html><head><title>t</title></head><body><script>var a = '<p>no</p>';</script>"
            "<p>Hello &amp; world</p><!-- hidden --><style>p {}</style><svg><text>no</text></svg>"
            "tail</body></html>")
    assert rough_text(page) == "Hello & world tail"
    assert rough_text("<p>before</p><script>never closed <p>hidden</p>") == "before"
    # unclosed invisible elements hide the rest (one linear pass; no rescan per tag)
    for hostile in ("<svg>" * 60000, "<!--" * 70000, "<script>" * 40000):
        assert rough_text("<p>seen</p>" + hostile + "<p>unseen</p>") == "seen"


def test_rough_text_strips_only_the_prefix_it_needs():
    from skypile.text.markup import _ANY_TAG, _SPACES, _drop_invisible, rough_text
    import html as htmllib

    # a stray '<' before the cut, an entity at it, tags of every length: the prefix's text
    # must be the start of the whole page's text
    page = "<html><body>" + "".join(
        f"<div class='c{i}'>a &lt; b &amp c{i}&#x4e2d; < {'x' * (i % 7)}</div>\n" for i in range(4000)
    ) + "</body></html>"
    whole = _SPACES.sub(" ", htmllib.unescape(_ANY_TAG.sub(" ", _drop_invisible(page)))).strip()
    for limit in (1, 57, 3000, 20000, len(whole) + 10):
        assert rough_text(page, limit=limit, scan=len(page)) == whole[:limit]


def test_one_round_trip_per_page_in_or_out_of_the_sandbox():
    """The sandbox child runs the same ``main_text`` as the in-process path."""
    short = (b"<html><head><title>Note</title></head><body><article><p>A short note on the "
             b"lake, with only a few words in it, but a full sentence.</p></article></body></html>")
    pages = [ARTICLE, ARTICLE_ZH, short]
    inside = Extractor(ExtractConfig(sandbox=False))
    child = Extractor(ExtractConfig(sandbox=True))
    try:
        for page in pages:
            a, b = inside(rec(http_response(page))), child(rec(http_response(page)))
            a.metadata.pop("extract_ms"), b.metadata.pop("extract_ms")
            assert a == b
    finally:
        child.close()


def _straightforward(html: str) -> tuple[str, dict]:
    """The extraction as it ran before the page was parsed once: trafilatura parses the
    string in each pass, with lxml.html's own element classes."""
    import trafilatura

    from skypile.text.cleanup import clean_text, units
    from skypile.text.markup import fast_metadata

    def run(precision):
        doc = trafilatura.bare_extraction(
            html, favor_precision=precision, include_tables=True, include_comments=False,
            with_metadata=False,
            date_extraction_params={"extensive_search": False, "original_date": True})
        return None if doc is None else {"text": doc.text or "", **fast_metadata(html)}

    def clean(result):
        return clean_text(result["text"], result["title"]) if result else ("", {})

    result = run(True)
    text, removed = clean(result)
    if units(text) < ExtractConfig().short_page_units:
        second = run(False)
        text2, removed2 = clean(second)
        if units(text2) > units(text):
            result, text, removed = second, text2, removed2
    return text, removed


FORM_PAGE = ("<html><head><title>Feedback</title></head><body><form action='/send'>"
             "<label for='n'>Name</label><input id='n' value='x'><select><option>One</option>"
             "</select><textarea>Say something</textarea><button>Send</button></form><article>"
             + "<p>The feedback form above goes to the editors, who read every message and "
               "answer the ones that ask a question about an article.</p>" * 8
             + "</article></body></html>")


def test_speed_routes_give_the_same_text(data_dir, monkeypatch):
    """The speed routes of ``main_text`` (one parse for both passes, trafilatura's parser
    with a class lookup in C, its readability / justext comparison skipped where moot, its
    attribute-testing XPaths compiled to Python) leave the text and the clean-up counts
    exactly as the unchanged library gives them."""
    import trafilatura
    import trafilatura.core
    from lxml import html as lxml_html
    from trafilatura.utils import HTML_PARSER

    import skypile.text.extract as ext
    from skypile.files.payload import decode_text

    pages = [FORM_PAGE, ARTICLE.decode(), ARTICLE_ZH.decode("gb18030")]
    for lang in ("en", "zh"):
        folder = data_dir / f"extraction-{lang}"
        keys = sorted(json.loads((folder / "ground-truth.json").read_text(encoding="utf-8")))[:12]
        for key in keys:
            [path] = list((folder / "html").glob(f"{key}.html*"))
            raw = path.read_bytes()
            pages.append(decode_text(gzip.decompress(raw) if path.suffix == ".gz" else raw)[0])
    # the reference: the library as released (lxml.html's lookup, a Python call per
    # element, and the comparison always run)
    compare = trafilatura.core.compare_extraction
    monkeypatch.setattr(trafilatura.core, "compare_extraction",
                        getattr(compare, "__wrapped__", compare))
    HTML_PARSER.set_element_class_lookup(lxml_html.HtmlElementClassLookup())
    in_lists = [(where, key, where[key]) for where, key, _ in ext.XPATH_SWAPS if isinstance(where, list)]
    for where, key, original in ext.XPATH_SWAPS:  # lxml's XPath objects, as released
        if isinstance(where, list):
            where[key] = original
        else:
            monkeypatch.setattr(where, key, original)
    monkeypatch.setattr(ext, "_patched", False)
    try:
        expected = [_straightforward(page) for page in pages]
    finally:
        for where, key, compiled in in_lists:
            where[key] = compiled

    verdicts = []
    moot = ext._comparison_is_moot
    monkeypatch.setattr(ext, "_comparison_is_moot",
                        lambda *a: verdicts.append(moot(*a)) or verdicts[-1])
    got = [ext.main_text(page, "", ExtractConfig()) for page in pages]
    assert [(g["text"], g["removed"]) for g in got] == expected
    assert trafilatura.__version__ == ext.COMPARISON_CHECKED_ON, \
        "trafilatura changed: check _comparison_is_moot against its compare_extraction"
    assert True in verdicts and False in verdicts  # both ways were taken
    assert any(text for text, _ in expected[3:])  # real pages, real text


def test_compiled_xpaths_select_what_lxml_selects_on_real_pages(data_dir, monkeypatch):
    """Every call trafilatura makes to a compiled XPath while extracting real pages gives
    the elements lxml gives, in the same order (the compiled path is the one measured)."""
    import skypile.text.extract as ext
    from skypile.files.payload import decode_text
    from skypile.text.xpath_subset import CompiledXPath

    ext._speed_up_trafilatura()
    assert len(ext.XPATH_SWAPS) >= 10  # trafilatura's pruning expressions are covered
    calls, differ = [], []
    run = CompiledXPath.__call__

    def both(self, node, **variables):
        got, want = run(self, node, **variables), self.original(node, **variables)
        calls.append(self.path)
        if got != want:
            differ.append(" ".join(self.path.split())[:80])
        return got

    monkeypatch.setattr(CompiledXPath, "__call__", both)
    for lang in ("en", "zh"):
        folder = data_dir / f"extraction-{lang}"
        for path in sorted((folder / "html").glob("*.html*"))[:40]:
            raw = path.read_bytes()
            html = decode_text(gzip.decompress(raw) if path.suffix == ".gz" else raw)[0]
            ext.main_text(html, "", ExtractConfig())
    assert differ == []
    assert len(calls) > 500 and len(set(calls)) >= 8


def test_trafilatura_as_released_on_request():
    """SKYPILE_TRAFILATURA_AS_RELEASED=1 turns the speed changes off (the "routes off" run
    of the web benchmark), in the process and in its sandboxes."""
    import os
    import subprocess
    import sys

    code = ("import trafilatura.core as c, trafilatura.xpaths as x; "
            "import skypile.text.extract as e; e._speed_up_trafilatura(); "
            "print(len(e.XPATH_SWAPS), hasattr(c.compare_extraction, '__wrapped__'), "
            "type(x.OVERALL_DISCARD_XPATH[0]).__name__)")
    runs = {}
    for value in ("1", "0"):
        env = dict(os.environ, SKYPILE_TRAFILATURA_AS_RELEASED=value)
        runs[value] = subprocess.run([sys.executable, "-c", code], env=env, check=True,
                                     capture_output=True, text=True).stdout.split()
    assert runs["1"] == ["0", "False", "XPath"]
    assert runs["0"][1:] == ["True", "CompiledXPath"] and int(runs["0"][0]) >= 10
