"""Distil teacher labels into fastText classifiers and write the artifact folder.

Quality: binary at `distil.label_threshold` (teacher score >= threshold is __label__hq), on the text view the
teacher read (`distil.text_view`). The labelled documents are split, stratified by class and seeded, into
training and held-out labels. fastText's settings are chosen on the training labels by cross-validation (mean
out-of-fold ROC AUC over k folds, repeated when the labels are few, and the one-standard-error rule; one
validation split above `distil.cv_max_labels` labels), and the decision threshold on the out-of-fold scores
of the chosen settings. A model trained on the training labels gives the held-out metrics (the held-out
labels are seen by nothing before), their spread is measured over training and split seeds, and the shipped
model is then refit on every label (`distil.refit_all`), optionally as a bag. Topics and formats: one-vs-all
models over the teacher's tags, split the same way (stratified by each document's first tag).

A classifier is refused (DistilError, nothing written) when it would be trained on too few labels or on a
single class; a topic model is skipped, with the reason in metrics.json and the card, on the same grounds.

`distil()` trains from a LabelSet into a folder (`curate distil`, tests); `DistilStage` is the pipeline's
`distil` stage on the runtime (one shard keyed by the labels: new labels retrain, the same ones keep the
classifier), run through the registry (`pipeline.stages.run_stages(cfg, "distil")`).
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
from classifiers.artifact import (
    FORMAT,
    HELDOUT_SCORES,
    LABEL_PREFIX,
    NEGATIVE_LABEL,
    POSITIVE_LABEL,
    TAG_KINDS,
    tag_probabilities,
)
from classifiers.card import render_card
from classifiers.labels import LabelledDoc, LabelsError, LabelSet, load_llm_labels, parquet_files_under
from classifiers.normalize import normalize_text
from classifiers.selection import (
    TUNED_SETTINGS,
    QualityLines,
    cross_validate_settings,
    fit_bag,
    format_auc,
    mean_scores,
    measure_variance,
    selection_mode,
    tune_settings,
)
from classifiers.training import DistilError, save_model, stratified_folds, stratified_split, train_fasttext
from pipeline.config import DistilConfig, RunConfig
from pipeline.io import RunLayout, replace_dir, write_json
from pipeline.runtime import DOCUMENTS, Input, Resources, Shard, ShardResult, Stage


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



def text_view(label_set: LabelSet, cfg: DistilConfig) -> dict[str, Any]:
    """What the student reads, for training and for scoring alike: `max_chars` (the first characters of a
    page; None = the whole page), with how much the teacher read and where that number came from."""
    teacher_chars = cfg.teacher_chars if cfg.teacher_chars is not None else label_set.teacher_chars
    source = ("distil.teacher_chars" if cfg.teacher_chars is not None
              else label_set.teacher_chars_source if label_set.teacher_chars is not None else None)
    max_chars = teacher_chars if cfg.text_view == "teacher" else None
    if max_chars is not None:
        what = f"the first {max_chars} characters of each page (what the teacher read)"
    elif teacher_chars is None:
        what = "the whole text (the teacher read the whole text, as far as the labels say)"
    else:
        what = f"the whole page (distil.text_view: page; the teacher read its first {teacher_chars} characters)"
    return {"view": cfg.text_view, "max_chars": max_chars, "teacher_chars": teacher_chars,
            "teacher_chars_source": source, "trained_on": what, "scored_on": what}


def distil_quality(docs: list[LabelledDoc], label_set: LabelSet, cfg: DistilConfig, workdir: Path,
                   model_dir: Path, max_chars: int | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """Split off the held-out labels; choose the settings and the threshold on the rest (cross-validation, or
    one validation split); measure the held-out metrics on a model trained on the rest; measure their
    spread over seeds; then refit the shipped model on every label (`distil.refit_all`). Returns (config
    section, metrics)."""
    _refuse_quality(docs, label_set, cfg)
    texts = [normalize_text(d.text, max_chars) for d in docs]
    y = np.array([int(d.is_positive) for d in docs], dtype=np.int8)
    everything = list(range(len(docs)))
    train_val, heldout = stratified_split(y.tolist(), cfg.holdout_fraction, cfg.seed)
    lines = QualityLines(texts, y, cfg, workdir)
    mode = selection_mode(cfg, len(train_val))
    legacy = mode == "validation" and not cfg.refit_all  # the shipped model is the held-out one
    # 1. settings, and the out-of-sample scores of the chosen settings the threshold is chosen on
    if mode == "cross_validation":
        settings, tuning, threshold_labels, threshold_scores = cross_validate_settings(lines, train_val, cfg)
        train, validation = train_val, []
        report_on = train_val
        threshold_choice = {
            "method": "cross_validation", "folds": tuning["folds"], "repeats": tuning["repeats"],
            "documents": len(train_val), "scores": "out_of_fold",
            "reason": "out-of-fold scores of the chosen settings (every repeat) over the training labels: the "
                      "scores of models that did not see the documents, as the held-out and shipped models' are"}
    else:
        rest, val = stratified_split(y[train_val].tolist(), cfg.validation_fraction, cfg.seed + 1)
        train = [train_val[i] for i in rest]
        validation = [train_val[i] for i in val]
        settings, tuning, validation_scores = tune_settings(
            lines.file(train), [texts[i] for i in validation], y[validation], cfg, workdir)
        if not cfg.tune:
            tuning = {"enabled": False, "mode": "validation", "heldout_used": False}
        if len(validation) >= cfg.cv_min_validation:
            threshold_labels, threshold_scores = y[validation], validation_scores
            threshold_choice = {"method": "validation", "documents": len(validation), "scores": "validation_split"}
            report_on = train if legacy else train_val
        else:
            started = time.perf_counter()
            k = min(cfg.cv_folds, int(np.bincount(y[train_val], minlength=2).min()))
            folds = stratified_folds(y[train_val].tolist(), k, cfg.seed + 2)
            threshold_scores = np.full(len(train_val), np.nan, dtype=np.float32)
            for fold in folds:
                held = set(fold)
                fold_train = [train_val[j] for j in range(len(train_val)) if j not in held]
                model, _, _ = lines.train(fold_train, settings)
                threshold_scores[fold] = lines.scores(model, [train_val[j] for j in fold])
                del model
            threshold_labels = y[train_val]
            report_on = train_val
            threshold_choice = {
                "method": "cross_validation", "folds": k, "repeats": 1, "documents": len(train_val),
                "scores": "out_of_fold",
                "reason": f"validation split of {len(validation)} documents < distil.cv_min_validation="
                          f"{cfg.cv_min_validation}: out-of-fold scores over train+validation",
                "seconds": round(time.perf_counter() - started, 3)}
    threshold = evaluate.choose_threshold(threshold_labels, threshold_scores, cfg.threshold_target, cfg.target_value)
    shipped_on = everything if cfg.refit_all else report_on
    quantize = cfg.quantize and len(shipped_on) >= cfg.quantize_min_labels
    model_file = "quality.ftz" if quantize else "quality.bin"
    quantized: dict[str, Any] = {"quantized": quantize}
    if cfg.quantize and not quantize:
        quantized["quantize_skipped"] = (f"{len(shipped_on)} training examples < distil.quantize_min_labels="
                                         f"{cfg.quantize_min_labels}")
    if quantize and threshold_choice["method"] == "cross_validation":
        threshold_choice["fold_models_quantized"] = False
    # 2. the held-out model: never saw the held-out labels; the reported metrics are its
    started = time.perf_counter()
    report_dir = workdir / "heldout-model"
    report_dir.mkdir(exist_ok=True)
    report_models, report_files, lr_used = fit_bag(lines, report_on, settings, cfg,
                                                    report_dir if cfg.refit_all else model_dir, model_file, quantize)
    held_scores = mean_scores(lines, report_models, heldout)
    del report_models
    report_seconds = time.perf_counter() - started
    metrics = evaluate.quality_metrics(y[heldout], held_scores, threshold)
    metrics["validation"] = {**evaluate.quality_metrics(threshold_labels, threshold_scores, threshold),
                             "scores": threshold_choice["scores"]}
    # 3. the spread of the held-out AUC over seeds
    variance = measure_variance(lines, settings, cfg, report_on, heldout, metrics["roc_auc"])
    # 4. the shipped model(s): refit on every label with the same settings and threshold
    started = time.perf_counter()
    if cfg.refit_all:
        _, shipped_files, lr_used = fit_bag(lines, shipped_on, settings, cfg, model_dir, model_file, quantize)
    else:
        shipped_files = report_files
    train_seconds = time.perf_counter() - started if cfg.refit_all else report_seconds
    metrics["split"] = {"train": len(train), "validation": len(validation), "heldout": len(heldout),
                        "train_positives": int(y[train].sum()), "heldout_model_trained_on": len(report_on),
                        "final_model_trained_on": len(shipped_on)}
    metrics["models"] = {
        "metrics_of": "heldout_model",
        "heldout_model": {"trained_on": len(report_on), "saw_heldout_labels": False, "shipped": not cfg.refit_all},
        "shipped_model": {"trained_on": len(shipped_on), "refit_all": cfg.refit_all,
                          "saw_heldout_labels": cfg.refit_all, "files": shipped_files},
        "threshold": ("chosen on out-of-sample scores of the chosen settings (" + threshold_choice["scores"]
                      + "), applied unchanged to the held-out and the shipped model"),
    }
    metrics["hyperparameters"] = {**settings, "bucket": cfg.bucket}
    metrics["tuning"] = tuning
    metrics["threshold_choice"] = threshold_choice
    metrics["variance"] = variance
    metrics["bag"] = {"models": cfg.bag, **({"sampling": cfg.bag_sampling, "combine": "mean P(hq)"}
                                            if cfg.bag > 1 else {})}
    metrics["shuffled"] = cfg.shuffle
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
        "threshold_method": threshold_choice["method"],
        "hyperparameters": {**settings, "bucket": cfg.bucket},
        "tuned": bool(cfg.tune),
        "selection": tuning.get("mode", mode),
        "refit_all": cfg.refit_all,
        **({"bag_files": shipped_files[1:], "bag_combine": "mean"} if cfg.bag > 1 else {}),
        "heldout_doc_ids": sorted(docs[i].doc_id for i in heldout),
        "heldout_scores": [(docs[i].doc_id, int(y[i]), float(s)) for i, s in zip(heldout, held_scores)],
    }
    return section, metrics



def tags_of(doc: LabelledDoc, kind: str) -> list[str] | None:
    """A document's teacher tags of `kind` (topics, or formats from the combined labels); None: not labelled."""
    return doc.topics if kind == "topics" else doc.format


