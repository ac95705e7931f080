"""``DATACARD.md`` of a token shard set: what went in, what was removed, what came out.

A pure function of the manifest, the tokenize run's stats, and the outputs its inputs came
from: an input ``X/docs/part-*.jsonl.gz`` names the output folder ``X`` of an earlier
``skypile web`` / ``dedup`` / ``code`` run, whose ``stats.json`` (counts per stage and
reason, its own inputs) and ``config.json`` (the resolved config) are read in turn, back
to the raw inputs. Nothing is recomputed and no document is read.
"""

from __future__ import annotations

import dataclasses
import posixpath
import re
from typing import Any

from skypile import config as cfglib
from skypile.files import output
from skypile.tokens.manifest import UNKNOWN_LANG, output_of
from skypile.version import code_version

DEDUP_STAGES = ("url", "exact", "minhash", "semantic", "blocks")
MAX_DEPTH = 6
"""Outputs followed upstream (web -> dedup -> tokenize is three)."""
THRESHOLDS = {  # stage -> config keys (dotted) that decide it
    "read": ("read.max_record_bytes", "read.max_file_bytes", "read.max_archive_bytes"),
    "extract": ("extract.allowed_status", "extract.max_page_bytes", "extract.timeout_s",
                "extract.max_depth", "extract.lang_gate", "extract.lang_gate_min_score",
                "extract.cleanup.min_doc_units"),
    "blocks": ("dedup.blocks.min_site_documents", "dedup.blocks.min_hosts",
               "dedup.blocks.max_removed_fraction"),
    "exact": ("dedup.exact.by_url", "dedup.exact.by_content"),
    "minhash": ("dedup.minhash.threshold", "dedup.minhash.num_perm", "dedup.minhash.ngram_words",
                "dedup.minhash.ngram_chars"),
    "semantic": ("dedup.semantic.epsilon", "dedup.semantic.clusters"),
    "lang": ("filter.keep_langs", "filter.min_lang_score", "filter.route_other"),
    "heuristic": ("filter.heuristics",),
    "perplexity": ("filter.keep_buckets", "perplexity.head_percentile",
                   "perplexity.middle_percentile", "perplexity.cutoffs"),
    "quality": ("filter.quality_groups", "filter.keep_quality_groups"),
    "code": ("filter",),
    "tokenize": ("shards.min_doc_tokens",),
}


@dataclasses.dataclass
class Output:
    """One pipeline output the shard set was made from (directly or further upstream)."""

    folder: str
    kind: str
    stats: dict
    config: dict
    inputs: list[str]


def output_kind(config: dict) -> str:
    """Which command wrote an output, from its saved config."""
    if "shards" in config and "held_out" in config:
        return "tokenize"
    stages = config.get("stages") or []
    if "code" in stages or "format_rates" in (config.get("filter") or {}):
        return "code"
    return "web" if "extract" in stages else "dedup"


def _read(url: str, so: dict | None) -> Any:
    try:
        return output.read_json(url, so)
    except (OSError, ValueError):
        return None


def upstream(inputs: list[str], storage_options: dict | None = None) -> list[Output]:
    """Every earlier output the inputs come from, nearest first, each once."""
    found: list[Output] = []
    seen: set[str] = set()
    frontier = list(inputs)
    for _ in range(MAX_DEPTH):
        folders = sorted({f for f in map(output_of, frontier) if f and f not in seen})
        frontier = []
        for folder in folders:
            seen.add(folder)
            stats = _read(output.join(folder, "stats.json"), storage_options)
            stages = stats.get("stages") if isinstance(stats, dict) else None
            if not isinstance(stages, dict) or not all(isinstance(v, dict) for v in stages.values()):
                continue  # not a skypile output: its files are inputs like any other
            config = _read(output.join(folder, "config.json"), storage_options)
            config = config if isinstance(config, dict) else {}
            ins = [str(i) for i in stats.get("inputs", [])]
            found.append(Output(folder, output_kind(config), stats, config, ins))
            frontier += ins
        if not frontier:
            break
    return found


def _flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(data, dict) and data and prefix.count(".") < 3:
        out: dict[str, Any] = {}
        for k, v in data.items():
            out.update(_flatten(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: data}


def _value(v: Any) -> str:
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, list):
        return "[" + ", ".join(_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k}: {_value(x)}" for k, x in v.items()) + "}"
    return str(v)


def _defaults(kind: str) -> dict:
    if kind == "tokenize":
        from skypile.jobs.tokenize import TokenizeConfig
        return cfglib.to_dict(TokenizeConfig())
    if kind == "code":
        from skypile.jobs.code import CodeConfig
        return cfglib.to_dict(CodeConfig())
    from skypile.jobs.web import WebConfig
    return cfglib.to_dict(WebConfig())


