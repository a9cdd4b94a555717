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
    HELDOUT_SCORES,
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
# The one-standard-error rule's order of simplicity, simplest first: compared setting by setting in this
# order, fewer word n-grams, then fewer dimensions, then a higher min_count (a smaller vocabulary), then fewer
# epochs, then a lower learning rate ("-" : higher is simpler).
SIMPLICITY = ("word_ngrams", "dim", "-min_count", "epoch", "lr")


def complexity(settings: dict[str, Any]) -> tuple:
    """Sort key of `SIMPLICITY`: smaller is simpler."""
    return tuple(-settings[key[1:]] if key.startswith("-") else settings[key] for key in SIMPLICITY)


def configured_settings(cfg: DistilConfig) -> dict[str, Any]:
    return {key: getattr(cfg, key) for key in TUNED_SETTINGS}


def tuning_candidates(cfg: DistilConfig) -> list[dict[str, Any]]:
    """The settings the search tries, in order: the configured ones first (so the search never picks worse
    than not searching, and a budget that runs out still has them), then every other point of the grid
    (`distil.tune_grid`; an axis it does not list stays at its configured value) in a permutation seeded by
    `distil.seed`."""
    base = configured_settings(cfg)
    axes = [sorted(set(cfg.tune_grid.get(key, [base[key]]))) for key in TUNED_SETTINGS]
    others = [settings for settings in (dict(zip(TUNED_SETTINGS, values)) for values in itertools.product(*axes))
              if settings != base]
    order = np.random.default_rng(cfg.seed).permutation(len(others))
    return [base] + [others[i] for i in order]


def best_trial(trials: list[dict[str, Any]]) -> int:
    """Index of the trial with the highest validation ROC AUC; ties (to 1e-9) go to the smaller model
    (fewer parameters), then to less training work (epoch x word_ngrams), then to the earlier trial. The
    choice of `distil.one_se: false` in validation mode."""
    def key(i: int) -> tuple:
        trial = trials[i]
        auc = trial["validation_auc"]
        parameters = trial["parameters"]
        return (-(round(auc, 9) if auc is not None else -1.0), float("inf") if parameters is None else parameters,
                trial["epoch"] * trial["word_ngrams"], i)
    return min(range(len(trials)), key=key)


def one_se_choice(trials: list[dict[str, Any]], one_se: bool = True) -> tuple[int, int, float | None]:
    """(best, chosen, cut) over trials with a `mean_auc` and a `se`: best has the highest mean (ties: the
    simpler, then the earlier); chosen is the simplest trial (`SIMPLICITY`, ties: the earlier) whose mean is
    at least cut = best mean - best SE (the one-standard-error rule), or best itself without the rule.
    Trials whose training failed (mean None) never win."""
    scored = [i for i, t in enumerate(trials) if t["mean_auc"] is not None]
    if not scored:
        raise DistilError("every configuration of the search failed to train: " + "; ".join(
            str(t.get("error")) for t in trials[:3]))
    best = min(scored, key=lambda i: (-round(trials[i]["mean_auc"], 9), complexity(trials[i]), i))
    if not one_se:
        return best, best, None
    cut = float(trials[best]["mean_auc"] - (trials[best]["se"] or 0.0))
    eligible = [i for i in scored if trials[i]["mean_auc"] >= cut - 1e-12]
    return best, min(eligible, key=lambda i: (complexity(trials[i]), i)), cut


def auc_standard_error(auc: float | None, positives: int, negatives: int) -> float | None:
    """Hanley & McNeil's (1982) standard error of a ROC AUC measured on one split of `positives` and
    `negatives` documents (the validation mode's SE, where there are no folds to take one from)."""
    if auc is None or positives < 1 or negatives < 1:
        return None
    q1, q2 = auc / (2 - auc), 2 * auc * auc / (1 + auc)
    variance = (auc * (1 - auc) + (positives - 1) * (q1 - auc * auc) + (negatives - 1) * (q2 - auc * auc)) \
        / (positives * negatives)
    return float(np.sqrt(max(variance, 0.0)))


def _spread(values: list[float]) -> dict[str, Any]:
    arr = np.array([v for v in values if v is not None], dtype=np.float64)
    if not len(arr):
        return {"n": 0}
    return {"n": int(len(arr)), "mean": float(arr.mean()), "sd": float(arr.std(ddof=1)) if len(arr) > 1 else 0.0,
            "min": float(arr.min()), "max": float(arr.max())}


