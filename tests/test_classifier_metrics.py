"""The evaluation metrics against hand-computed values, and the one normalisation."""

from __future__ import annotations

import numpy as np
import pytest

from classifiers import evaluate
from classifiers.distil import topic_label_map
from classifiers.normalize import normalize_text
from classifiers.selection import best_trial, tuning_candidates
from classifiers.training import stratified_folds, stratified_split
from pipeline.config import ConfigError, DistilConfig, load_config


def test_roc_auc_matches_pair_counting_with_ties():
    labels = [1, 0, 1, 0, 1, 0]
    scores = [0.9, 0.9, 0.7, 0.2, 0.1, 0.3]
    # pairs (pos, neg): 9; pos beats neg in: 0.9>0.2,0.3 (2) + tie 0.9=0.9 (0.5); 0.7>0.9? no, >0.2,0.3 (2);
    # 0.1 beats none -> 4.5 / 9
    assert evaluate.roc_auc(labels, scores) == pytest.approx(4.5 / 9)
    assert evaluate.roc_auc([1, 1, 0], [0.8, 0.6, 0.1]) == 1.0
    assert evaluate.roc_auc([1, 1], [0.8, 0.6]) is None


def test_confusion_and_f1_at_threshold():
    m = evaluate.quality_metrics([1, 1, 0, 0, 1], [0.9, 0.4, 0.6, 0.1, 0.5], threshold=0.5)
    assert m["confusion"] == {"tp": 2, "fp": 1, "fn": 1, "tn": 1}
    assert m["precision"] == pytest.approx(2 / 3) and m["recall"] == pytest.approx(2 / 3)
    assert m["f1"] == pytest.approx(2 / 3) and m["keep_rate"] == pytest.approx(3 / 5)


def test_ece_is_zero_when_calibrated_and_measures_the_gap():
    # bin [0.2,0.3): mean 0.25, positive rate 1/4 -> 0 gap; bin [0.7,0.8): 0.75 vs 3/4 -> 0
    assert evaluate.expected_calibration_error([1, 0, 0, 0, 1, 1, 1, 0], [0.25] * 4 + [0.75] * 4) == pytest.approx(0)
    # everything predicted 0.9, nothing positive: the gap is 0.9
    assert evaluate.expected_calibration_error([0, 0], [0.9, 0.9]) == pytest.approx(0.9)
    # a probability of exactly 1.0 lands in the last bin rather than out of range
    assert evaluate.expected_calibration_error([1], [1.0]) == pytest.approx(0)


def test_choose_threshold_for_each_target():
    labels = np.array([1, 1, 1, 0, 1, 0, 0, 0])
    scores = np.array([0.95, 0.9, 0.8, 0.7, 0.6, 0.4, 0.3, 0.1])
    # keep rate 0.25 -> the 2nd highest score
    assert evaluate.choose_threshold(labels, scores, "keep_rate", 0.25) == pytest.approx(0.9)
    # precision 1.0: the lowest threshold with no false positive is 0.8 (0.7 is a negative)
    assert evaluate.choose_threshold(labels, scores, "precision", 1.0) == pytest.approx(0.8)
    # best F1: at 0.6 (tp 4, fp 1: F1 8/9) beats 0.8 (tp 3: F1 6/7)
    assert evaluate.choose_threshold(labels, scores, "f1", 0.5) == pytest.approx(0.6)
    with pytest.raises(ValueError, match="unknown threshold target"):
        evaluate.choose_threshold(labels, scores, "accuracy", 0.5)


