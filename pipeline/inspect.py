"""Read a finished run for inspection (the sampling notebook uses these): counts per stage and reason, a
stratified sample of decisions with their documents, score distributions, re-threshold what-ifs, and the
sample rendered for a person as one card per document (`render_cards`).

Everything that renders page-derived content (text, URL, reason detail, title) escapes it with
`html.escape`: pages contain <script> and markup, and nothing from a page may execute or render in the
notebook. The renderers are pure functions from rows to HTML strings, so they are tested without a notebook.
"""

from __future__ import annotations

import hashlib
import html
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from pipeline.io import RunLayout, parquet_files
from pipeline.stages import pipeline_order


def _read_folder(folder: Path, columns: list[str] | None = None, max_rows: int | None = None,
                 seed: int = 0) -> pd.DataFrame:
    """The folder's Parquet files as one frame; with `max_rows`, whole files in a seeded random order until
    that many rows (a run over a full snapshot does not fit in a notebook)."""
    files = parquet_files(folder)
    if not files:
        return pd.DataFrame(columns=columns or [])
    if max_rows is not None:
        files = [files[i] for i in np.random.default_rng(seed).permutation(len(files))]
    frames, rows = [], 0
    for file in files:
        available = pq.read_schema(file).names
        wanted = [c for c in columns if c in available] if columns else None
        frames.append(pq.read_table(file, columns=wanted).to_pandas())
        rows += len(frames[-1])
        if max_rows is not None and rows >= max_rows:
            break
    return pd.concat(frames, ignore_index=True)


def _read_docs(folder: Path, doc_ids: set[str], columns: list[str]) -> pd.DataFrame:
    """Only the documents named (a filtered scan: the texts of a whole run are never loaded)."""
    import pyarrow.compute as pc
    import pyarrow.dataset as ds

    files = parquet_files(folder)
    if not files or not doc_ids:
        return pd.DataFrame(columns=columns)
    dataset = ds.dataset([str(f) for f in files], format="parquet")
    wanted = [c for c in columns if c in dataset.schema.names]
    return dataset.to_table(columns=wanted, filter=pc.field("doc_id").isin(sorted(doc_ids))).to_pandas()


# The rule values a card shows, of those the run stored for the page (extracted/ or docs/): the headline
# quantity of each rule family, not every metric (a card stays readable; the decision's detail names the rule).
RULE_FIELDS = ["n_words", "mean_word_length", "alpha_word_ratio", "stop_word_count", "symbol_word_ratio",
               "n_sentences", "dup_line_char_frac", "top_2gram_char_frac", "char_dup_ratio", "line_punct_ratio",
               "short_line_ratio"]
DOC_FIELDS = ["url", "language", "language_score", "n_chars", *RULE_FIELDS, "rule_failures"]
DEDUP_FIELDS = ["dup_cluster_id", "dup_cluster_size", "lines_removed"]


@dataclass
class RunView:
    """A bounded view of a run: counts are exact (report.json); frames are seeded samples of whole files."""

    root: Path
    report: dict
    decisions: pd.DataFrame  # dropped/errored records of every stage (up to max_rows per stage)
    docs: pd.DataFrame  # doc_id, url, language, n_chars of extracted documents (no text; up to max_rows)
    scores: pd.DataFrame  # classify scores (up to max_rows)
    labels: pd.DataFrame  # LLM labels, one row per doc (quality and topics merged)
    synthetic: pd.DataFrame
    threshold: float | None

    def texts(self, doc_ids) -> pd.DataFrame:
        """doc_id, url, text of the named documents, read from docs/ with a filtered scan."""
        return _read_docs(self.root / "docs", set(doc_ids), ["doc_id", "url", "text"])

    def documents(self, doc_ids) -> pd.DataFrame:
        """What the run stored about the named documents, one row each: url, language, length and rule values
        (docs/, else extracted/ for a page the rules dropped), dedup's cluster columns (unique/), and the text
        as it went on: unique/'s (after dedup's repeated-line removal) when the page survived dedup, else
        docs/', else extracted/'s. A record extract got no text from is in none of them."""
        ids = set(doc_ids)
        layers = [_read_docs(self.root / name, ids, ["doc_id", *fields, "text"])
                  for name, fields in (("unique", DEDUP_FIELDS), ("docs", DOC_FIELDS), ("extracted", DOC_FIELDS))]
        merged = None
        for layer in (frame.set_index("doc_id") for frame in layers if not frame.empty):
            merged = layer if merged is None else merged.combine_first(layer)  # earlier layers win
        return pd.DataFrame(columns=["doc_id"]) if merged is None else merged.rename_axis("doc_id").reset_index()


