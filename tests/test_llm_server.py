"""The real vLLM server (CPU build) serving the tiny model: schema-constrained answers through our client,
`curate llm serve` start/crash/restart/stop, and an annotate run that survives the server dying mid-run."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time

import pytest

from pipeline import schemas
from pipeline.config import load_config
from pipeline.io import RunLayout, read_dataset, write_parquet
from pipeline.llm.client import LLMClient
from pipeline.llm.parse import parse_quality, parse_topics, quality_schema, topics_schema
from pipeline.llm.prompts import load_prompt
from pipeline.llm.server import fetch_metrics, free_port, requests_served
from pipeline.llm.tiny_model import is_model_dir
from stagehelpers import annotate_run

PAGES = [
    "Photosynthesis converts light energy into chemical energy. Plants use chlorophyll to absorb light.",
    "BUY CHEAP WATCHES NOW!!! click here click here best price free shipping",
    "Il était une fois un petit village au bord de la mer, où vivaient des pêcheurs.",
    "東京は日本の首都であり、世界で最も人口の多い都市圏の一つです。",
]


def test_tiny_model_folder_is_a_llama_with_a_chat_template(tiny_model_dir):
    config = json.loads((tiny_model_dir / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"] and is_model_dir(tiny_model_dir)
    assert config["hidden_size"] // config["num_attention_heads"] in (32, 64, 80, 96, 112, 128)
    assert "<|start_header_id|>" in json.loads((tiny_model_dir / "tokenizer_config.json").read_text())["chat_template"]


def test_constrained_answers_from_the_real_server_parse(vllm_server):
    quality, topics = load_prompt("quality_v1"), load_prompt("topics_v1")

    async def ask():
        async with LLMClient(vllm_server.url, "tiny-llama", max_concurrency=8) as client:
            jobs = [client.chat(quality.render(p), schema=quality_schema(), schema_name="quality", max_tokens=160,
                                temperature=0.0, seed=0) for p in PAGES]
            jobs += [client.chat(topics.render(p), schema=topics_schema(topics.topic_ids), schema_name="topics",
                                 max_tokens=160, temperature=0.0, seed=0) for p in PAGES]
            # unconstrained text works too (what the rewrite stage asks for)
            free = client.chat([{"role": "user", "content": "Rewrite: the cat sat."}], max_tokens=12, temperature=0)
            return await asyncio.gather(*jobs, free), client.stats

    before = requests_served(fetch_metrics(vllm_server.url))
    answers, stats = asyncio.run(ask())
    for answer in answers[: len(PAGES)]:
        assert parse_quality(answer.text, answer.finish_reason).ok, answer.text
    for answer in answers[len(PAGES) : 2 * len(PAGES)]:
        parsed = parse_topics(answer.text, topics.topic_ids, answer.finish_reason)
        assert parsed.ok and set(parsed.value["topics"]) <= set(topics.topic_ids), answer.text
    free = answers[-1]
    assert free.completion_tokens <= 12 and free.finish_reason in ("stop", "length")
    assert stats.requests == stats.completions == 2 * len(PAGES) + 1 and stats.prompt_tokens > 0
    assert requests_served(fetch_metrics(vllm_server.url)) == before + stats.requests


def _start_cli_server(model_dir, port, log):
    """`curate llm serve` as a user runs it; returns (process, vLLM pid) once it prints that it is ready."""
    process = subprocess.Popen([sys.executable, "-m", "pipeline.cli", "llm", "serve", "--model", str(model_dir),
                                "--port", str(port), "--log", str(log), "--ready-timeout", "900"],
                               stdout=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 900  # ~20-30 s on an idle machine; much longer when the cores are shared
    for line in process.stdout:
        if match := re.search(r"ready after .* url (\S+) model tiny-llama pid (\d+)", line):
            assert match.group(1) == f"http://127.0.0.1:{port}/v1"
            return process, int(match.group(2))
        assert time.monotonic() < deadline, "server not ready"
    raise AssertionError(f"`curate llm serve` exited with {process.wait()} before it was ready")


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False


@pytest.mark.slow
def test_server_killed_mid_run_then_restarted_completes_the_rest(tmp_path, ray_local, tiny_model_dir):
    port = free_port()
    texts = {f"page-{i:02d}": f"Page {i}. " + PAGES[i % len(PAGES)] * 3 for i in range(40)}
    rows = [{"doc_id": k, "text": v, "language": "en", "rule_failures": []} for k, v in texts.items()]
    write_parquet(schemas.from_rows(rows, schemas.DOCS), tmp_path / "docs" / "part-0.parquet", schemas.DOCS)
    cfg = load_config(None, [f"out={tmp_path}", f"llm.url=http://127.0.0.1:{port}/v1", "annotate.sample=40",
                             "annotate.shard_size=4", "llm.max_concurrency=2", "llm.max_retries=1",
                             "llm.retry_backoff_s=0.05", "llm.timeout_s=20",
                             # two requests per page (quality, topics) and no second pass: 80 labels to count
                             "annotate.mode=separate", "annotate.consistency_sample=0"])

    cli, vllm_pid = _start_cli_server(tiny_model_dir, port, tmp_path / "server1.log")
    try:
        result = {}
        worker = threading.Thread(target=lambda: result.update(annotate_run(cfg, quiet=True)))
        worker.start()
        while requests_served(fetch_metrics(cfg.llm.url)) < 10:
            assert worker.is_alive(), "the run finished before the server could be killed"
            time.sleep(0.1)
        os.killpg(vllm_pid, signal.SIGKILL)  # a crash: no shutdown, in-flight requests cut
        worker.join(timeout=300)
        assert cli.wait(timeout=60) == 1  # `curate llm serve` reports that vLLM died
    finally:
        if cli.poll() is None:
            cli.send_signal(signal.SIGTERM)
            cli.wait(timeout=60)

    first = result
    labels = read_dataset(RunLayout(tmp_path).dataset("labels"), schemas.LABELS).to_pylist()
    assert len(labels) == 80 == first["labels"]  # the run finished; every label is there, valid or errored
    assert not first["complete"] and first["transient_errors"] > 0
    assert {k for k in first["errors"] if k.startswith("request_")} <= {"request_connection_error", "request_timeout"}
    failed = {(r["doc_id"], r["task"]) for r in labels if r["error"] and r["error"].startswith("request_")}
    assert failed and not RunLayout(tmp_path).is_stage_done("annotate")

    cli, vllm_pid = _start_cli_server(tiny_model_dir, port, tmp_path / "server2.log")
    try:
        second = annotate_run(cfg, quiet=True)
        labels = read_dataset(RunLayout(tmp_path).dataset("labels"), schemas.LABELS).to_pylist()
        assert second["complete"] and second["transient_errors"] == 0 and len(labels) == 80
        assert not any(r["error"] and r["error"].startswith("request_") for r in labels)
        # only what failed was asked again; the labels answered before the crash came from the cache
        assert second["this_run"]["requests"] == len(failed)
        assert RunLayout(tmp_path).is_stage_done("annotate")
    finally:
        cli.send_signal(signal.SIGTERM)  # what Ctrl-C / a service manager sends
        assert cli.wait(timeout=60) == 0
    assert not _group_alive(vllm_pid)  # the server and its engine child are gone
