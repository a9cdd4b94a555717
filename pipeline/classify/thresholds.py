"""Choosing the classify threshold: the pure maths over per-document arrays (what each threshold keeps, the
threshold that keeps a target amount), the one-pass profile of the stored scores they run on, and the
threshold table as text (the summary) or Markdown (the corpus card).

- `keep_mask`: the one keep rule, `quality_prob >= threshold` compared in float32 (never kept without text).
- `threshold_table`: keep rate, kept documents and tokens, and held-out precision and recall over a grid.
- `threshold_for_target`: the threshold whose kept weight (tokens, or documents) is closest to a target.
- `read_profile` / `ScoreProfile`: scores, lengths and a measured tokens-per-character ratio from scores/.
- `stored_threshold_table`: the table of a run's last complete classify (the inspection notebook).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline.classify.common import STAGE, ClassifyError
from pipeline.io import RunLayout

# The thresholds the card and the summary report (plus the chosen one): 0.05, 0.10, ..., 0.95.
THRESHOLD_GRID = tuple(round(0.05 * i, 2) for i in range(1, 20))
# Documents whose tokens are counted (TokenCounter) to measure the tokens-per-word ratio of the stored scores.
TOKEN_SAMPLE_DOCS = 2000


def keep_mask(scored: pa.Table, threshold: float) -> pa.ChunkedArray:
    """True where quality_prob >= threshold (never where there was no text to score)."""
    return pc.fill_null(pc.greater_equal(scored.column("quality_prob"), pa.scalar(threshold, pa.float32())), False)


def _as_float32(values) -> np.ndarray:
    """Scores as float32 (what keep_mask compares), NaN where there is no score (no text: never kept)."""
    return np.asarray([np.nan if v is None else v for v in values] if isinstance(values, list) else values,
                      dtype=np.float32)


def _kept_at(probs: np.ndarray, weights: np.ndarray, thresholds) -> tuple[np.ndarray, np.ndarray]:
    """(documents, summed weights) with probs >= each threshold, compared in float32 like keep_mask."""
    scored = ~np.isnan(probs)
    order = np.argsort(probs[scored], kind="stable")
    ascending, w = probs[scored][order], weights[scored][order]
    above = np.concatenate([np.cumsum(w[::-1])[::-1], [0.0]])  # above[i]: weight of ascending[i:]
    first = np.searchsorted(ascending, np.asarray(thresholds, dtype=np.float32), side="left")
    return len(ascending) - first, above[first]


def threshold_table(probs, tokens, thresholds=THRESHOLD_GRID, *, chosen: float | None = None,
                    heldout_probs=None, heldout_labels=None) -> list[dict[str, Any]]:
    """Pure: what each threshold would keep, from per-document arrays.

    `probs`: quality_prob per document (NaN/None: no text, never kept); `tokens`: its (estimated) tokens.
    `heldout_probs`/`heldout_labels`: scores and teacher labels (True: positive) of held-out documents, for
    precision (kept positives / kept) and recall (kept positives / positives); None where undefined or
    without held-out labels. `chosen` is added to the grid (once) and its row marked. One row per threshold,
    ascending: threshold, keep_rate (of every document, scored or not), kept_docs, kept_tokens, precision,
    recall, chosen."""
    probs = _as_float32(probs)
    tokens = np.asarray(tokens, dtype=np.float64)
    if tokens.shape != probs.shape:
        raise ValueError(f"probs and tokens differ in length ({len(probs)} != {len(tokens)})")
    grid = sorted({float(np.float32(t)): t for t in [*thresholds, *([] if chosen is None else [chosen])]}.items())
    cuts = [t for _, t in grid]
    chosen32 = None if chosen is None else float(np.float32(chosen))
    docs, kept_tokens = _kept_at(probs, tokens, cuts)
    precision: list[float | None] = [None] * len(cuts)
    recall: list[float | None] = [None] * len(cuts)
    if heldout_probs is not None and heldout_labels is not None:
        held = _as_float32(heldout_probs)
        labels = np.asarray(heldout_labels, dtype=bool)
        if labels.shape != held.shape:
            raise ValueError(f"heldout_probs and heldout_labels differ in length ({len(held)} != {len(labels)})")
        kept_h, tp = _kept_at(held, labels.astype(np.float64), cuts)
        positives = int(labels[~np.isnan(held)].sum())
        precision = [float(t / k) if k else None for t, k in zip(tp, kept_h)]
        recall = [float(t / positives) if positives else None for t in tp]
    n = len(probs)
    return [{"threshold": float(cut), "keep_rate": float(k / n) if n else 0.0, "kept_docs": int(k),
             "kept_tokens": int(round(t)), "precision": p, "recall": r, "chosen": key == chosen32}
            for (key, cut), k, t, p, r in zip(grid, docs, kept_tokens, precision, recall)]


def threshold_for_target(probs, weights, target: float) -> tuple[float, float]:
    """Pure: (threshold, kept weight) for the threshold whose kept weight (summed over documents with
    probs >= threshold) is closest to `target`; on a tie, the higher threshold. The candidates are the scores
    themselves, so at least the best-scored documents are kept; NaN (no text) is never kept."""
    probs = _as_float32(probs)
    weights = np.asarray(weights, dtype=np.float64)
    scored = ~np.isnan(probs)
    if not scored.any():
        raise ClassifyError("no scored documents in the stored scores: no threshold keeps anything")
    order = np.argsort(-probs[scored], kind="stable")
    descending, kept = probs[scored][order], np.cumsum(weights[scored][order])
    last_of_tie = np.r_[descending[1:] != descending[:-1], True]  # equal scores are kept together
    candidates, kept = descending[last_of_tie], kept[last_of_tie]
    best = int(np.argmin(np.abs(kept - target)))
    return float(candidates[best]), float(kept[best])


class ScoreProfile:
    """Per stored document: quality_prob (float32, NaN without text) and its length in characters (the stored
    `n_chars`); tokens are characters x a tokens-per-character ratio measured with a TokenCounter on a sample
    of the documents (the same for every threshold, so kept tokens are comparable across rows). Read from
    scores/ without the model and without the texts (only the sample's): 12 bytes per document in memory."""

    def __init__(self, probs: np.ndarray, chars: np.ndarray, tokens_per_char: float, tokenizer: str,
                 sampled_docs: int, found: dict[str, float]):
        self.probs, self.chars = probs, chars
        self.tokens_per_char, self.tokenizer, self.sampled_docs = tokens_per_char, tokenizer, sampled_docs
        self.found = found  # stored scores of the documents asked for (the held-out ones)

    @property
    def tokens(self) -> np.ndarray:
        return self.chars * self.tokens_per_char

    def describe(self) -> str:
        return (f"characters x {self.tokens_per_char:.4f} tokens per character (ratio measured with "
                f"{self.tokenizer} on {self.sampled_docs} stored documents)")


def read_profile(paths: list[Path], counter, wanted: set[str] | None = None,
                 sample_docs: int = TOKEN_SAMPLE_DOCS) -> ScoreProfile:
    """One pass over the light columns of the score files (scores, n_chars, doc_id; one file at a time), the
    texts of only the first documents of each file (`sample_docs` in all) to measure the token ratio, and
    the stored scores of `wanted`."""
    per_file = -(-sample_docs // max(len(paths), 1))
    probs, chars, found = [], [], {}
    sampled = sample_chars = sample_tokens = 0
    for path in paths:
        table = pq.read_table(path, columns=["doc_id", "quality_prob", "n_chars"])
        probs.append(np.asarray(table.column("quality_prob").to_numpy(), dtype=np.float32))
        lengths = pc.fill_null(table.column("n_chars"), 0).to_numpy().astype(np.int64)
        chars.append(lengths)
        take = min(per_file, sample_docs - sampled, table.num_rows)
        if take > 0:
            batch = next(pq.ParquetFile(path).iter_batches(batch_size=take, columns=["text"]))
            texts = [t or "" for t in batch.column("text").to_pylist()[:take]]
            sampled += len(texts)
            sample_chars += sum(len(t) for t in texts)
            sample_tokens += sum(counter.count_many(texts))
        if wanted:
            hit = table.filter(pc.is_in(table.column("doc_id"), value_set=pa.array(sorted(wanted), pa.string())))
            found.update(zip(hit.column("doc_id").to_pylist(), hit.column("quality_prob").to_pylist()))
    probs_all = np.concatenate(probs) if probs else np.zeros(0, np.float32)
    probs_all[~np.isfinite(probs_all)] = np.nan  # null scores (no text) read as NaN
    return ScoreProfile(probs_all, np.concatenate(chars) if chars else np.zeros(0, np.int64),
                        sample_tokens / sample_chars if sample_chars else 0.0, counter.name, sampled, found)


def format_threshold_table(rows: list[dict[str, Any]], *, markdown: bool = False) -> list[str]:
    """The threshold table as text lines (the summary) or a Markdown table (the card)."""
    def cell(value, digits=3):
        return "-" if value is None else f"{value:.{digits}f}"

    if markdown:
        lines = ["| threshold | keep rate | kept docs | kept tokens | precision | recall |",
                 "|---|---|---|---|---|---|"]
        for r in rows:
            mark = " **(chosen)**" if r["chosen"] else ""
            lines.append(f"| {r['threshold']:.4f}{mark} | {r['keep_rate']:.3f} | {r['kept_docs']} | "
                         f"{r['kept_tokens']} | {cell(r['precision'])} | {cell(r['recall'])} |")
        return lines
    lines = [f"  {'threshold':>9}  {'keep rate':>9}  {'kept docs':>10}  {'kept tokens':>12}  {'precision':>9}  "
             f"{'recall':>6}"]
    for r in rows:
        lines.append(f"  {r['threshold']:>9.4f}  {r['keep_rate']:>9.3f}  {r['kept_docs']:>10}  {r['kept_tokens']:>12}  "
                     f"{cell(r['precision']):>9}  {cell(r['recall']):>6}" + ("  <- chosen" if r["chosen"] else ""))
    return lines


def stored_threshold_table(run_dir: str | Path) -> dict[str, Any] | None:
    """The threshold table of a run's last complete classify (its stage marker): {"rows": [...], "reason",
    "tokens", "heldout"}; None when classify has not finished there (or finished before this table existed)."""
    marker = RunLayout(run_dir).stage_marker(STAGE)
    if not marker.exists():
        return None
    summary = json.loads(marker.read_text())
    if "threshold_table" not in summary:
        return None
    return {"rows": summary["threshold_table"], "reason": summary.get("threshold_reason"),
            **summary.get("threshold_notes", {})}
