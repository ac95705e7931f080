"""The sections of one step's tab: funnel, reject samples, kept sample, score histograms,
recurring blocks and near-duplicate clusters. Each function returns an HTML fragment."""

from __future__ import annotations

import json
import re
from html import escape

from skypile.inspect import charts
from skypile.inspect.collect import SCORES, Step
from skypile.text.cutoffs import CutoffError, read_cutoffs

PREVIEW = 500
"""characters of a sample's text shown before the click"""
SCORE_TITLES = {"lang_score": "language score", "perplexity": "KenLM perplexity",
                "quality_score": "quality score", "stem_score": "STEM score"}


def slug(*parts: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]+", "-", "-".join(parts)).strip("-")


def _n(v: int) -> str:
    return f"{v:,}"


def funnel(step: Step) -> str:
    """Per stage: in, kept, dropped (total and by reason) straight from stats.json."""
    stages = step.stats.get("stages", {})
    rows = []
    for stage, s in stages.items():
        dropped = s.get("dropped", {}) or {}
        total = sum(dropped.values())
        n_in = s.get("in", 0) or 0
        links = " ".join(
            f'<a href="#tab={escape(step.name)}&amp;at={slug("r", step.name, r)}" '
            f'data-reason="{escape(r)}" data-n="{n}">{escape(r)} {_n(n)}</a>'
            for r, n in sorted(dropped.items(), key=lambda kv: (-kv[1], kv[0])))
        skipped = s.get("skipped") or {}
        if skipped:
            links += ' <span class="mut">skipped (not documents): ' + ", ".join(
                f"{escape(k)} {_n(v)}" for k, v in sorted(skipped.items())) + "</span>"
        bar = charts.bar([(s.get("kept", 0) / max(n_in, 1), "kept"), (total / max(n_in, 1), "rejected")],
                         f"{stage}: kept {s.get('kept', 0)} of {n_in}")
        rows.append(f'<tr class="stage" data-stage="{escape(stage)}" data-in="{n_in}" '
                    f'data-kept="{s.get("kept", 0)}" data-dropped="{total}"><td>{escape(stage)}</td>'
                    f'<td class="r">{_n(n_in)}</td><td class="r">{_n(s.get("kept", 0))}</td>'
                    f'<td class="r">{_n(total)}</td><td>{bar}</td><td class="reasons">{links}</td></tr>')
    files = step.stats.get("files") or {}
    note = (f'<p class="mut">files read: {_n(files.get("read", 0))}, unreadable: '
            f'{_n(files.get("unreadable", 0))}</p>') if files else ""
    return (f'<h2>Funnel</h2><p class="mut">From <code>{escape(step.folder)}/stats.json</code>; '
            f'each stage gets what the one before kept.</p>'
            f'<table class="funnel"><thead><tr><th>stage</th><th class="r">in</th>'
            f'<th class="r">kept</th><th class="r">dropped</th><th>kept / dropped</th>'
            f'<th>dropped by reason</th></tr></thead><tbody>{"".join(rows)}</tbody></table>{note}')


def _pre(text: str, cap: int) -> str:
    more = f"\n[... {len(text) - cap:,} more characters not in this report]" if len(text) > cap else ""
    return f"<pre>{escape(text[:cap], quote=False)}{escape(more, quote=False)}</pre>"


def _side_by_side(item: dict, cap: int, extracted_title: str) -> str:
    if "raw" not in item:
        return ""
    raw = item["raw"]
    left = _pre(raw, cap) if raw else '<p class="mut">raw page not available</p>'
    return (f'<details class="raw"><summary>raw page (tags stripped) beside the '
            f'{extracted_title}</summary><div class="side"><div><h5>raw page, tags stripped</h5>'
            f'{left}</div><div><h5>{extracted_title}</h5>{_pre(item.get("text") or "", cap)}'
            f'</div></div></details>')


def _meta_line(item: dict) -> str:
    meta = item.get("metadata") if isinstance(item.get("metadata"), dict) else {}
    keys = ("lang", "lang_score", "perplexity", "bucket", "quality_score", "quality_group",
            "stem_score", "corpus", "title", "language", "repo", "path", "minhash_cluster")
    shown = [f"{k}={meta[k]}" for k in keys if k in meta and meta[k] not in ("", None)]
    return f'<p class="mut meta">{escape(", ".join(shown))}</p>' if shown else ""


