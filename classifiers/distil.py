"""Distil teacher labels into fastText classifiers and write the artifact folder.

Quality: binary at `distil.label_threshold` (teacher score >= threshold is __label__hq). The labelled
documents are split, stratified by class and seeded, into train / validation / held-out: fastText's settings
are tuned on validation (`distil.tune`: models trained on train, scored by validation ROC AUC), the decision
threshold is chosen on validation for the configured target (or, when the validation split is smaller than
`distil.cv_min_validation`, on out-of-fold scores of a k-fold cross-validation over train+validation, the
shipped model then learning on train+validation), and every reported metric is measured on the held-out
part, which none of that saw. Topics: a one-vs-all model over the teacher's topics,
split the same way (stratified by each document's first topic).

A classifier is refused (DistilError, nothing written) when it would be trained on too few labels or on a
single class; a topic model is skipped, with the reason in metrics.json and the card, on the same grounds.

`distil()` trains from a LabelSet into a folder (`curate distil`, tests); `DistilStage` is the pipeline's
`distil` stage on the runtime (one shard keyed by the labels: new labels retrain, the same ones keep the
classifier), run through the registry (`pipeline.stages.run_stages(cfg, "distil")`).
"""

from __future__ import annotations

import ctypes
import hashlib
import itertools
import json
import os
import platform
import re
import shutil
import tempfile
import threading
import time
import uuid
import warnings
from collections import Counter
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from classifiers import evaluate
from classifiers.artifact import (
    FORMAT,
    LABEL_PREFIX,
    NEGATIVE_LABEL,
    POSITIVE_LABEL,
    TAG_KINDS,
    load_fasttext,
    positive_probabilities,
    tag_probabilities,
)
from classifiers.card import render_card
from classifiers.labels import LabelledDoc, LabelsError, LabelSet, load_llm_labels, parquet_files_under
from classifiers.normalize import normalize_text
from pipeline.config import DistilConfig, RunConfig
from pipeline.errors import CurateError
from pipeline.io import RunLayout, replace_dir, write_json
from pipeline.runtime import DOCUMENTS, Input, Resources, Shard, ShardResult, Stage


class DistilError(CurateError, ValueError):
    """Refusal to write a classifier (too few labels, a single class, an unusable output folder)."""


def save_model(model, path: Path):
    """Save a fastText model and load it back (returned). fastText writes through a C++ stream that ignores a
    full disk and leaves the file cut short: loading it back is the check, and a load that fails on a disk
    without room is the disk's fault, said as such (ENOSPC on this path), not a 'wrong file format' later."""
    import errno

    model.save_model(str(path))
    try:
        return load_fasttext(path)
    except ValueError as exc:
        if shutil.disk_usage(path.parent).free < 16 * 1024 * 1024:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path)) from exc
        raise CurateError(f"{path}: the model just written does not load back ({exc})") from exc


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


_M_PERTURB = -6  # glibc <malloc.h>
_zeroed_lock = threading.Lock()


