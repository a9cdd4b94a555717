"""Distil teacher labels into fastText classifiers and write the artifact folder.

Quality: binary at `distil.label_threshold` (teacher score >= threshold is __label__hq). The labelled
documents are split, stratified by class and seeded, into train / validation / held-out: the model learns on
train, the decision threshold is chosen on validation for the configured target, and every reported metric
is measured on the held-out part, which neither saw. Topics: a one-vs-all model over the teacher's topics,
split the same way (stratified by each document's first topic).

A classifier is refused (DistilError, nothing written) when it would be trained on too few labels or on a
single class; a topic model is skipped, with the reason in metrics.json and the card, on the same grounds.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from classifiers import evaluate
from classifiers.artifact import (FORMAT, LABEL_PREFIX, NEGATIVE_LABEL, POSITIVE_LABEL, load_fasttext,
                                  positive_probabilities, topic_probabilities)
from classifiers.card import render_card
from classifiers.labels import LabelledDoc, LabelSet
from classifiers.normalize import normalize_text
from pipeline.classify import replace_dir
from pipeline.config import DistilConfig
from pipeline.errors import CurateError
from pipeline.io import write_json


class DistilError(CurateError, ValueError):
    """Refusal to write a classifier (too few labels, a single class, an unusable output folder)."""


def stratified_split(strata: list[Any], fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Indices (rest, part): `fraction` of every stratum, at least one item of any stratum of two or more,
    never a whole stratum. Seeded and independent of the input order within a stratum's key."""
    rng = np.random.default_rng(seed)
    by_stratum: dict[str, list[int]] = {}
    for index, key in enumerate(strata):
        by_stratum.setdefault(str(key), []).append(index)
    rest: list[int] = []
    part: list[int] = []
    for key in sorted(by_stratum):
        members = np.array(by_stratum[key])
        rng.shuffle(members)
        n = len(members)
        n_part = min(max(1, int(round(n * fraction))), n - 1) if n >= 2 else 0
        part.extend(members[:n_part].tolist())
        rest.extend(members[n_part:].tolist())
    return sorted(rest), sorted(part)


def train_fasttext(lines: list[str], cfg: DistilConfig, workdir: Path, name: str, *, loss: str = "softmax"):
    """Train a supervised fastText model on `__label__x text` lines.

    fastText can diverge ("Encountered NaN") on tiny sets; the learning rate is then halved (up to three
    times) and the rate actually used is returned with the model.
    """
    import fasttext

    train_file = workdir / f"{name}.train.txt"
    train_file.write_text("\n".join(lines) + "\n", encoding="utf-8")
    lr = cfg.lr
    for attempt in range(4):
        try:
            model = fasttext.train_supervised(
                input=str(train_file), lr=lr, dim=cfg.dim, epoch=cfg.epoch, wordNgrams=cfg.word_ngrams,
                minCount=cfg.min_count, bucket=cfg.bucket, thread=cfg.threads, seed=cfg.seed, loss=loss,
                verbose=0,
            )
            return model, lr, train_file
        except RuntimeError as exc:
            if "NaN" not in str(exc) or attempt == 3:
                raise DistilError(f"fastText training of the {name} model failed: {exc} (last lr={lr})") from None
            lr /= 2
    raise AssertionError("unreachable")


def _refuse_quality(docs: list[LabelledDoc], label_set: LabelSet, cfg: DistilConfig) -> None:
    positives = sum(d.is_positive for d in docs)
    negatives = len(docs) - positives
    counts = f"{positives} at or above distil.label_threshold={cfg.label_threshold}, {negatives} below"
    if len(docs) < cfg.min_labels:
        raise DistilError(
            f"refusing to write a classifier: only {len(docs)} documents have a usable quality label "
            f"({counts}), fewer than distil.min_labels={cfg.min_labels}; skipped: {dict(label_set.skipped) or 'none'}")
    if positives == 0 or negatives == 0:
        raise DistilError(
            f"refusing to write a classifier: every quality label is in one class ({counts}); a classifier "
            "needs both classes (check distil.label_threshold against the label scores)")
    if min(positives, negatives) < 3:
        raise DistilError(
            f"refusing to write a classifier: too few examples of one class ({counts}); at least 3 of each "
            "are needed to train, choose a threshold and evaluate")


def _slug(topic: str) -> str:
    return re.sub(r"[^0-9a-z]+", "_", topic.lower()).strip("_") or "topic"


def topic_label_map(topics: list[str]) -> dict[str, str]:
    """{__label__slug: topic}: fastText labels cannot hold spaces, so each topic gets a unique slug."""
    mapping: dict[str, str] = {}
    for topic in sorted(set(topics)):
        slug, n = _slug(topic), 2
        while f"{LABEL_PREFIX}{slug}" in mapping:
            slug, n = f"{_slug(topic)}_{n}", n + 1
        mapping[f"{LABEL_PREFIX}{slug}"] = topic
    return mapping


