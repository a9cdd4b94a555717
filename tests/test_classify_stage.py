"""The classify stages on Ray: scores for every document, keep/drop decisions with reasons, the kept corpus as
sharded Parquet with a manifest and a card, re-thresholding from stored scores, conservation, and an unusable
classifier refused before anything runs."""

from __future__ import annotations

import hashlib
import json
import math
import shutil
import subprocess
import sys
from itertools import pairwise
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from classifiers.distil import distil
from classifiers.extraction_benchmark import (
    ARTICLE_FORMAT,
    BOILERPLATE_FORMAT,
    as_teacher_labels,
    labelled_texts,
    load_pages,
    write_teacher_run,
)
from classifiers.labels import load_llm_labels
from pipeline import schemas
from pipeline.classify.thresholds import (
    THRESHOLD_GRID,
    stored_threshold_table,
    threshold_for_target,
    threshold_table,
)
from pipeline.config import DistilConfig, load_config
from pipeline.errors import CurateError
from pipeline.io import RunLayout, read_dataset, write_json, write_parquet
from pipeline.report import ShardStats, build_report
from pipeline.run import run_stages

BENCHMARK = Path(__file__).resolve().parents[1] / "data" / "extraction-benchmark"


@pytest.fixture(scope="module")
def classifier_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("teacher")
    # combined labels (score, topics and format per page): the classifier gets a topic and a format model
    write_teacher_run(root, labelled_texts(BENCHMARK, page_ids=sorted(load_pages(BENCHMARK))[:40]), combined=True)
    distil(load_llm_labels(root / "labels", root / "docs", 3),
           DistilConfig(bucket=50000, dim=32, tune_grid={"lr": [0.5, 1.0]}, variance_seeds=0),
           root / "classifier", quiet=True)
    return root / "classifier"


@pytest.fixture(scope="module")
def corpus_docs():
    """Documents of pages the classifier never saw, plus one without text."""
    items = labelled_texts(BENCHMARK, page_ids=sorted(load_pages(BENCHMARK))[40:])
    docs, _ = as_teacher_labels(items)
    docs.append({"doc_id": "empty-doc", "url": "https://benchmark.invalid/empty", "text": "", "n_chars": 0})
    return docs


def _write_inputs(folder: Path, docs: list[dict], schema, n_files: int = 3) -> None:
    size = math.ceil(len(docs) / n_files)
    for i in range(n_files):
        write_parquet(schemas.from_rows(docs[i * size:(i + 1) * size], schema), folder / f"part-{i}.parquet", schema)


def _cfg(root: Path, classifier: Path, *overrides: str):
    return load_config(None, [f"out={root}", f"classify.classifier={classifier}", "classify.num_actors=2",
                              "classify.batch_size=64", *overrides])


def _classify(cfg, docs: Path | None = None, **settings) -> tuple[dict, dict]:
    """Score and decide through the registry, as `curate classify` does: (the decide stage's summary, the score
    stage's). `docs` sets classify.docs; `settings` other classify fields (threshold=0.9, target_tokens=...)."""
    values = {f"classify.{name}": value for name, value in settings.items()}
    if docs is not None:
        values["classify.docs"] = str(docs)
    summaries = run_stages(cfg.updated(**values) if values else cfg, "classify-score", "classify", quiet=True)
    return summaries["classify"], summaries["classify-score"]


@pytest.fixture(scope="module")
def classified(tmp_path_factory, ray_local, classifier_dir, corpus_docs):
    root = tmp_path_factory.mktemp("classified")
    _write_inputs(root / "docs", corpus_docs, schemas.DOCS)
    cfg = _cfg(root, classifier_dir, "classify.rows_per_file=40", f"classify.docs={root / 'docs'}")
    result, _ = _classify(cfg)
    return root, cfg, result


def _manifest(root: Path) -> dict:
    return json.loads((root / "corpus" / "_manifest.json").read_text())