def sample_card(step: Step, item: dict, anchor: str, cap: int) -> str:
    """One sampled document: reason, stage, URL, detail, preview, and the full text on a click."""
    reason = item.get("reason", "")
    text = item.get("text") or ""
    detail = item.get("detail")
    detail_html = (f'<p class="detail"><code>{escape(json.dumps(detail, ensure_ascii=False)[:600])}'
                   f"</code></p>") if detail else ""
    head = (f'<span class="reason">{escape(reason)}</span> stage <b>{escape(item.get("stage", ""))}</b>'
            if reason else '<span class="kept">kept</span>')
    chars = item.get("chars", len(text))
    full = (f'<details><summary>full text ({_n(chars)} characters)</summary>{_pre(text, cap)}'
            f"</details>") if chars > PREVIEW else ""
    extracted = "text kept with the reject" if reason else "extracted text"
    return (f'<article class="sample" id="{anchor}" data-step="{escape(step.name)}" '
            f'data-id="{escape(str(item.get("id", "")))}" data-url="{escape(item.get("url") or "")}" '
            f'data-reason="{escape(reason)}"><header>{head} · <span class="url">'
            f'{escape(item.get("url") or "(no URL)")}</span><br>id {escape(str(item.get("id", "")))}'
            f' · source {escape(item.get("source") or "")}</header>{_meta_line(item)}{detail_html}'
            f'<div class="preview">{escape(text[:PREVIEW], quote=False) or "<i>(no text)</i>"}</div>'
            f"{full}{_side_by_side(item, cap, extracted)}</article>")


def rejects(step: Step, cap: int) -> str:
    if not step.samples:
        return "<h2>Rejects</h2><p>No rejects.</p>"
    parts = ["<h2>Rejects, sampled per reason</h2><p class=\"mut\">A deterministic sample "
             "(smallest hash of the id under the report's seed); the same run gives the same "
             "sample. Click a text for all of it.</p>"]
    for reason, items in step.samples.items():
        anchor = slug("r", step.name, reason)
        parts.append(f'<section class="reason-block" id="{anchor}" data-reason="{escape(reason)}">'
                     f'<h3><span class="reason">{escape(reason)}</span>: '
                     f'{_n(step.reason_counts.get(reason, 0))} dropped, {len(items)} shown</h3>'
                     f'<div class="samples">')
        parts += [sample_card(step, item, slug("s", step.name, reason, str(i)), cap)
                  for i, item in enumerate(items)]
        parts.append("</div></section>")
    return "".join(parts)


def kept(step: Step, cap: int) -> str:
    if not step.kept:
        return ""
    cards = "".join(sample_card(step, item, slug("k", step.name, str(i)), cap)
                    for i, item in enumerate(step.kept))
    what = " Web pages show their raw page (tags stripped) beside the extracted text." \
        if step.kind == "web" else ""
    return (f'<h2>Kept documents, sampled</h2><p class="mut">{len(step.kept)} of '
            f'{_n(step.kept_seen)}.{what}</p><div class="samples">{cards}</div>')


def _perplexity_cutoffs(step: Step) -> dict[str, list[tuple[float, str]]]:
    ppl = step.config.get("perplexity") or {}
    path = ppl.get("cutoffs") or ""
    try:
        table = read_cutoffs(path) if path else {}
    except (OSError, CutoffError):
        return {}
    head, middle = ppl.get("head_percentile", 30), ppl.get("middle_percentile", 60)
    return {lang: [(row[head], f"head|middle p{head} = {row[head]:.0f}"),
                   (row[middle], f"middle|tail p{middle} = {row[middle]:.0f}")]
            for lang, row in table.items() if len(row) > max(head, middle)}


def thresholds(step: Step, score: str, lang: str) -> list[tuple[float, str]]:
    """The thresholds in force for a score, from the step's saved config."""
    filt = step.config.get("filter") or {}
    if score == "lang_score" and "min_lang_score" in filt:
        return [(filt["min_lang_score"], f"min_lang_score {filt['min_lang_score']}")]
    if score == "perplexity":
        return _perplexity_cutoffs(step).get(lang, [])
    if score == "quality_score":
        keep = filt.get("keep_quality_groups") or []
        return [(v, f"{g} >= {v}{'' if g in keep else ' (dropped)'}")
                for g, v in sorted((filt.get("quality_groups") or {}).items(), key=lambda kv: kv[1])]
    if score == "stem_score" and "threshold" in (step.config.get("stem") or {}):
        return [(step.config["stem"]["threshold"], f"STEM >= {step.config['stem']['threshold']}")]
    return []


