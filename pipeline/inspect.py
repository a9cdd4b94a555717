"""Read a finished run for inspection (the sampling notebook uses these): counts per stage and reason, a
stratified sample of decisions with their documents, score distributions, re-threshold what-ifs.

Everything that renders page text escapes it: pages contain <script> and markup, and nothing from a page
may execute or render in the notebook.
"""

from __future__ import annotations

import html
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from pipeline.io import RunLayout, parquet_files


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


def load_run(run_dir: str | Path, max_rows: int = 200_000, seed: int = 0) -> RunView:
    layout = RunLayout(run_dir)
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
    """The threshold classify applied (its stage marker), else the classifier's own decision threshold."""
    marker = layout.stage_marker("classify")
    if marker.exists():
        return json.loads(marker.read_text()).get("threshold")
    config = layout.dataset("classifier") / "config.yaml"
    if config.exists():
        import yaml

        return yaml.safe_load(config.read_text()).get("quality", {}).get("decision_threshold")
    return None


def _all_stages(view: RunView) -> dict:
    """Every stage's counts in pipeline order (report.json stores them sorted by name)."""
    found = {**view.report.get("stages", {}), **view.report.get("side_stages", {})}
    order = ["extract", "dedup", "annotate", "classify", "rewrite"]
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
    """A seeded random sample per (stage, outcome, reason), plus kept documents, joined to text and scores."""
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
    texts = view.texts(sample.doc_id)
    if not texts.empty:
        sample = sample.drop(columns=[c for c in ("url",) if c in sample]).merge(texts, on="doc_id", how="left")
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
            f"<td style='text-align:left;vertical-align:top;white-space:pre-wrap'>"
            f"{_cell(row.get(c), max_chars if c in LONG_TEXT_COLUMNS else 120)}</td>" for c in columns)
        body.append(f"<tr>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def keep_rate(view: RunView, threshold: float) -> float:
    if view.scores.empty:
        return float("nan")
    return float((view.scores.quality_prob >= threshold).mean())