def test_topic_agreement_per_topic():
    truth = [{"Science"}, {"Science", "Health"}, set(), {"Health"}]
    probs = [{"Science": 0.9, "Health": 0.1}, {"Science": 0.2, "Health": 0.8}, {"Science": 0.6, "Health": 0.1},
             {"Science": 0.1, "Health": 0.7}]
    per_topic = evaluate.topic_agreement(truth, probs, ["Health", "Science"])
    assert per_topic["Health"]["agreement"] == 1.0 and per_topic["Health"]["support"] == 2
    # Science: doc 2 missed, doc 3 a false positive -> 2 of 4 agree
    assert per_topic["Science"]["agreement"] == 0.5
    assert per_topic["Science"]["precision"] == 0.5 and per_topic["Science"]["recall"] == 0.5
    assert evaluate.summarize_topics(per_topic)["macro_agreement"] == pytest.approx(0.75)


def test_stratified_split_is_seeded_stratified_and_never_takes_a_whole_class():
    strata = [1] * 30 + [0] * 10 + [2] * 2
    rest, part = stratified_split(strata, 0.2, seed=7)
    assert sorted(rest + part) == list(range(len(strata)))
    assert [strata[i] for i in part].count(1) == 6 and [strata[i] for i in part].count(0) == 2
    assert [strata[i] for i in part].count(2) == 1  # a class of two gives one to each side
    assert stratified_split(strata, 0.2, seed=7) == (rest, part)
    assert stratified_split(strata, 0.2, seed=8) != (rest, part)


def test_normalization_is_one_line_and_keeps_tokens():
    text = "Title\r\n\nFirst  line\twith tab\n  last line  "
    normalized = normalize_text(text)
    assert "\n" not in normalized
    # exactly what plain fastText / datatrove (newline_replacement=" ") users do, so the same tokens
    assert normalized == text.replace("\n", " ")
    assert normalized.split() == ["Title", "First", "line", "with", "tab", "last", "line"]
    assert normalize_text(None) == "" and normalize_text(" \n\t ") == ""


def test_topic_labels_are_fasttext_safe_and_unique():
    mapping = topic_label_map(["Science & Tech.", "science-tech", "Health"])
    assert set(mapping.values()) == {"Science & Tech.", "science-tech", "Health"}
    assert all(label.startswith("__label__") and " " not in label for label in mapping)
    # "Science & Tech." and "science-tech" slug alike: the second one gets a suffix instead of merging
    assert mapping == {"__label__science_tech": "Science & Tech.", "__label__science_tech_2": "science-tech",
                       "__label__health": "Health"}


def test_cohen_kappa_matches_a_hand_computed_example():
    teacher = [1, 1, 1, 1, 0, 0, 0, 0, 0, 0]
    student = [1, 1, 1, 0, 1, 0, 0, 0, 0, 0]
    # agree on 8 of 10: p_o = 0.8; both rate 0.4 positive: p_e = 0.4*0.4 + 0.6*0.6 = 0.52
    # kappa = (0.8 - 0.52) / (1 - 0.52) = 0.28 / 0.48 = 7/12
    assert evaluate.cohen_kappa(teacher, student) == pytest.approx(7 / 12)
    assert evaluate.cohen_kappa(teacher, teacher) == pytest.approx(1.0)
    # agreement exactly at chance (p_o = p_e = 0.5) is 0, systematic disagreement is negative
    assert evaluate.cohen_kappa([1, 0, 1, 0], [1, 1, 0, 0]) == pytest.approx(0.0)
    assert evaluate.cohen_kappa([1, 0, 1, 0], [0, 1, 0, 1]) == pytest.approx(-1.0)
    # undefined: nothing to compare, or both raters constant in the same class (p_e = 1)
    assert evaluate.cohen_kappa([], []) is None
    assert evaluate.cohen_kappa([1, 1], [1, 1]) is None
    with pytest.raises(ValueError, match="differ in length"):
        evaluate.cohen_kappa([1, 0], [1])