def command_line(kind: str, folder: str, config: dict, inputs: list[str],
                 extra: tuple[str, ...] = ()) -> str:
    """An equivalent command line: inputs (grouped by folder), output, and every setting
    that differs from the command's defaults as ``--section.key=value``."""
    words = [f"skypile {kind}"]
    for group in _input_groups(inputs):
        words.append(f"--input '{group}'")
    words += list(extra) + [f"--output {folder}"]
    defaults = _flatten(_defaults(kind))
    for key, value in _flatten(config).items():
        if key.startswith("storage_options") or defaults.get(key, object()) == value:
            continue
        if key == "stages":
            words.append(f"--stages {','.join(value)}")
        else:
            words.append(f"--{key}={_value(value)!r}" if " " in _value(value)
                         else f"--{key}={_value(value)}")
    return " \\\n    ".join(words)


def _input_groups(inputs: list[str]) -> list[str]:
    """Files sharing a folder and an extension become one glob (folders stay as they are)."""
    groups: dict[tuple[str, str], list[str]] = {}
    for path in inputs:
        base = posixpath.basename(path.rstrip("/"))
        ext = base[base.find("."):] if "." in base.lstrip(".") else ""
        key = (posixpath.dirname(path), ext) if ext else (path, "")
        groups.setdefault(key, []).append(path)
    return [paths[0] if len(paths) == 1 else posixpath.join(folder, f"*{ext}")
            for (folder, ext), paths in sorted(groups.items())]


# ---- the card -----------------------------------------------------------------------------

def _get(config: dict, dotted: str) -> Any:
    node: Any = config
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def _table(head: list[str], rows: list[list[Any]]) -> list[str]:
    right = ["---:" if h.startswith(("documents", "tokens", "in", "removed", "share", "train",
                                     "validation", "kept")) else "---" for h in head]
    out = ["| " + " | ".join(head) + " |", "|" + "|".join(right) + "|"]
    out += ["| " + " | ".join(str(c).replace("|", "\\|") for c in row) + " |" for row in rows]
    return out + [""]


def _n(v: int) -> str:
    return f"{v:,}"


def _totals(manifest: dict) -> tuple[int, int]:
    splits = [s for d in manifest.get("domains", {}).values() for s in d.values()]
    return sum(s.get("docs", 0) for s in splits), sum(s.get("tokens", 0) for s in splits)


def domains_section(manifest: dict) -> list[str]:
    _docs, tokens = _totals(manifest)
    rows = []
    for domain, splits in sorted(manifest.get("domains", {}).items()):
        tr, va = splits.get("train", {}), splits.get("validation", {})
        t = tr.get("tokens", 0) + va.get("tokens", 0)
        rows.append([domain, _n(tr.get("docs", 0)), _n(tr.get("tokens", 0)), _n(va.get("docs", 0)),
                     _n(va.get("tokens", 0)), f"{t / max(tokens, 1):.1%}"])
    return ["## Domains", ""] + _table(["domain", "train documents", "train tokens",
                                        "validation documents", "validation tokens",
                                        "share of tokens"], rows)


def _per_key_rows(table: dict, total_tokens: int) -> list[list[Any]]:
    """The breakdown's rows, most tokens first: key, documents, tokens, share of tokens."""
    return [[key, _n(v.get("docs", 0)), _n(v.get("tokens", 0)),
             f"{v.get('tokens', 0) / max(total_tokens, 1):.1%}"]
            for key, v in sorted(table.items(), key=lambda kv: (-kv[1].get("tokens", 0), kv[0]))]


def languages_section(manifest: dict) -> list[str]:
    """Documents and tokens per language, from the manifest's breakdown (each document's
    ``lang``); a manifest written before it has the domain labels' word only."""
    langs = (manifest.get("breakdown") or {}).get("languages")
    if not langs:
        return _languages_from_labels(manifest)
    note = (f"Documents and tokens in the shards (both splits, EOS counted) by each document's "
            f"`lang` metadata; `{UNKNOWN_LANG}`: it names none (code, text that skipped "
            f"language id).")
    return ["## Languages", "", note, ""] + _table(
        ["language", "documents", "tokens", "share of tokens"],
        _per_key_rows(langs, _totals(manifest)[1]))


