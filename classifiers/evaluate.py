"""Metrics of a distilled classifier against held-out teacher labels, in numpy.

- ROC AUC: the probability that a random positive scores above a random negative (ties count half); it does
  not depend on the threshold.
- precision / recall / F1 and the confusion matrix at the chosen decision threshold (score >= threshold is
  "keep").
- expected calibration error (ECE): the gap between predicted probability and observed positive rate,
  averaged over equal-width probability bins weighted by their size (0 = perfectly calibrated).
- Cohen's kappa: agreement of the student's keep/drop (at the decision threshold) with the teacher's binary
  label beyond what chance agreement at the same keep and positive rates would give (1 = always agree,
  0 = no better than chance).
- per-topic agreement: for every topic, how often the topic model (probability >= 0.5) and the teacher agree
  on whether the document has the topic, with precision/recall/F1 of the model against the teacher.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def _arrays(labels, scores) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(labels, dtype=np.int8)
    p = np.asarray(scores, dtype=np.float64)
    if y.shape != p.shape:
        raise ValueError(f"labels and scores differ in length: {y.shape[0]} vs {p.shape[0]}")
    return y, p


def average_ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks of `values`, tied values sharing the mean of their ranks."""
    order = np.argsort(values, kind="mergesort")
    sorted_values = values[order]
    # boundaries of runs of equal values
    starts = np.r_[0, np.flatnonzero(np.diff(sorted_values)) + 1]
    ends = np.r_[starts[1:], len(values)]
    mean_rank = (starts + ends + 1) / 2.0  # mean of ranks start+1 .. end
    ranks = np.empty(len(values), dtype=np.float64)
    ranks[order] = np.repeat(mean_rank, ends - starts)
    return ranks


