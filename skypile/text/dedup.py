"""Deduplication maths: one matching normalisation, exact keys, shingles, MinHash LSH.

Everything here is per document or per pair; the corpus-wide steps (counting blocks,
grouping buckets, connected components) are Beam transforms in ``skypile.pipelines.dedup``.

Which copy is kept, everywhere: the longest text (most complete copy), ties broken by the
smallest id. ``keep_key`` encodes that rule.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import hashlib
import itertools
import json
import re
import struct
import unicodedata
import urllib.parse
from typing import Iterator

import numpy as np

from skypile.document import Document, Reject
from skypile.text.chars import CJK, CJK_CHARS

# ---- one normalisation for matching -----------------------------------------------------

_CJK_CHARS = CJK_CHARS
_CJK = CJK
_TOKENS = re.compile(f"[{_CJK_CHARS}]|[^\\s{_CJK_CHARS}]+")


class _ToSpace(dict):
    """The ``str.translate`` table of :func:`normalize`: every punctuation, symbol,
    separator, control, format, private-use and surrogate character -> space, every other
    character -> itself.

    A character is looked up in the Unicode database the first time it is seen and
    remembered, so translate finds every character it meets (a character missing from a
    translate table costs a raised and caught KeyError, which made normalising most of
    the work). At most :data:`_TABLE_CAP` characters are remembered.
    """

    def __missing__(self, cp: int) -> int | str:
        cat = unicodedata.category(chr(cp))
        if cat[0] in "PSZ" or cat in ("Cc", "Cf") or 0xD800 <= cp <= 0xF8FF or cp >= 0xF0000:
            value: int | str = " "
        else:
            value = cp
        if len(self) < _TABLE_CAP:
            self[cp] = value
        return value


_TABLE_CAP = 1 << 18
_TO_SPACE = _ToSpace()


def normalize(text: str) -> str:
    """The text as every dedup step compares it.

    NFKC (full-width letters, digits and punctuation become their ASCII forms), lower case,
    punctuation / symbols / separators / controls / private-use characters to spaces, runs
    of whitespace to one space. (Unassigned code points are kept as they are.)
    """
    # every whitespace character is a separator or a control, so after the table the
    # only whitespace left is " ", and split() / join() collapses and trims it
    return " ".join(unicodedata.normalize("NFKC", text).lower().translate(_TO_SPACE).split())


def tokens(text: str) -> list[str]:
    """Matching tokens of normalised text: words, and each CJK character on its own."""
    return _TOKENS.findall(normalize(text))


def is_cjk(toks: list[str]) -> bool:
    """Chinese, Japanese or Korean text: most tokens are CJK characters."""
    cjk = sum(1 for t in toks if len(t) == 1 and _CJK.match(t))
    return cjk * 2 > len(toks)


# ---- exact keys -------------------------------------------------------------------------

_TRACKING = re.compile(r"^(utm_|fbclid$|gclid$|mc_cid$|mc_eid$|spm$|from$|ref$)")


def url_key(url: str) -> str:
    """A URL as the same page would be fetched again.

    Lower-case scheme and host, no default port, no ``www.``, no fragment, no tracking
    parameters, sorted query, no trailing slash. http and https are the same page.
    """
    if not url:
        return ""
    try:  # a bad IPv6 host or a port that is not a number: the URL as it is
        parts = urllib.parse.urlsplit(url.strip())
        port = parts.port if parts.port not in (None, 80, 443) else None
    except ValueError:
        return url.strip()
    host = (parts.hostname or "").lower().removeprefix("www.")
    query = sorted((k, v) for k, v in urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
                   if not _TRACKING.match(k.lower()))
    path = parts.path.rstrip("/") or ""
    netloc = f"{host}:{port}" if port else host
    return urllib.parse.urlunsplit(("", netloc, path, urllib.parse.urlencode(query), "")).lstrip("/")


def content_hash(text: str) -> str:
    return hashlib.sha1(normalize(text).encode("utf-8")).hexdigest()


def text_hash(text: str) -> str:
    """SHA-1 of the exact text (no normalisation): equal only for the same characters."""
    return hashlib.sha1(text.encode("utf-8", "surrogatepass")).hexdigest()


def renamed_id(doc_id: str, hash_of_text: str) -> str:
    """The id given to a text whose id another, different text keeps (``id#<hash>``).

    It depends on the text alone, never on which copy arrived first, so every run and
    every ordering names the same text the same way.
    """
    return f"{doc_id}#{hash_of_text[:12]}"


def copy_key(doc: Document) -> tuple[str, str, str]:
    """Which of several copies with the same id and text is kept: the smallest key
    (source, URL, metadata), whatever order they come in."""
    return doc.source, doc.url, json.dumps(doc.metadata, sort_keys=True, default=str)


def keep_key(doc_id: str, text_len: int) -> tuple[int, bytes]:
    """Sort key of the copy to keep: the largest key wins (longest, then smallest id).

    The id's UTF-8 bytes are inverted (255 - b; UTF-8 never uses 0xF5-0xFF) and end with
    0xFF, so that a larger key is a smaller id, an id ranks above its own extensions
    (``doc1`` before ``doc10``), and any id, lone surrogates included, gives valid bytes.
    """
    raw = doc_id.encode("utf-8", "surrogatepass")
    return (text_len, bytes(255 - b for b in raw) + b"\xff")


# ---- shingles and MinHash ---------------------------------------------------------------

@dataclasses.dataclass
class MinHashConfig:
    """MinHash LSH near-duplicate detection (``dedup.minhash`` in the pipeline config)."""

    threshold: float = 0.4
    """Target Jaccard similarity of shingle sets; pairs above it are near duplicates."""
    num_perm: int = 256
    """Number of hash permutations in a signature."""
    ngram_words: int = 5
    """Shingle size for space-delimited text, in words."""
    ngram_chars: int = 5
    """Shingle size for Chinese, Japanese and Korean text, in characters."""
    fn_weight: float = 0.7
    """Weight of false negatives (vs false positives) when bands x rows are chosen."""
    seed: int = 1
    """Seed of the permutations: signatures are comparable only with the same seed."""
    max_rounds: int = 20
    """Most rounds of connected components (large-star then small-star, each round).
    Clusters of near duplicates need 1-4; a chain of n documents about log2(n). A run
    whose components have not converged after this many rounds fails and says so."""
    max_bucket_size: int = 100_000
    """LSH buckets with more documents than this (near-empty or boilerplate texts that
    share a band) link only a deterministic sample of about this many of their members
    to the bucket's hub; ``stats.json`` counts them (``capped_buckets``,
    ``capped_members``)."""

    def __post_init__(self):
        from skypile.config import ConfigError

        for name, low in {"max_rounds": 1, "max_bucket_size": 2, "num_perm": 2}.items():
            if getattr(self, name) < low:
                raise ConfigError(f"dedup.minhash.{name}={getattr(self, name)!r}: "
                                  f"must be at least {low}")


def shingles(text: str, cfg: MinHashConfig) -> set[bytes]:
    """Word n-grams for space-delimited text, character n-grams for CJK text."""
    return set(iter_shingles(text, cfg))


SHINGLE_LIST_CHARS = 1 << 20
"""Normalised texts up to this many characters are shingled from a list of their tokens;
longer ones as a stream, in memory that does not grow with the text."""


def iter_shingles(text: str, cfg: MinHashConfig) -> Iterator[bytes]:
    """The shingles of :func:`shingles` one at a time (repeats included). A text over
    :data:`SHINGLE_LIST_CHARS` is never held as a list of its tokens: memory stays at a few
    copies of the text, whatever its size."""
    norm = normalize(text)
    if len(norm) <= SHINGLE_LIST_CHARS:
        yield from _shingle_list(norm, cfg)
        return
    count = cjk = 0
    for m in _TOKENS.finditer(norm):  # a first pass decides the shingle kind (is_cjk)
        count += 1
        tok = m.group()
        cjk += len(tok) == 1 and _CJK.match(tok) is not None
    if not count:
        return
    n = cfg.ngram_chars if cjk * 2 > count else cfg.ngram_words
    toks = (m.group() for m in _TOKENS.finditer(norm))
    if count <= n:
        yield " ".join(toks).encode("utf-8")
        return
    window = collections.deque(itertools.islice(toks, n - 1), maxlen=n)
    for tok in toks:
        window.append(tok)
        yield " ".join(window).encode("utf-8")


def _shingle_list(norm: str, cfg: MinHashConfig) -> list[bytes]:
    """:func:`iter_shingles` of a short normalised text, from the list of its tokens."""
    toks = _TOKENS.findall(norm)
    if not toks:
        return []
    # a one-character token is CJK exactly when it is a CJK character, and a CJK
    # character is always a token of its own: count them in the text
    cjk = len(norm) - len(_CJK.sub("", norm))
    n = cfg.ngram_chars if cjk * 2 > len(toks) else cfg.ngram_words
    if len(toks) <= n:
        return [" ".join(toks).encode("utf-8")]
    return [" ".join(toks[i:i + n]).encode("utf-8") for i in range(len(toks) - n + 1)]


def _sha1_32(data: bytes) -> int:
    """datasketch's ``sha1_hash32`` (the first 4 bytes of SHA-1, little-endian), in one
    call fewer per shingle."""
    return int.from_bytes(hashlib.sha1(data).digest()[:4], "little")


@functools.lru_cache(maxsize=64)
def lsh_params(threshold: float, num_perm: int, fn_weight: float) -> tuple[int, int]:
    """Bands and rows (b * r <= num_perm) minimising the weighted error around threshold.

    The probability that a pair of Jaccard similarity s shares a band is 1 - (1 - s^r)^b;
    false positives are the area under that curve below the threshold, false negatives the
    area above it that the curve misses.
    """
    grid = np.linspace(0.0, 1.0, 1001)
    below, above = grid[grid < threshold], grid[grid >= threshold]
    best, best_err = (1, num_perm), float("inf")
    for b in range(1, num_perm + 1):
        r = num_perm // b
        if r == 0:
            break
        fp = np.trapezoid(1 - (1 - below ** r) ** b, below) if len(below) > 1 else 0.0
        fn = np.trapezoid((1 - above ** r) ** b, above) if len(above) > 1 else 0.0
        err = (1 - fn_weight) * fp + fn_weight * fn
        if err < best_err:
            best, best_err = (b, r), err
    return best


SIGNATURE_CHUNK = 4096
"""Shingles per MinHash update: 256 permutations x 4096 x 8 bytes = 8 MiB at a time."""


class MinHasher:
    """Signatures with datasketch's MinHash, fixed seed and permutations."""

    def __init__(self, cfg: MinHashConfig):
        from datasketch import MinHash

        self.cfg = cfg
        self._template = MinHash(num_perm=cfg.num_perm, seed=cfg.seed, hashfunc=_sha1_32)
        self.bands, self.rows = lsh_params(cfg.threshold, cfg.num_perm, cfg.fn_weight)

    def signature(self, text: str) -> np.ndarray | None:
        """The text's signature (None without shingles), in bounded memory.

        Shingles are hashed :data:`SIGNATURE_CHUNK` at a time and folded in with a running
        minimum, so the permutations x shingles matrix is never larger than
        ``num_perm x SIGNATURE_CHUNK``; a minimum over repeats is the minimum over the set,
        so the signature is the one of the whole shingle set at once.
        """
        m, empty = self._template.copy(), True
        stream = iter_shingles(text, self.cfg)
        while chunk := list(itertools.islice(stream, SIGNATURE_CHUNK)):
            m.update_batch(set(chunk))  # a repeat cannot lower the minimum
            empty = False
        return None if empty else m.hashvalues.astype(np.uint32)

    def band_keys(self, sig: np.ndarray) -> list[bytes]:
        r = self.rows
        return [struct.pack("<H", b) + hashlib.blake2b(sig[b * r:(b + 1) * r].tobytes(),
                                                       digest_size=12).digest()
                for b in range(self.bands)]