def _languages_from_labels(manifest: dict) -> list[str]:
    """Languages as the domain labels tell them: a label made by the default template
    (``web_{lang}``) names its language; domains given by a rule mix languages."""
    default = str(_get(manifest.get("config", {}), "labels.default") or "")
    parts = default.split("{lang}")
    pattern = (re.compile(re.escape(parts[0]) + r"(.+)" + re.escape(parts[1]) + "$")
               if len(parts) == 2 else None)
    langs: dict[str, list[int]] = {}
    mixed = []
    for domain, splits in sorted(manifest.get("domains", {}).items()):
        m = pattern.match(domain) if pattern else None
        if not m:
            mixed.append(domain)
            continue
        row = langs.setdefault(m.group(1), [0, 0])
        row[0] += sum(s.get("docs", 0) for s in splits.values())
        row[1] += sum(s.get("tokens", 0) for s in splits.values())
    rows = [[lang, _n(d), _n(t)] for lang, (d, t) in sorted(langs.items())]
    note = (f"From the domain labels (default `{default}`); "
            + (f"{', '.join(mixed)} are labelled by rule and not split by language." if mixed
               else "every domain names its language."))
    return ["## Languages", "", note, ""] + (_table(["language", "documents", "tokens"], rows)
                                               if rows else [])


def sources_section(outputs: list[Output], manifest: dict) -> list[str]:
    """Documents and tokens per source (the manifest's breakdown), then each earlier
    output (documents in and kept) and the raw inputs it read."""
    lines = ["## Sources", ""]
    sources = (manifest.get("breakdown") or {}).get("sources")
    if sources:
        kinds = {o.folder: o.kind for o in outputs}
        lines += ["Documents and tokens in the shards (both splits, EOS counted) by where "
                  "tokenize read them: an earlier output, or the folder of an input.", ""]
        lines += _table(["source", "made by", "documents", "tokens", "share of tokens"], [
            [f"`{row[0]}`", kinds.get(row[0], "input"), *row[1:]]
            for row in _per_key_rows(sources, _totals(manifest)[1])])
    rows = []
    for o in outputs:
        stages = o.stats.get("stages", {})
        first = next(iter(stages.values()), {})
        last = list(stages.values())[-1] if stages else {}
        raw = [g for g in _input_groups([i for i in o.inputs if not output_of(i)])]
        rows.append([f"`{o.folder}`", o.kind, _n(first.get("in", 0)), _n(last.get("kept", 0)),
                     "; ".join(f"`{g}`" for g in raw) or "(earlier outputs only)"])
    direct = [g for g in _input_groups([i for i in manifest.get("inputs", []) if not output_of(i)])]
    lines += ["Documents read and kept by each output the shards were made from (their "
              "`stats.json`), and the raw inputs it read.", ""]
    lines += _table(["output", "command", "documents in", "documents kept", "raw inputs"], rows)
    if direct:
        lines += ["Read directly by tokenize: " + ", ".join(f"`{g}`" for g in direct), ""]
    return lines


def _threshold_text(config: dict, stage: str) -> str:
    shown = []
    for key in THRESHOLDS.get(stage, ()):
        value = _get(config, key)
        if value is not None and value != "" and value != {}:
            shown.append(f"{key.split('.', 1)[-1] if '.' in key else key}={_value(value)}")
    text = "; ".join(shown)
    return text if len(text) <= 300 else text[:297] + "..."


def filters_section(outputs: list[Output], tokenize: Output) -> list[str]:
    rows = []
    for o in list(reversed(outputs)) + [tokenize]:
        for stage, s in o.stats.get("stages", {}).items():
            dropped = s.get("dropped", {}) or {}
            removed = sum(dropped.values())
            top = ", ".join(f"{r} {_n(n)}" for r, n in sorted(dropped.items(),
                                                             key=lambda kv: (-kv[1], kv[0]))[:4])
            rows.append([o.kind, stage, _n(s.get("in", 0)), _n(removed),
                         f"{removed / max(s.get('in', 0), 1):.2%}", top,
                         _threshold_text(o.config, stage)])
    return ["## Filters applied", "", "Every stage of every run, upstream first: what it removed "
            "(share of what reached it) and the settings that decide it.", ""] + _table(
        ["run", "stage", "in", "removed", "share removed", "top reasons", "thresholds"], rows)


def dedup_section(outputs: list[Output]) -> list[str]:
    rows = []
    for o in reversed(outputs):
        for stage in DEDUP_STAGES:
            s = o.stats.get("stages", {}).get(stage)
            if s:
                removed = sum((s.get("dropped") or {}).values())
                rows.append([f"`{o.folder}`", stage, _n(s.get("in", 0)), _n(removed),
                             f"{removed / max(s.get('in', 0), 1):.2%}"])
    if not rows:
        return ["## Deduplication", "", "No dedup stage ran upstream.", ""]
    return ["## Deduplication", ""] + _table(["output", "stage", "in", "removed",
                                              "share removed"], rows)