def roc_auc(labels, scores) -> float | None:
    """Mann-Whitney form of ROC AUC; None when only one class is present."""
    y, p = _arrays(labels, scores)
    n_pos = int(y.sum())
    n_neg = len(y) - n_pos
    if n_pos == 0 or n_neg == 0:
        return None
    ranks = average_ranks(p)
    return float((ranks[y == 1].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def confusion(labels, predicted) -> dict[str, int]:
    y = np.asarray(labels, dtype=bool)
    yhat = np.asarray(predicted, dtype=bool)
    return {"tp": int((y & yhat).sum()), "fp": int((~y & yhat).sum()),
            "fn": int((y & ~yhat).sum()), "tn": int((~y & ~yhat).sum())}


def precision_recall_f1(counts: dict[str, int]) -> dict[str, float]:
    tp, fp, fn = counts["tp"], counts["fp"], counts["fn"]
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1}


def cohen_kappa(labels, predicted) -> float | None:
    """Cohen's kappa of two binary raters: (p_o - p_e) / (1 - p_e), with p_o the share of items they agree
    on and p_e the agreement expected by chance from each rater's positive rate. None when it is undefined
    (no items, or both raters give every item the same single class, so p_e = 1)."""
    y = np.asarray(labels, dtype=bool)
    yhat = np.asarray(predicted, dtype=bool)
    if y.shape != yhat.shape:
        raise ValueError(f"labels and predictions differ in length: {y.shape[0]} vs {yhat.shape[0]}")
    if len(y) == 0:
        return None
    observed = float((y == yhat).mean())
    rate_y, rate_hat = float(y.mean()), float(yhat.mean())
    chance = rate_y * rate_hat + (1 - rate_y) * (1 - rate_hat)
    if chance >= 1.0:
        return None
    return (observed - chance) / (1 - chance)


def expected_calibration_error(labels, scores, bins: int = 10) -> float:
    y, p = _arrays(labels, scores)
    if len(y) == 0:
        return 0.0
    # bin i holds scores in [i/bins, (i+1)/bins); a score of exactly 1.0 goes to the last bin
    index = np.minimum((p * bins).astype(int), bins - 1)
    total = 0.0
    for b in range(bins):
        mask = index == b
        if mask.any():
            total += mask.sum() / len(y) * abs(p[mask].mean() - y[mask].mean())
    return float(total)


def choose_threshold(labels, scores, target: str, value: float) -> float:
    """The decision threshold meeting `target` on these labels:

    - "keep_rate": keep about `value` of the documents (the score quantile);
    - "precision": the lowest threshold whose precision reaches `value` (most recall at that precision),
      or the threshold of highest precision when none does;
    - "f1": the threshold with the best F1.
    Candidate thresholds are the observed scores, so "score >= threshold" reproduces the measured point.
    """
    y, p = _arrays(labels, scores)
    if len(y) == 0:
        raise ValueError("cannot choose a threshold without labelled scores")
    if target == "keep_rate":
        order = np.sort(p)[::-1]
        n_keep = min(max(int(round(value * len(p))), 1), len(p))
        return float(order[n_keep - 1])
    candidates = np.unique(p)[::-1]  # high to low: each adds the documents at that score
    # documents kept at each candidate threshold, by cumulative counts over scores sorted high to low
    order = np.argsort(-p, kind="mergesort")
    sorted_p, sorted_y = p[order], y[order]
    tp_cum = np.cumsum(sorted_y)
    # index of the last position holding a score >= candidate
    last = np.searchsorted(-sorted_p, -candidates, side="right") - 1
    kept = last + 1
    tp = tp_cum[last]
    precision = tp / kept
    recall = tp / max(int(y.sum()), 1)
    if target == "precision":
        meets = np.flatnonzero(precision >= value)
        if len(meets):
            return float(candidates[meets[-1]])  # lowest threshold that still meets the precision
        return float(candidates[int(np.argmax(precision))])
    if target == "f1":
        with np.errstate(invalid="ignore", divide="ignore"):
            f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
        return float(candidates[int(np.argmax(f1))])
    raise ValueError(f"unknown threshold target {target!r} (expected keep_rate, precision or f1)")


def quality_metrics(labels, scores, threshold: float) -> dict[str, Any]:
    """Everything reported for the binary quality model at one decision threshold."""
    y, p = _arrays(labels, scores)
    counts = confusion(y, p >= threshold)
    return {
        "n": int(len(y)),
        "positives": int(y.sum()),
        "roc_auc": roc_auc(y, p),
        "threshold": float(threshold),
        **precision_recall_f1(counts),
        "accuracy": (counts["tp"] + counts["tn"]) / len(y) if len(y) else 0.0,
        "keep_rate": float((p >= threshold).mean()) if len(y) else 0.0,
        "ece": expected_calibration_error(y, p),
        "cohen_kappa": cohen_kappa(y, p >= threshold),
        "confusion": counts,
    }


def topic_agreement(true_topics: list[set[str]], topic_probs: list[dict[str, float]], topics: list[str],
                    threshold: float = 0.5) -> dict[str, dict[str, Any]]:
    """Per topic: agreement rate, precision/recall/F1 of the model against the teacher, support, AUC."""
    out: dict[str, dict[str, Any]] = {}
    for topic in topics:
        y = np.array([topic in wanted for wanted in true_topics], dtype=np.int8)
        p = np.array([probs.get(topic, 0.0) for probs in topic_probs], dtype=np.float64)
        counts = confusion(y, p >= threshold)
        out[topic] = {
            "support": int(y.sum()),
            "agreement": float(((p >= threshold) == y.astype(bool)).mean()) if len(y) else 0.0,
            **precision_recall_f1(counts),
            "roc_auc": roc_auc(y, p),
        }
    return out


def summarize_topics(per_topic: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Macro averages over topics that occur in the held-out labels."""
    present = [m for m in per_topic.values() if m["support"] > 0]
    if not present:
        return {"topics_evaluated": 0}
    return {
        "topics_evaluated": len(present),
        "macro_agreement": float(np.mean([m["agreement"] for m in present])),
        "macro_f1": float(np.mean([m["f1"] for m in present])),
    }


def evaluate_classifier(classifier, label_set, doc_ids: set[str] | None = None,
                        threshold: float | None = None) -> dict[str, Any]:
    """Score `label_set` (classifiers.labels.LabelSet) with a loaded QualityClassifier and compare with its
    labels: the quality metrics at the classifier's threshold, and per-topic (per-format) agreement when both
    the artifact and the labels have topics (formats). `doc_ids` restricts the comparison (e.g. to the held-out ids)."""
    docs = [d for d in label_set.docs if doc_ids is None or d.doc_id in doc_ids]
    quality_docs = [d for d in docs if d.is_positive is not None]
    scores = classifier.score([d.text for d in quality_docs])
    scored = ~np.isnan(scores)
    labels = np.array([int(d.is_positive) for d in quality_docs], dtype=np.int8)[scored]
    cut = classifier.threshold if threshold is None else threshold
    result: dict[str, Any] = {"quality": quality_metrics(labels, scores[scored], cut),
                              "unscorable_empty_text": int((~scored).sum())}
    for kind, attribute in (("topics", "topics"), ("formats", "format")):
        tagged = [d for d in docs if getattr(d, attribute) is not None]
        if classifier.tag_model(kind) is None or not tagged:
            continue
        probs = classifier.tag_scores(kind, [d.text for d in tagged])
        tags = sorted(set(classifier.tags(kind)) | {t for d in tagged for t in getattr(d, attribute)})
        per_tag = topic_agreement([set(getattr(d, attribute)) for d in tagged], probs, tags,
                                  classifier.tag_threshold(kind))
        result[kind] = {"n": len(tagged), **summarize_topics(per_tag), "per_topic": per_tag}
    return result


def stored_quality(label_set, stored: dict[str, tuple[bool, float]], doc_ids: set[str] | None,
                   threshold: float) -> dict[str, Any]:
    """`quality_metrics` of stored scores ({doc_id: (label at distillation, score)}, an artifact's
    heldout_scores.jsonl) against the labels of `label_set` (restricted to `doc_ids`): the held-out model's
    evaluation, reproducible without that model."""
    docs = [d for d in label_set.docs if d.is_positive is not None and d.doc_id in stored
            and (doc_ids is None or d.doc_id in doc_ids)]
    labels = np.array([int(d.is_positive) for d in docs], dtype=np.int8)
    scores = np.array([stored[d.doc_id][1] for d in docs], dtype=np.float32)
    return quality_metrics(labels, scores, threshold)


def format_quality(metrics: dict[str, Any]) -> str:
    """One readable block for the quality metrics of `quality_metrics`."""
    auc = "n/a (one class)" if metrics["roc_auc"] is None else f"{metrics['roc_auc']:.3f}"
    c = metrics["confusion"]
    return "\n".join([
        f"documents {metrics['n']} ({metrics['positives']} positive)",
        f"ROC AUC   {auc}",
        f"threshold {metrics['threshold']:.4f}: precision {metrics['precision']:.3f}, recall {metrics['recall']:.3f}, "
        f"F1 {metrics['f1']:.3f}, keep rate {metrics['keep_rate']:.3f}",
        f"ECE       {metrics['ece']:.3f}",
        *([f"kappa     {metrics['cohen_kappa']:.3f} (Cohen's, student at the threshold vs teacher)"]
          if metrics.get("cohen_kappa") is not None else []),
        f"confusion tp {c['tp']}  fp {c['fp']}  fn {c['fn']}  tn {c['tn']}",
    ])


def format_topics(metrics: dict[str, Any], kind: str = "topics") -> str:
    """One readable block for the per-tag metrics of a topic (or format) model."""
    lines = [f"{kind}: {metrics.get('topics_evaluated', 0)} evaluated, macro agreement "
             f"{metrics.get('macro_agreement', float('nan')):.3f}, macro F1 "
             f"{metrics.get('macro_f1', float('nan')):.3f}"]
    for topic, m in metrics.get("per_topic", {}).items():
        lines.append(f"  {topic:<32} support {m['support']:>5}  agreement {m['agreement']:.3f}  F1 {m['f1']:.3f}")
    return "\n".join(lines)