@contextmanager
def zeroed_allocations():
    """While active, glibc hands out every allocation zero-filled (mallopt M_PERTURB; freed memory is
    filled with 0xff meanwhile). Yields False where that is unavailable (not glibc).

    fastText (fasttext-numpy2-wheel 0.9.2) allocates its input matrix uninitialised (posix_memalign) and
    `DenseMatrix::uniform` randomises it in ten blocks, one per thread index below `thread`: with one
    thread, 90% of the rows would start from whatever the heap last held (an earlier model's weights,
    malloc bookkeeping), so the model would depend on the process's history. Zero-filled, those rows start
    at exactly 0 (the output matrix starts at 0 anyway), which learns as well as a random start."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        yield False
        return
    libc = ctypes.CDLL(None)
    previous = int(os.environ.get("MALLOC_PERTURB_", "0") or 0)
    with _zeroed_lock:
        if not libc.mallopt(_M_PERTURB, 0xFF):
            yield False
            return
        try:
            yield True
        finally:
            libc.mallopt(_M_PERTURB, previous)


def train_fasttext(lines: list[str], cfg: DistilConfig, workdir: Path, name: str, *, loss: str = "softmax",
                   train_file: Path | None = None):
    """Train a supervised fastText model on `__label__x text` lines (already written to `train_file`, when
    given: the lines are then not written again).

    With `cfg.threads` 1 (the default) training is reproducible: one thread, a seeded rng, and the input
    matrix's uninitialised rows zero-filled (see `zeroed_allocations`); the same lines and settings give
    the same model, byte for byte. More threads train faster but hogwild, so not reproducibly.
    fastText can diverge ("Encountered NaN") on tiny sets; the learning rate is then halved (up to three
    times) and the rate actually used is returned with the model.
    """
    import fasttext

    if train_file is None:
        train_file = _write_lines(lines, workdir, name)
    lr = cfg.lr
    for attempt in range(4):
        try:
            with zeroed_allocations() as zeroed:
                model = fasttext.train_supervised(
                    input=str(train_file), lr=lr, dim=cfg.dim, epoch=cfg.epoch, wordNgrams=cfg.word_ngrams,
                    minCount=cfg.min_count, bucket=cfg.bucket, thread=cfg.threads, seed=cfg.seed, loss=loss,
                    verbose=0,
                )
            if not zeroed and cfg.threads < 10:
                warnings.warn(f"fastText's input matrix could not be zero-filled on this platform: with "
                              f"distil.threads={cfg.threads} part of it starts uninitialised, so the {name} model "
                              "is not guaranteed reproducible", RuntimeWarning, stacklevel=2)
            return model, lr, train_file
        except RuntimeError as exc:
            if "NaN" not in str(exc) or attempt == 3:
                raise DistilError(f"fastText training of the {name} model failed: {exc} (last lr={lr})") from None
            lr /= 2
    raise AssertionError("unreachable")


def _write_lines(lines: list[str], workdir: Path, name: str) -> Path:
    path = workdir / f"{name}.train.txt"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


# The fastText settings `distil.tune` searches (DistilConfig field names; fastText calls word_ngrams
# wordNgrams and min_count minCount).
TUNED_SETTINGS = ("lr", "epoch", "word_ngrams", "dim", "min_count")


def configured_settings(cfg: DistilConfig) -> dict[str, Any]:
    return {key: getattr(cfg, key) for key in TUNED_SETTINGS}


def tuning_candidates(cfg: DistilConfig) -> list[dict[str, Any]]:
    """The settings the search tries, in order: the configured ones first (so the search never picks worse
    on validation than not searching), then every other point of the grid (`distil.tune_grid`; an axis it
    does not list stays at its configured value) in a permutation seeded by `distil.seed`."""
    base = configured_settings(cfg)
    axes = [sorted(set(cfg.tune_grid.get(key, [base[key]]))) for key in TUNED_SETTINGS]
    others = [settings for settings in (dict(zip(TUNED_SETTINGS, values)) for values in itertools.product(*axes))
              if settings != base]
    order = np.random.default_rng(cfg.seed).permutation(len(others))
    return [base] + [others[i] for i in order]


def best_trial(trials: list[dict[str, Any]]) -> int:
    """Index of the trial with the highest validation ROC AUC; ties (to 1e-9) go to the smaller model
    (fewer parameters), then to less training work (epoch x word_ngrams), then to the earlier trial."""
    def key(i: int) -> tuple:
        trial = trials[i]
        auc = trial["validation_auc"]
        parameters = trial["parameters"]
        return (-(round(auc, 9) if auc is not None else -1.0), float("inf") if parameters is None else parameters,
                trial["epoch"] * trial["word_ngrams"], i)
    return min(range(len(trials)), key=key)


def _parameters(model, settings: dict[str, Any], bucket: int) -> int:
    """Rows x dim of the input matrix: fastText drops the n-gram buckets when word_ngrams is 1."""
    rows = len(model.get_words()) + (bucket if settings["word_ngrams"] > 1 else 0)
    return rows * settings["dim"]


def tune_settings(train_file: Path, validation_texts: list[str], validation_labels, cfg: DistilConfig,
                  workdir: Path, *, clock=time.perf_counter) -> tuple[dict[str, Any], dict[str, Any]]:
    """Search `tuning_candidates(cfg)` in order: train on `train_file` (the train split), score the
    validation split, until `distil.tune_budget_s` is spent (checked before each trial, so the last one may
    overrun it; the first always runs). Returns (chosen settings, search report). Only the train and
    validation splits are seen here: the held-out split is not an argument."""
    candidates = tuning_candidates(cfg)
    started = clock()
    trials: list[dict[str, Any]] = []
    for settings in candidates:
        if trials and clock() - started >= cfg.tune_budget_s:
            break
        trial_started = clock()
        try:
            model, lr_used, _ = train_fasttext([], cfg.model_copy(update=settings), workdir, "quality-tune",
                                               train_file=train_file)
        except DistilError as exc:  # diverged even at a quarter of its lr: this configuration loses
            trials.append({**settings, "lr_used": None, "validation_auc": None, "parameters": None,
                           "error": str(exc), "seconds": round(clock() - trial_started, 3)})
            continue
        auc = evaluate.roc_auc(validation_labels, positive_probabilities(model, validation_texts))
        trials.append({**settings, "lr_used": lr_used, "validation_auc": auc,
                       "parameters": _parameters(model, settings, cfg.bucket),
                       "seconds": round(clock() - trial_started, 3)})
        del model
    best = best_trial(trials)
    chosen = {key: trials[best][key] for key in TUNED_SETTINGS}
    report = {
        "enabled": True,
        "selected_on": "validation",
        "metric": "roc_auc",
        "validation_documents": len(validation_texts),
        "heldout_used": False,
        "grid": cfg.tune_grid,
        "budget_s": cfg.tune_budget_s,
        "configs_in_grid": len(candidates),
        "configs_tried": len(trials),
        "complete": len(trials) == len(candidates),
        "seconds": round(clock() - started, 3),
        "chosen": chosen,
        "chosen_trial": best,
        "chosen_validation_auc": trials[best]["validation_auc"],
        "configured_validation_auc": trials[0]["validation_auc"],
        "trials": trials,
    }
    return chosen, report


def stratified_folds(strata: list[Any], k: int, seed: int) -> list[list[int]]:
    """k disjoint folds covering every index: each stratum is shuffled (seeded) and dealt round-robin, the
    next stratum continuing where the last one stopped, so every fold holds about 1/k of each stratum."""
    rng = np.random.default_rng(seed)
    by_stratum: dict[str, list[int]] = {}
    for index, key in enumerate(strata):
        by_stratum.setdefault(str(key), []).append(index)
    folds: list[list[int]] = [[] for _ in range(k)]
    dealt = 0
    for key in sorted(by_stratum):
        members = np.array(by_stratum[key])
        rng.shuffle(members)
        for member in members.tolist():
            folds[dealt % k].append(member)
            dealt += 1
    return [sorted(fold) for fold in folds]


def _quantize(model, train_file: Path, cfg: DistilConfig) -> None:
    # fastText retrains only when it prunes (more than `cutoff` rows), on a full copy of the kept rows:
    # with one thread that is deterministic too, and product quantisation uses a fixed seed
    model.quantize(input=str(train_file), retrain=True, qnorm=True, cutoff=100_000, thread=cfg.threads)


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
    """Tune on validation, choose the threshold (on validation, or by cross-validation over train+validation
    when validation is small), train the shipped model, evaluate on held-out; returns (config section,
    metrics)."""
    _refuse_quality(docs, label_set, cfg)
    texts = [normalize_text(d.text) for d in docs]
    y = np.array([int(d.is_positive) for d in docs], dtype=np.int8)
    train_val, heldout = stratified_split(y.tolist(), cfg.holdout_fraction, cfg.seed)
    rest, validation = stratified_split(y[train_val].tolist(), cfg.validation_fraction, cfg.seed + 1)
    train = [train_val[i] for i in rest]
    validation = [train_val[i] for i in validation]

    def line(i: int) -> str:
        return f"{POSITIVE_LABEL if y[i] else NEGATIVE_LABEL} {texts[i]}"

    train_file = _write_lines([line(i) for i in train], workdir, "quality")
    # 1. settings: tuned on validation (models trained on train), or the configured ones
    if cfg.tune:
        settings, tuning = tune_settings(train_file, [texts[i] for i in validation], y[validation], cfg, workdir)
    else:
        settings, tuning = configured_settings(cfg), {"enabled": False, "heldout_used": False}
    chosen = cfg.model_copy(update=settings)
    # 2. what the shipped model learns on, and where the threshold comes from
    cross_validate = len(validation) < cfg.cv_min_validation
    final = sorted(train + validation) if cross_validate else train
    quantize = cfg.quantize and len(final) >= cfg.quantize_min_labels
    if cross_validate:
        started = time.perf_counter()
        folds_k = min(cfg.cv_folds, int(np.bincount(y[final], minlength=2).min()))
        folds = stratified_folds(y[final].tolist(), folds_k, cfg.seed + 2)
        out_of_fold = np.full(len(final), np.nan, dtype=np.float32)
        for f, fold in enumerate(folds):
            held = set(fold)
            # not quantised even when the shipped model is: product quantisation costs seconds per model, and
            # it only applies from distil.quantize_min_labels examples, where validation is rarely this small
            fold_model, _, _ = train_fasttext([line(final[j]) for j in range(len(final)) if j not in held],
                                              chosen, workdir, f"quality-fold{f}")
            out_of_fold[fold] = positive_probabilities(fold_model, [texts[final[j]] for j in fold])
            del fold_model
        threshold_labels, threshold_scores = y[final], out_of_fold
        threshold_choice = {
            "method": "cross_validation", "folds": folds_k, "documents": len(final),
            "reason": f"validation split of {len(validation)} documents < distil.cv_min_validation="
                      f"{cfg.cv_min_validation}: out-of-fold scores over train+validation",
            "seconds": round(time.perf_counter() - started, 3)}
        if quantize:
            threshold_choice["fold_models_quantized"] = False
    else:
        threshold_choice = {"method": "validation", "documents": len(validation)}
    # 3. the shipped model
    started = time.perf_counter()
    model, lr_used, final_file = train_fasttext([line(i) for i in final], chosen, workdir, "quality-final",
                                                train_file=None if cross_validate else train_file)
    train_seconds = time.perf_counter() - started
    model_file = "quality.bin"
    quantized: dict[str, Any] = {"quantized": False}
    if cfg.quantize:
        if quantize:
            _quantize(model, final_file, cfg)
            model_file = "quality.ftz"
            quantized = {"quantized": True}
        else:
            quantized["quantize_skipped"] = (f"{len(final)} training examples < distil.quantize_min_labels="
                                             f"{cfg.quantize_min_labels}")
    # score with the saved file, through the same function the artifact uses
    shipped = save_model(model, model_dir / model_file)
    if not cross_validate:
        threshold_labels = y[validation]
        threshold_scores = positive_probabilities(shipped, [texts[i] for i in validation])
    threshold = evaluate.choose_threshold(threshold_labels, threshold_scores, cfg.threshold_target, cfg.target_value)
    held_scores = positive_probabilities(shipped, [texts[i] for i in heldout])
    metrics = evaluate.quality_metrics(y[heldout], held_scores, threshold)
    # validation metrics at the same threshold: of the shipped model on validation, or out-of-fold
    metrics["validation"] = {**evaluate.quality_metrics(threshold_labels, threshold_scores, threshold),
                             "scores": "out_of_fold" if cross_validate else "validation_split"}
    metrics["split"] = {"train": len(train), "validation": len(validation), "heldout": len(heldout),
                        "train_positives": int(y[train].sum()), "final_model_trained_on": len(final)}
    metrics["hyperparameters"] = {**settings, "bucket": cfg.bucket}
    metrics["tuning"] = tuning
    metrics["threshold_choice"] = threshold_choice
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
        "heldout_doc_ids": sorted(docs[i].doc_id for i in heldout),
    }
    return section, metrics


def tags_of(doc: LabelledDoc, kind: str) -> list[str] | None:
    """A document's teacher tags of `kind` (topics, or formats from the combined labels); None: not labelled."""
    return doc.topics if kind == "topics" else doc.format