def distil_tags(docs: list[LabelledDoc], kind: str, cfg: DistilConfig, workdir: Path,
                model_dir: Path, max_chars: int | None = None) -> tuple[dict[str, Any] | None, dict[str, Any]]:
    """One-vs-all model over the teacher's tags of `kind` ("topics" or "formats"), split stratified by each
    document's first tag, on the same text view as the quality model; (None, {"skipped": reason}) when the
    labels cannot support one."""
    noun = TAG_KINDS[kind]
    labelled = [d for d in docs if tags_of(d, kind) is not None]
    if not labelled:
        return None, {"skipped": f"no {noun} labels"}
    distinct = Counter(t for d in labelled for t in tags_of(d, kind))
    with_tag = [d for d in labelled if tags_of(d, kind)]
    if len(with_tag) < cfg.min_labels or len(distinct) < 2:
        return None, {"skipped": f"{len(with_tag)} documents with a {noun} and {len(distinct)} distinct {kind}; "
                                 f"need distil.min_labels={cfg.min_labels} documents and 2 {kind}"}
    mapping = topic_label_map(list(distinct))
    label_of = {tag: label for label, tag in mapping.items()}
    texts = [normalize_text(d.text, max_chars) for d in labelled]
    tags = [tags_of(d, kind) for d in labelled]
    rest, heldout = stratified_split([(t or [""])[0] for t in tags], cfg.holdout_fraction, cfg.seed)
    # fastText skips lines without a label: documents with no tag only serve as held-out negatives
    lines = [" ".join(label_of[t] for t in tags[i]) + " " + texts[i] for i in rest if tags[i]]
    model, lr_used, _ = train_fasttext(lines, cfg, workdir, kind, loss="ova")
    model_file = f"{kind}.bin"
    shipped = save_model(model, model_dir / model_file)
    probs = tag_probabilities(shipped, [texts[i] for i in heldout], mapping)
    threshold = cfg.topic_threshold if kind == "topics" else cfg.format_threshold
    per_tag = evaluate.topic_agreement([set(tags[i]) for i in heldout], probs, sorted(distinct), threshold)
    metrics = {"n": len(heldout), **evaluate.summarize_topics(per_tag), "per_topic": per_tag,
               "split": {"train": len(lines), "heldout": len(heldout)}, "lr_used": lr_used,
               "train_counts": dict(sorted(distinct.items()))}
    section = {"model_file": model_file, "labels": mapping, "threshold": threshold, "loss": "ova"}
    return section, metrics