class QualityLines:
    """The quality labels as fastText training lines, and the files fastText reads: a set of documents is
    written once (in a seeded random order with `distil.shuffle`, else in the labels' order; a bootstrap
    sample repeats documents) and every model trained on it reads the same file."""

    def __init__(self, texts: list[str], y: np.ndarray, cfg: DistilConfig, workdir: Path):
        self.texts, self.y, self.cfg, self.workdir = texts, y, cfg, workdir
        self._files: dict[tuple, Path] = {}

    def line(self, i: int) -> str:
        return f"{POSITIVE_LABEL if self.y[i] else NEGATIVE_LABEL} {self.texts[i]}"

    def order(self, indices: list[int], seed: int) -> list[int]:
        indices = list(indices)
        if not self.cfg.shuffle:
            return indices
        return [indices[i] for i in np.random.default_rng([seed, 7]).permutation(len(indices))]

    def file(self, indices: list[int], seed: int | None = None) -> Path:
        """The training file of `indices` (in this order unless shuffled with `seed`, default distil.seed)."""
        seed = self.cfg.seed if seed is None else seed
        key = (tuple(indices), seed if self.cfg.shuffle else None)
        if key not in self._files:
            path = self.workdir / f"quality-{len(self._files):04d}.train.txt"
            path.write_text("\n".join(self.line(i) for i in self.order(indices, seed)) + "\n", encoding="utf-8")
            self._files[key] = path
        return self._files[key]

    def train(self, indices: list[int], settings: dict[str, Any], *, seed: int | None = None):
        """(model, lr used, train file): fastText trained on `indices` with `settings`, fastText's seed and the
        line order seeded by `seed` (default distil.seed)."""
        seed = self.cfg.seed if seed is None else seed
        path = self.file(indices, seed)
        return train_fasttext([], self.cfg.model_copy(update={**settings, "seed": seed}), self.workdir, "quality",
                              train_file=path)

    def scores(self, model, indices: list[int]) -> np.ndarray:
        return positive_probabilities(model, [self.texts[i] for i in indices])


def bag_members(indices: list[int], cfg: DistilConfig) -> list[tuple[list[int], int]]:
    """(documents, seed) of each bag member: the first is every document with distil.seed (the model a bag of
    one is), the others a bootstrap sample (`bag_sampling: bootstrap`, seeded) or every document, with the
    seed + m."""
    members = [(list(indices), cfg.seed)]
    for m in range(1, cfg.bag):
        if cfg.bag_sampling == "bootstrap":
            picks = np.random.default_rng([cfg.seed, m, 11]).integers(0, len(indices), len(indices))
            members.append(([indices[int(p)] for p in np.sort(picks)], cfg.seed + m))
        else:
            members.append((list(indices), cfg.seed + m))
    return members


def bag_scores(lines: QualityLines, train_on: list[int], score_on: list[int], settings: dict[str, Any],
               cfg: DistilConfig) -> np.ndarray:
    """Mean P(hq) over the bag's models trained on `train_on`, of the documents `score_on`."""
    total = np.zeros(len(score_on), dtype=np.float64)
    for members, seed in bag_members(train_on, cfg):
        model, _, _ = lines.train(members, settings, seed=seed)
        total += lines.scores(model, score_on)
        del model
    return (total / cfg.bag).astype(np.float32)


def selection_mode(cfg: DistilConfig, n: int) -> str:
    if cfg.selection != "auto":
        return cfg.selection
    return "cross_validation" if n <= cfg.cv_max_labels else "validation"