def distil_tags(docs: list[LabelledDoc], kind: str, cfg: DistilConfig, workdir: Path,
                model_dir: Path) -> tuple[dict[str, Any] | None, dict[str, Any]]:
    """One-vs-all model over the teacher's tags of `kind` ("topics" or "formats"), split stratified by each
    document's first tag; (None, {"skipped": reason}) when the labels cannot support one."""
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
    texts = [normalize_text(d.text) for d in labelled]
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
    quality_docs = [d for d in label_set.docs if d.is_positive is not None]
    empty = [d for d in quality_docs if not normalize_text(d.text)]
    if empty:
        label_set.skipped["empty_text"] += len(empty)
        quality_docs = [d for d in quality_docs if normalize_text(d.text)]
    with tempfile.TemporaryDirectory(prefix="distil-") as work:
        workdir = Path(work)
        quality_section, quality_metrics = distil_quality(quality_docs, label_set, cfg, workdir, folder)
        tag_docs = [d for d in label_set.docs if normalize_text(d.text)]
        tag_results = {kind: distil_tags(tag_docs, kind, cfg, workdir, folder) for kind in TAG_KINDS}
    heldout_ids = quality_section.pop("heldout_doc_ids")
    config = {
        "format": FORMAT,
        "normalization": "newlines become spaces (classifiers.normalize.normalize_text); blank text is empty",
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
    (folder / "README.md").write_text(render_card(config, metrics))
    return metrics


def describe(metrics: dict[str, Any], out_dir: Path) -> str:
    """What was trained: the split, the held-out metrics, the topic and format models, where the classifier is."""
    quality = metrics["quality"]
    split = quality["split"]
    lines = [f"[distil] quality model: {split['train']} train / {split['validation']} validation / "
             f"{split['heldout']} held-out documents"]
    settings = quality.get("hyperparameters")
    if settings:
        tuning = quality.get("tuning") or {}
        how = (f"tuned on the validation split, {tuning['configs_tried']} of {tuning['configs_in_grid']} configs "
               f"in {tuning['seconds']:.1f} s, validation AUC {_auc(tuning['chosen_validation_auc'])} vs "
               f"{_auc(tuning['configured_validation_auc'])} configured" if tuning.get("enabled") else "configured")
        lines.append("[distil] settings: " + ", ".join(f"{k} {settings[k]}" for k in TUNED_SETTINGS) + f" ({how})")
    choice = quality.get("threshold_choice")
    if choice:
        lines.append("[distil] threshold: " + (
            f"{choice['folds']}-fold cross-validation over train+validation ({choice['documents']} documents); "
            f"the model trained on all {split.get('final_model_trained_on')}"
            if choice["method"] == "cross_validation" else f"validation split ({choice['documents']} documents)"))
    lines += ["[distil] held-out metrics (never used for training, tuning or the threshold):",
              evaluate.format_quality(quality)]
    for kind in TAG_KINDS:
        tag_metrics = metrics.get(kind) or {"skipped": "not trained"}
        lines.append(f"[distil] {kind}: skipped ({tag_metrics['skipped']})" if "skipped" in tag_metrics
                     else evaluate.format_topics(tag_metrics, kind))
    lines.append(f"[distil] classifier written to {out_dir}")
    return "\n".join(lines)


def _auc(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def distil(label_set: LabelSet, cfg: DistilConfig, out_dir: str | Path, *, quiet: bool = False) -> dict[str, Any]:
    """Train the quality (and topic) models from `label_set` and write the artifact folder `out_dir`
    (replaced atomically: readers see the old classifier or the new one)."""
    out_dir = Path(out_dir)
    _prepare_out(out_dir)
    tmp = _staging_dir(out_dir)
    try:
        metrics = write_artifact(label_set, cfg, tmp)
        replace_dir(tmp, out_dir)
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
                                    self.cfg.distil.label_source)
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