def load_run(run_dir: str | Path, max_rows: int = 200_000, seed: int = 0) -> RunView:
    layout = RunLayout(run_dir)
    layout.pull()  # a run folder on object storage: its local copy, up to date
    root = layout.root
    if not root.exists():
        raise FileNotFoundError(f"run folder not found: {root}")
    report = json.loads(layout.report_path.read_text()) if layout.report_path.exists() else {}
    decision_folders = sorted((root / "decisions").glob("*")) if (root / "decisions").exists() else []
    decisions = pd.concat([_read_folder(f, max_rows=max_rows, seed=seed) for f in decision_folders]
                          or [pd.DataFrame()], ignore_index=True)
    docs = _read_folder(root / "docs", ["doc_id", "url", "language", "n_chars"], max_rows=max_rows, seed=seed)
    scores = _read_folder(root / "scores", ["doc_id", "quality_prob", "topics"], max_rows=max_rows, seed=seed)
    raw_labels = _read_folder(root / "labels", ["doc_id", "task", "quality_score", "topics", "error"])
    labels = pd.DataFrame(columns=["doc_id", "quality_score", "llm_topics"])
    if not raw_labels.empty:
        quality = raw_labels[(raw_labels.task == "quality") & raw_labels.error.isna()][["doc_id", "quality_score"]]
        topics = raw_labels[(raw_labels.task == "topics") & raw_labels.error.isna()][["doc_id", "topics"]]
        labels = quality.merge(topics.rename(columns={"topics": "llm_topics"}), on="doc_id", how="outer")
    synthetic = _read_folder(root / "synthetic", max_rows=max_rows, seed=seed)
    threshold = _applied_threshold(layout)
    return RunView(root, report, decisions, docs, scores, labels, synthetic, threshold)


def _applied_threshold(layout: RunLayout) -> float | None:
    """The threshold classify applied (its stage marker), else the run's classifier's own decision threshold."""
    from pipeline.classify.common import ClassifyError
    from pipeline.classify.decide import card_threshold

    marker = layout.stage_marker("classify")
    if marker.exists():
        return json.loads(marker.read_text()).get("threshold")
    try:
        return card_threshold(layout.dataset("classifier"))
    except ClassifyError:  # no classifier there, or none with a threshold
        return None


def _all_stages(view: RunView) -> dict:
    """Every stage's counts in pipeline order (report.json stores them sorted by name)."""
    found = {**view.report.get("stages", {}), **view.report.get("side_stages", {})}
    order = list(pipeline_order())
    return {stage: found[stage] for stage in sorted(found, key=lambda s: order.index(s) if s in order else len(order))}


def counts_table(view: RunView) -> pd.DataFrame:
    rows = []
    for stage, summary in _all_stages(view).items():
        rows.append({"stage": stage, "outcome": "kept", "reason": "", "count": summary["kept"]})
        for outcome in ("dropped", "errored"):
            for reason, count in summary[outcome].items():
                rows.append({"stage": stage, "outcome": outcome, "reason": reason, "count": count})
    return pd.DataFrame(rows, columns=["stage", "outcome", "reason", "count"])


def conservation_lines(view: RunView) -> list[str]:
    lines = []
    for stage, s in _all_stages(view).items():
        dropped, errored = sum(s["dropped"].values()), sum(s["errored"].values())
        ok = s["input"] == s["kept"] + dropped + errored
        lines.append(f"{stage}: {s['input']} in = {s['kept']} kept + {dropped} dropped + {errored} errored "
                     f"[{'ok' if ok else 'MISMATCH'}]")
    return lines


