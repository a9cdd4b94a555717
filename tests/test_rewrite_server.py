"""The rewrite stage end to end against the real tiny vLLM server (session fixture), on pages extracted from
the bundled real WARC files by the real extract stage.

The tiny model has random weights: its answers are noise (at temperature 0, a run of newlines until the
token limit), so every rewrite it makes fails a check. These tests assert routing, chunking, requests
actually served, accounting and the response cache, not content; the checks themselves, and what a passing
rewrite looks like in synthetic/, are tested against a scripted stub in test_rewrite_checks.py.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from pipeline import rewrite, schemas
from pipeline.cli import main as curate
from pipeline.config import load_config
from pipeline.io import RunLayout, read_dataset, write_parquet
from pipeline.llm.client import LLMUnavailable
from pipeline.llm.server import fetch_metrics, requests_served
from pipeline.llm.tokens import TokenCounter
from pipeline.report import build_report
from pipeline.rewrite.checks import (
    COPIED_INPUT,
    EMPTY_OUTPUT,
    LANGUAGE_MISMATCH,
    LOW_REWRITE_QUALITY,
    QA_UNPARSEABLE,
    TRUNCATED_OUTPUT,
    UNFAITHFUL_REWRITE,
)
from pipeline.rewrite.chunking import chunk_text, split_paragraphs
from stagehelpers import extract_run, rewrite_run

SAMPLE_WARCS = Path(__file__).resolve().parents[1] / "data" / "sample" / "warc"
CHUNK_TOKENS = 256
MAX_CHUNKS = 40
CHECK_REASONS = {EMPTY_OUTPUT, TRUNCATED_OUTPUT, QA_UNPARSEABLE, COPIED_INPUT, LANGUAGE_MISMATCH, UNFAITHFUL_REWRITE,
                 LOW_REWRITE_QUALITY}


@pytest.fixture(scope="module")
def real_corpus(tmp_path_factory, ray_local):
    """A classify-shaped corpus (schemas.SCORED, two part files) of real extracted pages, with quality_prob
    values set to exercise every route: the longest English page high, one English page mid, one below the
    threshold, a short Chinese page high, and a Chinese page too long to rewrite."""
    root = tmp_path_factory.mktemp("rewrite-extract")
    warcs = [str(SAMPLE_WARCS / "sample-0000.warc.gz"), str(SAMPLE_WARCS / "warcfile.warc.gz")]
    cfg = load_config(None, [f"out={root}", f"input.warcs={json.dumps(warcs)}"])
    extract_run(cfg, quiet=True)
    docs = read_dataset(RunLayout(root).dataset("docs"), schemas.DOCS).to_pylist()
    english = sorted((d for d in docs if d["language"] == "en"), key=lambda d: -d["n_chars"])
    chinese = sorted((d for d in docs if d["language"] == "zh"), key=lambda d: d["n_chars"])
    picked = [(english[0], 0.92), (english[3], 0.4), (english[4], 0.05), (chinese[1], 0.75), (chinese[-1], 0.95)]
    rows = [{**doc, "quality_prob": prob, "topics": [], "topic_probs": []} for doc, prob in picked]
    table = schemas.from_rows(rows, schemas.SCORED)
    folder = root / "corpus"
    write_parquet(table.slice(0, 3), folder / "part-00000.parquet", schemas.SCORED)
    write_parquet(table.slice(3), folder / "part-00001.parquet", schemas.SCORED)
    return folder, rows


def settings(out, server, tiny_model_dir) -> list[str]:
    return [f"out={out}", f"llm.url={server.url}", f"llm.tiny_model_dir={tiny_model_dir}",
            # this corpus has no classifier (the scores are tested in test_rewrite_checks.py)
            "rewrite.min_quality_prob=null",
            "rewrite.mid_threshold=0.2", "rewrite.high_threshold=0.6", f"rewrite.chunk_tokens={CHUNK_TOKENS}",
            f"rewrite.max_chunks_per_doc={MAX_CHUNKS}", "rewrite.shard_size=2",
            "rewrite.max_output_tokens={rewrite_wiki: 16, qa_pairs: 16, distill: 12, knowledge_list: 12}"]


def outcomes(layout: RunLayout) -> dict[tuple[str, str | None], str]:
    """{(doc_id, prompt id or None): "kept" or the reason} over decisions/rewrite and synthetic/."""
    result = {}
    for row in read_dataset(layout.decisions("rewrite"), schemas.DECISIONS).to_pylist():
        style = row["detail"].split(";", 1)[0].removeprefix("style=") if row["detail"].startswith("style=") else None
        assert (row["doc_id"], style) not in result, "one decision per unit"
        result[(row["doc_id"], style)] = row["reason"]
    for row in read_dataset(layout.dataset("synthetic"), schemas.SYNTHETIC).to_pylist():
        result[(row["doc_id"], row["prompt_id"])] = "kept"
    return result


@pytest.mark.slow
def test_rewrite_routes_chunks_accounts_and_reruns_from_the_cache(tmp_path, real_corpus, vllm_server, tiny_model_dir):
    corpus, docs = real_corpus
    cfg = load_config(None, settings(tmp_path / "run", vllm_server, tiny_model_dir))
    counter = TokenCounter(tiny_model_dir)

    # what each page should cost: its routed styles x its chunks, counted with the served model's tokenizer
    expected_units: dict[tuple[str, str | None], str | None] = {}
    expected_requests = 0
    for doc in docs:
        styles = rewrite.route(doc["quality_prob"], cfg.rewrite)
        if not isinstance(styles, list):
            expected_units[(doc["doc_id"], None)] = styles.reason
            continue
        chunks = chunk_text(doc["text"], CHUNK_TOKENS, counter)
        too_long = len(chunks) > MAX_CHUNKS
        expected_units.update({(doc["doc_id"], s): "source_too_long" if too_long else None for s in styles})
        expected_requests += 0 if too_long else len(chunks) * len(styles)

    # chunking of the long real page: whole paragraphs, in order, within the budget
    long_page = docs[0]["text"]
    chunks = chunk_text(long_page, CHUNK_TOKENS, counter)
    paragraphs = split_paragraphs(long_page)
    assert 5 <= len(chunks) <= MAX_CHUNKS
    assert all(n <= CHUNK_TOKENS for n in counter.count_many(chunks))
    assert "\n".join(chunks) == "\n".join(paragraphs)
    chunk_lines = {line for chunk in chunks for line in chunk.split("\n")}
    assert all(p in chunk_lines for p in paragraphs if counter.count(p) <= CHUNK_TOKENS)

    served_before = requests_served(fetch_metrics(vllm_server.url))
    summary = rewrite_run(cfg, corpus, quiet=True)
    served = requests_served(fetch_metrics(vllm_server.url)) - served_before

    # every request was answered by the real server, one per (page, style, chunk), nothing repeated
    assert summary["complete"] and summary["requests"] == expected_requests == served
    assert summary["this_run"]["http_requests"] == expected_requests and summary["this_run"]["cache_hits"] == 0
    assert summary["this_run"]["completion_tokens"] > 0 and summary["tokenizer"] == counter.name

    # routing: each page ends in exactly the units its score asks for, each kept or with a reason
    layout = RunLayout(cfg.out)
    first = outcomes(layout)
    assert set(first) == set(expected_units)
    for unit, reason in expected_units.items():
        if reason is not None:  # below the threshold, or too long
            assert first[unit] == reason
        else:  # noise from a random model: kept, or dropped by one of the output checks
            assert first[unit] == "kept" or first[unit] in CHECK_REASONS
    assert {doc_id for doc_id, _ in first} == {d["doc_id"] for d in docs}
    report = build_report(layout)
    assert report["side_stages"]["rewrite"]["conserved"]
    assert report["side_stages"]["rewrite"]["input"] == len(expected_units) == summary["input"]
    card = (layout.dataset("synthetic") / "README.md").read_text().splitlines()
    assert sum(line.startswith("| `") for line in card) == 4  # one row per style

    # rerun from scratch outputs through the CLI: everything comes from the response cache
    for folder in (layout.dataset("synthetic"), layout.decisions("rewrite"), layout.state("rewrite")):
        shutil.rmtree(folder)
    served_before = requests_served(fetch_metrics(vllm_server.url))
    args = ["rewrite", "--corpus", str(corpus), "--out", str(cfg.out), "--llm-url", vllm_server.url,
            "--llm-model", "tiny-llama"]
    for assignment in settings(cfg.out, vllm_server, tiny_model_dir)[2:]:
        args += ["--set", assignment]
    assert curate(args) == 0
    rerun = json.loads(layout.stage_marker("rewrite").read_text())
    assert rerun["this_run"]["http_requests"] == 0 and rerun["this_run"]["cache_hits"] == expected_requests
    assert requests_served(fetch_metrics(vllm_server.url)) == served_before
    assert outcomes(layout) == first

    # a model name the server does not serve is refused before any request
    wrong = load_config(None, settings(tmp_path / "wrong", vllm_server, tiny_model_dir) + ["llm.model=llama-70b"])
    served_before = requests_served(fetch_metrics(vllm_server.url))
    with pytest.raises(LLMUnavailable, match="serves \\['tiny-llama'\\], not llm.model='llama-70b'"):
        rewrite_run(wrong, corpus, quiet=True)
    assert requests_served(fetch_metrics(vllm_server.url)) == served_before
    assert RunLayout(wrong.out).shard_stats("rewrite") == []
