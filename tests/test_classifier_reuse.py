"""The artifact is reusable outside the pipeline: Python API, `curate classifier score|eval`, plain fastText
with the documented labels, and datatrove's FastTextClassifierFilter."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from classifiers import ArtifactError, QualityClassifier
from classifiers.distil import distil
from classifiers.extraction_benchmark import (
    ARTICLE_TOPIC,
    BOILERPLATE_TOPIC,
    labelled_texts,
    load_pages,
    write_teacher_run,
)
from classifiers.labels import load_llm_labels
from pipeline.config import DistilConfig

BENCHMARK = Path(__file__).resolve().parents[1] / "data" / "extraction-benchmark"
ARTICLE = ("The city council voted on Tuesday to expand the bus network, adding three routes that will connect "
           "the northern suburbs with the hospital and the university.\nOfficials said the plan, which was "
           "debated for more than a year, would be paid for by the regional transport budget.")
MENU = ("Home\nNews\nSports\nWeather\nSubscribe\nSign in\nPrivacy Policy\nTerms of Use\nContact us\n"
        "© 2019 All rights reserved")


def curate(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pipeline.cli", *args], capture_output=True, text=True, input=stdin)


@pytest.fixture(scope="module")
def run_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("reuse")
    write_teacher_run(root, labelled_texts(BENCHMARK, page_ids=sorted(load_pages(BENCHMARK))[:40]))
    label_set = load_llm_labels(root / "labels", root / "docs", 3)
    distil(label_set, DistilConfig(bucket=50000, dim=32, tune_grid={"lr": [0.5, 1.0]}, variance_seeds=0),
           root / "classifier", quiet=True)
    return root


@pytest.fixture(scope="module")
def clf(run_dirs):
    return QualityClassifier.load(run_dirs / "classifier")


def test_python_api_scores_and_topics(clf):
    scores = clf.score([ARTICLE, MENU, "", None])
    assert scores.dtype == np.float32 and scores.shape == (4,)
    assert 0 <= scores[1] < clf.threshold <= scores[0] <= 1
    assert np.isnan(scores[2]) and np.isnan(scores[3])  # nothing to score
    assert clf.predict([ARTICLE, MENU]).tolist() == [True, False]
    topics = clf.predict_topics([ARTICLE, MENU])
    assert topics[0][0][0] == ARTICLE_TOPIC and topics[1][0][0] == BOILERPLATE_TOPIC
    # the same probabilities as the full topic scores, most probable first
    full = clf.topic_scores([ARTICLE])[0]
    assert [(t, round(p, 6)) for t, p in topics[0]] == sorted(
        ((t, round(p, 6)) for t, p in full.items() if p >= clf.topic_threshold), key=lambda tp: (-tp[1], tp[0]))
    assert set(clf.topics) == {ARTICLE_TOPIC, BOILERPLATE_TOPIC}


def test_load_rejects_a_folder_that_is_not_an_artifact(tmp_path):
    with pytest.raises(ArtifactError, match="config.yaml is missing"):
        QualityClassifier.load(tmp_path)


def test_artifact_types_the_folder_and_refuses_what_cannot_be_used(run_dirs, tmp_path):
    """ClassifierArtifact: config.yaml as typed fields (threshold, tag models, the teacher's labels folder and
    documents folder), the fingerprint over config and model files, and one message per unusable folder."""
    import hashlib
    import shutil

    from classifiers.artifact import ClassifierArtifact, Teacher

    folder = run_dirs / "classifier"
    artifact = ClassifierArtifact.load(folder)
    config = yaml.safe_load((folder / "config.yaml").read_text())
    assert artifact.threshold == pytest.approx(config["quality"]["decision_threshold"])
    assert artifact.label_threshold == 3 and set(artifact.tags) == {"topics"}
    assert artifact.model_files() == {"quality": config["quality"]["model_file"], "topics": "topics.bin"}
    teacher = artifact.teacher
    assert (teacher.labels_dir, teacher.docs_dir, teacher.labels_jsonl) == (str(run_dirs / "labels"),
                                                                           str(run_dirs / "docs"), None)
    # config.yaml keeps its one-line form of the source, which the model card shows as written
    assert config["teacher"]["source"] == teacher.source == f"labels: {run_dirs / 'labels'}; docs: {run_dirs / 'docs'}"
    assert Teacher.from_config({"source": "labels-jsonl: /x/labels.jsonl"}).labels_jsonl == "/x/labels.jsonl"
    assert Teacher.from_config({"labels_dir": "/l", "docs_dir": "/d"}).source == "labels: /l; docs: /d"
    odd = Teacher.from_config({"source": "hand-written"})
    assert (odd.labels_dir, odd.labels_jsonl, odd.source) == (None, None, "hand-written")
    # the fingerprint: sha256 over the names and bytes of config.yaml and the model files, in name order
    digest = hashlib.sha256()
    for name in sorted(p.name for p in folder.iterdir() if p.suffix in (".yaml", ".bin", ".ftz")):
        digest.update(name.encode())
        digest.update((folder / name).read_bytes())
    assert artifact.fingerprint() == digest.hexdigest()
    copy = tmp_path / "copy"
    shutil.copytree(folder, copy)
    assert ClassifierArtifact.load(copy).fingerprint() == artifact.fingerprint()  # wherever the folder is
    # refused, naming the folder and the file
    with pytest.raises(ArtifactError, match="not a classifier folder, config.yaml is missing"):
        ClassifierArtifact.load(tmp_path / "nothing")
    (copy / "topics.bin").unlink()
    with pytest.raises(ArtifactError, match=r"the topics model file topics.bin named in config.yaml is missing"):
        ClassifierArtifact.load(copy)
    assert ClassifierArtifact.read(copy).teacher == teacher  # reading the config needs no model file
    (copy / "config.yaml").write_text("quality: [not, a, section]\n")
    with pytest.raises(ArtifactError, match=r"is not a classifier config \(TypeError"):
        ClassifierArtifact.read(copy)


def test_cli_score_text_lines_and_jsonl(clf, run_dirs, tmp_path):
    text_file = tmp_path / "texts.txt"
    lines = [ARTICLE.replace("\n", " "), MENU.replace("\n", " ")]
    text_file.write_text("\n".join(lines) + "\n")
    done = curate("classifier", "score", "--classifier", str(run_dirs / "classifier"), str(text_file))
    assert done.returncode == 0, done.stderr
    rows = [json.loads(line) for line in done.stdout.splitlines()]
    expected = clf.score(lines)
    assert [r["line"] for r in rows] == [1, 2]
    assert [r["quality_prob"] for r in rows] == pytest.approx(expected.tolist(), abs=1e-5)
    assert [r["keep"] for r in rows] == [True, False]
    assert rows[0]["topics"][0][0] == ARTICLE_TOPIC

    jsonl = "".join(json.dumps({"id": f"d{i}", "text": t, "lang": "en"}) + "\n" for i, t in enumerate([ARTICLE, MENU]))
    done = curate("classifier", "score", "--classifier", str(run_dirs / "classifier"), "-", stdin=jsonl)
    assert done.returncode == 0, done.stderr
    rows = [json.loads(line) for line in done.stdout.splitlines()]
    # fields are passed through, the text is not echoed, newlines inside the text are handled
    assert [(r["id"], r["lang"], "text" in r) for r in rows] == [("d0", "en", False), ("d1", "en", False)]
    assert [r["quality_prob"] for r in rows] == pytest.approx(clf.score([ARTICLE, MENU]).tolist(), abs=1e-5)


def test_cli_score_names_the_bad_line(run_dirs):
    bad = json.dumps({"text": "fine"}) + "\n" + json.dumps({"body": "no text"}) + "\n"
    done = curate("classifier", "score", "--classifier", str(run_dirs / "classifier"), stdin=bad)
    assert done.returncode == 2 and "line 2" in done.stderr


def test_cli_eval_reproduces_the_heldout_metrics(run_dirs):
    done = curate("classifier", "eval", "--classifier", str(run_dirs / "classifier"), "--labels",
                  str(run_dirs / "labels"), "--heldout-only", "--json")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    # the shipped model was refit on every label: the held-out model's stored scores are the held-out evaluation
    assert result["quality_scored_by"] == "heldout_model"
    stored = json.loads((run_dirs / "classifier" / "metrics.json").read_text())["quality"]
    assert result["quality"]["n"] == stored["n"]
    assert result["quality"]["roc_auc"] == pytest.approx(stored["roc_auc"], abs=1e-6)
    assert result["quality"]["confusion"] == stored["confusion"]
    assert result["topics"]["macro_agreement"] > 0.8

    done = curate("classifier", "eval", "--classifier", str(run_dirs / "classifier"), "--labels",
                  str(run_dirs / "labels"))
    assert done.returncode == 0 and "ROC AUC" in done.stdout and "precision" in done.stdout


def test_plain_fasttext_with_the_documented_labels(clf, run_dirs):
    import fasttext

    config = yaml.safe_load((run_dirs / "classifier" / "config.yaml").read_text())
    model = fasttext.load_model(str(run_dirs / "classifier" / config["quality"]["model_file"]))
    assert sorted(model.labels) == sorted([config["quality"]["positive_label"], config["quality"]["negative_label"]])
    labels, probs = model.predict(ARTICLE.replace("\n", " "), k=2)
    prob_hq = dict(zip(labels, probs))["__label__hq"]
    # fastText's softmax can read 1.00001 for a saturated text: the API clips it into [0, 1]
    assert min(prob_hq, 1.0) == pytest.approx(float(clf.score([ARTICLE])[0]), abs=1e-6)
    topics_model = fasttext.load_model(str(run_dirs / "classifier" / "topics.bin"))
    top_label = topics_model.predict(MENU.replace("\n", " "))[0][0]
    assert config["topics"]["labels"][top_label] == BOILERPLATE_TOPIC


def test_datatrove_fasttext_filter_keeps_what_the_api_keeps(clf, run_dirs, tmp_path, monkeypatch):
    from datatrove.data import Document
    from datatrove.pipeline.filters import FastTextClassifierFilter

    # datatrove copies the model into a cache keyed by its path; keep that copy inside the test's folder
    monkeypatch.setattr("huggingface_hub.utils._cache_assets.HF_ASSETS_CACHE", str(tmp_path / "hf-assets"))
    texts = [t.text for t in labelled_texts(BENCHMARK, page_ids=sorted(load_pages(BENCHMARK))[40:44])]
    docs = [Document(text=t, id=str(i)) for i, t in enumerate(texts)]
    block = FastTextClassifierFilter(str(run_dirs / "classifier" / "quality.bin"),
                                     keep_labels=("hq", clf.threshold), newline_replacement=" ")
    kept = {d.id for d in block.run(iter(docs), rank=0, world_size=1)}
    expected = {str(i) for i, keep in enumerate(clf.predict(texts)) if keep}
    assert kept == expected and 0 < len(kept) < len(texts)