def distil_quality(docs: list[LabelledDoc], label_set: LabelSet, cfg: DistilConfig, workdir: Path,
                   model_dir: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """Train, pick the threshold on validation, evaluate on held-out; returns (config section, metrics)."""
    _refuse_quality(docs, label_set, cfg)
    texts = [normalize_text(d.text) for d in docs]
    y = np.array([int(d.is_positive) for d in docs], dtype=np.int8)
    train_val, heldout = stratified_split(y.tolist(), cfg.holdout_fraction, cfg.seed)
    rest, validation = stratified_split(y[train_val].tolist(), cfg.validation_fraction, cfg.seed + 1)
    train = [train_val[i] for i in rest]
    validation = [train_val[i] for i in validation]
    lines = [f"{POSITIVE_LABEL if y[i] else NEGATIVE_LABEL} {texts[i]}" for i in train]
    started = time.perf_counter()
    model, lr_used, train_file = train_fasttext(lines, cfg, workdir, "quality")
    train_seconds = time.perf_counter() - started
    model_file = "quality.bin"
    quantized: dict[str, Any] = {"quantized": False}
    if cfg.quantize:
        if len(train) >= cfg.quantize_min_labels:
            model.quantize(input=str(train_file), retrain=True, qnorm=True, cutoff=100_000, thread=cfg.threads)
            model_file = "quality.ftz"
            quantized = {"quantized": True}
        else:
            quantized["quantize_skipped"] = (f"{len(train)} training examples < distil.quantize_min_labels="
                                             f"{cfg.quantize_min_labels}")
    model.save_model(str(model_dir / model_file))
    # score with the saved file, through the same function the artifact uses
    shipped = load_fasttext(model_dir / model_file)
    val_scores = positive_probabilities(shipped, [texts[i] for i in validation])
    threshold = evaluate.choose_threshold(y[validation], val_scores, cfg.threshold_target, cfg.target_value)
    held_scores = positive_probabilities(shipped, [texts[i] for i in heldout])
    metrics = evaluate.quality_metrics(y[heldout], held_scores, threshold)
    metrics["validation"] = evaluate.quality_metrics(y[validation], val_scores, threshold)
    metrics["split"] = {"train": len(train), "validation": len(validation), "heldout": len(heldout),
                        "train_positives": int(y[train].sum())}
    metrics["lr_used"] = lr_used
    metrics["train_seconds"] = round(train_seconds, 3)
    metrics.update(quantized)
    section = {
        "model_file": model_file,
        "positive_label": POSITIVE_LABEL,
        "negative_label": NEGATIVE_LABEL,
        "label_threshold": cfg.label_threshold,
        "decision_threshold": threshold,
        "threshold_target": cfg.threshold_target,
        "target_value": None if cfg.threshold_target == "f1" else cfg.target_value,
        "heldout_doc_ids": sorted(docs[i].doc_id for i in heldout),
    }
    return section, metrics


def distil_topics(docs: list[LabelledDoc], cfg: DistilConfig, workdir: Path,
                  model_dir: Path) -> tuple[dict[str, Any] | None, dict[str, Any]]:
    """One-vs-all topic model; (None, {"skipped": reason}) when the labels cannot support one."""
    labelled = [d for d in docs if d.topics is not None]
    if not labelled:
        return None, {"skipped": "no topic labels"}
    distinct = Counter(t for d in labelled for t in d.topics)
    with_topic = [d for d in labelled if d.topics]
    if len(with_topic) < cfg.min_labels or len(distinct) < 2:
        return None, {"skipped": f"{len(with_topic)} documents with a topic and {len(distinct)} distinct topics; "
                                 f"need distil.min_labels={cfg.min_labels} documents and 2 topics"}
    mapping = topic_label_map(list(distinct))
    label_of = {topic: label for label, topic in mapping.items()}
    texts = [normalize_text(d.text) for d in labelled]
    rest, heldout = stratified_split([(d.topics or [""])[0] for d in labelled], cfg.holdout_fraction, cfg.seed)
    # fastText skips lines without a label: documents with no topic only serve as held-out negatives
    lines = [" ".join(label_of[t] for t in labelled[i].topics) + " " + texts[i] for i in rest if labelled[i].topics]
    model, lr_used, _ = train_fasttext(lines, cfg, workdir, "topics", loss="ova")
    model.save_model(str(model_dir / "topics.bin"))
    shipped = load_fasttext(model_dir / "topics.bin")
    probs = topic_probabilities(shipped, [texts[i] for i in heldout], mapping)
    per_topic = evaluate.topic_agreement([set(labelled[i].topics) for i in heldout], probs, sorted(distinct),
                                         cfg.topic_threshold)
    metrics = {"n": len(heldout), **evaluate.summarize_topics(per_topic), "per_topic": per_topic,
               "split": {"train": len(lines), "heldout": len(heldout)}, "lr_used": lr_used,
               "train_counts": dict(sorted(distinct.items()))}
    section = {"model_file": "topics.bin", "labels": mapping, "threshold": cfg.topic_threshold, "loss": "ova"}
    return section, metrics


def _prepare_out(out_dir: Path) -> None:
    if out_dir.exists() and (not out_dir.is_dir() or (any(out_dir.iterdir()) and not (out_dir / "config.yaml").exists())):
        raise DistilError(f"refusing to write into {out_dir}: it exists and is not a classifier folder")


def distil(label_set: LabelSet, cfg: DistilConfig, out_dir: str | Path, *, quiet: bool = False) -> dict[str, Any]:
    """Train the quality (and topic) models from `label_set` and write the artifact folder `out_dir`."""
    out_dir = Path(out_dir)
    _prepare_out(out_dir)
    quality_docs = [d for d in label_set.docs if d.is_positive is not None]
    empty = [d for d in quality_docs if not normalize_text(d.text)]
    if empty:
        label_set.skipped["empty_text"] += len(empty)
        quality_docs = [d for d in quality_docs if normalize_text(d.text)]
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_dir.with_name(f".{out_dir.name}.tmp-{uuid.uuid4().hex[:8]}")
    tmp.mkdir()
    try:
        with tempfile.TemporaryDirectory(prefix="distil-") as work:
            workdir = Path(work)
            quality_section, quality_metrics = distil_quality(quality_docs, label_set, cfg, workdir, tmp)
            topic_docs = [d for d in label_set.docs if normalize_text(d.text)]
            topics_section, topics_metrics = distil_topics(topic_docs, cfg, workdir, tmp)
        heldout_ids = quality_section.pop("heldout_doc_ids")
        config = {
            "format": FORMAT,
            "normalization": "newlines become spaces (classifiers.normalize.normalize_text); blank text is empty",
            "quality": quality_section,
            "topics": topics_section,
            "distil": cfg.model_dump(),
            "teacher": {"models": label_set.teacher_models, "prompts": label_set.prompts,
                        "source": label_set.source},
        }
        metrics = {"quality": quality_metrics, "topics": topics_metrics, "labels": label_set.counts()}
        (tmp / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False, allow_unicode=True))
        write_json(metrics, tmp / "metrics.json")
        (tmp / "heldout_doc_ids.txt").write_text("".join(f"{i}\n" for i in heldout_ids))
        (tmp / "README.md").write_text(render_card(config, metrics))
        replace_dir(tmp, out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if not quiet:
        split = quality_metrics["split"]
        print(f"[distil] quality model: {split['train']} train / {split['validation']} validation / "
              f"{split['heldout']} held-out documents; held-out metrics:")
        print(evaluate.format_quality(quality_metrics))
        if topics_section is None:
            print(f"[distil] topics: skipped ({topics_metrics['skipped']})")
        else:
            print(evaluate.format_topics(topics_metrics))
        print(f"[distil] classifier written to {out_dir}")
    return metrics


def default_docs_dir(run_root: str | Path) -> Path:
    """unique/ when dedup ran, else docs/."""
    from pipeline.io import RunLayout

    layout = RunLayout(run_root)
    unique = layout.dataset("unique")
    return unique if unique.is_dir() and any(unique.glob("*.parquet")) else layout.dataset("docs")


def run(cfg, *, labels_dir: str | Path | None = None, docs_dir: str | Path | None = None,
        out_dir: str | Path | None = None, reuse: bool = False, quiet: bool = False) -> dict[str, Any]:
    """Distil a run's labels/ (defaults: <out>/labels, <out>/unique or docs, <out>/classifier).

    With `reuse`, a classifier already trained in `out_dir` from the same labels files and settings is
    kept: fastText trains with several threads (hogwild), so retraining would give a slightly different
    model and threshold, and classify would rescore everything on a mere rerun."""
    from classifiers.labels import load_llm_labels
    from pipeline.io import RunLayout, write_json

    layout = RunLayout(cfg.out)
    labels_dir = Path(labels_dir) if labels_dir else layout.dataset("labels")
    docs_dir = Path(docs_dir) if docs_dir else default_docs_dir(cfg.out)
    out_dir = Path(out_dir) if out_dir else layout.dataset("classifier")
    labels = sorted((p.name, p.stat().st_size) for p in labels_dir.glob("*.parquet"))
    fingerprint = hashlib.sha256(json.dumps({"labels": labels, "docs": str(docs_dir), "out": str(out_dir),
                                             "distil": cfg.distil.model_dump()}, sort_keys=True).encode()).hexdigest()
    marker = layout.stage_marker("distil")
    if (reuse and (out_dir / "config.yaml").exists() and marker.exists()
            and json.loads(marker.read_text()).get("fingerprint") == fingerprint):
        if not quiet:
            print(f"[distil] {out_dir} was trained on these labels with these settings, kept")
        return {"skipped": True}
    label_set = load_llm_labels(labels_dir, docs_dir, cfg.distil.label_threshold)
    metrics = distil(label_set, cfg.distil, out_dir, quiet=quiet)
    write_json({"fingerprint": fingerprint}, marker)
    return metrics