def similarity(a: np.ndarray, b: np.ndarray) -> float:
    """Estimated Jaccard similarity of two signatures."""
    return float(np.mean(a == b))


# ---- recurring blocks -------------------------------------------------------------------

@dataclasses.dataclass
class BlocksConfig:
    """Recurring text blocks (``dedup.blocks`` in the pipeline config).

    The stage runs after exact, MinHash and semantic dedup and counts over the documents
    they kept, so the copies of one text count once. Per line it counts the documents that
    have it, their hosts, and the most documents of any one host. Site chrome is cut from
    every document; other text shared across sites keeps one copy; the rest is untouched.
    """

    min_site_documents: int = 20
    """A line on at least this many kept documents of one host is that site's chrome
    (navigation, banner, footer, cookie or subscription notice): cut from every document."""
    min_hosts: int = 10
    """A line on kept documents of at least this many hosts (and not chrome) is text shared
    across sites (a template, a licence, an excerpt): cut from all but one document, the
    longest that has it. A document without a URL counts as a host of its own."""
    min_block_chars: int = 10
    """Shorter lines are neither counted nor cut (too short to be a meaningful block)."""
    max_removed_fraction: float = 0.5
    """A document that loses more than this fraction of its characters is rejected."""
    report_top: int = 100
    """How many of the most recurrent blocks the report lists, cut and kept each."""


