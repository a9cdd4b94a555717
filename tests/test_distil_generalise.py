"""The distilled student generalises: settings chosen by cross-validation with the one-standard-error rule, the
held-out metrics measured on a model that never saw the held-out labels, the shipped model refit on every
label, the spread of the held-out AUC over seeds, bagging, and the text view the teacher saw."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from classifiers import QualityClassifier
from classifiers import distil as distil_module
from classifiers.artifact import ClassifierArtifact, load_fasttext, positive_probabilities
from classifiers.distil import distil
from classifiers.evaluate import roc_auc
from classifiers.extraction_benchmark import labelled_texts, load_pages, write_teacher_run
from classifiers.labels import load_jsonl_labels, load_llm_labels
from classifiers.normalize import normalize_text
from classifiers.selection import auc_standard_error, complexity, one_se_choice
from pipeline.config import DistilConfig
from stagehelpers import without_timings

BENCHMARK = Path(__file__).resolve().parents[1] / "data" / "extraction-benchmark"
# a small model and two configurations: the tests stay fast
FAST = DistilConfig(bucket=10000, dim=16, tune_grid={"lr": [0.5, 1.0]}, variance_seeds=3)


@pytest.fixture(scope="module")
def labels_file(tmp_path_factory):
    items = labelled_texts(BENCHMARK, page_ids=sorted(load_pages(BENCHMARK))[:12])
    items = list({normalize_text(t.text): t for t in items}.values())
    path = tmp_path_factory.mktemp("labels") / "labels.jsonl"
    path.write_text("".join(json.dumps({"id": t.doc_id, "text": t.text, "label": t.label}) + "\n" for t in items))
    return path


@pytest.fixture(scope="module")
def refit(labels_file, tmp_path_factory):
    out = tmp_path_factory.mktemp("refit") / "clf"
    return out, distil(load_jsonl_labels(labels_file, 3), FAST, out, quiet=True)


def _trial(mean, se, **settings):
    base = {"lr": 0.5, "epoch": 25, "word_ngrams": 2, "dim": 64, "min_count": 1}
    return {**base, **settings, "mean_auc": mean, "se": se}


def test_one_standard_error_rule_prefers_the_simplest_within_one_se_of_the_best():
    trials = [_trial(0.90, 0.010), _trial(0.895, 0.02, word_ngrams=1), _trial(0.85, 0.01, word_ngrams=1, dim=16),
              _trial(0.905, 0.006, dim=128)]
    best, chosen, cut = one_se_choice(trials)
    assert best == 3 and cut == pytest.approx(0.899)
    assert chosen == 0  # 0.895 and 0.85 are below the cut; of 0.90 and 0.905 the 64-dim one is simpler
    trials[3]["se"] = 0.02  # a noisier best: the unigram model (0.895 >= 0.885) is within one SE, and simplest
    assert one_se_choice(trials)[1] == 1
    assert one_se_choice(trials, one_se=False)[1] == 3  # the rule off: the best mean
    # simplicity: fewer n-grams, then fewer dimensions, then a higher min_count, then fewer epochs, then a lower lr
    order = sorted([_trial(0, 0, epoch=10), _trial(0, 0, min_count=3), _trial(0, 0, dim=16), _trial(0, 0, lr=0.1),
                    _trial(0, 0, word_ngrams=1, dim=128)], key=complexity)
    assert [(t["word_ngrams"], t["dim"], t["min_count"], t["epoch"], t["lr"]) for t in order] == [
        (1, 128, 1, 25, 0.5), (2, 16, 1, 25, 0.5), (2, 64, 3, 25, 0.5), (2, 64, 1, 10, 0.5), (2, 64, 1, 25, 0.1)]
    # a configuration that failed to train never wins
    assert one_se_choice([_trial(None, None, word_ngrams=1), _trial(0.7, 0.1)])[1] == 1


def test_hanley_mcneil_standard_error():
    # AUC 0.9, 50 positives, 50 negatives: Q1 = 0.9 / 1.1, Q2 = 2 * 0.81 / 1.9,
    # SE^2 = (0.09 + 49 (Q1 - 0.81) + 49 (Q2 - 0.81)) / 2500 = 2.57986 / 2500 -> SE 0.03212
    assert auc_standard_error(0.9, 50, 50) == pytest.approx(0.03212, abs=1e-5)
    assert auc_standard_error(0.9, 500, 500) < auc_standard_error(0.9, 50, 50)
    assert auc_standard_error(None, 5, 5) is None and auc_standard_error(0.8, 0, 5) is None


def test_metrics_are_the_heldout_models_and_the_shipped_model_is_refit_on_every_label(refit, labels_file):
    out, metrics = refit
    quality = metrics["quality"]
    n = sum(1 for _ in labels_file.read_text().splitlines())
    assert quality["split"]["final_model_trained_on"] == n
    assert quality["split"]["heldout_model_trained_on"] == n - quality["split"]["heldout"]
    models = quality["models"]
    assert models["metrics_of"] == "heldout_model" and models["heldout_model"]["saw_heldout_labels"] is False
    assert models["shipped_model"] == {"trained_on": n, "refit_all": True, "saw_heldout_labels": True,
                                       "files": ["quality.bin"]}
    # heldout_scores.jsonl: the held-out model's scores, from which the held-out metrics are reproduced
    artifact = ClassifierArtifact.load(out)
    stored = artifact.heldout_scores()
    assert artifact.refit_all and set(stored) == set((out / "heldout_doc_ids.txt").read_text().split())
    labels = [int(label) for label, _ in stored.values()]
    assert roc_auc(labels, [score for _, score in stored.values()]) == pytest.approx(quality["roc_auc"], abs=1e-6)
    # the shipped model is another model: it learned the held-out documents too, so it scores them differently
    texts = {json.loads(line)["id"]: json.loads(line)["text"] for line in labels_file.read_text().splitlines()}
    shipped = QualityClassifier.load(out).score([texts[i] for i in stored])
    assert not np.allclose(shipped, [score for _, score in stored.values()], atol=1e-4)
    card = (out / "README.md").read_text()
    header = yaml.safe_load(card.split("---")[1])
    assert header["training"]["shipped_model"]["refit_on_all_labels"] is True
    assert header["training"]["metrics_of"].startswith("held-out model")
    assert "refit on all" in card and "never saw the held-out labels" in card


def test_refit_all_false_ships_the_heldout_model(labels_file, tmp_path):
    metrics = distil(load_jsonl_labels(labels_file, 3), FAST.model_copy(update={"refit_all": False}),
                     tmp_path / "clf", quiet=True)
    quality = metrics["quality"]
    assert quality["split"]["final_model_trained_on"] == quality["split"]["heldout_model_trained_on"]
    assert quality["models"]["shipped_model"]["saw_heldout_labels"] is False
    stored = ClassifierArtifact.load(tmp_path / "clf").heldout_scores()
    texts = {json.loads(line)["id"]: json.loads(line)["text"] for line in labels_file.read_text().splitlines()}
    shipped = QualityClassifier.load(tmp_path / "clf").score([texts[i] for i in stored])
    np.testing.assert_allclose(shipped, [score for _, score in stored.values()], atol=1e-6)


def test_threshold_comes_from_out_of_fold_scores_of_every_repeat(refit):
    _, metrics = refit
    quality = metrics["quality"]
    choice = quality["threshold_choice"]
    assert choice["method"] == "cross_validation" and choice["scores"] == "out_of_fold"
    assert (choice["folds"], choice["repeats"]) == (5, 2)
    # the threshold's own metrics are over the out-of-fold scores of both repeats of every training document
    assert quality["validation"]["n"] == 2 * choice["documents"] == 2 * quality["split"]["heldout_model_trained_on"]
    assert quality["validation"]["threshold"] == quality["threshold"]


def test_spread_of_the_heldout_auc_over_seeds_is_measured(refit):
    out, metrics = refit
    variance = metrics["quality"]["variance"]
    assert variance["measured"] and variance["seeds"] == 3
    for key in ("training_seed", "split_seed"):
        spread = variance[key]
        assert spread["n"] == 3 and len(spread["aucs"]) == 3
        # the first of each is the reported model
        assert spread["aucs"][0] == pytest.approx(metrics["quality"]["roc_auc"], abs=1e-6)
        assert spread["min"] <= spread["mean"] <= spread["max"] and spread["sd"] >= 0
    assert variance["split_seed"]["sd"] > 0  # other held-out splits give other AUCs
    header = yaml.safe_load((out / "README.md").read_text().split("---")[1])
    assert header["training"]["heldout_auc_spread"]["split_seed"]["n"] == 3
    assert "Spread of the held-out ROC AUC" in (out / "README.md").read_text()


def test_selection_mode_follows_the_number_of_labels(labels_file, tmp_path):
    cfg = FAST.model_copy(update={"cv_max_labels": 50, "cv_min_validation": 0})
    big = distil(load_jsonl_labels(labels_file, 3), cfg, tmp_path / "val", quiet=True)["quality"]
    tuning = big["tuning"]
    # more training labels than distil.cv_max_labels: one validation split ranks the settings (Hanley-McNeil SEs)
    assert tuning["mode"] == "validation" and tuning["validation_documents"] == big["split"]["validation"] > 0
    assert all(t["se"] == pytest.approx(auc_standard_error(t["validation_auc"], *_counts(big, t)), abs=1e-9)
               for t in tuning["trials"])
    # the shipped model still learns from every label, the held-out model from train and validation
    assert big["split"]["final_model_trained_on"] == big["split"]["train"] + big["split"]["validation"] + big["n"]
    assert big["split"]["heldout_model_trained_on"] == big["split"]["train"] + big["split"]["validation"]
    # the threshold is chosen on the chosen settings' validation scores (a model trained on the train split)
    assert big["threshold_choice"] == {"method": "validation", "documents": big["split"]["validation"],
                                       "scores": "validation_split"}
    assert yaml.safe_load((tmp_path / "val" / "config.yaml").read_text())["quality"]["selection"] == "validation"
    assert "chosen by a search on the validation split" in (tmp_path / "val" / "README.md").read_text()


def _counts(quality, trial):
    validation = quality["validation"]
    positives = validation["positives"]
    return positives, validation["n"] - positives


def test_bagging_ships_one_loadable_model_and_the_bag_that_the_api_averages(labels_file, tmp_path):
    cfg = FAST.model_copy(update={"bag": 3, "variance_seeds": 0, "tune": False})
    metrics = distil(load_jsonl_labels(labels_file, 3), cfg, tmp_path / "bag", quiet=True)
    folder = tmp_path / "bag"
    config = yaml.safe_load((folder / "config.yaml").read_text())
    assert config["quality"]["model_file"] == "quality.bin"
    assert config["quality"]["bag_files"] == ["quality.bag-1.bin", "quality.bag-2.bin"]
    assert metrics["quality"]["models"]["shipped_model"]["files"] == ["quality.bin", *config["quality"]["bag_files"]]
    assert metrics["quality"]["bag"] == {"models": 3, "sampling": "bootstrap", "combine": "mean P(hq)"}
    texts = [json.loads(line)["text"] for line in labels_file.read_text().splitlines()][:20]
    normalized = [normalize_text(t) for t in texts]
    models = [load_fasttext(folder / name) for name in ["quality.bin", *config["quality"]["bag_files"]]]
    each = [positive_probabilities(m, normalized) for m in models]
    assert not np.allclose(each[0], each[1])  # bootstrap samples: different models
    np.testing.assert_allclose(QualityClassifier.load(folder).score(texts), np.mean(each, axis=0), atol=1e-6)
    assert "Bagging: the score is the mean" in (folder / "README.md").read_text()
    # a bag member missing is refused when the folder is loaded
    (folder / "quality.bag-2.bin").unlink()
    with pytest.raises(Exception, match="quality.bag-2.bin"):
        QualityClassifier.load(folder)


def test_the_student_reads_what_the_teacher_read(tmp_path):
    """LLM labels whose run recorded annotate.max_doc_chars: trained and scored on the first that many characters
    (text_view: teacher), or on the whole page (text_view: page)."""
    pages = sorted(load_pages(BENCHMARK))[:10]
    items = labelled_texts(BENCHMARK, page_ids=pages, min_chars=600, max_chars=2000)
    write_teacher_run(tmp_path, items)
    settings = tmp_path / "_state" / "_settings" / "annotate.json"
    settings.parent.mkdir(parents=True)
    settings.write_text(json.dumps({"annotate.max_doc_chars": 300}))
    label_set = load_llm_labels(tmp_path / "labels", tmp_path / "docs", 3, teacher_chars=1500)
    assert (label_set.teacher_chars, label_set.teacher_chars_source) == (300, "recorded")
    cfg = FAST.model_copy(update={"variance_seeds": 0, "tune": False})
    metrics = distil(label_set, cfg, tmp_path / "teacher", quiet=True)
    view = metrics["quality"]["text_view"]
    assert (view["view"], view["max_chars"], view["teacher_chars"]) == ("teacher", 300, 300)
    config = yaml.safe_load((tmp_path / "teacher" / "config.yaml").read_text())
    assert config["text_view"]["max_chars"] == 300
    clf = QualityClassifier.load(tmp_path / "teacher")
    long = next(t.text for t in items if len(t.text) > 600)
    assert clf.score([long])[0] == clf.score([long[:300]])[0] != clf.score([long[300:]])[0]
    card = (tmp_path / "teacher" / "README.md").read_text()
    assert "text[:300]" in card and "first 300 characters" in card

    page = distil(load_llm_labels(tmp_path / "labels", tmp_path / "docs", 3), cfg.model_copy(
        update={"text_view": "page"}), tmp_path / "page", quiet=True)["quality"]["text_view"]
    assert (page["view"], page["max_chars"], page["teacher_chars"]) == ("page", None, 300)
    whole = QualityClassifier.load(tmp_path / "page")
    assert whole.score([long])[0] != whole.score([long[:300]])[0]
    # labels without a record: the configured annotate.max_doc_chars, else the whole text
    (settings).unlink()
    assert load_llm_labels(tmp_path / "labels", tmp_path / "docs", 3, teacher_chars=1500).teacher_chars == 1500
    assert load_llm_labels(tmp_path / "labels", tmp_path / "docs", 3).teacher_chars is None


def test_eval_heldout_only_on_a_refit_classifier_uses_the_heldout_models_scores(refit, labels_file):
    out, metrics = refit
    done = subprocess.run([sys.executable, "-m", "pipeline.cli", "classifier", "eval", "--classifier", str(out),
                           "--labels-jsonl", str(labels_file), "--heldout-only", "--json"],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["quality_scored_by"] == "heldout_model"
    assert result["quality"]["roc_auc"] == pytest.approx(metrics["quality"]["roc_auc"], abs=1e-6)
    assert result["quality"]["confusion"] == metrics["quality"]["confusion"]
    assert "optimistic" in result["shipped_model_on_heldout"]["note"]


def test_refit_training_is_reproducible(labels_file, tmp_path):
    cfg = FAST.model_copy(update={"bag": 2})
    runs = [distil(load_jsonl_labels(labels_file, 3), cfg, tmp_path / name, quiet=True) for name in ("a", "b")]
    for name in ("quality.bin", "quality.bag-1.bin", "heldout_scores.jsonl", "config.yaml", "heldout_doc_ids.txt"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    assert without_timings(runs[0]) == without_timings(runs[1])


def test_distil_time_goes_to_the_search(refit):
    _, metrics = refit
    quality = metrics["quality"]
    tuning = quality["tuning"]
    assert tuning["seconds"] >= sum(t["seconds"] for t in tuning["trials"]) * 0.9
    assert quality["variance"]["seconds"] >= 0 and quality["train_seconds"] >= 0
    assert distil_module.selection_mode(FAST, 10) == "cross_validation"
    assert distil_module.selection_mode(FAST, 20_001) == "validation"
