"""`curate explain`: every page of a real demo run explained, its fate agreeing with the run's own accounting;
the facts of each stage (dedup survivor, LLM provenance, classifier threshold, corpus file); the lookups on a
hand-made run (doc_id, URL variants, rule checks, suggestions); and the command line."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline import schemas
from pipeline.explain import RowFinder, explain, explain_many, render_html, url_variants
from pipeline.io import RunLayout, read_dataset, write_parquet
from pipeline.stages import filter_stages


def curate(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pipeline.cli", *args], capture_output=True, text=True)


def _decisions(out: Path, stage: str) -> list[dict]:
    folder = RunLayout(out).decisions(stage)
    return read_dataset(folder, schemas.DECISIONS).to_pylist() if folder.is_dir() else []


@pytest.mark.slow
def test_every_page_of_the_demo_run_ends_where_the_report_says(demo_run):
    """Explaining every record of the run by doc_id gives, per stage and reason, exactly the report's counts,
    and every kept page names the corpus file that holds it."""
    out, _ = demo_run
    report = json.loads((out / "report.json").read_text())
    corpus = {}
    for path in sorted((out / "corpus").glob("part-*.parquet")):
        corpus.update((doc_id, path.name) for doc_id in pq.read_table(path, columns=["doc_id"]).column(0).to_pylist())
    doc_ids = sorted({d["doc_id"] for stage in filter_stages() for d in _decisions(out, stage)} | set(corpus))
    answers = explain_many(out, doc_ids)
    fates = Counter()
    for doc_id, answer in zip(doc_ids, answers):
        page = next(p for p in answer["pages"] if p["doc_id"] == doc_id)
        if page["fate_outcome"] == "kept":
            assert page["fate"] == f"kept in corpus/{corpus[doc_id]}"
        fates[(page["fate_stage"], page["fate_outcome"], page["fate_reason"])] += 1
    expected = Counter({(stage, outcome, reason): n for stage, counts in report["stages"].items()
                        for outcome in ("dropped", "errored") for reason, n in counts[outcome].items()})
    expected[("classify", "kept", None)] = report["stages"]["classify"]["kept"]
    assert fates == expected
    assert sum(fates.values()) == report["stages"]["extract"]["input"]  # every record of the input, once


@pytest.mark.slow
def test_stage_facts_of_the_demo_run(demo_run):
    out, _ = demo_run
    # a near-duplicate names its survivor, whose URL and cluster the answer gives
    dup = next(d for d in _decisions(out, "dedup") if d["duplicate_of"])
    page = next(p for p in explain(out, dup["url"])["pages"] if p["doc_id"] == dup["doc_id"])
    step = next(s for s in page["steps"] if s["stage"] == "dedup")
    assert step["status"] == "dropped" and step["facts"]["survivor_doc_id"] == dup["duplicate_of"]
    unique = {r["doc_id"]: r for r in read_dataset(out / "unique", schemas.UNIQUE).to_pylist()}
    survivor = unique[dup["duplicate_of"]]
    assert step["facts"]["survivor_url"] == survivor["url"]
    assert step["facts"]["dup_cluster_size"] == survivor["dup_cluster_size"] >= 2
    assert page["fate"] == f"dropped at dedup: {dup['reason']}"

    # a sampled page: the teacher's answer with its provenance, then the classifier's scores and threshold
    labels = read_dataset(out / "labels", schemas.LABELS).to_pylist()
    labelled = next(r for r in labels if r["error"] is None)
    page = explain(out, labelled["doc_id"])["pages"][0]
    by_stage = {s["stage"]: s for s in page["steps"]}
    answer = by_stage["annotate"]["facts"]["answers"][0]
    assert (answer["prompt_id"], answer["prompt_hash"], answer["model"]) == (
        labelled["prompt_id"], labelled["prompt_hash"], labelled["model"])
    assert answer["quality_score"] == labelled["quality_score"] and "sampling_params" in answer
    classify = by_stage["classify"]["facts"]
    scores = {r["doc_id"]: r for r in read_dataset(out / "scores", schemas.SCORED).to_pylist()}
    assert classify["quality_prob"] == pytest.approx(scores[labelled["doc_id"]]["quality_prob"], abs=1e-4)
    marker = json.loads(RunLayout(out).stage_marker("classify").read_text())
    assert classify["threshold"] == pytest.approx(marker["threshold"], abs=1e-4)
    assert (classify["quality_prob"] >= classify["threshold"]) == (by_stage["classify"]["status"] == "kept")

    # a page that went through rewrite lists each unit's outcome
    rewritten = {d["doc_id"] for d in _decisions(out, "rewrite")}
    rewritten |= set(read_dataset(out / "synthetic", schemas.SYNTHETIC).column("doc_id").to_pylist())
    corpus_ids = set(read_dataset(out / "corpus", schemas.SCORED).column("doc_id").to_pylist())
    doc_id = sorted(rewritten & corpus_ids)[0]
    page = explain(out, doc_id)["pages"][0]
    units = next(s for s in page["steps"] if s["stage"] == "rewrite")["facts"]["units"]
    made = sum(1 for r in read_dataset(out / "synthetic", schemas.SYNTHETIC).to_pylist() if r["doc_id"] == doc_id)
    assert len(units) == made + sum(1 for d in _decisions(out, "rewrite") if d["doc_id"] == doc_id)
    assert all(u["outcome"] in ("kept", "dropped", "errored") for u in units)
    assert page["fate_outcome"] == "kept"


@pytest.mark.slow
def test_command_line_text_json_and_a_url_that_matches_nothing(demo_run):
    out, _ = demo_run
    kept = read_dataset(out / "corpus", schemas.SCORED).to_pylist()[0]
    done = curate("explain", kept["url"], "--out", str(out))
    assert done.returncode == 0, done.stderr
    assert "fate: kept in corpus/part-" in done.stdout and kept["doc_id"] in done.stdout
    for stage in ("extract", "rules", "dedup", "classify"):
        assert f"  {stage} " in done.stdout
    as_json = json.loads(curate("explain", kept["doc_id"], "--out", str(out), "--json").stdout)
    assert as_json["pages"][0]["fate_outcome"] == "kept"

    missing = kept["url"].rstrip("/") + "/no-such-page"
    done = curate("explain", missing, "--out", str(out))
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "no page of this run matches" in done.stderr and kept["url"] in done.stderr  # same host, nearest

    done = curate("explain", "x", "--out", str(out / "not-a-run"))
    assert done.returncode == 2 and "not a run folder" in done.stderr


# ------------------------------------------------------------------------------------------ a hand-made run


def _doc(doc_id: str, url: str, **fields) -> dict:
    return {"doc_id": doc_id, "url": url, "text": f"text of {url}", "language": "en", "n_chars": 20,
            "rule_failures": [], **fields}


@pytest.fixture
def small_run(tmp_path):
    """extract: one page dropped, two kept; dedup: b is a duplicate of a; classify keeps a; no rules stage."""
    (tmp_path / "_state" / "classify").mkdir(parents=True)
    (tmp_path / "_state" / "classify" / "_STAGE_COMPLETE.json").write_text(
        json.dumps({"threshold": 0.5, "threshold_reason": "the test's threshold"}))
    a, b, c = "a" * 20, "b" * 20, "c" * 20
    docs = [_doc(a, "https://example.org/a/"), _doc(b, "https://example.org/b")]
    write_parquet(schemas.from_rows(docs, schemas.DOCS), tmp_path / "docs" / "part-0.parquet", schemas.DOCS)
    write_parquet(schemas.from_rows([{"doc_id": c, "stage": "extract", "outcome": "dropped", "reason": "no_text",
                                      "url": "https://example.org/c"}], schemas.DECISIONS),
                  tmp_path / "decisions" / "extract" / "part-0.parquet", schemas.DECISIONS)
    write_parquet(schemas.from_rows([{"doc_id": b, "stage": "dedup", "outcome": "dropped", "reason": "exact_duplicate",
                                      "url": docs[1]["url"], "duplicate_of": a}], schemas.DECISIONS),
                  tmp_path / "decisions" / "dedup" / "part-0.parquet", schemas.DECISIONS)
    unique = [{**docs[0], "dup_cluster_id": a, "dup_cluster_size": 2, "lines_removed": 0}]
    write_parquet(schemas.from_rows(unique, schemas.UNIQUE), tmp_path / "unique" / "part-0.parquet", schemas.UNIQUE)
    scored = [{**unique[0], "quality_prob": 0.9, "topics": ["science"], "topic_probs": [0.8]}]
    write_parquet(schemas.from_rows(scored, schemas.SCORED), tmp_path / "scores" / "part-0.parquet", schemas.SCORED)
    write_parquet(schemas.from_rows(scored, schemas.SCORED), tmp_path / "corpus" / "part-00000.parquet", schemas.SCORED)
    return tmp_path, a, b, c


def test_url_variants_doc_ids_and_fates(small_run):
    root, a, b, _c = small_run
    # the stored URL has a trailing slash, the query has not; http for https
    page, = explain(root, "http://example.org/a")["pages"]
    assert page["doc_id"] == a and page["fate"] == "kept in corpus/part-00000.parquet"
    assert [s["stage"] for s in page["steps"]] == ["extract", "rules", "dedup", "safety", "annotate", "classify"]
    assert page["steps"][3]["status"] == page["steps"][4]["status"] == "not_run"  # neither ran here
    page, = explain(root, b)["pages"]
    assert page["fate"] == "dropped at dedup: exact_duplicate"
    assert page["steps"][2]["facts"]["survivor_url"] == "https://example.org/a/"
    assert page["steps"][2]["facts"]["dup_cluster_size"] == 2
    page, = explain(root, "https://example.org/c")["pages"]
    assert page["fate"] == "dropped at extract: no_text" and len(page["steps"]) == 1


def test_no_match_suggests_the_nearest_urls_of_the_same_host(small_run):
    root, *_ = small_run
    answer = explain(root, "https://example.org/aa")
    assert answer["pages"] == [] and answer["suggestions"][0] == "https://example.org/a/"
    assert set(answer["suggestions"]) <= {"https://example.org/a/", "https://example.org/b", "https://example.org/c"}
    assert "No page of this run matches" in render_html(answer)
    # a host the run does not have: URLs of the nearest host names
    assert explain(root, "https://exampel.org/a")["suggestions"][0] == "https://example.org/a/"
    # an unknown doc_id has no "nearest"
    assert explain(root, "f" * 20) == {"query": "f" * 20, "pages": [], "records": [], "suggestions": []}


def test_rule_checks_name_every_metric_against_its_threshold(tmp_path):
    from pipeline.config import RulesConfig
    from pipeline.explain import rule_checks
    from pipeline.rules import CHECKS

    metrics = {check.metric: None for check in CHECKS}
    metrics.update(n_words=31, mean_word_length=4.5, stop_word_count=5, rules_applied=True)
    checks = {c["reason"]: c for c in rule_checks(metrics, RulesConfig())}
    short = checks["gopher_short_doc"]
    assert (short["metric"], short["value"], short["threshold"], short["kind"], short["passed"]) == (
        "n_words", 31, 50, "min", False)
    assert checks["gopher_long_doc"]["passed"] is True and checks["gopher_below_avg_threshold"]["passed"] is True
    assert checks["fineweb_line_punct_ratio"]["passed"] is None  # no value: not checked
    looser = {c["reason"]: c for c in rule_checks(metrics, RulesConfig(min_doc_words=30))}
    assert looser["gopher_short_doc"]["passed"] is True


def test_row_finder_reads_only_row_groups_that_can_hold_the_key(tmp_path):
    ids = [f"{i:020x}" for i in range(1000)]
    table = pa.table({"doc_id": ids, "text": ["x" * 100] * 1000})
    pq.write_table(table, tmp_path / "part-0.parquet", row_group_size=100)
    finder = RowFinder(tmp_path)
    reads = []
    original = pq.ParquetFile.read_row_group

    def counting(self, i, *args, **kwargs):
        reads.append(i)
        return original(self, i, *args, **kwargs)

    pq.ParquetFile.read_row_group = counting
    try:
        rows = finder.find("doc_id", [ids[555]], ["doc_id", "text"])
    finally:
        pq.ParquetFile.read_row_group = original
    assert [r["doc_id"] for r in rows] == [ids[555]] and rows[0]["_file"] == "part-0.parquet"
    assert reads == [5, 5]  # the key column of group 5, then its rows: the other nine groups are skipped


def test_url_variants():
    assert url_variants("https://a.org/x") == ["http://a.org/x", "http://a.org/x/", "https://a.org/x/"]