def test_quality_metrics_report_kappa_of_the_student_at_the_threshold():
    m = evaluate.quality_metrics([1, 1, 0, 0, 1], [0.9, 0.4, 0.6, 0.1, 0.5], threshold=0.5)
    # kept [1, 0, 1, 0, 1]: p_o = 3/5, both rates 3/5: p_e = 0.36 + 0.16 = 0.52 -> (0.6 - 0.52) / 0.48 = 1/6
    assert m["cohen_kappa"] == pytest.approx(1 / 6)
    assert "kappa" in evaluate.format_quality(m)


def test_stratified_folds_partition_every_stratum_evenly_and_are_seeded():
    strata = [1] * 23 + [0] * 11
    folds = stratified_folds(strata, 5, seed=3)
    assert sorted(i for fold in folds for i in fold) == list(range(len(strata)))
    assert sorted(len(f) for f in folds) == [6, 7, 7, 7, 7]
    for fold in folds:
        assert [strata[i] for i in fold].count(0) in (2, 3) and [strata[i] for i in fold].count(1) in (4, 5)
    assert stratified_folds(strata, 5, seed=3) == folds and stratified_folds(strata, 5, seed=4) != folds


def test_tuning_candidates_start_with_the_configured_settings_in_a_seeded_order():
    cfg = DistilConfig(tune_grid={"lr": [1.0, 0.1], "epoch": [5, 10], "word_ngrams": [1, 2]})
    candidates = tuning_candidates(cfg)
    assert candidates[0] == {"lr": 0.5, "epoch": 25, "word_ngrams": 2, "dim": 64, "min_count": 1}
    # every grid point once (dim and min_count, not in the grid, stay as configured), plus the configured one
    assert len(candidates) == 8 + 1
    assert len({tuple(c.values()) for c in candidates}) == 9
    assert all(c["dim"] == 64 and c["min_count"] == 1 for c in candidates)
    assert tuning_candidates(cfg) == candidates
    other_seed = tuning_candidates(cfg.model_copy(update={"seed": 1}))
    assert other_seed[0] == candidates[0] and other_seed != candidates
    # a configured point that is in the grid is not tried twice
    inside = DistilConfig(lr=1.0, epoch=5, word_ngrams=1,
                          tune_grid={"lr": [1.0, 0.1], "epoch": [5], "word_ngrams": [1]})
    assert len(tuning_candidates(inside)) == 2


def test_best_trial_prefers_auc_then_the_smaller_then_the_cheaper_model():
    def trial(auc, parameters, epoch=10, word_ngrams=1):
        return {"validation_auc": auc, "parameters": parameters, "epoch": epoch, "word_ngrams": word_ngrams}

    assert best_trial([trial(0.90, 10), trial(0.95, 1000), trial(0.94, 1)]) == 1
    # a tie (to float noise) goes to fewer parameters, then to fewer epochs x n-grams, then to the earlier one
    assert best_trial([trial(0.95, 1000), trial(0.95 + 1e-12, 10)]) == 1
    assert best_trial([trial(0.95, 10, epoch=50), trial(0.95, 10, epoch=10)]) == 1
    assert best_trial([trial(0.95, 10), trial(0.95, 10)]) == 0
    assert best_trial([trial(None, 1), trial(0.5, 100)]) == 1
    # a configuration whose training failed (no AUC, no model) never wins
    assert best_trial([trial(None, None), trial(0.5, 100)]) == 1


def test_tune_grid_is_validated_when_loaded():
    assert DistilConfig().tune and DistilConfig().tune_budget_s == 60 and DistilConfig().cv_folds == 5
    assert DistilConfig().cv_min_validation == 200
    assert DistilConfig(tune_grid={"dim": [64, 16, 64]}).tune_grid == {"dim": [16, 64]}
    for grid, message in [({"momentum": [1]}, "unknown axis momentum"), ({"dim": [1.5]}, "dim values must be integers"),
                          ({"lr": []}, "axis lr has no values"), ({"lr": [0]}, "lr values must be > 0")]:
        with pytest.raises(ConfigError, match=message):
            load_config(None, [f"distil.tune_grid={grid}"])
