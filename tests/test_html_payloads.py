"""HTML inside text records (issue 15, point 6): JSONL whose ``text`` is a web page goes
through extraction (``read.content``), and a text that still looks like markup is never a
clean document (``extract:markup``), in ``skypile web`` and in ``skypile dedup``.

The pages are the real ones of extraction-en / extraction-zh, read from their WARCs with
the project's own readers and decoded as the extract stage decodes them.
"""

import gzip
import json
import re
from pathlib import Path

import pytest

from skypile.document import Document, Reject
from skypile.files import payload
from skypile.files.readers import RawRecord, read_file
from skypile.pipelines.web import run, run_dedup
from skypile.text.extract import ExtractConfig, Extractor, text_document
from skypile.text.markup import looks_like_html, markup_profile

TAG = re.compile(r"</?(?:html|head|body|script|style|div|span|p|a|li|ul|table|td|meta)\b[^<>]*>",
                 re.I)

PROSE = [
    "If a < b and b < c, then a < c: the relation is transitive. In HTML the <b> tag makes "
    "text bold and <i> makes it italic; write <b>bold</b> when you mean it.",
    "template <typename T> std::vector<T> keep(const std::vector<T>& xs) { return xs; }\n"
    "Java has List<Integer> and Map<String, List<Integer>>; C has #include <stdio.h>. "
    "A comparison such as x<y or p > q is not a tag either.",
    "The <div> element groups content and <p> marks a paragraph. Many pages nest a <div> "
    "inside another <div>, which is why a layout can be hard to follow when reading the "
    "source of a page for the first time; a good editor folds them.",
]


# ---- real pages, read with the project's readers ----------------------------------------

def _pages(folder: Path) -> list[dict]:
    """Every page of one extraction set: its decoded HTML and its ground-truth text."""
    ids = json.loads((folder / "urls.json").read_text())
    truth = json.loads((folder / "ground-truth.json").read_text(encoding="utf-8"))
    pages = []
    for rec in read_file(str(folder / "pages.warc.gz")):
        assert isinstance(rec, RawRecord), rec
        resp = payload.parse_response(rec.body)
        html, charset, _ = payload.decode_text(resp.body, resp.headers.get("content-type", ""))
        page_id = ids[rec.url]
        pages.append({"id": page_id, "url": rec.url, "html": html, "charset": charset,
                      "truth": truth[page_id]["articleBody"]})
    return pages


@pytest.fixture(scope="module")
def pages(data_dir) -> dict[str, list[dict]]:
    return {lang: _pages(data_dir / f"extraction-{lang}") for lang in ("en", "zh")}


@pytest.fixture(scope="module")
def chosen(pages) -> list[dict]:
    """Two English pages and a GB2312/GBK Chinese one, each with scripts in it."""
    en = [p for p in pages["en"] if "<script" in p["html"].lower()][:2]
    zh = [p for p in pages["zh"] if "<script" in p["html"].lower()
          and p["charset"].lower() in ("gb2312", "gbk", "gb18030")][:1]
    assert len(en) == 2 and len(zh) == 1
    return en + zh


def _truth_lines(page: dict) -> list[str]:
    return [line.strip() for line in page["truth"].splitlines() if len(line.strip()) >= 30]


