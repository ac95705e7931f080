"""One pipeline output (``web``, ``dedup``, ``code`` or ``tokenize``) summarised in one pass.

The rejects are streamed once, then the documents once. Everything kept is bounded: a
bottom-k sample per reject reason and of the kept documents (``sampling.BottomK``),
fixed-bin score histograms, and the near-duplicate clusters' sizes in at most
``cluster_counters`` counters (``sampling.TopCounter``: exact while there are no more
clusters than counters). The kept copy of each of the few largest clusters is picked up
from the documents; one dropped by a later stage is looked up again among the rejects,
for those few ids only.
"""

from __future__ import annotations

import dataclasses
import glob
import gzip
import json
import os
from typing import Any, Iterator

from fsspec.implementations.local import LocalFileSystem

from skypile.files import output
from skypile.inspect.raw import raw_text
from skypile.inspect.sampling import BottomK, Histogram, TopCounter

SCORES = {  # metadata key -> histogram range (lo, hi, bins, log10); charts crop and merge
    "lang_score": (0.0, 1.0, 20, False),
    "perplexity": (0.0, 6.0, 240, True),
    "quality_score": (0.0, 1.0, 20, False),
    "stem_score": (0.0, 1.0, 20, False),
}
CLUSTER_STAGES = ("minhash", "semantic")
MAX_REASONS = 200  # reject reasons are a fixed vocabulary; this only guards odd inputs


@dataclasses.dataclass
class Limits:
    """How much of a run the report shows (the report's size does not grow past these)."""

    samples: int = 20
    """rejects sampled per reason, and kept documents sampled"""
    full_text: int = 20_000
    """characters of a sampled document's text kept for its full view"""
    clusters: int = 10
    """largest near-duplicate clusters shown, per dedup stage"""
    members: int = 3
    """dropped members shown per cluster, beside the kept copy"""
    cluster_counters: int = 4096
    """counters for cluster sizes (exact up to this many clusters)"""
    seed: int = 0
    """seed of the sampling hash: another seed draws another sample"""


@dataclasses.dataclass
class Step:
    """What the report shows of one output folder."""

    name: str
    folder: str
    kind: str
    stats: dict
    config: dict
    reports: dict
    samples: dict[str, list[dict]]
    """reject reason -> sampled rejects"""
    reason_counts: dict[str, int]
    kept: list[dict]
    kept_seen: int
    histograms: dict[tuple[str, str], Histogram]
    """(score, language) -> histogram with series kept / rejected"""
    clusters: dict[str, list[dict]]
    """dedup stage -> largest clusters: size, kept copy, members, similarity"""
    cluster_exact: dict[str, bool]
    manifest: dict | None = None


def kind_of(config: dict, has_manifest: bool) -> str:
    """Which command wrote an output, from what it saved."""
    if has_manifest or "shards" in config:
        return "tokenize"
    stages = config.get("stages") or []
    if "code" in stages or "format_rates" in (config.get("filter") or {}):
        return "code"
    return "web" if "extract" in stages else "dedup"


def read_rows(folder: str, kind: str) -> Iterator[dict]:
    """Every JSON row of ``folder/kind/*.jsonl.gz``, in file order."""
    paths = sorted(glob.glob(os.path.join(folder, kind, "*.jsonl.gz")))
    for path in output.current_files(LocalFileSystem(), paths):  # the published run's files
        try:
            with gzip.open(path, "rt", encoding="utf-8") as f:
                for n, line in enumerate(f, 1):
                    if line.strip():
                        row = json.loads(line)
                        if not isinstance(row, dict):
                            raise ValueError(f"line {n} is not a JSON object")
                        yield row
        except (OSError, EOFError, ValueError) as e:  # cut, damaged or not our format
            raise ValueError(f"{path}: cannot be read ({e})") from None


def _read_json(path: str) -> Any:
    if not os.path.exists(path):
        return None
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except ValueError as e:
        raise ValueError(f"{path} is not JSON ({e})") from None


def _scores(row: dict) -> dict:
    meta = row.get("metadata") if "metadata" in row else row.get("detail")
    return meta if isinstance(meta, dict) else {}