def sample_decisions(view: RunView, per_group: int = 3, seed: int = 0) -> pd.DataFrame:
    """A seeded random sample per (stage, outcome, reason), plus kept documents (stage "final"), joined to
    what the run stored about each (`RunView.documents`), its classifier scores and its LLM labels."""
    groups = []
    if not view.decisions.empty:
        for _, group in view.decisions.groupby(["stage", "outcome", "reason"], sort=True):
            groups.append(group.sample(n=min(per_group, len(group)), random_state=seed))
    kept_ids = set()
    if not view.scores.empty and view.threshold is not None:
        kept_ids = set(view.scores[view.scores.quality_prob >= view.threshold].doc_id)
    elif not view.docs.empty:
        dropped_ids = set(view.decisions.doc_id) if not view.decisions.empty else set()
        kept_ids = set(view.docs.doc_id) - dropped_ids
    if kept_ids:
        kept = pd.DataFrame({"doc_id": sorted(kept_ids)})
        kept = kept.sample(n=min(per_group, len(kept)), random_state=seed)
        kept["stage"], kept["outcome"], kept["reason"] = "final", "kept", ""
        groups.append(kept)
    if not groups:
        return pd.DataFrame(columns=["stage", "outcome", "reason", "doc_id"])
    sample = pd.concat(groups, ignore_index=True)
    documents = view.documents(sample.doc_id)
    if not documents.empty:
        # a decision's own URL stays (extract's drops have no docs row); the document's fills the others
        documents = documents.rename(columns={"url": "doc_url"})
        sample = sample.merge(documents, on="doc_id", how="left")
        if "doc_url" in sample:
            sample["url"] = sample["url"].where(sample["url"].notna(), sample["doc_url"]) if "url" in sample \
                else sample["doc_url"]
            sample = sample.drop(columns=["doc_url"])
    if not view.scores.empty:
        sample = sample.merge(view.scores, on="doc_id", how="left")
    if not view.labels.empty:
        sample = sample.merge(view.labels, on="doc_id", how="left")
    return sample


def _cell(value, max_chars: int) -> str:
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return ""
    if isinstance(value, float):
        return f"{value:.3f}"
    if not isinstance(value, str) and hasattr(value, "__iter__"):
        value = ", ".join(str(v) for v in value)
    text = str(value)
    if len(text) > max_chars:
        text = text[:max_chars] + "…"
    return html.escape(text, quote=True)


LONG_TEXT_COLUMNS = ("text", "original", "rewrite")


