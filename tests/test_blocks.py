"""The blocks stage on real pages (issue 20): copies collapse before boilerplate is judged.

- Real articles (``extraction-en`` ground truths) published on four synthetic sites, each
  site wrapping its pages in its own banner and footer; 16 of them republished on two other
  sites, 6 of those on 24 more small sites (27 copies, more than the old stage's 10): every
  article comes out once, body intact, with no site chrome.
- Pages that hold nothing but a site's chrome: rejected ``blocks:mostly-boilerplate``.
- The Debian handbook (``docs-warc``) in all its language editions, partly untranslated:
  one copy of each distinct text, and nothing cut for sharing untranslated lines.

The default thresholds (``BlocksConfig``) are used throughout.
"""

import collections
import gzip
import hashlib
import json

import pytest

from skypile.files.readers import ReaderOptions, ReadStats, read_file
from skypile.pipelines.web import run, run_dedup
from skypile.text.dedup import BlocksConfig, normalize
from warcgen import gz, record

pytestmark = pytest.mark.integration

SITES = ("The Morning Ledger", "Harbour City Courier", "Northfield Gazette", "Valley Wire")


def chrome(site: str) -> tuple[list[str], list[str]]:
    """A site's banner and footer lines (each site its own)."""
    banner = [f"{site} | Home | World | Business | Technology | Sport | Opinion",
              f"Subscribe to {site} for unlimited access to every story, from $1 a week."]
    footer = [f"© 2024 {site}. All rights reserved. Reproduction without permission is "
              "prohibited.",
              f"Contact the {site} newsroom | Privacy policy | Cookie settings | Terms of use"]
    return banner, footer


def host(site: str) -> str:
    return site.lower().replace(" ", "-") + ".example"


def outputs(out):
    """(kept documents, rejects, stats.json, reports/recurring_blocks.json) of a run."""
    docs = [json.loads(line) for f in (out / "docs").glob("*.jsonl.gz")
            for line in gzip.open(f, "rt", encoding="utf-8")]
    rejects = [json.loads(line) for f in (out / "rejects").glob("*.jsonl.gz")
               for line in gzip.open(f, "rt", encoding="utf-8")]
    report = json.loads((out / "reports" / "recurring_blocks.json").read_text())
    return docs, rejects, json.loads((out / "stats.json").read_text()), report


def assert_chained(stats, order):
    stages = stats["stages"]
    for name in order:
        s = stages[name]
        assert s["in"] == s["kept"] + sum(s["dropped"].values()), (name, s)
    for a, b in zip(order, order[1:]):
        assert stages[b]["in"] == stages[a]["kept"], (a, b, stages)


# ---- republished articles, and chrome-only pages ---------------------------------------------

@pytest.fixture(scope="module")
def republished(data_dir, tmp_path_factory):
    truth = json.loads((data_dir / "extraction-en/ground-truth.json").read_text(encoding="utf-8"))
    bodies = [truth[k]["articleBody"].strip() for k in sorted(truth)]
    rows = []

    def page(site, path, body):
        banner, footer = chrome(site)
        rows.append({"id": hashlib.sha1(f"{site}/{path}".encode()).hexdigest()[:16],
                     "url": f"https://{host(site)}/{path}",
                     "text": "\n".join(banner + [body] + footer)})

    long_ones = [i for i, b in enumerate(bodies) if len(b.split("\n\n")) >= 5]
    for i, body in enumerate(bodies):
        origin = i % len(SITES)
        page(SITES[origin], f"news/{i}", body)
        # syndicated copies lack the last paragraph, so the origin's is the longest copy
        trimmed = body.rsplit("\n\n", 1)[0]
        if i in long_ones[:16]:  # on two more of the four sites
            for k in (1, 2):
                page(SITES[(origin + k) % len(SITES)], f"wire/{i}", trimmed)
        if i in long_ones[:6]:  # and on 24 small sites: 27 copies, each in its site's chrome
            for k in range(24):
                page(f"Wire Reader {k:02d}", f"story/{i}", trimmed)
    for site in SITES:  # pages with nothing but the site's chrome (tag and archive pages)
        for n in range(3):
            page(site, f"tag/{n}", f"Page {n + 1}")
    tmp = tmp_path_factory.mktemp("republished")
    path = tmp / "pages.jsonl"
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows),
                    encoding="utf-8")
    out = tmp / "out"
    assert run_dedup(["--input", str(path), "--output", str(out),
                      "--stages", "blocks,exact,minhash"]) == 0  # listed in any order
    return bodies, rows, outputs(out)