def block_hash(line: str, cfg: BlocksConfig) -> bytes | None:
    """Hash of a line's normalised form, or None when it is too short to count."""
    norm = normalize(line)
    if len(norm) < cfg.min_block_chars:
        return None
    return hashlib.blake2b(norm.encode("utf-8"), digest_size=8).digest()


def doc_blocks(text: str, cfg: BlocksConfig) -> list[tuple[bytes, str]]:
    """The distinct blocks of a text: (hash, the line as first written, up to 300 chars)."""
    seen: dict[bytes, str] = {}
    for line in text.split("\n"):
        h = block_hash(line, cfg)
        if h is not None and h not in seen:
            seen[h] = line.strip()[:300]
    return list(seen.items())


def host_of(doc: Document) -> str:
    """The host a block's recurrence is counted under: the normalised URL's host (``www.``
    and the scheme dropped), or, for a document without one, the document itself."""
    host = url_key(doc.url).split("/", 1)[0] if doc.url else ""
    return host or f"#{doc.id}"


BlockCount = tuple[int, int, int, str]
"""(documents, hosts, most documents of one host, an example line) of one block."""


def merge_block_counts(counts) -> BlockCount:
    """Sum of block counts (an associative combiner: partial sums merge the same way).
    The example line is the smallest, so it does not depend on arrival order."""
    docs = hosts = site = 0
    line = None
    for d, h, s, example in counts:
        docs, hosts, site = docs + d, hosts + h, max(site, s)
        line = example if line is None else min(line, example)
    return docs, hosts, site, line or ""


