"""Choosing fastText's settings and measuring how much they can be trusted: candidates from `distil.tune_grid`,
ranked by mean out-of-fold ROC AUC (cross-validation over the training labels, repeated when they are few) or
on one validation split (many labels), the one-standard-error rule over a fixed order of simplicity, bagging,
and the spread of the held-out AUC over training and split seeds. Used by `classifiers.distil`.
"""

from __future__ import annotations

import itertools
import time
from pathlib import Path
from typing import Any

import numpy as np

from classifiers import evaluate
from classifiers.artifact import (
    NEGATIVE_LABEL,
    POSITIVE_LABEL,
    positive_probabilities,
)
from classifiers.training import (
    DistilError,
    parameter_count,
    quantize_model,
    save_model,
    stratified_folds,
    stratified_split,
    train_fasttext,
)
from pipeline.config import DistilConfig

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
        return f"the best mean AUC ({format_auc(b['mean_auc'])}); distil.one_se is off"
    if best == chosen:
        return (f"the best mean AUC ({format_auc(b['mean_auc'])} ± {format_auc(b['se'])} SE), and no simpler "
                f"configuration within one standard error of it (>= {format_auc(cut)})")
    return ("the simplest configuration within one standard error of the best: mean AUC "
            f"{format_auc(c['mean_auc'])} >= "
            f"{format_auc(cut)} = best {format_auc(b['mean_auc'])} - SE {format_auc(b['se'])}")


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
                       "parameters": parameter_count(model, settings, cfg.bucket),
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


def fit_model(lines: QualityLines, indices: list[int], settings: dict[str, Any], cfg: DistilConfig, path: Path,
         quantize: bool, seed: int | None = None):
    """A model trained on `indices` (quantised when asked), saved to `path` and loaded back: (model, lr used)."""
    model, lr_used, train_file = lines.train(indices, settings, seed=seed)
    if quantize:
        quantize_model(model, train_file, cfg)
    return save_model(model, path), lr_used


def fit_bag(lines: QualityLines, indices: list[int], settings: dict[str, Any], cfg: DistilConfig, folder: Path,
             model_file: str, quantize: bool) -> tuple[list[Any], list[str], float]:
    """The bag's models (one without bagging) trained on `indices`, saved in `folder` as `model_file` and
    `quality.bag-<m>.<ext>`: (models, file names, lr used by the first)."""
    models, files, first_lr = [], [], settings["lr"]
    suffix = Path(model_file).suffix
    for m, (members, seed) in enumerate(bag_members(indices, cfg)):
        name = model_file if m == 0 else f"quality.bag-{m}{suffix}"
        model, lr_used = fit_model(lines, members, settings, cfg, folder / name, quantize, seed)
        models.append(model)
        files.append(name)
        if m == 0:
            first_lr = lr_used
    return models, files, first_lr


def mean_scores(lines: QualityLines, models: list[Any], indices: list[int]) -> np.ndarray:
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


def format_auc(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"