def cross_validate_settings(lines: QualityLines, pool: list[int], cfg: DistilConfig, *,
                            clock=time.perf_counter) -> tuple[dict[str, Any], dict[str, Any], np.ndarray, np.ndarray]:
    """Rank the candidate settings by mean out-of-fold ROC AUC over a stratified `distil.cv_folds`-fold split
    of `pool` (repeated `cv_repeats` times with other seeds below `cv_repeat_below` documents), choose by the
    one-standard-error rule, within `tune_budget_s` (checked before each candidate; the configured settings
    always run). Returns (chosen settings, report, labels, out-of-fold scores of the chosen settings over
    every repeat): only `pool` is seen here."""
    started = clock()
    y = lines.y[pool]
    k = max(2, min(cfg.cv_folds, int(np.bincount(y, minlength=2).min())))
    repeats = cfg.cv_repeats if len(pool) < cfg.cv_repeat_below else 1
    splits = [stratified_folds(y.tolist(), k, cfg.seed + 2 + r) for r in range(repeats)]
    candidates = tuning_candidates(cfg) if cfg.tune else [configured_settings(cfg)]
    trials: list[dict[str, Any]] = []
    out_of_fold: list[np.ndarray] = []
    for settings in candidates:
        if trials and clock() - started >= cfg.tune_budget_s:
            break
        trial_started = clock()
        scores = np.full((repeats, len(pool)), np.nan, dtype=np.float32)
        aucs: list[float] = []
        lr_used: float | None = settings["lr"]
        error = None
        for r, folds in enumerate(splits):
            for fold in folds:
                held = set(fold)
                train = [pool[j] for j in range(len(pool)) if j not in held]
                try:
                    if cfg.bag > 1:
                        fold_scores = bag_scores(lines, train, [pool[j] for j in fold], settings, cfg)
                    else:
                        model, used, _ = lines.train(train, settings)
                        lr_used = min(lr_used, used)
                        fold_scores = lines.scores(model, [pool[j] for j in fold])
                        del model
                except DistilError as exc:  # diverged even at a quarter of its lr: this configuration loses
                    error = str(exc)
                    break
                scores[r, fold] = fold_scores
                auc = evaluate.roc_auc(y[fold], fold_scores)
                if auc is not None:
                    aucs.append(auc)
            if error:
                break
        spread = _spread(aucs) if not error else {"n": 0}
        trials.append({**settings, "mean_auc": spread.get("mean"),
                       "se": float(spread["sd"] / np.sqrt(spread["n"])) if spread["n"] > 1 else None,
                       "sd": spread.get("sd"), "fold_aucs": [round(a, 6) for a in aucs],
                       "lr_used": None if error else lr_used, "seconds": round(clock() - trial_started, 3),
                       **({"error": error} if error else {})})
        out_of_fold.append(scores)
    best, chosen_index, cut = one_se_choice(trials, cfg.one_se)
    chosen = {key: trials[chosen_index][key] for key in TUNED_SETTINGS}
    report = {
        "enabled": bool(cfg.tune), "mode": "cross_validation", "selected_on": "cross_validation",
        "metric": "roc_auc", "folds": k, "repeats": repeats, "documents": len(pool), "heldout_used": False,
        "rule": "one_standard_error" if cfg.one_se else "best_mean", "simplicity": list(SIMPLICITY),
        "grid": cfg.tune_grid if cfg.tune else None, "budget_s": cfg.tune_budget_s,
        "configs_in_grid": len(candidates), "configs_tried": len(trials),
        "complete": len(trials) == len(candidates), "seconds": round(clock() - started, 3),
        "chosen": chosen, "chosen_trial": chosen_index, "best_trial": best,
        "chosen_mean_auc": trials[chosen_index]["mean_auc"], "chosen_se": trials[chosen_index]["se"],
        "best_mean_auc": trials[best]["mean_auc"], "best_se": trials[best]["se"], "one_se_cut": cut,
        "configured_mean_auc": trials[0]["mean_auc"],
        "why": _why(trials, best, chosen_index, cut),
        "trials": trials,
    }
    scores = out_of_fold[chosen_index]
    return chosen, report, np.tile(y, repeats), scores.reshape(-1)


def _why(trials: list[dict[str, Any]], best: int, chosen: int, cut: float | None) -> str:
    b, c = trials[best], trials[chosen]
    if cut is None:
        return f"the best mean AUC ({_auc(b['mean_auc'])}); distil.one_se is off"
    if best == chosen:
        return (f"the best mean AUC ({_auc(b['mean_auc'])} ± {_auc(b['se'])} SE), and no simpler configuration "
                f"within one standard error of it (>= {_auc(cut)})")
    return (f"the simplest configuration within one standard error of the best: mean AUC {_auc(c['mean_auc'])} >= "
            f"{_auc(cut)} = best {_auc(b['mean_auc'])} - SE {_auc(b['se'])}")