def _prepare_out(out_dir: Path) -> None:
    if out_dir.exists() and (not out_dir.is_dir()
                             or (any(out_dir.iterdir()) and not (out_dir / "config.yaml").exists())):
        raise DistilError(f"refusing to write into {out_dir}: it exists and is not a classifier folder")


def _staging_dir(out_dir: Path) -> Path:
    """An empty folder beside `out_dir` (same file system: it is installed there by a rename)."""
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_dir.with_name(f".{out_dir.name}.tmp-{uuid.uuid4().hex[:8]}")
    tmp.mkdir()
    return tmp


def write_artifact(label_set: LabelSet, cfg: DistilConfig, folder: Path) -> dict[str, Any]:
    """Train the quality (and topic) models from `label_set` and write every file of the artifact into
    `folder` (empty; the caller installs it). Returns the metrics (metrics.json)."""
    view = text_view(label_set, cfg)
    max_chars = view["max_chars"]
    quality_docs = [d for d in label_set.docs if d.is_positive is not None]
    empty = [d for d in quality_docs if not normalize_text(d.text, max_chars)]
    if empty:
        label_set.skipped["empty_text"] += len(empty)
        quality_docs = [d for d in quality_docs if normalize_text(d.text, max_chars)]
    with tempfile.TemporaryDirectory(prefix="distil-") as work:
        workdir = Path(work)
        quality_section, quality_metrics = distil_quality(quality_docs, label_set, cfg, workdir, folder, max_chars)
        quality_metrics["text_view"] = view
        tag_docs = [d for d in label_set.docs if normalize_text(d.text, max_chars)]
        tag_results = {kind: distil_tags(tag_docs, kind, cfg, workdir, folder, max_chars) for kind in TAG_KINDS}
    heldout_ids = quality_section.pop("heldout_doc_ids")
    heldout_scores = quality_section.pop("heldout_scores")
    config = {
        "format": FORMAT,
        "normalization": ("newlines become spaces (classifiers.normalize.normalize_text); blank text is empty"
                          + (f"; the text is first cut to its first {max_chars} characters (text_view)"
                             if max_chars is not None else "")),
        "text_view": {key: view[key] for key in ("view", "max_chars", "teacher_chars", "teacher_chars_source")},
        "quality": quality_section,
        **{kind: section for kind, (section, _) in tag_results.items()},
        "distil": cfg.model_dump(),
        "teacher": label_set.teacher().to_config(),
    }
    metrics = {"quality": quality_metrics, **{kind: m for kind, (_, m) in tag_results.items()},
               "labels": label_set.counts()}
    (folder / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False, allow_unicode=True))
    write_json(metrics, folder / "metrics.json")
    (folder / "heldout_doc_ids.txt").write_text("".join(f"{i}\n" for i in heldout_ids))
    # the held-out model's scores of the held-out documents (the shipped model, refit, has seen them)
    (folder / HELDOUT_SCORES).write_text("".join(
        json.dumps({"doc_id": doc_id, "label": label, "score": round(score, 7)}) + "\n"
        for doc_id, label, score in sorted(heldout_scores)))
    (folder / "README.md").write_text(render_card(config, metrics))
    return metrics