def test_every_document_scored_and_decided(classified, corpus_docs, classifier_dir):
    root, _, result = classified
    layout = RunLayout(root)
    scores = read_dataset(layout.dataset("scores"), schemas.SCORED)
    assert sorted(scores.column("doc_id").to_pylist()) == sorted(d["doc_id"] for d in corpus_docs)
    by_id = {row["doc_id"]: row for row in scores.to_pylist()}
    assert by_id["empty-doc"]["quality_prob"] is None
    threshold = yaml.safe_load((classifier_dir / "config.yaml").read_text())["quality"]["decision_threshold"]
    assert result["threshold"] == pytest.approx(threshold)
    for row in by_id.values():
        if row["doc_id"] != "empty-doc":
            assert 0 <= row["quality_prob"] <= 1
            assert 1 <= len(row["topics"]) == len(row["topic_probs"]) <= 3
            assert row["topic_probs"] == sorted(row["topic_probs"], reverse=True)
            assert 1 <= len(row["format"]) == len(row["format_probs"]) <= 2
            assert set(row["format"]) <= {ARTICLE_FORMAT, BOILERPLATE_FORMAT}
        assert row["dup_cluster_id"] is None  # read from docs/: dedup's columns are null
    decisions = read_dataset(layout.decisions("classify"), schemas.DECISIONS).to_pylist()
    reasons = {d["doc_id"]: d["reason"] for d in decisions}
    assert reasons.pop("empty-doc") == "no_text"
    below = {i for i, row in by_id.items() if row["quality_prob"] is not None and row["quality_prob"] < threshold}
    assert set(reasons) == below and set(reasons.values()) == {"below_quality"}
    assert all(d["stage"] == "classify" and d["outcome"] == "dropped" for d in decisions)
    assert result["kept"] == len(corpus_docs) - len(below) - 1
    # the held-out pages are article text and boilerplate: some of each side
    assert 0.2 < result["kept"] / len(corpus_docs) < 0.8


def test_corpus_has_the_distilled_format(classified, corpus_docs):
    """The format model learned the teacher's formats: on pages it never saw, the corpus's most probable
    format is the page's own kind (article text vs boilerplate) for most documents."""
    root, _, _ = classified
    corpus = read_dataset(root / "corpus", schemas.SCORED).to_pylist()
    assert corpus and all(row["format"] for row in corpus)
    expected = {d["doc_id"]: ARTICLE_FORMAT if "-article-" in d["doc_id"] else BOILERPLATE_FORMAT
                for d in corpus_docs}
    scores = read_dataset(RunLayout(root).dataset("scores"), schemas.SCORED).to_pylist()
    scored = [row for row in scores if row["format"]]
    agreement = sum(row["format"][0] == expected[row["doc_id"]] for row in scored) / len(scored)
    assert agreement > 0.8, agreement


def test_conservation_in_the_run_report(classified, corpus_docs):
    root, _, result = classified
    report = build_report(RunLayout(root))
    stage = report["stages"]["classify"]
    assert report["conserved"] and stage["conserved"]
    assert stage["input"] == len(corpus_docs) and stage["kept"] == result["kept"]
    assert stage["dropped"] == {"below_quality": result["below_quality"], "no_text": 1}
    assert stage["shards"] == 3