def tune_settings(train_file: Path, validation_texts: list[str], validation_labels, cfg: DistilConfig,
                  workdir: Path, *, clock=time.perf_counter) -> tuple[dict[str, Any], dict[str, Any], np.ndarray]:
    """Validation mode: search `tuning_candidates(cfg)` in order, training on `train_file` (the train split) and
    scoring the validation split, until `distil.tune_budget_s` is spent (checked before each trial, so the last
    one may overrun it; the first always runs). The SE of each validation AUC is Hanley and McNeil's; the
    choice is the one-standard-error rule's (`distil.one_se`), else `best_trial`. Returns (chosen settings,
    search report, the chosen trial's validation scores). Only the train and validation splits are seen
    here: the held-out split is not an argument."""
    candidates = tuning_candidates(cfg) if cfg.tune else [configured_settings(cfg)]
    labels = np.asarray(validation_labels)
    positives = int(labels.sum())
    started = clock()
    trials: list[dict[str, Any]] = []
    validation_scores: list[np.ndarray | None] = []
    for settings in candidates:
        if trials and clock() - started >= cfg.tune_budget_s:
            break
        trial_started = clock()
        try:
            model, lr_used, _ = train_fasttext([], cfg.model_copy(update=settings), workdir, "quality-tune",
                                               train_file=train_file)
        except DistilError as exc:  # diverged even at a quarter of its lr: this configuration loses
            trials.append({**settings, "lr_used": None, "validation_auc": None, "mean_auc": None, "se": None,
                           "parameters": None, "error": str(exc), "seconds": round(clock() - trial_started, 3)})
            validation_scores.append(None)
            continue
        scores = positive_probabilities(model, validation_texts)
        auc = evaluate.roc_auc(labels, scores)
        trials.append({**settings, "lr_used": lr_used, "validation_auc": auc, "mean_auc": auc,
                       "se": auc_standard_error(auc, positives, len(labels) - positives),
                       "parameters": _parameters(model, settings, cfg.bucket),
                       "seconds": round(clock() - trial_started, 3)})
        validation_scores.append(scores)
        del model
    if cfg.one_se:
        best, chosen_index, cut = one_se_choice(trials, True)
    else:
        best = chosen_index = best_trial(trials)
        cut = None
    chosen = {key: trials[chosen_index][key] for key in TUNED_SETTINGS}
    report = {
        "enabled": bool(cfg.tune),
        "mode": "validation",
        "selected_on": "validation",
        "metric": "roc_auc",
        "validation_documents": len(validation_texts),
        "heldout_used": False,
        "rule": "one_standard_error" if cfg.one_se else "best_validation_auc",
        "simplicity": list(SIMPLICITY),
        "grid": cfg.tune_grid if cfg.tune else None,
        "budget_s": cfg.tune_budget_s,
        "configs_in_grid": len(candidates),
        "configs_tried": len(trials),
        "complete": len(trials) == len(candidates),
        "seconds": round(clock() - started, 3),
        "chosen": chosen,
        "chosen_trial": chosen_index,
        "best_trial": best,
        "chosen_validation_auc": trials[chosen_index]["validation_auc"],
        "chosen_mean_auc": trials[chosen_index]["mean_auc"], "chosen_se": trials[chosen_index]["se"],
        "best_mean_auc": trials[best]["mean_auc"], "best_se": trials[best]["se"], "one_se_cut": cut,
        "configured_validation_auc": trials[0]["validation_auc"],
        "configured_mean_auc": trials[0]["mean_auc"],
        "why": _why(trials, best, chosen_index, cut),
        "trials": trials,
    }
    return chosen, report, validation_scores[chosen_index]


def _parameters(model, settings: dict[str, Any], bucket: int) -> int:
    """Rows x dim of the input matrix: fastText drops the n-gram buckets when word_ngrams is 1."""
    rows = len(model.get_words()) + (bucket if settings["word_ngrams"] > 1 else 0)
    return rows * settings["dim"]


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


def _fit(lines: QualityLines, indices: list[int], settings: dict[str, Any], cfg: DistilConfig, path: Path,
         quantize: bool, seed: int | None = None):
    """A model trained on `indices` (quantised when asked), saved to `path` and loaded back: (model, lr used)."""
    model, lr_used, train_file = lines.train(indices, settings, seed=seed)
    if quantize:
        _quantize(model, train_file, cfg)
    return save_model(model, path), lr_used


