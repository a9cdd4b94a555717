"""End to end with the real teacher: extract the bundled WARC sample, label it with the tiny random-weight
model on a real vLLM server (the session's shared server), distil, and load the artifact. The labels are
noise, so the metrics are too: this checks the plumbing and the provenance, not the learning (that is
tests/test_distil_learning.py)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from classifiers import QualityClassifier
from pipeline import schemas
from pipeline.config import load_config
from pipeline.io import RunLayout, read_dataset
from stagehelpers import annotate_run, extract_run

SAMPLE_WARCS = Path(__file__).resolve().parents[1] / "data" / "sample" / "warc"
pytestmark = pytest.mark.slow


def test_tiny_teacher_labels_distil_into_a_loadable_artifact(tmp_path, ray_local, vllm_server):
    warcs = sorted(str(p) for p in SAMPLE_WARCS.iterdir() if p.name.endswith((".warc.gz", ".warc")))
    cfg = load_config(None, [f"out={tmp_path}", "input.warcs=" + json.dumps(warcs), f"llm.url={vllm_server.url}",
                             "llm.model=tiny-llama", "annotate.sample=60", "annotate.consistency_sample=10"])
    extract_run(cfg, quiet=True)
    annotate_run(cfg, quiet=True)
    layout = RunLayout(tmp_path)
    labels = read_dataset(layout.dataset("labels"), schemas.LABELS).to_pylist()
    valid_scores = [r["quality_score"] for r in labels if r["task"] in ("quality", "labels") and r["error"] is None]

    out = tmp_path / "classifier"
    done = subprocess.run([sys.executable, "-m", "pipeline.cli", "distil", "--labels", str(layout.dataset("labels")),
                           "--docs", str(layout.dataset("docs")), "--out", str(out), "--set", "distil.min_labels=10",
                           "--set", "distil.bucket=50000", "--set", "distil.dim=32"],
                          capture_output=True, text=True)
    positives = sum(s >= 3 for s in valid_scores)
    if len(valid_scores) < 10 or min(positives, len(valid_scores) - positives) < 3:
        # a random teacher can put (nearly) every document in one class: then the refusal must say so
        assert done.returncode == 2 and "refusing to write a classifier" in done.stderr, done.stderr
        assert not out.exists()
        return
    assert done.returncode == 0, done.stderr
    clf = QualityClassifier.load(out)
    docs = read_dataset(layout.dataset("docs"), schemas.DOCS).column("text").to_pylist()
    scores = clf.score(docs)
    assert scores.shape == (len(docs),) and np.all((scores >= 0) & (scores <= 1))
    card = yaml.safe_load((out / "README.md").read_text().split("---")[1])
    assert card["teacher_model"] == sorted({r["model"] for r in labels if r["error"] is None})
    prompts = {(r["task"], r["prompt_id"], r["prompt_hash"]) for r in labels if r["error"] is None}
    assert {(p["task"], p["prompt_id"], p["prompt_hash"]) for p in card["prompts"]} == prompts
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["labels"]["quality_labels"] == len(valid_scores)
    assert metrics["labels"]["skipped"].get("label_error", 0) == sum(1 for r in labels if r["error"] is not None)