def describe(metrics: dict[str, Any], out_dir: Path) -> str:
    """What was trained: the split, how the settings and threshold were chosen, the held-out metrics and their
    spread, which model ships, the topic and format models, where the classifier is."""
    quality = metrics["quality"]
    split = quality["split"]
    tuning = quality.get("tuning") or {}
    if tuning.get("mode") == "cross_validation" or split.get("validation") == 0:
        lines = [f"[distil] quality model: {split['train']} training / {split['heldout']} held-out documents"]
    else:
        lines = [f"[distil] quality model: {split['train']} train / {split['validation']} validation / "
                 f"{split['heldout']} held-out documents"]
    settings = quality.get("hyperparameters")
    if settings:
        if tuning.get("mode") == "cross_validation":
            how = (f"{'searched' if tuning.get('enabled') else 'configured'}: {tuning['configs_tried']} of "
                   f"{tuning['configs_in_grid']} configs by {tuning['folds']}-fold cross-validation x "
                   f"{tuning['repeats']} in {tuning['seconds']:.1f} s, mean AUC "
                   f"{format_auc(tuning['chosen_mean_auc'])} "
                   f"± {format_auc(tuning['chosen_se'])} SE; {tuning['why']}")
        elif tuning.get("enabled"):
            how = (f"tuned on the validation split, {tuning['configs_tried']} of {tuning['configs_in_grid']} configs "
                   f"in {tuning['seconds']:.1f} s, validation AUC {format_auc(tuning['chosen_validation_auc'])} vs "
                   f"{format_auc(tuning['configured_validation_auc'])} configured")
        else:
            how = "configured"
        lines.append("[distil] settings: " + ", ".join(f"{k} {settings[k]}" for k in TUNED_SETTINGS) + f" ({how})")
    choice = quality.get("threshold_choice")
    if choice:
        lines.append("[distil] threshold: " + (
            f"out-of-fold scores of {choice['folds']}-fold cross-validation x {choice.get('repeats', 1)} over "
            f"{choice['documents']} training documents" if choice["method"] == "cross_validation"
            else f"validation split ({choice['documents']} documents)"))
    lines += ["[distil] held-out metrics (a model that never saw the held-out labels; the threshold was not "
              "chosen on them):", evaluate.format_quality(quality)]
    variance = quality.get("variance") or {}
    if variance.get("measured"):
        lines.append(f"[distil] held-out AUC over {variance['seeds']} training seeds "
                     f"{format_auc(variance['training_seed']['mean'])} ± "
                     f"{format_auc(variance['training_seed']['sd'])} (sd), over "
                     f"{variance['seeds']} split seeds {format_auc(variance['split_seed']['mean'])} ± "
                     f"{format_auc(variance['split_seed']['sd'])}")
    models = quality.get("models") or {}
    shipped = models.get("shipped_model") or {}
    if shipped.get("refit_all"):
        lines.append(f"[distil] shipped model: refit on all {shipped['trained_on']} labelled documents with these "
                     f"settings and threshold ({', '.join(shipped['files'])})")
    view = quality.get("text_view") or {}
    if view:
        lines.append(f"[distil] text view: {view['trained_on']}")
    for kind in TAG_KINDS:
        tag_metrics = metrics.get(kind) or {"skipped": "not trained"}
        lines.append(f"[distil] {kind}: skipped ({tag_metrics['skipped']})" if "skipped" in tag_metrics
                     else evaluate.format_topics(tag_metrics, kind))
    lines.append(f"[distil] classifier written to {out_dir}")
    return "\n".join(lines)