def test_every_republished_article_comes_out_once_with_its_body(republished):
    bodies, rows, (docs, rejects, stats, _report) = republished
    assert_chained(stats, ["extract", "exact", "minhash", "blocks"])
    found = collections.Counter()
    for d in docs:
        if d["url"].split("/")[-2] in ("news", "wire", "story"):
            found[d["text"]] += 1
    assert sorted(found) == sorted(bodies)  # each body intact: chrome cut, nothing else
    assert set(found.values()) == {1}
    copies = sum(1 for r in rows if "/wire/" in r["url"] or "/story/" in r["url"])
    dedup = [r for r in rejects if r["stage"] in ("exact", "minhash")
             and r["url"].split("/")[-2] in ("news", "wire", "story")]
    assert len(dedup) == copies  # the syndicated copies went to dedup, not to blocks
    assert not [r for r in rejects if r["stage"] == "blocks" and "/tag/" not in r["url"]]


def test_site_banners_and_footers_are_cut_from_the_kept_copies(republished):
    _bodies, _rows, (docs, _rejects, _stats, _report) = republished
    lines = {normalize(line) for site in SITES for line in sum(chrome(site), [])}
    for d in docs:
        assert not lines & {normalize(line) for line in d["text"].split("\n")}, d["url"]
        assert d["metadata"]["blocks_removed_chars"] > 0


def test_chrome_is_reported_with_its_hosts_and_documents(republished):
    _bodies, _rows, (_docs, _rejects, _stats, report) = republished
    chrome_rows = [r for r in report["top"] if r["verdict"] == "chrome"]
    assert len(chrome_rows) == 4 * len(SITES)
    cfg = BlocksConfig()
    assert all(r["hosts"] == 1 and r["documents"] >= cfg.min_site_documents for r in chrome_rows)
    assert report["counted_over"] == "documents kept by dedup"


def test_pages_of_nothing_but_chrome_are_still_rejected(republished):
    _bodies, _rows, (docs, rejects, _stats, _report) = republished
    assert not [d for d in docs if "/tag/" in d["url"]]
    tags = [r for r in rejects if "/tag/" in r["url"]]
    assert len(tags) == 3 * len(SITES)
    boiler = [r for r in tags if r["reason"] == "blocks:mostly-boilerplate"]
    # copies of one chrome may first meet as near duplicates; the one left is boilerplate
    assert {r["url"].split("/")[2] for r in boiler} == {host(s) for s in SITES}
    assert all(r["reason"] in ("blocks:mostly-boilerplate", "minhash:near-duplicate")
               for r in tags)


# ---- mirrored documentation: the Debian handbook in every language edition -----------------

SECTIONS = ("sect.apt-get.html", "sect.inetd.html", "sect.linux-mint.html")


@pytest.fixture(scope="module")
def handbook(data_dir, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("handbook")
    warc = tmp / "handbook.warc.gz"
    pages = 0
    with open(warc, "wb") as f:
        for path in sorted((data_dir / "docs-warc").glob("*.warc.gz")):
            for rec in read_file(str(path), ReaderOptions(), ReadStats(), {}):
                url = getattr(rec, "url", "") or ""
                if "debian-handbook" in url and url.rsplit("/", 1)[-1] in SECTIONS:
                    f.write(gz(record(rec.body, url=url)))
                    pages += 1
    out = tmp / "out"
    assert run(["--input", str(warc), "--output", str(out),
                "--stages", "extract,exact,minhash,blocks"]) == 0
    return pages, outputs(out)


def test_mirrored_documentation_keeps_one_copy_of_each_text(handbook):
    pages, (docs, rejects, stats, _report) = handbook
    assert pages >= 3 * 20  # every language edition of each section
    assert_chained(stats, ["read", "url", "extract", "exact", "minhash", "blocks"])
    extracted = docs + [r for r in rejects if r["stage"] in ("exact", "minhash", "blocks")]
    # the old stage (before dedup, a line in more than 10 pages cut) would have cut these
    recurring = collections.Counter(n for d in extracted for n in {
        normalize(line) for line in d["text"].split("\n") if len(normalize(line)) >= 10})
    assert sum(1 for c in recurring.values() if c > 10) > 20
    kept = {d["id"] for d in docs}
    by_text = collections.defaultdict(list)
    for d in extracted:
        by_text[normalize(d["text"])].append(d)
    kept_as = {r["id"]: r["detail"]["kept_id"] for r in rejects
               if r["stage"] in ("exact", "minhash")}

    def survivor(doc_id):  # a dropped copy -> the kept document it is a copy of
        for _ in range(5):
            if doc_id in kept:
                return doc_id
            doc_id = kept_as.get(doc_id)
        return None

    for copies in by_text.values():
        assert len([d for d in copies if d["id"] in kept]) <= 1
        assert all(survivor(d["id"]) for d in copies)  # no text without a kept copy
    assert not [r for r in rejects if r["stage"] == "blocks"]


def test_translated_pages_are_not_cut_for_untranslated_lines(handbook):
    _pages, (docs, _rejects, _stats, _report) = handbook
    editions = collections.Counter(d["url"].split("/")[3] for d in docs)
    assert len(editions) > 5  # translations kept beside the English text (in whichever copy)
    assert not [d["url"] for d in docs if "blocks_removed_chars" in d["metadata"]]