def histograms(step: Step) -> str:
    if not step.histograms:
        return ""
    parts = ["<h2>Scores per language</h2>", charts.legend(),
             '<p class="mut">Kept documents and rejects that carry the score (a reject of an '
             'earlier stage was never scored). Perplexity on a log scale.</p>']
    for score in SCORES:
        langs = sorted(lang for s, lang in step.histograms if s == score)
        if not langs:
            continue
        svgs = "".join(charts.histogram_svg(step.histograms[(score, lang)],
                                            f"{SCORE_TITLES[score]}, {lang} "
                                            f"(n={step.histograms[(score, lang)].total():,})",
                                            thresholds(step, score, lang))
                       for lang in langs)
        parts.append(f'<h3>{SCORE_TITLES[score]}</h3><div class="charts">{svgs}</div>')
    return "".join(parts)


def blocks(step: Step, top: int = 20) -> str:
    report = step.reports.get("recurring_blocks") or {}
    rows = report.get("top") or []
    if not rows:
        return ""
    body = "".join(f'<tr><td class="r">{_n(r.get("documents", r.get("count", 0)))}</td>'
                   f'<td class="r">{_n(r.get("hosts", 0))}</td><td>{escape(str(r.get("verdict", "")))}'
                   f'</td><td>{escape(str(r.get("block", ""))[:300])}</td></tr>' for r in rows[:top])
    rule = (f'counted over the documents dedup kept: chrome (on {report["min_site_documents"]}+ '
            f'documents of one host) is cut from all, text shared by {report["min_hosts"]}+ '
            f'hosts keeps one copy' if "min_site_documents" in report else
            f'lines found in more than {report.get("max_occurrences", "?")} documents are cut')
    return (f'<h2>Top recurring blocks</h2><p class="mut">{escape(rule)} '
            f'(reports/recurring_blocks.json, {len(rows)} listed).</p><table><thead><tr>'
            f'<th class="r">documents</th><th class="r">hosts</th><th>verdict</th><th>block</th>'
            f"</tr></thead><tbody>{body}</tbody></table>")


def _cluster(step: Step, stage: str, i: int, c: dict, cap: int) -> str:
    kept_item = c["kept"]
    cards = [sample_card(step, kept_item, slug("c", step.name, stage, str(i), "kept"), cap)
             if kept_item else '<p class="mut">kept copy not found in this output</p>']
    for j, m in enumerate(c["members"]):
        sim = m.get("similarity")
        label = (f'<p class="sim">Jaccard ~ {sim:.3f} to the kept copy</p>' if sim is not None
                 else '<p class="sim mut">similarity: text too short or kept copy missing</p>')
        card = sample_card(step, {"id": m["id"], "url": m.get("url"), "text": m["text"],
                                  "source": m.get("source", ""),
                                  "chars": m["chars"], "stage": stage,
                                  "reason": f"{stage}: duplicate of {m['kept_id']}"},
                           slug("c", step.name, stage, str(i), str(j)), cap)
        cards.append(card.replace("</header>", "</header>" + label, 1))
    return (f'<div class="cluster" data-cluster="{escape(c["cluster"])}" data-size="{c["size"]}">'
            f'<h4>cluster {escape(c["cluster"])}: {_n(c["size"])} documents, 1 kept (left), '
            f'{_n(c["dropped"])} dropped ({len(c["members"])} shown)</h4>'
            f'<div class="samples">{"".join(cards)}</div></div>')


def clusters(step: Step, cap: int) -> str:
    parts = []
    for stage, rows in step.clusters.items():
        if not rows:
            continue
        exact = "exact sizes" if step.cluster_exact.get(stage) else \
            "sizes from bounded counters (may be short by a little)"
        parts.append(f'<h2>Largest near-duplicate clusters ({escape(stage)})</h2><p class="mut">'
                     f'From the rejects\' cluster and kept id ({exact}); similarity is the '
                     f'MinHash estimate of Jaccard with the run\'s shingles.</p>')
        parts += [_cluster(step, stage, i, c, cap) for i, c in enumerate(rows)]
    sem = step.reports.get("semantic_clusters") or {}
    if sem.get("clusters"):
        body = "".join(f'<tr><td>{r.get("cluster")}</td><td class="r">{r.get("size")}</td>'
                       f'<td class="r">{r.get("mean_similarity")}</td><td class="r">'
                       f'{r.get("duplicate_pairs")}</td></tr>' for r in sem["clusters"][:10])
        parts.append(f'<h3>Semantic k-means clusters (epsilon {sem.get("epsilon")})</h3><table>'
                     f'<thead><tr><th>cluster</th><th class="r">size</th><th class="r">mean '
                     f'cosine</th><th class="r">duplicate pairs</th></tr></thead>'
                     f'<tbody>{body}</tbody></table>')
    return "".join(parts)