def test_corpus_is_sharded_parquet_with_manifest_and_card(classified):
    root, _, result = classified
    corpus = root / "corpus"
    manifest = _manifest(root)
    names = [f["file"] for f in manifest["files"]]
    assert names == [f"part-{i:05d}.parquet" for i in range(math.ceil(result["kept"] / 40))]
    assert sorted(p.name for p in corpus.glob("*.parquet")) == names
    assert not list(corpus.glob(".*"))  # no temporary files left
    assert manifest["rows"] == result["kept"] == sum(f["rows"] for f in manifest["files"])
    for entry in manifest["files"]:
        path = corpus / entry["file"]
        assert entry["rows"] <= 40 and pq.ParquetFile(path).metadata.num_rows == entry["rows"]
        assert entry["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
        assert pq.read_schema(path).equals(schemas.SCORED, check_metadata=False)
        assert pq.ParquetFile(path).metadata.row_group(0).column(0).compression == "ZSTD"
    card = (corpus / "README.md").read_text()
    header = yaml.safe_load(card.split("---")[1])
    assert header["quality_threshold"] == pytest.approx(result["threshold"])
    assert header["rows"] == result["kept"] and header["stages"]["classify"]["kept"] == result["kept"]
    assert header["classifier"]["teacher"] == ["extraction-benchmark-ground-truth"]
    assert "quality_prob" in card and "## Schema" in card


def test_corpus_reads_with_datasets_and_duckdb(classified):
    import datasets
    import duckdb

    root, _, result = classified
    pattern = str(root / "corpus" / "part-*.parquet")
    dataset = datasets.load_dataset("parquet", data_files=pattern, split="train",
                                    cache_dir=str(root / ".hf-cache"))
    assert dataset.num_rows == result["kept"]
    assert set(dataset.column_names) == set(schemas.SCORED.names)
    count, lowest = duckdb.sql(f"SELECT count(*), min(quality_prob) FROM read_parquet('{pattern}')").fetchall()[0]
    assert count == result["kept"] and lowest >= result["threshold"] - 1e-6


def test_rethreshold_rewrites_decisions_and_corpus_without_the_model(classified, tmp_path):
    root, cfg, result = classified
    layout = RunLayout(root)
    scores_before = {p.name: p.stat().st_mtime_ns for p in layout.dataset("scores").glob("*.parquet")}
    classifier = Path(cfg.classify.classifier)
    hidden = tmp_path / "moved-away"
    classifier.rename(hidden)  # the model is not available: re-deciding must not need it
    try:
        done = subprocess.run([sys.executable, "-m", "pipeline.cli", "classify", "--out", str(root),
                               "--rethreshold", "0.9"], capture_output=True, text=True)
    finally:
        hidden.rename(classifier)
    assert done.returncode == 0, done.stderr
    assert "conservation classify" in done.stdout
    scores = read_dataset(layout.dataset("scores"), schemas.SCORED).to_pylist()
    expected = sorted(r["doc_id"] for r in scores if r["quality_prob"] is not None and r["quality_prob"] >= 0.9)
    corpus = read_dataset(layout.dataset("corpus"), schemas.SCORED)
    assert sorted(corpus.column("doc_id").to_pylist()) == expected
    assert 0 < len(expected) < result["kept"]
    decisions = read_dataset(layout.decisions("classify"), schemas.DECISIONS)
    assert decisions.num_rows == len(scores) - len(expected)
    assert {p.name: p.stat().st_mtime_ns for p in layout.dataset("scores").glob("*.parquet")} == scores_before
    assert build_report(layout)["stages"]["classify"]["kept"] == len(expected)
    assert yaml.safe_load((root / "corpus" / "README.md").read_text().split("---")[1])["quality_threshold"] == 0.9
    # back to the card's threshold: the same corpus as the first run, byte for byte
    first, scored = _classify(cfg)
    assert scored["shards_run"] == 0  # stored scores reused
    assert first["files"] == result["files"]


def test_rethreshold_without_scores_or_classifier_says_what_to_do(tmp_path):
    """Nothing scored and no classifier to score with: the score stage stops before anything, naming the
    classifier folder it looked for."""
    done = subprocess.run([sys.executable, "-m", "pipeline.cli", "classify", "--out", str(tmp_path),
                           "--rethreshold", "0.5"], capture_output=True, text=True)
    assert done.returncode == 2 and "config.yaml is missing" in done.stderr
    assert str(tmp_path / "classifier") in done.stderr and "Traceback" not in done.stderr


def test_byte_target_splits_files(tmp_path, ray_local, classifier_dir, corpus_docs):
    _write_inputs(tmp_path / "docs", corpus_docs, schemas.DOCS, n_files=2)
    cfg = _cfg(tmp_path, classifier_dir, "classify.bytes_per_file=40000", "classify.threshold=0.0")
    result, _ = _classify(cfg, tmp_path / "docs")
    files = _manifest(tmp_path)["files"]
    assert result["kept"] == len(corpus_docs) - 1  # threshold 0 keeps everything with text
    assert len(files) >= 2 and sum(f["rows"] for f in files) == result["kept"]
    # every file but the last reached the target; the overshoot is at most a row group plus the footer
    assert all(40000 <= f["bytes"] <= 40000 * 1.5 for f in files[:-1]), files
    assert files[-1]["bytes"] <= 40000 * 1.5


def test_unique_input_keeps_dedup_columns_and_matches_the_previous_stage(tmp_path, ray_local, classifier_dir,
                                                                          corpus_docs):
    unique = [{**d, "dup_cluster_id": f"c-{i}", "dup_cluster_size": 1 + i % 2, "lines_removed": 0}
              for i, d in enumerate(corpus_docs)]
    _write_inputs(tmp_path / "unique", unique, schemas.UNIQUE, n_files=2)
    # the dedup stage's stats: its kept count is what classify must read
    layout = RunLayout(tmp_path)
    write_json(ShardStats(stage="dedup", shard="all", source="docs", input=len(unique) + 5, kept=len(unique),
                          dropped={"exact_duplicate": 5}).to_json(), layout.marker("dedup", "all"))
    write_json({"stage": "dedup"}, layout.stage_marker("dedup"))
    result, _ = _classify(_cfg(tmp_path, classifier_dir))  # default input: <out>/unique
    corpus = read_dataset(layout.dataset("corpus"), schemas.SCORED).to_pylist()
    assert len(corpus) == result["kept"] and all(r["dup_cluster_id"].startswith("c-") for r in corpus)
    report = build_report(layout)
    assert report["conserved"] and report["stages"]["classify"]["input"] == report["stages"]["dedup"]["kept"]


def test_a_different_classifier_rescores_the_same_classifier_does_not(tmp_path, ray_local, classifier_dir,
                                                                        corpus_docs):
    _write_inputs(tmp_path / "docs", corpus_docs[:60], schemas.DOCS, n_files=2)
    _, first = _classify(_cfg(tmp_path, classifier_dir), tmp_path / "docs")
    _, again = _classify(_cfg(tmp_path, classifier_dir), tmp_path / "docs")
    assert (first["shards_run"], again["shards_run"]) == (2, 0)
    other = tmp_path / "other-classifier"
    shutil.copytree(classifier_dir, other)
    (other / "config.yaml").write_text((other / "config.yaml").read_text() + "# another model\n")
    decided, changed = _classify(_cfg(tmp_path, other), tmp_path / "docs")
    assert changed["shards_run"] == 2
    # the corpus manifest names the classifier whose scores made it (rewrite scores its rewrites with it)
    assert _manifest(tmp_path)["classifier"] == {"path": str(other), "fingerprint": changed["classifier_fingerprint"]}
    assert decided["classifier"] == str(other)


def test_a_classifier_without_its_model_file_is_refused_before_anything_is_written(tmp_path, ray_local,
                                                                                     classifier_dir, corpus_docs):
    _write_inputs(tmp_path / "docs", corpus_docs[:20], schemas.DOCS, n_files=1)
    broken = tmp_path / "broken-classifier"
    shutil.copytree(classifier_dir, broken)
    model_file = yaml.safe_load((broken / "config.yaml").read_text())["quality"]["model_file"]
    (broken / model_file).unlink()
    out = tmp_path / "run"
    with pytest.raises(CurateError) as caught:
        _classify(_cfg(out, broken), tmp_path / "docs")
    message = str(caught.value)
    assert model_file in message and str(broken) in message
    assert "\n" not in message and "Traceback" not in message and "Actor" not in message
    # no scores, markers, settings or corpus (the runner has only checked that it can write in the folder)
    assert not out.exists() or not [p for p in out.rglob("*") if p.is_file()]
    # the command says the same in one line, exit 2
    done = subprocess.run([sys.executable, "-m", "pipeline.cli", "classify", "--out", str(out), "--docs",
                           str(tmp_path / "docs"), "--classifier", str(broken)], capture_output=True, text=True)
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().count("\n") == 0 and model_file in done.stderr and "Traceback" not in done.stderr
    assert not [p for p in out.rglob("*") if p.is_file()]


# ------------------------------------------------------------------ choosing the threshold by what it keeps


def test_threshold_table_on_a_hand_made_example():
    probs = [0.1, 0.4, 0.4, 0.9, None]  # the last document had no text: never kept, but counted in the rate
    tokens = [10, 20, 30, 40, 99]
    held_probs, held_labels = [0.3, 0.6, 0.95, 0.2], [False, True, True, True]
    rows = threshold_table(probs, tokens, [0.2, 0.5, 0.99], chosen=0.4, heldout_probs=held_probs,
                           heldout_labels=held_labels)
    assert [r["threshold"] for r in rows] == pytest.approx([0.2, 0.4, 0.5, 0.99])
    assert [r["chosen"] for r in rows] == [False, True, False, False]
    assert [r["kept_docs"] for r in rows] == [3, 3, 1, 0]
    assert [r["keep_rate"] for r in rows] == pytest.approx([0.6, 0.6, 0.2, 0.0])
    assert [r["kept_tokens"] for r in rows] == [90, 90, 40, 0]
    # held-out: 0.2 keeps 0.3 (neg), 0.6, 0.95, 0.2 (pos) -> 3 tp of 4 kept, 3 of 3 positives
    assert [r["precision"] for r in rows[:3]] == pytest.approx([3 / 4, 1.0, 1.0])
    assert rows[-1]["precision"] is None  # nothing held out kept: precision undefined
    assert [r["recall"] for r in rows] == pytest.approx([1.0, 2 / 3, 2 / 3, 0.0])
    # a threshold is compared as classify compares it (float32): a score equal to it is kept
    assert threshold_table([0.3], [5], [0.3])[0]["kept_docs"] == 1
    # the chosen threshold on the grid is one row, marked; without held-out labels, no precision/recall
    rows = threshold_table(probs, tokens, [0.2, 0.5], chosen=0.5)
    assert [(r["threshold"], r["chosen"], r["precision"], r["recall"]) for r in rows] == [
        (pytest.approx(0.2), False, None, None), (pytest.approx(0.5), True, None, None)]
    assert len(threshold_table(probs, tokens)) == len(THRESHOLD_GRID) == 19


def test_threshold_for_target_keeps_the_closest_amount():
    probs = [0.1, 0.4, 0.4, 0.9, None]
    tokens = [10, 20, 30, 40, 99]
    # kept when lowering the threshold: 0.9 -> 40, 0.4 -> 90 (both 0.4s together), 0.1 -> 100
    assert threshold_for_target(probs, tokens, 60) == (pytest.approx(0.9), 40)
    assert threshold_for_target(probs, tokens, 70) == (pytest.approx(0.4), 90)
    assert threshold_for_target(probs, tokens, 10**6) == (pytest.approx(0.1), 100)
    assert threshold_for_target(probs, tokens, 1) == (pytest.approx(0.9), 40)  # the best are kept
    assert threshold_for_target(probs, tokens, 65) == (pytest.approx(0.9), 40)  # a tie: fewer kept
    assert threshold_for_target(probs, [1] * 5, 0.5 * 5) == (pytest.approx(0.4), 3)
    with pytest.raises(CurateError, match="no scored documents"):
        threshold_for_target([None, float("nan")], [1, 1], 1)


def _header(root: Path) -> dict:
    return yaml.safe_load((root / "corpus" / "README.md").read_text().split("---")[1])


def test_card_and_summary_report_what_each_threshold_keeps(classified):
    root, _, result = classified
    table = result["threshold_table"]
    assert len(table) == len(THRESHOLD_GRID) + 1  # the card's threshold is not on the grid
    chosen = [r for r in table if r["chosen"]]
    assert len(chosen) == 1 and chosen[0]["threshold"] == pytest.approx(result["threshold"])
    assert chosen[0]["kept_docs"] == result["kept"]
    assert chosen[0]["keep_rate"] == pytest.approx(result["kept"] / result["input"])
    for before, after in pairwise(table):
        assert before["threshold"] < after["threshold"]
        assert before["kept_docs"] >= after["kept_docs"] and before["kept_tokens"] >= after["kept_tokens"]
        assert before["recall"] >= after["recall"]
    # the shipped classifier is refit on every label: the held-out documents' scores are the held-out model's
    # (recorded by distil), never the refit model's, and the note says so
    notes = result["threshold_notes"]
    assert notes["heldout_docs"] > 0 and "scored by the held-out model" in notes["heldout"]
    assert all(r["precision"] is not None or r["kept_docs"] == 0 for r in table)
    assert "tokens per character" in notes["tokens"] and notes["tokens_per_char"] > 0
    assert result["threshold_reason"] == "classifier card's threshold"
    assert _header(root)["threshold_chosen_by"] == "classifier card's threshold"
    card = (root / "corpus" / "README.md").read_text()
    assert "## Threshold" in card and "| threshold | keep rate | kept docs | kept tokens | precision | recall |" in card
    assert f"| {result['threshold']:.4f} **(chosen)** | " in card
    assert stored_threshold_table(root)["rows"] == table


def test_heldout_precision_and_recall_come_from_the_stored_scores_of_the_teachers_documents(
        tmp_path, ray_local, classifier_dir):
    """The held-out documents' precision and recall at the card's threshold equal the classifier's metrics.json:
    they come from the held-out model's scores (the shipped model is refit on them), not the stored scores."""
    cfg = _cfg(tmp_path / "run", classifier_dir)
    result, _ = _classify(cfg, classifier_dir.parent / "docs")
    metrics = json.loads((classifier_dir / "metrics.json").read_text())["quality"]
    notes = result["threshold_notes"]
    assert notes["heldout_docs"] == metrics["n"] and "scored by the held-out model" in notes["heldout"]
    chosen = next(r for r in result["threshold_table"] if r["chosen"])
    assert chosen["precision"] == pytest.approx(metrics["precision"])
    assert chosen["recall"] == pytest.approx(metrics["recall"])


def _copy_run(root: Path, dest: Path) -> Path:
    shutil.copytree(root, dest, ignore=shutil.ignore_patterns(".hf-cache"))
    return dest


def _mtimes(folder: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}


def _shard_mtimes(folder: Path) -> dict[str, int]:
    return {name: mtime for name, mtime in _mtimes(folder).items() if not name.startswith("_")}


def _tokens_kept(scores: list[dict], threshold: float, ratio: float) -> float:
    import numpy as np

    return sum((r["n_chars"] or 0) * ratio for r in scores
               if r["quality_prob"] is not None and np.float32(r["quality_prob"]) >= np.float32(threshold))


def _redecide_by_cli(root: Path, classifier: Path, tmp_path: Path, capsys, *flags: str) -> tuple[dict, str]:
    """`curate classify --out ROOT FLAGS` in this process, with the classifier moved away (no model can run);
    the scores and the score stage's shard markers must not change (the stage finds every file scored)."""
    from pipeline.cli import main

    layout = RunLayout(root)
    scores_before = _mtimes(layout.dataset("scores"))
    markers_before = _shard_mtimes(layout.state("classify-score"))
    hidden = tmp_path / "moved-away"
    classifier.rename(hidden)
    try:
        code = main(["classify", "--out", str(root), *flags])
    finally:
        hidden.rename(classifier)
    printed = capsys.readouterr().out
    assert code == 0
    assert _mtimes(layout.dataset("scores")) == scores_before
    assert _shard_mtimes(layout.state("classify-score")) == markers_before
    return json.loads(layout.stage_marker("classify").read_text()), printed


def _check_decided_at(root: Path, summary: dict) -> list[dict]:
    import numpy as np

    layout = RunLayout(root)
    scores = read_dataset(layout.dataset("scores"), schemas.SCORED).to_pylist()
    t = np.float32(summary["threshold"])
    expected = sorted(r["doc_id"] for r in scores
                      if r["quality_prob"] is not None and np.float32(r["quality_prob"]) >= t)
    assert sorted(read_dataset(layout.dataset("corpus"), schemas.SCORED).column("doc_id").to_pylist()) == expected
    assert read_dataset(layout.decisions("classify"), schemas.DECISIONS).num_rows == len(scores) - len(expected)
    assert summary["kept"] == len(expected) and build_report(layout)["conserved"]
    header = _header(root)
    assert header["quality_threshold"] == pytest.approx(summary["threshold"])
    assert header["threshold_chosen_by"] == summary["threshold_reason"]
    assert f"Chosen by {summary['threshold_reason']}." in (root / "corpus" / "README.md").read_text()
    return scores


def test_target_tokens_redecides_from_the_stored_scores(classified, tmp_path, capsys):
    source, cfg, result = classified
    root = _copy_run(source, tmp_path / "run")
    chosen = next(r for r in result["threshold_table"] if r["chosen"])
    target = chosen["kept_tokens"] // 2
    summary, printed = _redecide_by_cli(root, Path(cfg.classify.classifier), tmp_path, capsys,
                                        "--target-tokens", str(target))
    scores = _check_decided_at(root, summary)
    ratio = summary["threshold_notes"]["tokens_per_char"]
    kept = _tokens_kept(scores, summary["threshold"], ratio)
    assert summary["threshold_reason"] == (f"target_tokens={target}: kept {round(kept)} tokens at threshold "
                                           f"{summary['threshold']:.4f}")
    # about the target: no other threshold keeps closer to it (brute force over every score)
    candidates = {r["quality_prob"] for r in scores if r["quality_prob"] is not None}
    best = min(abs(_tokens_kept(scores, t, ratio) - target) for t in candidates)
    assert abs(kept - target) == pytest.approx(best)
    assert 0 < summary["kept"] < result["kept"]
    row = next(r for r in summary["threshold_table"] if r["chosen"])
    assert row["kept_tokens"] == round(kept) and row["kept_docs"] == summary["kept"]
    # no classifier folder: no held-out labels, and the card and the summary say so
    assert "no held-out labels" in summary["threshold_notes"]["heldout"]
    assert summary["threshold_reason"] in printed and "kept tokens" in printed and "<- chosen" in printed


def test_target_keep_rate_redecides_from_the_stored_scores(classified, tmp_path, capsys):
    source, cfg, _result = classified
    root = _copy_run(source, tmp_path / "run")
    summary, printed = _redecide_by_cli(root, Path(cfg.classify.classifier), tmp_path, capsys,
                                        "--target-keep-rate", "0.3")
    scores = _check_decided_at(root, summary)
    n = len(scores)
    assert summary["threshold_reason"] == (f"target_keep_rate=0.3: kept {summary['kept']} of {n} documents "
                                           f"({summary['kept'] / n:.4f}) at threshold {summary['threshold']:.4f}")
    probs = sorted(r["quality_prob"] for r in scores if r["quality_prob"] is not None)
    best = min(abs(sum(p >= t for p in probs) - 0.3 * n) for t in set(probs))
    assert abs(summary["kept"] - 0.3 * n) == pytest.approx(best) and best <= 1
    assert summary["threshold_reason"] in printed
    # an explicit threshold afterwards: decided again, and the card says it was classify.threshold
    summary, _ = _redecide_by_cli(root, Path(cfg.classify.classifier), tmp_path, capsys, "--rethreshold", "0.5")
    assert summary["threshold_reason"] == "classify.threshold" and summary["threshold"] == 0.5
    _check_decided_at(root, summary)


def test_ways_of_choosing_the_threshold_are_mutually_exclusive(classified, tmp_path, capsys):
    from pipeline.cli import main
    from pipeline.config import ConfigError

    with pytest.raises(ConfigError, match="classify.threshold, classify.target_keep_rate are mutually exclusive"):
        load_config(None, ["classify.threshold=0.5", "classify.target_keep_rate=0.2"])
    with pytest.raises(ConfigError, match="classify.target_tokens, classify.target_keep_rate"):
        load_config(None, ["classify.target_tokens=10", "classify.target_keep_rate=0.2"])
    root, cfg, _ = classified
    code = main(["classify", "--out", str(root), "--rethreshold", "0.5", "--target-tokens", "100"])
    assert code == 2
    assert "classify.threshold, classify.target_tokens are mutually exclusive" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="classify.threshold, classify.target_tokens"):
        _cfg(root, Path(cfg.classify.classifier), "classify.threshold=0.5").updated(**{"classify.target_tokens": 100})