def distil(label_set: LabelSet, cfg: DistilConfig, out_dir: str | Path, *, quiet: bool = False) -> dict[str, Any]:
    """Train the quality (and topic) models from `label_set` and write the artifact folder `out_dir`
    (replaced atomically: readers see the old classifier or the new one)."""
    out_dir = Path(out_dir)
    _prepare_out(out_dir)
    tmp = _staging_dir(out_dir)
    try:
        metrics = write_artifact(label_set, cfg, tmp)
        replace_dir(tmp, out_dir)
    except OSError as exc:
        if exc.filename in (None, str(tmp)) or str(exc.filename).startswith(str(tmp)):
            # a write deep in a library (a full disk on close) names no file, or the staging one: name the real
            # folder, which is left as it was
            raise OSError(exc.errno, exc.strerror, str(out_dir)) from exc
        raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if not quiet:
        print(describe(metrics, out_dir))
    return metrics


class DistilStage(Stage):
    """labels/ -> classifier/: one shard, keyed by the labels (their files and sizes, and the docs folder they
    are joined to), trained in this process. New labels train a new classifier; the same labels keep the one
    there (retraining would cost time, and with distil.threads > 1 give a slightly different model that
    classify would rescore everything with)."""

    name = "distil"
    section = "distil"
    # the labels, and the documents they were made from (where annotate read them: their texts are joined)
    inputs = (Input("labels"), Input(DOCUMENTS, config="annotate.docs"))
    outputs = ()
    artifacts = ("classifier",)  # the folder the stage installs whole (not a per-shard dataset)
    writes_decisions = False
    role = "step"
    unit = "label set"

    @classmethod
    def enabled(cls, cfg: RunConfig) -> bool:
        """Distilled only when no classifier is given (`classify.classifier` reuses one)."""
        return cfg.classify.classifier is None

    @property
    def labels_dir(self) -> Path:
        return self.input_folder("labels")

    @property
    def docs_dir(self) -> Path:
        return self.input_folder(DOCUMENTS)

    @property
    def out_dir(self) -> Path:
        return RunLayout(self.cfg.out).dataset("classifier")

    def settings(self) -> dict[str, Any]:
        return {f"distil.{key}": value for key, value in self.cfg.distil.model_dump(mode="json").items()}

    def plan_identity(self) -> dict[str, Any]:
        return {"classifier": str(self.out_dir)}  # another destination trains again

    def check(self) -> None:
        if not parquet_files_under(self.labels_dir):
            raise LabelsError(f"no Parquet files in {self.labels_dir} (expected annotate's labels/ with the LABELS "
                              "schema; run `curate annotate` first)")
        _prepare_out(self.out_dir)

    def plan(self) -> list[Shard]:
        files = sorted((str(p.relative_to(self.labels_dir)), p.stat().st_size)
                       for p in parquet_files_under(self.labels_dir))
        digest = hashlib.sha256(json.dumps({"labels": files, "docs": str(self.docs_dir)}, sort_keys=True).encode())
        # a removed classifier folder is trained again: the runtime's resume rule checks installed artifacts
        return [Shard(key=f"labels-{digest.hexdigest()[:16]}", source=str(self.labels_dir))]

    def resources(self) -> Resources:
        return Resources(kind="local")  # fastText trains in one process (its threads: distil.threads)

    def process(self, worker, shard: Shard) -> ShardResult:
        label_set = load_llm_labels(self.labels_dir, self.docs_dir, self.cfg.distil.label_threshold,
                                    self.cfg.distil.label_source, teacher_chars=self.cfg.annotate.max_doc_chars)
        skipped = Counter(label_set.skipped)  # label rows left out before training (training adds empty_text)
        tmp = _staging_dir(self.out_dir)
        try:
            metrics = write_artifact(label_set, self.cfg.distil, tmp)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        # Counted in labelled documents, plus the label rows skipped before they made one: a document with
        # text is used (training and evaluation), one without is dropped, a label the teacher failed on is
        # errored, one whose document is not in the docs folder (or of an unknown task) is dropped.
        stats = self.new_stats(shard)
        empty = sum(1 for d in label_set.docs if not normalize_text(d.text))
        stats.input = len(label_set.docs) + sum(skipped.values())
        stats.kept = len(label_set.docs) - empty
        if empty:
            stats.drop("empty_text", empty)
        for reason, n in sorted(skipped.items()):
            (stats.error if reason == "label_error" else stats.drop)(reason, n)
        split = metrics["quality"]["split"]
        stats.extra.update({"classifier": str(self.out_dir), "split": split,
                            "heldout_roc_auc": metrics["quality"].get("roc_auc")})
        return ShardResult(rows={}, decisions=[], stats=stats, artifacts={str(self.out_dir): tmp})

    def finish(self, summary: dict[str, Any], markers: list[dict[str, Any]]) -> dict[str, Any]:
        return {"classifier": str(self.out_dir), "trained_now": bool(summary["shards_run"])}

    def format_summary(self, summary: dict[str, Any]) -> str:
        if not summary["shards_run"]:
            return f"[distil] {self.out_dir} was trained on these labels with these settings, kept"
        return describe(json.loads((self.out_dir / "metrics.json").read_text()), self.out_dir)
