"""`curate distil` on labels in the LABELS schema (as annotate writes them) and on a user's JSONL file: what
is skipped and counted, the artifact folder and its card, and the refusals."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from classifiers.distil import DistilError, distil
from classifiers.extraction_benchmark import (
    ARTICLE_FORMAT,
    ARTICLE_TOPIC,
    BOILERPLATE_FORMAT,
    BOILERPLATE_TOPIC,
    labelled_texts,
    load_pages,
    write_teacher_run,
)
from classifiers.labels import LabelsError, load_jsonl_labels, load_llm_labels, parse_jsonl_label
from pipeline import schemas
from pipeline.config import DistilConfig
from pipeline.io import write_parquet
from stagehelpers import without_timings

BENCHMARK = Path(__file__).resolve().parents[1] / "data" / "extraction-benchmark"
# a small model and a small tuning grid (2 configurations: the tests stay fast)
SMALL = ["--set", "distil.bucket=50000", "--set", "distil.dim=32", "--set", "distil.tune_grid={lr: [0.5, 1.0]}"]
GRID = {"lr": [0.5, 1.0]}


def curate(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pipeline.cli", *args], capture_output=True, text=True)


@pytest.fixture(scope="module")
def teacher_run(tmp_path_factory):
    """docs/ and labels/ of 30 benchmark pages; every 10th quality label is an annotation error, and one
    label points at a document that is not in docs/."""
    root = tmp_path_factory.mktemp("run")
    pages = sorted(load_pages(BENCHMARK))[:30]
    docs, labels = write_teacher_run(root, labelled_texts(BENCHMARK, page_ids=pages), errors_every=10, docs_files=2)
    orphan = {"doc_id": "not-in-docs", "task": "quality", "quality_score": 5, "model": "m"}
    labels.append(orphan)
    write_parquet(schemas.from_rows([orphan], schemas.LABELS), root / "labels" / "part-1.parquet", schemas.LABELS)
    return root, docs, labels


@pytest.fixture(scope="module")
def artifact(teacher_run):
    root, _, _ = teacher_run
    out = root / "classifier"
    done = curate("distil", "--labels", str(root / "labels"), "--docs", str(root / "docs"), "--out", str(out), *SMALL)
    assert done.returncode == 0, done.stderr
    return out


def test_errors_and_missing_docs_are_skipped_and_counted(teacher_run, artifact):
    _, docs, labels = teacher_run
    metrics = json.loads((artifact / "metrics.json").read_text())
    errors = sum(1 for row in labels if row.get("error"))
    assert metrics["labels"]["skipped"] == {"label_error": errors, "missing_doc": 1}
    assert metrics["labels"]["quality_labels"] == len(docs) - errors
    assert metrics["labels"]["topic_labels"] == len(docs)
    split = metrics["quality"]["split"]
    assert split["train"] + split["validation"] + split["heldout"] == len(docs) - errors


def test_artifact_folder_and_card(artifact):
    assert {p.name for p in artifact.iterdir()} >= {"quality.bin", "topics.bin", "README.md", "metrics.json",
                                                     "config.yaml"}
    config = yaml.safe_load((artifact / "config.yaml").read_text())
    assert config["quality"]["positive_label"] == "__label__hq" and config["quality"]["label_threshold"] == 3
    assert set(config["topics"]["labels"].values()) == {ARTICLE_TOPIC, BOILERPLATE_TOPIC}
    assert all(" " not in label for label in config["topics"]["labels"])
    card = (artifact / "README.md").read_text()
    assert card.startswith("---\n")
    header = yaml.safe_load(card.split("---")[1])
    assert header["teacher_model"] == ["extraction-benchmark-ground-truth"]
    assert {(p["task"], p["prompt_id"], p["prompt_hash"]) for p in header["prompts"]} == {
        ("quality", "quality_v1", "benchmark"), ("topics", "topics_v1", "benchmark")}
    assert header["label_threshold"] == 3 and 0 < header["decision_threshold"] < 1
    assert header["training_size"]["train"] > 100
    assert header["metrics"]["heldout_roc_auc"] > 0.8
    assert header["metrics"]["topics_macro_agreement"] > 0.8
    for section in ("## Intended use", "## Limits", "__label__hq"):
        assert section in card
    metrics = json.loads((artifact / "metrics.json").read_text())
    assert set(metrics["topics"]["per_topic"]) == {ARTICLE_TOPIC, BOILERPLATE_TOPIC}
    for key in ("roc_auc", "precision", "recall", "f1", "ece", "confusion", "threshold"):
        assert key in metrics["quality"]


def test_combined_labels_distil_a_format_model(tmp_path):
    """Combined labels (score, topics and format from one answer) give the artifact a format model beside the
    topic one, with held-out agreement in metrics.json and the card, and `predict_formats` on any text."""
    from classifiers.artifact import QualityClassifier

    pages = sorted(load_pages(BENCHMARK))[:30]
    write_teacher_run(tmp_path, labelled_texts(BENCHMARK, page_ids=pages), combined=True)
    out = tmp_path / "classifier"
    done = curate("distil", "--labels", str(tmp_path / "labels"), "--docs", str(tmp_path / "docs"), "--out", str(out),
                  *SMALL)
    assert done.returncode == 0, done.stderr
    assert "formats: 2 evaluated" in done.stdout
    config = yaml.safe_load((out / "config.yaml").read_text())
    assert config["formats"]["model_file"] == "formats.bin" and (out / "formats.bin").is_file()
    assert set(config["formats"]["labels"].values()) == {ARTICLE_FORMAT, BOILERPLATE_FORMAT}
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["formats"]["macro_agreement"] > 0.8 and metrics["labels"]["format_labels"] == len(
        load_llm_labels(tmp_path / "labels", tmp_path / "docs", 3).docs)
    card = (out / "README.md").read_text()
    header = yaml.safe_load(card.split("---")[1])
    assert header["formats"] == sorted([ARTICLE_FORMAT, BOILERPLATE_FORMAT])
    assert header["metrics"]["formats_macro_agreement"] > 0.8 and "Formats: one-vs-all model over 2 formats" in card
    classifier = QualityClassifier.load(out)
    article = next(t.text for t in labelled_texts(BENCHMARK, page_ids=sorted(load_pages(BENCHMARK))[30:]) if t.label)
    (best, prob), *_ = classifier.predict_formats([article], threshold=0.0)[0]
    assert best == ARTICLE_FORMAT and 0.5 < prob <= 1


def test_label_threshold_decides_the_classes(teacher_run):
    root, _docs, _labels = teacher_run
    # scores are 0-2 for boilerplate, 3-5 for articles: at threshold 5 only a third of articles are positive
    at5 = load_llm_labels(root / "labels", root / "docs", label_threshold=5)
    at3 = load_llm_labels(root / "labels", root / "docs", label_threshold=3)
    positives5 = sum(bool(d.is_positive) for d in at5.docs)
    positives3 = sum(bool(d.is_positive) for d in at3.docs)
    assert 0 < positives5 < positives3 / 2


def test_refuses_too_few_labels_and_writes_nothing(teacher_run, tmp_path):
    root, _, _ = teacher_run
    out = tmp_path / "clf"
    done = curate("distil", "--labels", str(root / "labels"), "--docs", str(root / "docs"), "--out", str(out),
                  "--set", "distil.min_labels=100000")
    assert done.returncode == 2
    assert "refusing to write a classifier" in done.stderr and "distil.min_labels=100000" in done.stderr
    assert not out.exists()


def test_refuses_a_single_class(tmp_path):
    labels = tmp_path / "labels.jsonl"
    labels.write_text("".join(json.dumps({"text": f"text number {i} about things", "score": 4}) + "\n"
                              for i in range(40)))
    done = curate("distil", "--labels-jsonl", str(labels), "--out", str(tmp_path / "clf"))
    assert done.returncode == 2 and "one class" in done.stderr, done.stderr
    assert not (tmp_path / "clf").exists()


def test_refuses_to_overwrite_a_folder_that_is_not_a_classifier(tmp_path):
    (tmp_path / "precious.txt").write_text("keep me")
    label_set = load_jsonl_labels(_jsonl(tmp_path, 40), 3)
    with pytest.raises(DistilError, match="not a classifier folder"):
        distil(label_set, DistilConfig(bucket=50000, dim=32), tmp_path, quiet=True)
    assert (tmp_path / "precious.txt").read_text() == "keep me"


def _jsonl(folder: Path, n: int) -> Path:
    items = labelled_texts(BENCHMARK, page_ids=sorted(load_pages(BENCHMARK))[:12])[:n]
    path = folder / "user.jsonl"
    path.write_text("".join(json.dumps({"text": t.text, "label": t.label}) + "\n" for t in items))
    return path


def test_user_jsonl_with_scores_and_rerun_replaces_the_artifact(tmp_path):
    items = labelled_texts(BENCHMARK, page_ids=sorted(load_pages(BENCHMARK))[:20])
    path = tmp_path / "scores.jsonl"
    path.write_text("".join(json.dumps({"id": t.doc_id, "text": t.text, "score": 4.5 if t.label else 1.0}) + "\n"
                            for t in items))
    out = tmp_path / "clf"
    for _ in range(2):  # the second run replaces the first artifact in place
        done = curate("distil", "--labels-jsonl", str(path), "--out", str(out), *SMALL)
        assert done.returncode == 0, done.stderr
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp folders left
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["topics"] == {"skipped": "no topic labels"}
    assert metrics["formats"] == {"skipped": "no format labels"}
    assert not (out / "topics.bin").exists() and not (out / "formats.bin").exists()
    card = yaml.safe_load((out / "README.md").read_text().split("---")[1])
    assert card["teacher_model"] == ["user labels (scores.jsonl)"]


@pytest.mark.parametrize(("line", "message"), [
    ('{"text": "a", "label": 2}', "'label' must be 0 or 1"),
    ('{"text": "a", "score": 7}', "'score' must be a number from 0 to 5"),
    ('{"label": 1}', "missing string field 'text'"),
    ('{"text": "a"}', "needs 'label'"),
    ('not json', "not valid JSON"),
    ('{"text": "a", "topics": "x"}', "'topics' must be a list"),
])
def test_bad_jsonl_lines_are_named(line, message):
    with pytest.raises(LabelsError, match=message) as info:
        parse_jsonl_label(line, "f.jsonl:7", 3, 7)
    assert "f.jsonl:7" in str(info.value)


def test_bad_jsonl_file_fails_the_command_with_the_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"text": "fine", "label": 1}\n\n{"text": "bad", "label": "yes"}\n')
    done = curate("distil", "--labels-jsonl", str(path), "--out", str(tmp_path / "clf"))
    assert done.returncode == 2 and f"{path}:3" in done.stderr


def test_quantized_artifact_is_small_and_still_separates(tmp_path):
    import fasttext

    from classifiers import QualityClassifier

    items = labelled_texts(BENCHMARK, page_ids=sorted(load_pages(BENCHMARK))[:25])
    path = tmp_path / "labels.jsonl"
    path.write_text("".join(json.dumps({"text": t.text, "label": t.label}) + "\n" for t in items))
    small = DistilConfig(bucket=10000, dim=32, quantize=True, quantize_min_labels=100, tune_grid=GRID)
    metrics = distil(load_jsonl_labels(path, 3), small, tmp_path / "q", quiet=True)
    assert metrics["quality"]["quantized"] is True
    assert (tmp_path / "q" / "quality.ftz").exists() and not (tmp_path / "q" / "quality.bin").exists()
    unquantized = distil(load_jsonl_labels(path, 3), small.model_copy(update={"quantize": False}), tmp_path / "full",
                         quiet=True)
    assert (tmp_path / "q" / "quality.ftz").stat().st_size < (tmp_path / "full" / "quality.bin").stat().st_size / 2
    assert metrics["quality"]["roc_auc"] > 0.85 and unquantized["quality"]["roc_auc"] > 0.85
    article = next(t.text for t in items if t.label)
    assert QualityClassifier.load(tmp_path / "q").score([article])[0] == pytest.approx(
        dict(zip(*fasttext.load_model(str(tmp_path / "q" / "quality.ftz")).predict(article.replace("\n", " "), k=2)))[
            "__label__hq"], abs=1e-6)
    # too little data: quantisation is skipped and said so
    few = distil(load_jsonl_labels(path, 3), small.model_copy(update={"quantize_min_labels": 100_000}),
                 tmp_path / "few", quiet=True)
    assert few["quality"]["quantized"] is False and "quantize_min_labels" in few["quality"]["quantize_skipped"]


@pytest.mark.parametrize("quantize", [False, True])
def test_same_labels_distil_into_the_same_classifier(tmp_path, quantize):
    """One thread (the default), a seed and a zero-filled start: two trainings are byte-identical."""
    items = labelled_texts(BENCHMARK, page_ids=sorted(load_pages(BENCHMARK))[:25])
    path = tmp_path / "labels.jsonl"
    path.write_text("".join(json.dumps({"text": t.text, "label": t.label}) + "\n" for t in items))
    cfg = DistilConfig(bucket=10000, dim=32, quantize=quantize, quantize_min_labels=100, tune_grid=GRID)
    assert cfg.threads == 1
    runs = [distil(load_jsonl_labels(path, 3), cfg, tmp_path / name, quiet=True) for name in ("a", "b")]
    model_file = "quality.ftz" if quantize else "quality.bin"
    a, b = ((tmp_path / name / model_file).read_bytes() for name in ("a", "b"))
    assert a == b
    config_a, config_b = (yaml.safe_load((tmp_path / name / "config.yaml").read_text()) for name in ("a", "b"))
    assert config_a["quality"]["decision_threshold"] == config_b["quality"]["decision_threshold"]
    assert config_a == config_b and config_a["distil"]["threads"] == 1 and config_a["distil"]["seed"] == 0
    for run in runs:
        run["quality"].pop("train_seconds")
    # the search records how long each configuration took; everything else is the same
    assert without_timings(runs[0]) == without_timings(runs[1])
    assert runs[0]["quality"]["tuning"]["configs_tried"] == 2
    card = (tmp_path / "a" / "README.md").read_text()
    assert _card_without_timings(card) == _card_without_timings((tmp_path / "b" / "README.md").read_text())
    assert "seed 0 and 1 thread, reproducible" in card


def _card_without_timings(card: str) -> str:
    import re

    return re.sub(r"seconds: [0-9.]+|[0-9.]+ s\b", "<time>", card)


def test_card_records_the_search_and_heldout_kappa(artifact):
    metrics = json.loads((artifact / "metrics.json").read_text())
    quality = metrics["quality"]
    assert -1 <= quality["cohen_kappa"] <= 1 and "cohen_kappa" in quality["validation"]
    card = (artifact / "README.md").read_text()
    header = yaml.safe_load(card.split("---")[1])
    assert header["metrics"]["heldout_cohen_kappa"] == pytest.approx(quality["cohen_kappa"], abs=1e-4)
    training = header["training"]
    assert training["hyperparameters"]["bucket"] == 50000
    # SMALL's grid: lr 0.5 (configured) and 1.0, everything else as configured
    assert training["search"]["configs_tried"] == training["search"]["configs_in_grid"] == 2
    assert training["search"]["heldout_used"] is False and training["search"]["selected_on"] == "cross-validation"
    assert training["threshold_chosen_by"]["method"] == "cross_validation"
    assert training["threshold_chosen_by"]["scores"] == "out_of_fold"
    # which model the metrics are of, and which one ships
    assert training["shipped_model"]["refit_on_all_labels"] is True
    assert training["final_model_trained_on"] == sum(quality["split"][k] for k in ("train", "validation", "heldout"))
    assert "Cohen's kappa" in card and ("| chosen |" in card or "| chosen and configured |" in card)
    assert len(quality["tuning"]["trials"]) == 2


# ------------------------------------------------------------------------------ distil.label_source
def _row(doc_id, task, **fields):
    return {"doc_id": doc_id, "task": task, "prompt_id": f"{task}_v1", "prompt_hash": f"h-{task}", "model": "teacher",
            **fields}


def test_combined_and_separate_rows_read_alike_and_label_source_picks_the_score(tmp_path):
    docs = [{"doc_id": f"d{i}", "text": f"page {i} about bread and ovens", "language": "en", "rule_failures": []}
            for i in range(5)]
    write_parquet(schemas.from_rows(docs, schemas.DOCS), tmp_path / "docs" / "part-0.parquet", schemas.DOCS)
    probs = [0.0, 0.1, 0.6, 0.2, 0.1, 0.0]
    labels = [
        # combined rows: sampled 3 but expected 2.2 (below 3), sampled 2 but expected 3.4, no distribution
        _row("d0", "labels", quality_score=3, quality_expected=2.2, quality_probs=probs, topics=["health"],
             format=["faq", "tutorial"]),
        _row("d1", "labels", quality_score=2, quality_expected=3.4, topics=["travel"], format=["listicle"]),
        _row("d2", "labels", quality_score=4, topics=["games"], format=["news_article"],
             field_errors=["unknown_topic: not in the taxonomy: 'x'"]),
        # separate rows of one page: its score (with a distribution) and its topics
        _row("d3", "quality", quality_score=1, quality_expected=0.8),
        _row("d3", "topics", topics=["history"]),
        _row("d4", "labels", error="invalid_json", raw_text="{"),
    ]
    write_parquet(schemas.from_rows(labels, schemas.LABELS), tmp_path / "labels" / "part-0.parquet", schemas.LABELS)
    sampled = load_llm_labels(tmp_path / "labels", tmp_path / "docs", 3)
    expected = load_llm_labels(tmp_path / "labels", tmp_path / "docs", 3, label_source="expected")
    assert {d.doc_id: d.is_positive for d in sampled.docs} == {"d0": True, "d1": False, "d2": True, "d3": False}
    # expected: d0 and d1 flip; d2 has no distribution and keeps its sampled score
    assert {d.doc_id: d.is_positive for d in expected.docs} == {"d0": False, "d1": True, "d2": True, "d3": False}
    assert expected.counts()["label_source"] == "expected" and expected.counts()["expected_labels"] == 3
    assert sampled.counts()["label_source"] == "sampled" and sampled.counts()["expected_labels"] == 0
    by_id = {d.doc_id: d for d in sampled.docs}
    assert (by_id["d0"].quality_score, by_id["d0"].quality_expected) == (3.0, pytest.approx(2.2))
    assert by_id["d0"].topics == ["health"] and by_id["d0"].format == ["faq", "tutorial"]
    assert by_id["d3"].topics == ["history"] and by_id["d3"].format is None and by_id["d2"].quality_expected is None
    assert sampled.counts()["format_labels"] == 3 and sampled.counts()["topic_labels"] == 4
    assert sampled.skipped == {"label_error": 1}
    assert {(p["task"], p["prompt_id"]) for p in sampled.prompts} == {
        ("labels", "labels_v1"), ("quality", "quality_v1"), ("topics", "topics_v1")}
    with pytest.raises(LabelsError, match="distil.label_source='mean'"):
        load_llm_labels(tmp_path / "labels", tmp_path / "docs", 3, label_source="mean")


@pytest.mark.parametrize("label_source", ["sampled", "expected"])
def test_the_card_says_which_score_the_classes_were_decided_on(teacher_run, tmp_path, label_source):
    root, _, _ = teacher_run
    label_set = load_llm_labels(root / "labels", root / "docs", 3, label_source=label_source)
    cfg = DistilConfig(bucket=50000, dim=32, label_source=label_source, tune_grid={"lr": [0.5, 1.0]},
                       variance_seeds=0)
    distil(label_set, cfg, tmp_path / "clf", quiet=True)
    card = (tmp_path / "clf" / "README.md").read_text()
    header = yaml.safe_load(card.split("---")[1])
    assert header["label_score"] == label_source
    if label_source == "expected":  # these labels kept no distribution: every class is the sampled score's
        assert "expected score (sum of k * p(k)" in card and "for 0 documents; the sampled score for the rest" in card
    else:
        assert "Quality labels: the teacher's sampled score >= 3." in card
