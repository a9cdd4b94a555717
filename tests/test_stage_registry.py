"""A stage is one module and one registry line: a stage defined only in this test, registered after dedup,
runs inside `curate run`; the later stages read its output, and the report's conservation chain, `curate
explain` and the run summary all see it, with nothing else changed."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from pipeline import schemas, stages
from pipeline.cli import main
from pipeline.runtime import DOCUMENTS, Input, Output, Shard, ShardResult, Stage
from stagehelpers import quick_classifier

ROOT = Path(__file__).resolve().parents[1]
SAMPLE_WARCS = ROOT / "data" / "sample" / "warc"
MIN_CHARS = 2000


class LongOnlyStage(Stage):
    """Keeps the documents of at least MIN_CHARS characters; drops the others with a reason and a detail."""

    name = "long-only"
    inputs = (Input(DOCUMENTS),)
    outputs = (Output("long", schemas.UNIQUE),)
    unit = "file"

    def plan(self) -> list[Shard]:
        return [Shard(key=path.stem, source=str(path)) for path in sorted(self.input_folder().glob("*.parquet"))]

    def process(self, worker, shard: Shard) -> ShardResult:
        stats = self.new_stats(shard)
        rows, decisions = [], []
        for doc in pq.read_table(shard.source).to_pylist():
            stats.input += 1
            if len(doc["text"] or "") < MIN_CHARS:
                stats.drop("too_short_for_test")
                decisions.append({"doc_id": doc["doc_id"], "stage": self.name, "outcome": schemas.DROPPED,
                                  "reason": "too_short_for_test", "detail": f"{len(doc['text'] or '')} < {MIN_CHARS}",
                                  "url": doc["url"], "source": shard.source})
            else:
                stats.kept += 1
                rows.append(doc)
        return ShardResult(rows={"long": rows}, decisions=decisions, stats=stats)


@pytest.fixture(scope="module")
def registered_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("registry")
    classifier = quick_classifier(root)
    before = dict(stages.STAGES)
    stages.register("long-only", LongOnlyStage, after="dedup")  # the one registry line
    try:
        warcs = json.dumps([str(SAMPLE_WARCS / "*.warc.gz")])
        code = main(["run", "--out", str(root / "run"), "--set", f"input.warcs={warcs}", "--set", "ray.executor=local",
                     "--set", "dedup.num_partitions=2", "--set", f"classify.classifier={classifier}",
                     "--set", "rewrite.enabled=false", "--set", "llm.serve_tiny_model=false",
                     "--set", "pii.mode=off"])  # the safety stage off: the chain is dedup -> long-only -> classify
        assert code == 0
        yield root / "run"
    finally:
        stages.STAGES = before


def _rows(folder: Path, columns: list[str]) -> list[dict]:
    return [r for f in sorted(folder.glob("*.parquet")) for r in pq.read_table(f, columns=columns).to_pylist()]


def test_the_registered_stage_runs_between_dedup_and_classify_and_is_conserved(registered_run):
    report = json.loads((registered_run / "report.json").read_text())
    assert set(report["stages"]) == {"extract", "rules", "dedup", "long-only", "classify"}
    assert report["conserved"] and not report["problems"]
    mine = report["stages"]["long-only"]
    assert mine["input"] == report["stages"]["dedup"]["kept"]
    assert report["stages"]["classify"]["input"] == mine["kept"]  # the chain runs through the new stage
    assert 0 < mine["dropped"]["too_short_for_test"] < mine["input"]
    dropped = _rows(registered_run / "decisions" / "long-only", ["doc_id", "reason"])
    assert len(dropped) == mine["dropped"]["too_short_for_test"]
    # classify scored the new stage's documents, not unique/
    assert {r["doc_id"] for r in _rows(registered_run / "scores", ["doc_id"])} == \
        {r["doc_id"] for r in _rows(registered_run / "long", ["doc_id"])}
    assert "long" in report["outputs"]


def test_explain_walks_the_registered_stage(registered_run, capsys):
    dropped = _rows(registered_run / "decisions" / "long-only", ["doc_id"])[0]["doc_id"]
    kept = _rows(registered_run / "long", ["doc_id"])[0]["doc_id"]
    capsys.readouterr()
    main(["explain", dropped, kept, "--out", str(registered_run), "--json"])
    answers = json.loads(capsys.readouterr().out)
    first, second = (answer["pages"][0] for answer in answers)
    assert (first["fate_stage"], first["fate_outcome"], first["fate_reason"]) == \
        ("long-only", "dropped", "too_short_for_test")
    ran = [s for s in second["steps"] if s["status"] != "not_run"]  # no LLM labels in this run
    assert [s["stage"] for s in ran] == ["extract", "rules", "dedup", "long-only", "classify"]
    assert ran[3]["status"] == "passed" and ran[3]["facts"]["file"].startswith("long/")
    assert second["fate_outcome"] in ("kept", "dropped") and second["fate_stage"] == "classify"
