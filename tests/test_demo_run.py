"""README Quickstart line 1, for real: `curate run jobs/configs/demo.yaml` runs the whole pipeline on the
bundled WARCs, starting and stopping its own tiny vLLM server; a rerun skips every stage; the sampling
notebook executes headless on the run's output."""

from __future__ import annotations

import itertools
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from demo import curate_demo
from pipeline import schemas
from pipeline.io import RunLayout, read_dataset

ROOT = Path(__file__).resolve().parents[1]
CURATE = Path(sys.executable).with_name("curate")
NOTEBOOK = ROOT / "notebooks" / "inspect_decisions.ipynb"
pytestmark = pytest.mark.slow


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}").exists() and "zombie" not in Path(f"/proc/{pid}/status").read_text().lower()


def _counts(report: dict) -> dict:
    return {stage: (s["input"], s["kept"], s["dropped"], s["errored"])
            for stage, s in {**report["stages"], **report["side_stages"]}.items()}


def test_demo_command_runs_every_stage_and_stops_its_server(demo_run):
    out, result = demo_run
    report = json.loads((out / "report.json").read_text())
    assert report["conserved"] and not report["problems"]
    chain = ["extract", "rules", "dedup", "safety", "classify"]
    assert set(report["stages"]) == set(chain)
    assert set(report["side_stages"]) == {"annotate", "rewrite", "tokenize"}  # tokenize: the demo's mix (below)
    # stages chain: each filtering stage read exactly what the previous one kept
    for before, after in itertools.pairwise(chain):
        assert report["stages"][after]["input"] == report["stages"][before]["kept"], (before, after)
    # the demo's safety fixtures at work: a blocked site, a benchmark leak, personal data redacted
    assert report["stages"]["extract"]["dropped"].get("blocked_url", 0) >= 2
    assert report["stages"]["safety"]["dropped"].get("contaminated", 0) >= 1
    assert sum(report["safety"]["pii_redacted"].values()) >= 1
    assert "benchmark decontamination: eval-sample" in result.stdout
    kept = report["stages"]["classify"]["kept"]
    assert 0 < kept < report["stages"]["classify"]["input"]  # the demo keeps about half (keep-rate target)
    assert report["annotate"]["ok"] > 0 and report["llm_noise"] is True

    layout = RunLayout(out)
    corpus = read_dataset(layout.dataset("corpus"), schemas.SCORED, columns=["doc_id"]).column("doc_id").to_pylist()
    assert len(corpus) == len(set(corpus)) == kept == report["kept_docs"]
    manifest = json.loads((out / "corpus" / "_manifest.json").read_text())
    assert sum(f["rows"] for f in manifest["files"]) == kept
    assert (out / "classifier" / "quality.bin").exists() and (out / "classifier" / "README.md").exists()
    assert (out / "synthetic" / "README.md").exists()
    texts = read_dataset(layout.dataset("corpus"), schemas.SCORED, columns=["text"]).column("text").to_pylist()
    words = sum(len(t.split()) for t in texts)
    assert sum(report["kept_words_by_quality_bucket"].values()) == sum(report["kept_words_by_topic"].values()) == words
    # tokens of the served model's own tokenizer (the tiny model's), every kept document counted
    from pipeline.llm.tokens import TokenCounter

    tokens = sum(TokenCounter(out / "tiny-llama").count_many(texts))
    by_bucket, by_topic = report["kept_tokens_by_quality_bucket"], report["kept_tokens_by_topic"]
    assert sum(by_bucket.values()) == sum(by_topic.values()) == tokens
    assert {k: v for k, v in report["token_count"].items() if k != "corpus"} == {
        "tokenizer": "tokenizer:tiny-llama", "exact_docs": kept, "docs": kept}

    # the printed summary: the table, the conservation lines, the noise warning, where the outputs are
    for stage in ("extract", "rules", "dedup", "annotate", "classify", "rewrite"):
        assert re.search(rf"conservation {stage}: .* \[ok\]", result.stdout), stage
    assert "kept tokens (tokenizer:tiny-llama) / words, by quality bucket" in result.stdout
    assert "noise by design" in result.stdout and f"corpus     {out / 'corpus'}" in result.stdout
    # the training mix: the corpus by topic, cut to the demo's budget best first, then tokenized in full
    mix = report["mix"]
    assert mix["target_tokens"] == 20_000 and mix["within_1pct"] and abs(mix["tokens"] - 20_000) <= 200
    assert mix["grouping"]["group_by"] == ["topic"] and set(mix["groups"]) == set(by_topic)
    for topic, group in mix["groups"].items():  # before: every kept document's tokens, plus its end-of-document token
        assert group["available"] == by_topic[topic] + group["docs"] and group["action"] == "cut"
    assert report["mix_tokens"]["tokens"] == mix["tokens"] and report["mix_tokens"]["documents"] == mix["rows"]
    assert report["side_stages"]["tokenize"]["input"] == report["side_stages"]["tokenize"]["kept"] == mix["rows"]
    tokens_manifest = json.loads((out / "tokens" / "_manifest.json").read_text())
    assert tokens_manifest["tokens"] == json.loads((out / "mix" / "_manifest.json").read_text())["tokens"]
    assert f"mix: {mix['tokens']:,} tokens of a 20,000 budget" in result.stdout
    assert "cut best first" in result.stdout and "training tokens:" in result.stdout
    # the server's log stays with the run (not in /tmp)
    assert (out / "_state" / "llm-server.log").stat().st_size > 0
    # the tiny server it started is gone
    pid = int(re.search(r"tiny vLLM server ready at http://127\.0\.0\.1:\d+/v1 \(pid (\d+)\)", result.stdout).group(1))
    assert not _pid_alive(pid)