def block_verdict(count: BlockCount, cfg: BlocksConfig) -> str | None:
    """``chrome`` (cut everywhere), ``shared`` (one copy kept) or None (untouched)."""
    _docs, hosts, site, _line = count
    if site >= cfg.min_site_documents:
        return "chrome"
    if hosts >= cfg.min_hosts:
        return "shared"
    return None


def cut_blocks(text: str, cut: set[bytes] | dict, cfg: BlocksConfig) -> tuple[str, int]:
    """Remove the lines whose hash is in ``cut``; returns (new text, characters removed)."""
    kept, removed = [], 0
    for line in text.split("\n"):
        if block_hash(line, cfg) in cut:
            removed += len(line) + 1
        else:
            kept.append(line)
    return "\n".join(kept).strip("\n"), removed


# ---- stage configs -----------------------------------------------------------------------

@dataclasses.dataclass
class ExactConfig:
    """Exact deduplication (``dedup.exact``)."""

    by_url: bool = True
    """Drop later copies of the same normalised URL (keeps the longest text)."""
    by_content: bool = True
    """Drop documents whose normalised text is identical to another's."""


@dataclasses.dataclass
class SemanticConfig:
    """SemDeDup-like semantic deduplication (``dedup.semantic``); run with --stages ...,semantic."""

    epsilon: float = 0.95
    """Cosine similarity at or above which two documents of a cluster are duplicates."""
    clusters: int = 16
    """k of the first k-means, fitted on ``sample_size`` documents; clusters above
    ``max_cluster_size`` are then split again, so the number of clusters grows with the
    corpus (documents are compared only within a cluster)."""
    sample_size: int = 10000
    """Documents sampled (smallest id hashes) to fit the first centroids."""
    max_cluster_size: int = 2000
    """Pair-search budget: no similarity search covers more documents than this (its matrix
    is at most this squared, 16 MB at 2000). Larger clusters are split by k-means; a cluster
    still larger after ``max_levels`` splits is searched in hash blocks of at most this
    size, each with one shared anchor document, and listed in the report."""
    max_levels: int = 3
    """Rounds of splitting the clusters above ``max_cluster_size``."""
    max_split: int = 32
    """Most sub-clusters one split makes (k = cluster size / max_cluster_size, capped)."""
    split_sample_size: int = 512
    """Members sampled (smallest id hashes) per cluster to fit the sub-centroids of the
    oversized ones (a combiner holds this many vectors per cluster: 1 MB at 512)."""
    report_rows: int = 1000
    """Clusters listed in reports/semantic_clusters.json (most duplicate pairs first)."""
    max_chars: int = 1000
    """Characters of each document that are embedded."""
    iterations: int = 20
    """k-means iterations."""
    seed: int = 0
    """Seed of the k-means initialisation and of the id hashes used for samples and blocks."""

    def __post_init__(self):
        from skypile.config import ConfigError

        least = {"clusters": 1, "sample_size": 1, "max_cluster_size": 2, "max_levels": 0,
                 "max_split": 2, "split_sample_size": 2, "report_rows": 0, "iterations": 0,
                 "max_chars": 1}
        for name, low in least.items():
            if getattr(self, name) < low:
                raise ConfigError(f"dedup.semantic.{name}={getattr(self, name)!r}: "
                                  f"must be at least {low}")
        if not -1.0 <= self.epsilon <= 1.0:
            raise ConfigError(f"dedup.semantic.epsilon={self.epsilon!r}: a cosine similarity "
                              "between -1 and 1")