def render_html(frame: pd.DataFrame, columns: list[str], max_chars: int = 300) -> str:
    """An HTML table in which every cell is escaped text (no page markup can render or run); long text columns
    are cut at `max_chars`, the others at 120 characters."""
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = []
    for _, row in frame.iterrows():
        cells = "".join(
            f"<td style='text-align:left;vertical-align:top;white-space:pre-wrap;overflow-wrap:anywhere'>"
            f"{_cell(row.get(c), max_chars if c in LONG_TEXT_COLUMNS else 120)}</td>" for c in columns)
        body.append(f"<tr>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def keep_rate(view: RunView, threshold: float) -> float:
    if view.scores.empty:
        return float("nan")
    return float((view.scores.quality_prob >= threshold).mean())


# --- cards: one per sampled document, for a person to read --------------------------------------------------
#
# Inline styles (not a <style> block): they survive every notebook front end's HTML sanitizer and nbconvert,
# and they cannot leak into the rest of the page. Class names are the hooks for tests and for anyone
# restyling the cards.

OUTCOME_COLORS = {"kept": "#2e7d32", "dropped": "#8a6d00", "errored": "#c62828"}
TEXT_BOX_EM = 14  # the page-text box's fixed (maximum) height: a card never grows past it, it scrolls

CARDS_STYLE = "max-width:100%;box-sizing:border-box;font-family:system-ui,-apple-system,Segoe UI,sans-serif;"
GROUP_STYLE = "margin:18px 0 6px;max-width:100%;"
GROUP_TITLE_STYLE = "font-size:15px;font-weight:600;margin:0 0 8px;overflow-wrap:anywhere;"
CARD_STYLE = ("border:1px solid rgba(127,127,127,.4);border-radius:6px;margin:0 0 10px;max-width:100%;"
              "box-sizing:border-box;overflow:hidden;")
HEAD_STYLE = ("padding:6px 10px;font-size:12.5px;line-height:1.5;background:rgba(127,127,127,.08);"
              "overflow-wrap:anywhere;max-width:100%;box-sizing:border-box;")
CHIP_STYLE = "display:inline-block;margin:1px 10px 1px 0;white-space:nowrap;"
TEXT_STYLE = (f"margin:0;padding:8px 10px;max-height:{TEXT_BOX_EM}em;overflow-y:auto;overflow-x:hidden;"
              "white-space:pre-wrap;overflow-wrap:anywhere;word-break:normal;max-width:100%;box-sizing:border-box;"
              "font-size:13px;line-height:1.45;text-align:left;")
NOTE_STYLE = "margin:0;padding:6px 10px;font-size:12.5px;font-style:italic;opacity:.8;"

# Score fields a card header shows when the run has them for the document: (column, label).
SCORE_FIELDS = [
    ("quality_score", "LLM quality"),
    ("topics", "topics"),
    ("llm_topics", "LLM topics"),
    ("language", "language"),
    ("language_score", "language score"),
    ("n_chars", "chars"),
    ("dup_cluster_id", "dedup cluster"),
    ("dup_cluster_size", "cluster size"),
    ("lines_removed", "lines removed by dedup"),
]
RULE_LABEL = "rules"


def escape(value) -> str:
    """Any value as HTML-escaped text (quotes too, so it is safe in an attribute as well)."""
    return html.escape(str(value), quote=True)


def is_present(value) -> bool:
    """False for what a card should leave out: None, NaN, empty strings and empty lists/arrays."""
    if value is None:
        return False
    if isinstance(value, float):
        return not math.isnan(value)
    if isinstance(value, str):
        return bool(value.strip())
    if isinstance(value, (list, tuple, np.ndarray)):
        return len(value) > 0
    try:
        return not bool(pd.isna(value))
    except (TypeError, ValueError):
        return True


# Counts stored as integers that pandas turns into floats once a join leaves gaps (NaN): shown without a fraction.
COUNT_FIELDS = {"quality_score", "n_chars", "n_words", "stop_word_count", "n_sentences", "dup_cluster_size",
                "lines_removed"}


def format_value(value, count: bool = False) -> str:
    """A value as short plain text: a count (or any int) without a fraction, other floats to 3 decimals,
    lists joined with commas."""
    if isinstance(value, (list, tuple, np.ndarray)):
        return ", ".join(format_value(v) for v in value)
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value)).lower()
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        return str(int(value)) if count and float(value).is_integer() else f"{float(value):.3f}"
    return str(value)


def clip(text: str, max_chars: int) -> tuple[str, int]:
    """`text` cut to `max_chars` characters, and how many were left out."""
    return (text, 0) if len(text) <= max_chars else (text[:max_chars], len(text) - max_chars)


def text_box_html(text, max_chars: int = 4000, label: str | None = None) -> str:
    """The page text, escaped, in a box of fixed maximum height that scrolls and wraps (long words and URLs
    included), so a card stays short and never wider than its container; without text, a one-line note."""
    if not is_present(text):
        return f"<p class='wc-notext' style='{NOTE_STYLE}'>no page text stored for this record</p>"
    shown, left_out = clip(str(text), max_chars)
    caption = f"<div class='wc-text-label' style='{NOTE_STYLE}'>{escape(label)}</div>" if label else ""
    more = (f"<p class='wc-more' style='{NOTE_STYLE}'>… {left_out:,} more characters not shown "
            f"(TEXT_CHARS = {max_chars:,})</p>") if left_out else ""
    return f"{caption}<div class='wc-text' tabindex='0' style='{TEXT_STYLE}'>{escape(shown)}</div>{more}"


def url_html(url) -> str:
    """The URL as escaped text; an http(s) URL is also a link that opens in a new tab without the opener
    (never loaded by the notebook itself). Other schemes (javascript:, data:) are never links."""
    if not is_present(url):
        return "<span class='wc-url' style='opacity:.7'>(no URL)</span>"
    text = escape(url)
    if str(url).lower().startswith(("http://", "https://")):
        return (f"<a class='wc-url' href='{text}' target='_blank' rel='noopener noreferrer nofollow' "
                f"style='overflow-wrap:anywhere'><bdi>{text}</bdi></a>")
    return f"<span class='wc-url' style='overflow-wrap:anywhere'><bdi>{text}</bdi></span>"


