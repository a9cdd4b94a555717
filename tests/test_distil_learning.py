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

from classifiers import QualityClassifier
from classifiers.evaluate import roc_auc
from classifiers.extraction_benchmark import labelled_texts, load_pages

BENCHMARK = Path(__file__).resolve().parents[1] / "data" / "extraction-benchmark"
# small model, fast to train and to copy into Ray actors
SMALL = ["--set", "distil.bucket=50000", "--set", "distil.dim=32"]


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