def assert_extracted(text: str, page: dict) -> None:
    """Text of the article, with no markup left."""
    assert "<script" not in text.lower() and not TAG.search(text), text[:300]
    assert not looks_like_html(text)
    lines = _truth_lines(page)
    found = sum(line in text for line in lines)
    assert found >= max(1, len(lines) // 2), (page["url"], found, len(lines))


# ---- the detector ------------------------------------------------------------------------

def test_every_real_page_looks_like_html_and_no_article_text_does(pages):
    for lang, items in pages.items():
        for p in items:
            assert looks_like_html(p["html"]), (lang, p["url"], markup_profile(p["html"]))
            assert not looks_like_html(p["truth"]), (lang, p["url"])
    # Chinese pages inside an archive's wrapper element (<text id=...>) are pages too
    wrapped = [p for p in pages["zh"] if p["html"].lstrip().lower().startswith("<text")]
    assert wrapped and all(looks_like_html(p["html"]) for p in wrapped)


def test_prose_that_mentions_tags_is_not_html(data_dir):
    for text in PROSE:
        assert not looks_like_html(text), text
    # real paragraphs, some with a stray <br> or two, stay text
    rows = [json.loads(line) for f in sorted((data_dir / "wiki-zh").glob("*.jsonl"))
            for line in f.open(encoding="utf-8")]
    assert rows and not [r["id"] for r in rows if looks_like_html(r["text"])]
    assert not looks_like_html((data_dir / "wiki-en/wiki.test.raw").read_text(encoding="utf-8"))


def test_fragments_and_pages_without_a_doctype_are_html():
    assert looks_like_html("<div class='post'><p>One</p><p>Two</p><p>Three</p></div>")
    assert looks_like_html("<html><body><p>A short page.</p></body></html>")
    assert not looks_like_html("<html> is the root element of every page.")
    assert not looks_like_html("<p>Hello</p>")  # too few tags to call it markup


# ---- the extract stage on text records -----------------------------------------------------

@pytest.fixture(scope="module")
def extractors():
    made = {c: Extractor(ExtractConfig(sandbox=False), content=c) for c in ("auto", "text")}
    yield made
    for ex in made.values():
        ex.close()


def _record(page: dict) -> RawRecord:
    return RawRecord(id=page["id"], url=page["url"], source="rows.jsonl", kind="text",
                     body=page["html"], metadata={"file": "rows.jsonl", "at": "line 1"})


def test_text_record_holding_a_page_is_extracted(extractors, chosen):
    for page in chosen:
        doc = extractors["auto"](_record(page))
        assert isinstance(doc, Document), (page["url"], doc)
        assert doc.metadata["payload"] == "html"
        assert_extracted(doc.text, page)


def test_content_text_keeps_html_out_as_a_markup_reject(extractors, chosen):
    rej = extractors["text"](_record(chosen[0]))
    assert isinstance(rej, Reject) and rej.reason == "extract:markup"
    assert rej.detail["extracted"] is False and "read.content=text" in rej.detail["hint"]
    assert rej.text and rej.detail["tags"] > 100
    prose = RawRecord(id="p", url="", source="s", kind="text", body=PROSE[0])
    for ex in extractors.values():
        doc = ex(prose)
        assert isinstance(doc, Document) and doc.text == PROSE[0]
        assert "payload" not in doc.metadata


def test_dedup_text_step_rejects_html_and_keeps_prose(chosen):
    rej = text_document(_record(chosen[2]))
    assert isinstance(rej, Reject) and rej.reason == "extract:markup"
    assert "skypile web" in rej.detail["hint"] and rej.detail["at"] == "line 1"
    doc = text_document(RawRecord(id="p", url="u", source="s", kind="text", body=PROSE[1]))
    assert isinstance(doc, Document) and doc.text == PROSE[1]


# ---- real runs --------------------------------------------------------------------------

def read_jsonl_gz(folder: Path) -> list[dict]:
    return [json.loads(line) for f in sorted(folder.glob("*.jsonl.gz"))
            for line in gzip.open(f, "rt", encoding="utf-8")]


def outputs(out: Path):
    docs, rejects = read_jsonl_gz(out / "docs"), read_jsonl_gz(out / "rejects")
    stats = json.loads((out / "stats.json").read_text())
    for name, s in stats["stages"].items():
        assert s["in"] == s["kept"] + sum(s["dropped"].values()), name
    assert sum(sum(s["dropped"].values()) for s in stats["stages"].values()) == len(rejects)
    return {d["id"]: d for d in docs}, {r["id"]: r for r in rejects}, stats


@pytest.fixture(scope="module")
def mixed_jsonl(chosen, tmp_path_factory) -> Path:
    """Three real pages and three texts that talk about tags, as one JSONL file."""
    path = tmp_path_factory.mktemp("html-jsonl") / "rows.jsonl"
    rows = [{"id": p["id"], "url": p["url"], "text": p["html"]} for p in chosen]
    rows += [{"id": f"prose-{i}", "text": t} for i, t in enumerate(PROSE)]
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows),
                    encoding="utf-8")
    return path


@pytest.mark.integration
def test_web_extracts_html_in_jsonl_and_keeps_text_untouched(mixed_jsonl, chosen, tmp_path):
    out = tmp_path / "out"
    assert run(["--input", str(mixed_jsonl), "--output", str(out), "--stages", "extract"]) == 0
    docs, rejects, stats = outputs(out)
    assert not rejects and stats["stages"]["extract"]["kept"] == 6
    for page in chosen:
        assert docs[page["id"]]["metadata"]["payload"] == "html"
        assert_extracted(docs[page["id"]]["text"], page)
    for i, text in enumerate(PROSE):
        assert docs[f"prose-{i}"]["text"] == text


@pytest.mark.integration
def test_web_with_content_text_rejects_the_pages_as_markup(mixed_jsonl, chosen, tmp_path):
    out = tmp_path / "out"
    assert run(["--input", str(mixed_jsonl), "--output", str(out), "--stages", "extract",
                "--read.content=text"]) == 0
    docs, rejects, stats = outputs(out)
    assert sorted(docs) == [f"prose-{i}" for i in range(len(PROSE))]
    assert {r["reason"] for r in rejects.values()} == {"extract:markup"}
    assert sorted(rejects) == sorted(p["id"] for p in chosen)
    assert all(r["text"].lstrip().startswith("<") for r in rejects.values())  # nothing lost
    assert stats["stages"]["extract"]["dropped"] == {"extract:markup": 3}


@pytest.mark.integration
def test_dedup_rejects_html_payloads(mixed_jsonl, chosen, tmp_path):
    out = tmp_path / "out"
    assert run_dedup(["--input", str(mixed_jsonl), "--output", str(out)]) == 0
    docs, rejects, stats = outputs(out)
    assert sorted(docs) == [f"prose-{i}" for i in range(len(PROSE))]
    assert all(docs[f"prose-{i}"]["text"] == t for i, t in enumerate(PROSE))
    assert sorted(rejects) == sorted(p["id"] for p in chosen)
    assert all(r["reason"] == "extract:markup" and "skypile web" in r["detail"]["hint"]
               for r in rejects.values())
    assert stats["stages"]["read"]["kept"] == stats["stages"]["extract"]["in"] == 6
    # dedup cannot honour read.content=html: it is refused before anything runs
    assert run_dedup(["--input", str(mixed_jsonl), "--output", str(tmp_path / "no"),
                      "--read.content=html"]) == 2
    assert not (tmp_path / "no").exists()