def _chip(label: str, value: str, cls: str = "wc-score") -> str:
    return f"<span class='{cls}' style='{CHIP_STYLE}'><span style='opacity:.7'>{escape(label)}</span> {value}</span>"


def quality_chip(prob, threshold) -> str:
    """The classifier's quality probability against the threshold the run applied (empty without a score)."""
    if not is_present(prob):
        return ""
    value = escape(format_value(prob))
    if threshold is not None and not (isinstance(threshold, float) and math.isnan(threshold)):
        side = "≥" if prob >= threshold else "<"
        value += f" {escape(side)} threshold {escape(format_value(float(threshold)))}"
    return _chip("quality_prob", value)


def score_chips(row: Mapping, threshold: float | None = None) -> list[str]:
    """The header's score items for one document: whatever the run has for it, in a fixed order."""
    chips = [quality_chip(row.get("quality_prob"), threshold)]
    size = row.get("dup_cluster_size")
    # a page alone in its dedup cluster, or one dedup removed no line from, has nothing to say there
    quiet = {"dup_cluster_id", "dup_cluster_size"} if not is_present(size) or size <= 1 else set()
    if not is_present(row.get("lines_removed")) or row["lines_removed"] == 0:
        quiet.add("lines_removed")
    chips += [_chip(label, escape(format_value(row[col], col in COUNT_FIELDS)))
              for col, label in SCORE_FIELDS if col not in quiet and is_present(row.get(col))]
    return [c for c in chips if c]


def rule_chips(row: Mapping) -> list[str]:
    """The heuristic rule values the run stored for the page (and the rules it fails); a value the decision's
    detail names (the rule that dropped it) is in bold."""
    detail = str(row.get("detail") or "")
    chips = []
    for col in RULE_FIELDS:
        if is_present(row.get(col)):
            value = escape(format_value(row[col], col in COUNT_FIELDS))
            chips.append(_chip(col, f"<b>{value}</b>" if col in detail else value, "wc-rule"))
    if is_present(row.get("rule_failures")):
        chips.append(_chip("fails", escape(format_value(row["rule_failures"])), "wc-rule"))
    return chips


def outcome_badge(outcome) -> str:
    color = OUTCOME_COLORS.get(str(outcome), "#555")
    return (f"<span class='wc-outcome' style='display:inline-block;padding:0 6px;border:1px solid {color};"
            f"color:{color};border-radius:4px;font-weight:600'>{escape(outcome)}</span>")


def card_html(row: Mapping, threshold: float | None = None, max_chars: int = 4000) -> str:
    """One sampled document: a header (outcome, stage, reason, doc_id; URL; detail; scores; rule values)
    above its page text in a scrolling box. A record without text is one compact header. Every
    page-derived value is escaped."""
    stage, outcome, reason = row.get("stage", ""), row.get("outcome", ""), row.get("reason", "")
    has_text = is_present(row.get("text"))
    title = [outcome_badge(outcome), f"<span class='wc-stage'>{escape(stage)}</span>"]
    if is_present(reason):
        title.append(f"<b class='wc-reason'>{escape(reason)}</b>")
    doc_id = escape(row.get("doc_id", ""))
    note = "" if has_text else "<i class='wc-notext' style='opacity:.7'>no page text stored for this record</i>"
    lines = [f"<div style='display:flex;flex-wrap:wrap;gap:2px 12px;align-items:baseline'>"
             f"<span>{' · '.join(title)}</span>{note}<span class='wc-docid' style='margin-left:auto;opacity:.6'>"
             f"doc_id <code>{doc_id}</code></span></div>", f"<div>{url_html(row.get('url'))}</div>"]
    if is_present(row.get("detail")):
        detail, cut = clip(str(row["detail"]), 300)
        lines.append(f"<div class='wc-detail'><span style='opacity:.7'>detail</span> {escape(detail)}"
                     f"{'…' if cut else ''}</div>")
    if is_present(row.get("duplicate_of")):
        lines.append(f"<div class='wc-duplicate'><span style='opacity:.7'>duplicate of</span> "
                     f"<code>{escape(row['duplicate_of'])}</code></div>")
    chips = score_chips(row, threshold)
    if chips:
        lines.append(f"<div class='wc-scores'>{''.join(chips)}</div>")
    rules = rule_chips(row)
    if rules:
        lines.append(f"<div class='wc-rules'><span style='opacity:.7'>{RULE_LABEL}:</span> {''.join(rules)}</div>")
    body = text_box_html(row.get("text"), max_chars) if has_text else ""
    return (f"<article class='wc-card' data-doc-id='{doc_id}' style='{CARD_STYLE}'>"
            f"<header class='wc-card-head' style='{HEAD_STYLE}'>{''.join(lines)}</header>{body}</article>")