def tokenizer_section(manifest: dict) -> list[str]:
    tok = manifest.get("tokenizer", {})
    return ["## Tokenizer", "",
            f"- model: `{tok.get('path', '?')}`",
            f"- sha256: `{tok.get('sha256', '?')}`",
            f"- vocabulary size: {_n(tok.get('vocab_size', 0))}; EOS id {tok.get('eos_id', '?')}; "
            f"tokens stored as {manifest.get('dtype', '?')} (shard format version "
            f"{manifest.get('version', '?')})", ""]


def held_out_section(manifest: dict) -> list[str]:
    cfg = manifest.get("config", {}).get("held_out", {})
    rows = [[domain, _n(splits["validation"].get("docs", 0)),
             _n(splits["validation"].get("tokens", 0))]
            for domain, splits in sorted(manifest.get("domains", {}).items())
            if "validation" in splits]
    settings = ", ".join(f"{k}={_value(v)}" for k, v in cfg.items())
    return (["## Held-out sets", "", "Chosen by a hash of each document's id (the same documents "
             "on every run), never in the training shards" + (f"; {settings}." if settings else "."),
             ""] + (_table(["domain", "validation documents", "validation tokens"], rows)
                    if rows else ["None.", ""]))


MAX_COMMAND_CHARS = 2000
"""A launched command longer than this (a shell-expanded glob) is cut in the card."""


def _launched(command: str) -> str:
    if len(command) <= MAX_COMMAND_CHARS:
        return command
    return (f"{command[:MAX_COMMAND_CHARS]} ... ({len(command) - MAX_COMMAND_CHARS:,} more "
            f"characters in its stats.json)")


def provenance_section(outputs: list[Output], tokenize: Output, version: str) -> list[str]:
    """Code versions and command lines of every run: as launched, when its stats.json
    recorded it, and rebuilt from its saved config."""
    lines = ["## Provenance", "", f"This card and the shards: {version}.", "",
             "Each run, upstream first: the code version and the command line its "
             "`stats.json` recorded, then a command rebuilt from its saved config (inputs, "
             "output and every setting that differs from the defaults).", ""]
    for o in list(reversed(outputs)) + [tokenize]:
        saved = o.stats.get("skypile_version") or o.config.get("skypile_version")
        launched = o.stats.get("command")
        lines += [f"### {o.kind}: `{o.folder}`", "",
                  f"Code version: {saved or 'not recorded (its stats.json has no skypile_version)'}", "",
                  "Launched as:" if launched else
                  "Launched as: not recorded (its stats.json has no command).", ""]
        if launched:
            lines += ["```", _launched(str(launched)), "```", ""]
        lines += ["Rebuilt from its config:", "", "```",
                  command_line(o.kind, o.folder, o.config, o.inputs,
                               o.stats.get("_extra_flags", ())), "```", ""]
    return lines


def build(manifest: dict, stats: dict, folder: str, outputs: list[Output],
          version: str) -> str:
    """The data card's Markdown."""
    docs, tokens = _totals(manifest)
    extra = (f"--tokenizer {manifest.get('tokenizer', {}).get('path', '?')}",)
    tokenize = Output(folder, "tokenize", {**stats, "_extra_flags": extra,
                                           "skypile_version": version},
                      manifest.get("config", {}), list(manifest.get("inputs", [])))
    lines = [f"# Data card: {folder}", "",
             f"Token shards written by `skypile tokenize` ({version}): {_n(docs)} documents, "
             f"{_n(tokens)} tokens in {len(manifest.get('domains', {}))} domains, from "
             f"{len(outputs)} earlier output(s). Generated from `manifest.json`, `stats.json` and "
             f"the `stats.json` / `config.json` each earlier output saved.", ""]
    for section in (domains_section(manifest), languages_section(manifest),
                    sources_section(outputs, manifest), filters_section(outputs, tokenize),
                    dedup_section(outputs), tokenizer_section(manifest),
                    held_out_section(manifest), provenance_section(outputs, tokenize, version)):
        lines += section
    return "\n".join(lines).rstrip() + "\n"


def write(staging: str, out: str, storage_options: dict | None = None) -> str:
    """Writes ``staging/DATACARD.md`` for the shard set being published to ``out``."""
    so = storage_options or {}
    manifest = output.read_json(output.join(staging, "manifest.json"), so)
    stats = _read(output.join(staging, "stats.json"), so) or {}
    version = stats.get("skypile_version") or code_version()  # as the launcher recorded it
    text = build(manifest, stats, out, upstream(manifest.get("inputs", []), so), version)
    path = output.join(staging, "DATACARD.md")
    fs, p = output.fs_and_path(path, so)
    with fs.open(p, "wt", encoding="utf-8") as f:
        f.write(text)
    return path