def test_a_second_run_while_the_first_annotates_is_refused_and_harms_nothing(demo_run):
    out, result = demo_run
    intruder = result.intruder
    assert intruder is not None, "the demo never reached annotate"
    assert intruder.returncode == 2, intruder.stdout[-2000:] + intruder.stderr[-2000:]
    assert "is being written by another command" in intruder.stderr and "curate run" in intruder.stderr
    assert "Traceback" not in intruder.stderr
    report = json.loads((out / "report.json").read_text())
    assert report["annotate"]["errors"] == {} and report["annotate"]["ok"] == report["annotate"]["labels"]
    assert "stopped a vLLM server" not in result.stdout + intruder.stdout


def test_rerun_skips_finished_stages_and_changes_nothing(demo_run):
    out, _first = demo_run
    before = json.loads((out / "report.json").read_text())
    corpus_files = {p.name: p.stat().st_mtime_ns for p in (out / "corpus").iterdir()}
    mix_files = {p: p.stat().st_mtime_ns for folder in ("mix", "tokens") for p in (out / folder).rglob("*")}
    result = curate_demo(out)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "tiny vLLM server ready" not in result.stdout  # nothing left for the LLM to do
    assert "was trained on these labels with these settings, kept" in result.stdout
    after = json.loads((out / "report.json").read_text())
    assert _counts(after) == _counts(before)
    assert {p.name: p.stat().st_mtime_ns for p in (out / "corpus").iterdir()} == corpus_files
    # the same corpus, budget and tokenizer: nothing counted or tokenized again, mix/ and tokens/ untouched
    assert "(0 counted now); mix/ unchanged" in result.stdout and "(0 written now)" in result.stdout
    assert {p: p.stat().st_mtime_ns for folder in ("mix", "tokens") for p in (out / folder).rglob("*")} == mix_files


def test_sampling_notebook_executes_on_the_demo_output(demo_run, tmp_path):
    import nbformat
    from nbclient import NotebookClient

    out, _ = demo_run
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    assert not any(cell.get("outputs") for cell in notebook.cells if cell.cell_type == "code")  # stored clean
    os.environ["CURATE_RUN_DIR"] = str(out)
    try:
        NotebookClient(notebook, timeout=300, kernel_name="python3",
                       resources={"metadata": {"path": str(NOTEBOOK.parent)}}).execute()
    finally:
        del os.environ["CURATE_RUN_DIR"]
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) >= 3  # decisions bar chart, score histograms + scatter, topics kept vs dropped
    html_outputs = "".join(o.get("data", {}).get("text/html", "") for o in outputs)
    assert "<table" in html_outputs and "<script" not in html_outputs.lower()
    printed = "".join(o.get("text", "") for o in outputs if o.get("output_type") == "stream")
    assert f"run: {out.resolve()}" in printed and "extract: " in printed and "[ok]" in printed
    assert "MISMATCH" not in printed
    assert "mix: " in printed and "cut: " in printed  # the training mix section


def test_page_markup_is_escaped_in_rendered_samples():
    import pandas as pd

    from pipeline.inspect import render_html

    frame = pd.DataFrame({"url": ["https://x.test/<b>"], "text": ["<script>alert('x')</script><img src=x onerror=y>"]})
    rendered = render_html(frame, ["url", "text"])
    assert "<script" not in rendered and "<img" not in rendered and "<b>" not in rendered
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in rendered


def test_reusing_a_classifier_skips_annotate_and_distil(demo_run, tmp_path):
    out, _ = demo_run
    reuse = tmp_path / "reuse"
    result = subprocess.run(
        [str(CURATE), "run", "jobs/configs/demo.yaml", "--out", str(reuse),
         "--set", f"classify.classifier={out / 'classifier'}", "--set", "rewrite.enabled=false"],
        cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "[run] annotate" not in result.stdout and "[run] distil" not in result.stdout
    assert "vLLM server" not in result.stdout  # no LLM work left: no server started
    assert not (reuse / "labels").exists() and not (reuse / "classifier").exists()
    report = json.loads((reuse / "report.json").read_text())
    first = json.loads((out / "report.json").read_text())
    # same input, same classifier, same threshold: the same decisions
    assert _counts(report)["classify"] == _counts(first)["classify"]


def test_an_endpoint_that_does_not_answer_stops_the_run_before_any_request(tmp_path):
    import socket

    with socket.socket() as sock:  # a loopback port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    out = tmp_path / "run"
    result = subprocess.run([str(CURATE), "run", "jobs/configs/demo.yaml", "--out", str(out),
                             "--llm-url", f"http://127.0.0.1:{port}/v1"], cwd=ROOT, capture_output=True, text=True,
                            timeout=900)
    assert result.returncode == 2, result.stdout[-2000:] + result.stderr[-2000:]
    assert f"annotate: no LLM server answering at http://127.0.0.1:{port}/v1" in result.stderr
    assert "finished stages are kept" in result.stderr and "Traceback" not in result.stderr
    # extract and dedup finished and stay; nothing was labelled or recorded as a label error
    layout = RunLayout(out)
    assert layout.is_stage_done("extract") and layout.is_stage_done("dedup")
    assert not list(layout.dataset("labels").glob("*.parquet"))


def test_rerun_with_other_extraction_settings_is_refused_and_changes_nothing(demo_run):
    out, _ = demo_run
    before = (out / "report.json").read_text()
    result = subprocess.run([str(CURATE), "run", "jobs/configs/demo.yaml", "--out", str(out), "--set",
                             "extract.min_text_chars=500"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 2
    assert "extract.min_text_chars: 1 -> 500" in result.stderr and "Use another --out" in result.stderr
    assert (out / "report.json").read_text() == before
