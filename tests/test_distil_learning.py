"""Distillation learns from real text: article text versus the same pages' boilerplate.

The bundled extraction-benchmark subset (data/extraction-benchmark, human ground truth) gives labelled
chunks; `curate distil --labels-jsonl` trains on them and must reach a held-out ROC AUC >= 0.9, and the
artifact must also separate article from boilerplate on pages it never saw.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from classifiers import QualityClassifier, selection
from classifiers import distil as distil_module
from classifiers.distil import distil
from classifiers.evaluate import roc_auc
from classifiers.extraction_benchmark import labelled_texts, load_pages
from classifiers.labels import load_jsonl_labels
from classifiers.normalize import normalize_text
from pipeline.config import DistilConfig
from stagehelpers import without_timings

BENCHMARK = Path(__file__).resolve().parents[1] / "data" / "extraction-benchmark"
# small model, fast to train and to copy into Ray actors; a small tuning grid (4 configurations)
SMALL = ["--set", "distil.bucket=50000", "--set", "distil.dim=32",
         "--set", "distil.tune_grid={lr: [0.5, 1.0], epoch: [10, 25]}"]


@pytest.fixture(scope="module")
def page_split():
    pages = sorted(load_pages(BENCHMARK))
    random.Random(0).shuffle(pages)
    unseen = sorted(pages[: len(pages) // 4])
    return sorted(pages[len(pages) // 4:]), unseen


@pytest.fixture(scope="module")
def learned(tmp_path_factory, page_split):
    seen, _ = page_split
    folder = tmp_path_factory.mktemp("learn")
    labels = folder / "labels.jsonl"
    with labels.open("w") as fh:
        for item in labelled_texts(BENCHMARK, page_ids=seen):
            fh.write(json.dumps({"id": item.doc_id, "text": item.text, "label": item.label}) + "\n")
    out = folder / "classifier"
    done = subprocess.run([sys.executable, "-m", "pipeline.cli", "distil", "--labels-jsonl", str(labels),
                           "--out", str(out), *SMALL], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "ROC AUC" in done.stdout
    return out


def test_bundled_benchmark_is_real_and_both_classes_are_present():
    pages = load_pages(BENCHMARK)
    assert len(pages) == 55
    items = labelled_texts(BENCHMARK)
    positives = [t for t in items if t.label == 1]
    negatives = [t for t in items if t.label == 0]
    assert len(positives) > 300 and len(negatives) > 300
    # a boilerplate chunk never repeats a line of its page's article
    page_id = negatives[0].page_id
    article = pages[page_id]["articleBody"].lower()
    assert all(line.strip().lower() not in article for line in negatives[0].text.splitlines())


def test_heldout_auc_reaches_0_9(learned):
    metrics = json.loads((learned / "metrics.json").read_text())
    quality = metrics["quality"]
    assert quality["split"]["heldout"] >= 150
    assert quality["roc_auc"] >= 0.9, quality
    assert quality["f1"] >= 0.8, quality
    # the card reports the same numbers in its YAML header
    header = yaml.safe_load((learned / "README.md").read_text().split("---")[1])
    assert header["metrics"]["heldout_roc_auc"] == pytest.approx(quality["roc_auc"], abs=1e-4)
    assert header["training_size"]["train"] == quality["split"]["train"]


def test_separates_article_from_boilerplate_on_unseen_pages(learned, page_split):
    _, unseen = page_split
    items = labelled_texts(BENCHMARK, page_ids=unseen)
    clf = QualityClassifier.load(learned)
    scores = clf.score([t.text for t in items])
    labels = np.array([t.label for t in items])
    assert roc_auc(labels, scores) >= 0.85
    # at the card's threshold most article text is kept and most boilerplate dropped
    keep = clf.predict([t.text for t in items])
    assert keep[labels == 1].mean() > 0.75 and keep[labels == 0].mean() < 0.35


# tests of the search and the threshold choice: a small model, a grid of four configurations
TINY = DistilConfig(bucket=10000, dim=16, tune_grid={"lr": [0.5, 1.0], "epoch": [5, 10]})


@pytest.fixture(scope="module")
def few_labels(tmp_path_factory):
    items = labelled_texts(BENCHMARK, page_ids=sorted(load_pages(BENCHMARK))[:15])
    # distinct texts only (a site's boilerplate can repeat across its pages), so a text names one document
    items = list({normalize_text(t.text): t for t in items}.values())
    path = tmp_path_factory.mktemp("few") / "labels.jsonl"
    path.write_text("".join(json.dumps({"id": t.doc_id, "text": t.text, "label": t.label}) + "\n" for t in items))
    return path


def test_settings_are_chosen_by_cross_validation_and_never_see_the_heldout_split(few_labels, tmp_path, monkeypatch):
    seen: dict[str, list[str]] = {}
    real = distil_module.cross_validate_settings

    def spy(lines, pool, cfg, **kwargs):
        seen["pool"] = [lines.texts[i] for i in pool]
        return real(lines, pool, cfg, **kwargs)

    monkeypatch.setattr(distil_module, "cross_validate_settings", spy)
    metrics = distil(load_jsonl_labels(few_labels, 3), TINY, tmp_path / "clf", quiet=True)
    heldout_ids = set((tmp_path / "clf" / "heldout_doc_ids.txt").read_text().split())
    texts = {json.loads(line)["id"]: normalize_text(json.loads(line)["text"])
             for line in few_labels.read_text().splitlines()}
    heldout_texts = {texts[i] for i in heldout_ids}
    quality = metrics["quality"]
    assert len(heldout_ids) == quality["split"]["heldout"] > 0
    assert not heldout_texts & set(seen["pool"])
    assert len(seen["pool"]) + len(heldout_ids) == len(texts) == quality["split"]["final_model_trained_on"]

    tuning = quality["tuning"]
    assert tuning["enabled"] and tuning["mode"] == "cross_validation" and tuning["heldout_used"] is False
    # ~330 labels: 5 folds, repeated twice (fewer than distil.cv_repeat_below labels)
    assert (tuning["folds"], tuning["repeats"], tuning["documents"]) == (5, 2, len(seen["pool"]))
    assert tuning["configs_tried"] == tuning["configs_in_grid"] == 5 and tuning["complete"]
    for trial in tuning["trials"]:
        assert len(trial["fold_aucs"]) == 10
        assert trial["mean_auc"] == pytest.approx(np.mean(trial["fold_aucs"]), abs=1e-5)
        assert trial["se"] == pytest.approx(np.std(trial["fold_aucs"], ddof=1) / np.sqrt(10), abs=1e-5)
    # the one-standard-error rule: the simplest configuration within one SE of the best mean
    best = max(tuning["trials"], key=lambda t: t["mean_auc"])
    assert tuning["best_mean_auc"] == best["mean_auc"] and tuning["rule"] == "one_standard_error"
    within = [t for t in tuning["trials"] if t["mean_auc"] >= best["mean_auc"] - best["se"] - 1e-12]
    simplest = min(within, key=selection.complexity)
    assert tuning["chosen"] == {k: simplest[k] for k in selection.TUNED_SETTINGS}
    assert "one standard error" in tuning["why"]
    # the chosen settings are the ones the shipped model was trained with, in metrics, config and card
    chosen = tuning["chosen"]
    assert {k: quality["hyperparameters"][k] for k in chosen} == chosen
    config = yaml.safe_load((tmp_path / "clf" / "config.yaml").read_text())
    assert config["quality"]["tuned"] is True and config["quality"]["selection"] == "cross_validation"
    assert {k: config["quality"]["hyperparameters"][k] for k in chosen} == chosen
    card = (tmp_path / "clf" / "README.md").read_text()
    header = yaml.safe_load(card.split("---")[1])
    assert header["training"]["hyperparameters"] == quality["hyperparameters"]
    search = header["training"]["search"]
    assert search["tuned"] is True and search["heldout_used"] is False and search["configs_tried"] == 5
    assert (search["selected_on"], search["folds"], search["repeats"]) == ("cross-validation", 5, 2)
    assert search["chosen_mean_auc"] == pytest.approx(tuning["chosen_mean_auc"], abs=1e-4)
    assert "## Training settings and threshold" in card and "the held-out documents were not used" in card
    assert "mean AUC ± SE" in card and "one standard error" in card
    assert header["metrics"]["heldout_cohen_kappa"] == pytest.approx(quality["cohen_kappa"], abs=1e-4)


def test_tuned_training_is_reproducible(few_labels, tmp_path):
    """Same labels -> the same search -> the same chosen settings -> the same model bytes and threshold."""
    runs = [distil(load_jsonl_labels(few_labels, 3), TINY, tmp_path / name, quiet=True) for name in ("a", "b")]
    assert runs[0]["quality"]["tuning"]["complete"]
    assert runs[0]["quality"]["hyperparameters"] == runs[1]["quality"]["hyperparameters"]
    assert (tmp_path / "a" / "quality.bin").read_bytes() == (tmp_path / "b" / "quality.bin").read_bytes()
    assert without_timings(runs[0]) == without_timings(runs[1])
    configs = [yaml.safe_load((tmp_path / name / "config.yaml").read_text()) for name in ("a", "b")]
    assert configs[0] == configs[1]
    # plain fastText still loads the artifact
    import fasttext

    assert fasttext.load_model(str(tmp_path / "a" / "quality.bin")).get_dimension() == \
        runs[0]["quality"]["hyperparameters"]["dim"]


def test_budget_stops_the_search_and_tune_false_skips_it(few_labels, tmp_path):
    spent = distil(load_jsonl_labels(few_labels, 3), TINY.model_copy(update={"tune_budget_s": 0.0}),
                   tmp_path / "spent", quiet=True)
    tuning = spent["quality"]["tuning"]
    # the configured settings are always tried first; with no budget left nothing else is
    assert tuning["configs_tried"] == 1 and tuning["configs_in_grid"] == 5 and not tuning["complete"]
    assert tuning["chosen"] == {"lr": 0.5, "epoch": 25, "word_ngrams": 2, "dim": 16, "min_count": 1}
    assert "budget ran out" in (tmp_path / "spent" / "README.md").read_text()

    untuned = distil(load_jsonl_labels(few_labels, 3), TINY.model_copy(update={"tune": False}), tmp_path / "off",
                     quiet=True)
    off = untuned["quality"]["tuning"]
    # no search: the configured settings, cross-validated only for the threshold's out-of-fold scores
    assert off["enabled"] is False and off["heldout_used"] is False and off["configs_tried"] == 1
    assert untuned["quality"]["threshold_choice"]["scores"] == "out_of_fold"
    assert untuned["quality"]["hyperparameters"] == {**tuning["chosen"], "bucket": 10000}
    header = yaml.safe_load((tmp_path / "off" / "README.md").read_text().split("---")[1])
    assert header["training"]["search"]["tuned"] is False and header["training"]["search"]["heldout_used"] is False
    assert "as configured" in (tmp_path / "off" / "README.md").read_text()
    # the same settings and splits: the same model as the search that only tried the configured settings
    assert (tmp_path / "off" / "quality.bin").read_bytes() == (tmp_path / "spent" / "quality.bin").read_bytes()


def test_small_validation_chooses_the_threshold_by_cross_validation(few_labels, tmp_path):
    """Validation mode (`selection: validation`, and `refit_all: false` so the shipped model is the held-out one,
    as before cross-validated selection): a small validation split chooses the threshold by k-fold."""
    untuned = TINY.model_copy(update={"tune": False, "selection": "validation", "refit_all": False})
    cv = distil(load_jsonl_labels(few_labels, 3), untuned, tmp_path / "cv", quiet=True)["quality"]
    split = cv["split"]
    assert split["validation"] < 200
    choice = cv["threshold_choice"]
    assert choice["method"] == "cross_validation" and choice["folds"] == 5
    assert choice["documents"] == split["train"] + split["validation"] == split["final_model_trained_on"]
    # the threshold's own metrics are out-of-fold, over train+validation
    assert cv["validation"]["scores"] == "out_of_fold" and cv["validation"]["n"] == choice["documents"]
    assert cv["validation"]["threshold"] == cv["threshold"]
    config = yaml.safe_load((tmp_path / "cv" / "config.yaml").read_text())
    assert config["quality"]["threshold_method"] == "cross_validation"
    assert "5-fold cross-validation" in (tmp_path / "cv" / "README.md").read_text()

    # a validation split large enough (here: any) keeps the old way: train only, threshold on validation
    plain = distil(load_jsonl_labels(few_labels, 3), untuned.model_copy(update={"cv_min_validation": 0}),
                   tmp_path / "val", quiet=True)["quality"]
    assert plain["threshold_choice"] == {"method": "validation", "documents": split["validation"],
                                         "scores": "validation_split"}
    assert plain["split"]["final_model_trained_on"] == split["train"]
    assert plain["validation"]["scores"] == "validation_split" and plain["validation"]["n"] == split["validation"]
    # the held-out split is the same in both: only what the model learned on and the threshold differ
    assert plain["n"] == cv["n"] and plain["positives"] == cv["positives"]
    heldout = "heldout_doc_ids.txt"
    assert (tmp_path / "cv" / heldout).read_text() == (tmp_path / "val" / heldout).read_text()
    # fewer examples of a class than folds: as many folds as the smaller class allows
    few = [json.loads(line) for line in few_labels.read_text().splitlines()]
    negatives = [row for row in few if row["label"] == 0][:4]
    positives = [row for row in few if row["label"] == 1][:30]
    small = tmp_path / "small.jsonl"
    small.write_text("".join(json.dumps(row) + "\n" for row in negatives + positives))
    tiny = distil(load_jsonl_labels(small, 3), untuned, tmp_path / "tiny", quiet=True)["quality"]
    assert tiny["threshold_choice"]["folds"] == 3  # 4 negatives, 1 held out: 3 left for 5 folds