@dataclasses.dataclass
class DedupConfig:
    """All deduplication settings (``dedup`` in the pipeline config)."""

    blocks: BlocksConfig = dataclasses.field(default_factory=BlocksConfig)
    exact: ExactConfig = dataclasses.field(default_factory=ExactConfig)
    minhash: MinHashConfig = dataclasses.field(default_factory=MinHashConfig)
    semantic: SemanticConfig = dataclasses.field(default_factory=SemanticConfig)


# ---- the blocks stage --------------------------------------------------------------------

class CutBlocks:
    """The ``blocks`` stage: a Document and the hashes of its lines to cut in; a new
    Document with those lines cut (``blocks_removed_chars``), or a Reject
    (blocks:mostly-boilerplate) when too much of it, or all its text, was boilerplate."""

    def __init__(self, cfg: BlocksConfig):
        self.cfg = cfg

    def __call__(self, doc: Document, cut: set[bytes] | dict) -> Document | Reject:
        text, removed = cut_blocks(doc.text, cut, self.cfg)
        share = min(removed / max(len(doc.text), 1), 1.0)  # separators count too
        if removed and (share > self.cfg.max_removed_fraction or not text.strip()):
            return Reject.of(doc, "blocks", "mostly-boilerplate",
                             removed_fraction=round(share, 3))
        if not removed:
            return doc
        # a new Document: the element that came in is not changed in place
        return dataclasses.replace(doc, text=text,
                                   metadata={**doc.metadata, "blocks_removed_chars": removed})