class Collector:
    """Streams one output folder into a :class:`Step`."""

    def __init__(self, name: str, folder: str, limits: Limits):
        self.name, self.folder, self.limits = name, folder, limits
        self.stats = _read_json(os.path.join(folder, "stats.json")) or {}
        stages = self.stats.get("stages", {}) if isinstance(self.stats, dict) else None
        if not isinstance(stages, dict) or not all(isinstance(v, dict) for v in stages.values()):
            raise ValueError(f"{folder}/stats.json is not the stats of a skypile run")
        config = _read_json(os.path.join(folder, "config.json"))
        self.config = config if isinstance(config, dict) else {}
        manifest = _read_json(os.path.join(folder, "manifest.json"))
        self.manifest = manifest if isinstance(manifest, dict) else None
        if self.manifest and not self.config:
            self.config = self.manifest.get("config", {})
        self.kind = kind_of(self.config, self.manifest is not None)
        keep = (self.config.get("filter") or {}).get("keep_langs") or []
        self.langs = set(keep) if isinstance(keep, list) else set()
        self.reasons: dict[str, BottomK] = {}
        self.kept = BottomK(limits.samples, limits.seed)
        self.hist: dict[tuple[str, str], Histogram] = {}
        self.tops = {s: TopCounter(limits.cluster_counters, limits.members, limits.seed)
                     for s in CLUSTER_STAGES}

    def collect(self) -> Step:
        for row in read_rows(self.folder, "rejects"):
            self._reject(row)
        clusters = {s: t.top(self.limits.clusters) for s, t in self.tops.items() if t.total}
        wanted = {kept_id for rows in clusters.values() for _k, _n, members in rows
                  for kept_id in {m["kept_id"] for m in members}}
        found: dict[str, dict] = {}
        for row in read_rows(self.folder, "docs"):
            self._doc(row)
            if row.get("id") in wanted:
                found[row["id"]] = self._trim(row)
        if wanted - set(found):  # kept by dedup, dropped by a later stage
            for row in read_rows(self.folder, "rejects"):
                if row.get("id") in wanted and row["id"] not in found:
                    found[row["id"]] = self._trim(row)
        return self._step(clusters, found)

    def _trim(self, row: dict) -> dict:
        text = row.get("text") or ""
        out = {k: row.get(k) for k in ("id", "url", "stage", "reason", "source") if row.get(k)}
        out.update(text=text[: self.limits.full_text], chars=len(text))
        for key in ("detail", "metadata"):
            if isinstance(row.get(key), dict):
                out[key] = row[key]
        return out

    def _lang(self, meta: dict) -> str:
        lang = meta.get("lang")
        if not isinstance(lang, str) or not lang:
            return "?"
        return lang if lang in self.langs or not self.langs else "other"

    def _histograms(self, row: dict, series: str) -> None:
        meta = _scores(row)
        for key, (lo, hi, bins, log) in SCORES.items():
            value = meta.get(key)
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                hist = self.hist.get((key, self._lang(meta)))
                if hist is None:
                    hist = self.hist[(key, self._lang(meta))] = Histogram(lo, hi, bins, log)
                hist.add(float(value), series)

    def _reject(self, row: dict) -> None:
        reason = str(row.get("reason", "?"))
        sampler = self.reasons.get(reason)
        if sampler is None:
            if len(self.reasons) >= MAX_REASONS:
                reason = "(other reasons)"
            sampler = self.reasons.setdefault(reason, BottomK(self.limits.samples,
                                                              self.limits.seed))
        key = str(row.get("id", ""))
        if (r := sampler.wants(key)) is not None:
            sampler.put(r, key, self._trim(row))
        self._histograms(row, "rejected")
        detail = row.get("detail") if isinstance(row.get("detail"), dict) else {}
        stage = row.get("stage")
        if stage in self.tops and "cluster" in detail and "kept_id" in detail:
            member = {"id": key, "kept_id": str(detail["kept_id"]), "url": row.get("url", ""),
                      "source": row.get("source", ""),
                      "text": (row.get("text") or "")[: self.limits.full_text],
                      "chars": len(row.get("text") or "")}
            self.tops[stage].add(str(detail["cluster"]), key, member)

    def _doc(self, row: dict) -> None:
        key = str(row.get("id", ""))
        if (r := self.kept.wants(key)) is not None:
            self.kept.put(r, key, self._trim(row))
        self._histograms(row, "kept")

    def _step(self, clusters: dict, found: dict) -> Step:
        reports = {}
        for path in sorted(glob.glob(os.path.join(self.folder, "reports", "*.json"))):
            reports[os.path.basename(path)[:-5]] = _read_json(path)
        counts = {reason: s.seen for reason, s in self.reasons.items()}
        order = {stage: i for i, stage in enumerate(self.stats.get("stages", {}))}
        samples = {reason: self.reasons[reason].items() for reason in sorted(
            self.reasons, key=lambda r: (order.get(r.split(":")[0], len(order)), -counts[r], r))}
        rows = {stage: [{"cluster": key, "size": n + 1, "dropped": n, "members": members,
                         "kept": found.get(members[0]["kept_id"]) if members else None}
                        for key, n, members in tops]
                for stage, tops in clusters.items()}
        exact = {stage: self.tops[stage].shortfall == 0 for stage in rows}
        return Step(self.name, self.folder, self.kind, self.stats, self.config, reports,
                    samples, counts, self.kept.items(), self.kept.seen, self.hist, rows, exact,
                    self.manifest)


def add_raw_pages(step: Step, limit: int, storage_options: dict | None = None) -> None:
    """The tag-stripped raw page beside each sampled extraction reject and kept page
    (``raw``: the text, or None when it cannot be read back)."""
    items = [s for reason, rows in step.samples.items() if reason.startswith("extract:")
             for s in rows]
    if step.kind == "web":
        items += step.kept
    for item in items:
        where = item.get("detail") if "detail" in item else item.get("metadata")
        where = where if isinstance(where, dict) else {}
        if "file" in where and isinstance(where.get("offset"), int):
            item["raw"] = raw_text(where["file"], where["offset"], item["id"], limit,
                                   storage_options)
        else:
            item["raw"] = None


def add_similarity(step: Step) -> None:
    """Estimated Jaccard similarity (MinHash, the run's settings) of each shown cluster
    member to the kept copy; None when a text is too short to shingle or missing."""
    from skypile.text.dedup import MinHashConfig, MinHasher, similarity

    if not any(step.clusters.values()):
        return
    section = ((step.config.get("dedup") or {}).get("minhash") or {})
    fields = {f.name for f in dataclasses.fields(MinHashConfig)}
    hasher = MinHasher(MinHashConfig(**{k: v for k, v in section.items() if k in fields}))
    for rows in step.clusters.values():
        for cluster in rows:
            kept = cluster["kept"]
            ref = hasher.signature(kept["text"]) if kept else None
            for m in cluster["members"]:
                sig = hasher.signature(m["text"]) if ref is not None else None
                m["similarity"] = round(similarity(ref, sig), 3) if sig is not None else None


def collect(name: str, folder: str, limits: Limits, storage_options: dict | None = None) -> Step:
    """The summary of one output folder, raw pages and similarities included."""
    step = Collector(name, folder, limits).collect()
    add_raw_pages(step, limits.full_text, storage_options)
    add_similarity(step)
    return step
