"""Source / domain labels and held-out splits for token shards.

Label rules come from config and are tried in order; the first match names the domain.
A rule matches on the URL (regex), the file the document came from (regex), and/or
metadata values (``{"corpus": "stem"}``, ``{"lang": ["en", "zh"]}``). Without a match the
default applies, a template over metadata such as ``web_{lang}``.

A domain is a folder under the output, and a template fills it from data, so every label
is checked against an allowlist (:func:`bad_domain`); the tokenize stage rejects a
document whose label fails (tokenize:bad-domain) instead of writing outside its folder.

Held-out validation documents are chosen by a hash of the id, so the same document is
held out on every run, whatever the order or sharding of the input.
"""

from __future__ import annotations

import dataclasses
import functools
import re
import zlib

from skypile.config import ConfigError
from skypile.document import Document


@dataclasses.dataclass
class LabelRule:
    domain: str
    """Domain name given when the rule matches (e.g. encyclopedia, code, stem)."""
    url: str = ""
    """Regex searched in the URL (empty: any)."""
    source: str = ""
    """Regex searched in the source file path (empty: any)."""
    metadata: dict = dataclasses.field(default_factory=dict)
    """Metadata key -> required value, or list of accepted values."""


@dataclasses.dataclass
class LabelConfig:
    """How documents get their source/domain label (``labels`` in the tokenize config)."""

    rules: list[LabelRule] = dataclasses.field(default_factory=lambda: [
        LabelRule(domain="stem", metadata={"corpus": "stem"}),
        LabelRule(domain="parallel", metadata={"source_kind": "parallel"}),
        LabelRule(domain="code", metadata={"source_kind": "code"}),
        LabelRule(domain="encyclopedia", url=r"(^|//|\.)(wikipedia|baike\.baidu|wikiwand)\."),
    ])
    """Rules tried in order; the first that matches names the domain."""
    default: str = "web_{lang}"
    """Domain when no rule matches; {key} is filled from metadata (unknown: 'other')."""


def _matches(rule: LabelRule, doc: Document) -> bool:
    # metadata first: a few dict lookups rule most documents out before any regex runs
    for key, want in rule.metadata.items():
        have = doc.metadata.get(key)
        if isinstance(want, list) and have not in want:
            return False
        if not isinstance(want, list) and have != want:
            return False
    if rule.url and not _pattern(rule.url).search(doc.url or ""):
        return False
    if rule.source and not _pattern(rule.source).search(doc.source or ""):
        return False
    return True


_pattern = functools.lru_cache(maxsize=256)(re.compile)
"""A rule's regex, compiled once."""


_FIELD = re.compile(r"\{(\w+)\}")
_SAFE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
MAX_DOMAIN_CHARS = 64
RESERVED = frozenset({"rejects", "manifest.json", "stats.json", "config.json", "datacard.md",
                      "tokenizer.model"})
"""Names the output itself uses next to the domain folders (compared case-insensitively)."""


def label(doc: Document, cfg: LabelConfig) -> str:
    """The document's domain, as the rules and the default say; not yet checked
    (:func:`bad_domain`), since a template takes its text from the document."""
    for rule in cfg.rules:
        if _matches(rule, doc):
            return rule.domain
    return _FIELD.sub(lambda m: str(doc.metadata.get(m.group(1)) or "other"), cfg.default)


def bad_domain(name: str) -> str | None:
    """Why ``name`` cannot be a folder under the output, or None when it can: ASCII
    letters, digits, '_', '.', '-', starting with a letter or digit (no '..', no hidden
    or staging folder), at most MAX_DOMAIN_CHARS, and none of the output's own names."""
    if not isinstance(name, str) or not _SAFE.fullmatch(name):
        return "only A-Z a-z 0-9 _ . - allowed, starting with a letter or digit"
    if len(name) > MAX_DOMAIN_CHARS:
        return f"longer than {MAX_DOMAIN_CHARS} characters"
    if name.lower() in RESERVED:
        return "a name the output uses itself"
    return None


def check_labels(cfg: LabelConfig) -> None:
    """Raise ConfigError when a rule's domain, or the default with every {field} filled,
    is not a safe folder name: a config error, before any document is read."""
    for rule in cfg.rules:
        why = bad_domain(rule.domain)
        if why:
            raise ConfigError(f"labels.rules: domain {rule.domain!r} is not a folder name ({why})")
    why = bad_domain(_FIELD.sub("x", cfg.default))
    if why:
        raise ConfigError(f"labels.default {cfg.default!r} does not make a folder name ({why})")


def hash_fraction(doc_id: str, salt: str = "heldout") -> float:
    """A number in [0, 1) fixed by the id: the same document always lands on the same side."""
    return zlib.crc32(f"{salt}:{doc_id}".encode("utf-8")) / 2 ** 32


@dataclasses.dataclass
class HeldOutConfig:
    """Held-out validation sets, one per domain (``held_out``)."""

    fraction: float = 0.01
    """Share of each domain's documents held out (by a hash of the id)."""
    max_docs: int = 2000
    """At most this many held-out documents per domain (the smallest hashes win)."""


def is_held_out(doc_id: str, cfg: HeldOutConfig) -> bool:
    return hash_fraction(doc_id) < cfg.fraction