def group_title(stage: str, outcome: str, reason: str) -> str:
    """A group's heading in words (the sample's "final" stage holds the documents kept at the end)."""
    if stage == "final":
        return "kept in the final corpus"
    return " · ".join(p for p in (stage, outcome, reason) if p)


def toc_label(stage: str, outcome: str, reason: str) -> str:
    """A group's name in the line of links of its stage: the reason (prefixed when the outcome is not the
    usual "dropped"), or the outcome alone ("kept")."""
    if not reason:
        return outcome
    return reason if outcome == "dropped" else f"{outcome}: {reason}"


def group_counts(view: RunView) -> dict[tuple[str, str, str], int]:
    """Exact record counts per (stage, outcome, reason) from report.json, and ("final", "kept", "") for the
    documents the last filter stage kept; the group headings show them next to how many are sampled."""
    counts = {(r.stage, r.outcome, r.reason): int(r.count) for r in counts_table(view).itertuples()}
    filters = [s for s in pipeline_order() if s in view.report.get("stages", {})]  # report's "stages": filters
    if filters:
        counts[("final", "kept", "")] = int(view.report["stages"][filters[-1]]["kept"])
    return counts


def _group_key(key: tuple[str, str, str]) -> tuple:
    stage, outcome, reason = key
    order = (*pipeline_order(), "final")  # the registry's order (a plug-in stage included), then the final fate
    rank = order.index(stage) if stage in order else len(order)
    return rank, {"kept": 0, "dropped": 1, "errored": 2}.get(outcome, 3), reason


def _group_heading(title: str, count: str, inline: bool = False) -> str:
    """A group's heading: its (escaped) title and its count line; inline inside a folded group's summary."""
    style = GROUP_TITLE_STYLE + ("display:inline;" if inline else "")
    return (f"<h4 class='wc-group-title' style='{style}'>{title} <span class='wc-count' "
            f"style='font-weight:normal;opacity:.7'>— {escape(count)}</span></h4>")


def render_cards(sample: pd.DataFrame, counts: Mapping[tuple[str, str, str], int] | None = None,
                 threshold: float | None = None, max_chars: int = 4000) -> str:
    """The sample as cards grouped by stage and reason (pipeline order), each group under a heading with its
    exact count (from `counts`, when known) and how many documents are shown; a line of links to the groups
    comes first."""
    if sample.empty:
        return f"<div class='wc-cards' style='{CARDS_STYLE}'><p>no documents sampled in this run</p></div>"
    groups: dict[tuple[str, str, str], list[dict]] = {}
    for row in sample.to_dict("records"):
        key = tuple("" if not is_present(row.get(k)) else str(row[k]) for k in ("stage", "outcome", "reason"))
        groups.setdefault(key, []).append(row)
    keys = sorted(groups, key=_group_key)
    # anchors unique to this sample, so two renderings in one page do not collide
    prefix = "wc-" + hashlib.sha1(repr(keys).encode() + repr(list(sample.get("doc_id", []))).encode()).hexdigest()[:8]
    links, sections = [], []
    for i, key in enumerate(keys):
        members = groups[key]
        total = (counts or {}).get(key)
        count = f"{total:,} record{'s' if total != 1 else ''}, {len(members)} shown" if total is not None \
            else f"{len(members)} shown"
        title = escape(group_title(*key))
        links.append((key[0], f"<a href='#{prefix}-{i}'>{escape(toc_label(*key))}</a> "
                              f"<span style='opacity:.7'>{total if total is not None else len(members):,}</span>"))
        cards = "".join(card_html(row, threshold, max_chars) for row in members)
        if any(is_present(row.get("text")) for row in members):
            sections.append(f"<section class='wc-group' id='{prefix}-{i}' style='{GROUP_STYLE}'>"
                            f"{_group_heading(title, count)}{cards}</section>")
        else:  # records with no page text (WARC bookkeeping, HTTP errors, ...): folded, one click away
            sections.append(f"<details class='wc-group wc-group-notext' id='{prefix}-{i}' style='{GROUP_STYLE}'>"
                            f"<summary style='cursor:pointer'>{_group_heading(title, count + ', no page text', True)}"
                            f"</summary>{cards}</details>")
    rows = {}
    for stage, link in links:
        rows.setdefault(stage, []).append(link)
    toc = "".join(f"<div><b>{escape('final corpus' if stage == 'final' else stage)}</b>: {' · '.join(items)}</div>"
                  for stage, items in rows.items())
    toc = f"<nav class='wc-toc' style='font-size:12.5px;line-height:1.6;overflow-wrap:anywhere'>{toc}</nav>"
    return f"<div class='wc-cards' style='{CARDS_STYLE}'>{toc}{''.join(sections)}</div>"