def _fit_bag(lines: QualityLines, indices: list[int], settings: dict[str, Any], cfg: DistilConfig, folder: Path,
             model_file: str, quantize: bool) -> tuple[list[Any], list[str], float]:
    """The bag's models (one without bagging) trained on `indices`, saved in `folder` as `model_file` and
    `quality.bag-<m>.<ext>`: (models, file names, lr used by the first)."""
    models, files, first_lr = [], [], settings["lr"]
    suffix = Path(model_file).suffix
    for m, (members, seed) in enumerate(bag_members(indices, cfg)):
        name = model_file if m == 0 else f"quality.bag-{m}{suffix}"
        model, lr_used = _fit(lines, members, settings, cfg, folder / name, quantize, seed)
        models.append(model)
        files.append(name)
        if m == 0:
            first_lr = lr_used
    return models, files, first_lr


def _mean_scores(lines: QualityLines, models: list[Any], indices: list[int]) -> np.ndarray:
    return np.mean([lines.scores(model, indices) for model in models], axis=0).astype(np.float32)


def measure_variance(lines: QualityLines, settings: dict[str, Any], cfg: DistilConfig, report_on: list[int],
                     heldout: list[int], heldout_auc: float | None) -> dict[str, Any]:
    """The spread of the held-out ROC AUC with the chosen settings: the held-out model trained again with
    `variance_seeds` training seeds (fastText's seed and the line order; same split), and on
    `variance_seeds` seeded splits (the split seed; same training seed). The first of each is the reported
    model. The settings are not chosen again per split."""
    n = cfg.variance_seeds
    if n < 2:
        return {"measured": False, "reason": f"distil.variance_seeds={n}"}
    started = time.perf_counter()

    def auc_of(train_on: list[int], test_on: list[int], seed: int) -> float | None:
        varied = cfg.model_copy(update={"seed": seed})
        if cfg.bag > 1:
            scores = bag_scores(lines, train_on, test_on, settings, varied)
        else:
            model, _, _ = lines.train(train_on, settings, seed=seed)
            scores = lines.scores(model, test_on)
        return evaluate.roc_auc(lines.y[test_on], scores)

    training = [heldout_auc] + [auc_of(report_on, heldout, cfg.seed + s) for s in range(1, n)]
    splits = [heldout_auc]
    for s in range(1, n):
        rest, other_heldout = stratified_split(lines.y.tolist(), cfg.holdout_fraction, cfg.seed + 1000 * s)
        splits.append(auc_of(rest, other_heldout, cfg.seed))
    both = _spread(training[1:] + splits)
    return {
        "measured": True, "metric": "heldout_roc_auc", "seeds": n,
        "training_seed": {**_spread(training), "aucs": [None if a is None else round(a, 6) for a in training],
                          "what": "fastText's seed and the training-line order, same split and settings"},
        "split_seed": {**_spread(splits), "aucs": [None if a is None else round(a, 6) for a in splits],
                       "what": "the held-out split's seed, same training seed and settings"},
        "overall_sd": both.get("sd"),
        "quantized": False,
        "seconds": round(time.perf_counter() - started, 3),
    }


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
    report_models, report_files, lr_used = _fit_bag(lines, report_on, settings, cfg,
                                                    report_dir if cfg.refit_all else model_dir, model_file, quantize)
    held_scores = _mean_scores(lines, report_models, heldout)
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
        _, shipped_files, lr_used = _fit_bag(lines, shipped_on, settings, cfg, model_dir, model_file, quantize)
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
                   f"{tuning['repeats']} in {tuning['seconds']:.1f} s, mean AUC {_auc(tuning['chosen_mean_auc'])} "
                   f"± {_auc(tuning['chosen_se'])} SE; {tuning['why']}")
        elif tuning.get("enabled"):
            how = (f"tuned on the validation split, {tuning['configs_tried']} of {tuning['configs_in_grid']} configs "
                   f"in {tuning['seconds']:.1f} s, validation AUC {_auc(tuning['chosen_validation_auc'])} vs "
                   f"{_auc(tuning['configured_validation_auc'])} configured")
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
                     f"{_auc(variance['training_seed']['mean'])} ± {_auc(variance['training_seed']['sd'])} (sd), over "
                     f"{variance['seeds']} split seeds {_auc(variance['split_seed']['mean'])} ± "
                     f"{_auc(variance['split_seed']['sd'])}")
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