def render_rewrite_cards(pairs: pd.DataFrame, max_chars: int = 4000) -> str:
    """Original and rewritten text side by side (stacked when narrow), one card per rewrite, both escaped."""
    cards = []
    for row in pairs.to_dict("records"):
        chips = [_chip(col, escape(format_value(row[col]))) for col in ("style", "quality_prob", "doc_id")
                 if is_present(row.get(col))]
        boxes = (f"<div style='display:grid;grid-template-columns:repeat(auto-fit,minmax(min(100%,340px),1fr));"
                 f"gap:0;max-width:100%'><div style='min-width:0'>"
                 f"{text_box_html(row.get('original'), max_chars, 'original')}</div><div style='min-width:0'>"
                 f"{text_box_html(row.get('rewrite'), max_chars, 'rewrite')}</div></div>")
        cards.append(f"<article class='wc-card wc-rewrite' style='{CARD_STYLE}'><header class='wc-card-head' "
                     f"style='{HEAD_STYLE}'>{''.join(chips)}</header>{boxes}</article>")
    return f"<div class='wc-cards' style='{CARDS_STYLE}'>{''.join(cards)}</div>"


def default_explain_query(sample: pd.DataFrame) -> str | None:
    """The page "Explain one page" follows unless told otherwise: the first sampled kept page's URL (its
    doc_id when it has none); None when no kept page was sampled."""
    if sample.empty or "stage" not in sample:
        return None
    for row in sample[sample.stage == "final"].to_dict("records"):
        for field in ("url", "doc_id"):
            if is_present(row.get(field)):
                return str(row[field])
    return None


def explain_section_html(rendered: str, query: str) -> str:
    """`pipeline.explain.render_html`'s output in a marked container (its class is what tests look for),
    under a line naming the page followed, escaped."""
    return (f"<div class='wc-explain' style='{CARDS_STYLE}'><p style='{NOTE_STYLE}'>following "
            f"<code>{escape(query)}</code></p>{rendered}</div>")


# --- the training mix ---------------------------------------------------------------------------------------


def mix_view(run_dir: str | Path) -> tuple[pd.DataFrame, dict] | None:
    """The run's training mix (mix/_manifest.json, `curate mix`): one row per group (documents, tokens before
    and after, its share, epochs, whether it was cut or repeated and what happened to it in words) and the
    totals; None when the run has no mix."""
    path = RunLayout(run_dir).dataset("mix") / "_manifest.json"
    if not path.exists():
        return None
    manifest = json.loads(path.read_text())
    rows = [{"group": name, "documents": g["docs"], "tokens_before": g["available"], "share": round(g["share"], 4),
             "wanted": g["wanted"], "tokens_after": g["taken"], "epochs": round(g["epochs"], 2),
             "documents_in": g["docs_taken"],
             "cut": g["action"] == "cut", "repeated": g["action"] == "repeated", "at_repeat_cap": g["capped"],
             "what_happened": g["what_happened"]} for name, g in manifest["groups"].items()]
    totals = {key: manifest.get(key) for key in ("target_tokens", "tokens", "rows", "documents", "within_1pct",
                                                 "off_target", "note", "max_epochs", "seed")}
    totals["tokenizer"] = manifest["tokenizer"]["name"]
    totals["group_by"] = manifest["grouping"]["group_by"]
    return pd.DataFrame(rows), totals
