"""Annotate throughput against the limit, on one tiny vLLM server, same documents, same concurrency.

  (a) limit: a plain asyncio loop of `openai.AsyncOpenAI` chat requests, at most --concurrency in flight,
      with exactly the requests annotate makes (same prompts, schemas, max_tokens, sampling parameters).
      No sampling, parsing, caching, Ray or output.
  (b) ours:  `pipeline.annotate.run` (what `curate annotate` runs): sample, Ray actor(s) with the async
      client, parse, labels/ Parquet, markers, report. A fresh output folder and response cache per round,
      so every request reaches the server.

Before each measured pass the server's prefix cache is reset (vLLM's dev endpoint, enabled for this
server only), so neither pass inherits the other's cached prompts; the prefix-cache hit rate printed per
pass is then what the shared instructions alone earn (the server's own counters, from /metrics).

Documents: the article bodies of the extraction benchmark (../shared/data/extraction-benchmark when
present, else the bundled data/extraction-benchmark), the first --docs of them. Two requests per
document (quality, topics).

    .venv/bin/python benchmarks/annotate.py [--docs 150] [--concurrency 16] [--rounds 2] [--model DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED_ARTICLES = ROOT.parent / "shared" / "data" / "extraction-benchmark" / "ground-truth.json"
BUNDLED_ARTICLES = ROOT / "data" / "extraction-benchmark" / "ground-truth.json"


def write_docs(folder: Path, n: int) -> tuple[int, str]:
    from pipeline import schemas
    from pipeline.io import write_parquet

    source = SHARED_ARTICLES if SHARED_ARTICLES.exists() else BUNDLED_ARTICLES
    articles = json.loads(source.read_text())
    rows = [{"doc_id": key, "text": value["articleBody"], "language": "en", "rule_failures": []}
            for key, value in sorted(articles.items())[:n] if value.get("articleBody", "").strip()]
    write_parquet(schemas.from_rows(rows, schemas.DOCS), folder / "part-0.parquet", schemas.DOCS)
    return len(rows), str(source)


async def plain_loop(url: str, model: str, requests, concurrency: int) -> int:
    from openai import AsyncOpenAI

    from pipeline.llm.client import response_format

    client = AsyncOpenAI(base_url=url, api_key="unused", max_retries=0, timeout=300)
    slots = asyncio.Semaphore(concurrency)

    async def one(request) -> None:
        async with slots:
            await client.chat.completions.create(
                model=model, messages=request.messages, max_tokens=request.max_tokens,
                response_format=response_format(request.schema, request.task), **request.params)

    await asyncio.gather(*(one(r) for r in requests))
    await client.close()
    return len(requests)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--docs", type=int, default=200, help="documents (at most the articles available)")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--model", help="model folder (default: build the tiny model in a temp folder)")
    args = parser.parse_args()

    from pipeline import annotate
    from pipeline.config import load_config
    from pipeline.llm.server import VLLMServer, fetch_metrics, prefix_cache_hit_rate, reset_prefix_cache
    from pipeline.llm.tiny_model import build_tiny_model
    from pipeline.runtime.executor import ensure_ray

    work = Path(tempfile.mkdtemp(prefix="bench-annotate-"))
    model_dir = args.model or str(build_tiny_model(work / "tiny-llama"))
    n_docs, source = write_docs(work / "docs", args.docs)
    base = [f"annotate.sample={n_docs}", f"llm.max_concurrency={args.concurrency}", "annotate.num_actors=1",
            "ray.num_cpus=2"]

    server = VLLMServer(model_dir, log_path=work / "server.log", extra_env={"VLLM_SERVER_DEV_MODE": "1"})
    with server:
        cfg = load_config(None, [f"out={work / 'plan'}", f"llm.url={server.url}", *base])
        sample = annotate.load_sample(work / "docs", n_docs, cfg.annotate.seed, cfg.annotate.max_doc_chars)
        tasks = annotate.TaskSet(cfg)
        requests = [r for doc in sample for r in tasks.requests(doc)]
        ensure_ray(cfg.ray)  # Ray start-up is not part of a stage's run
        print(f"{n_docs} documents from {source}, {len(requests)} requests per pass, "
              f"concurrency {args.concurrency}, server {server.url} (tiny model, CPU)")
        asyncio.run(plain_loop(server.url, cfg.llm.model, requests[:8], args.concurrency))  # warm-up

        plain_rates, ours_rates, ours_steady, plain_hits, ours_hits = [], [], [], [], []
        for round_index in range(args.rounds):
            reset_prefix_cache(server.url)
            before = fetch_metrics(server.url)
            started = time.perf_counter()
            sent = asyncio.run(plain_loop(server.url, cfg.llm.model, requests, args.concurrency))
            plain_rates.append(sent / (time.perf_counter() - started))
            plain_hits.append(prefix_cache_hit_rate(before, fetch_metrics(server.url)))

            reset_prefix_cache(server.url)
            out = work / f"ours-{round_index}"
            ours_cfg = load_config(None, [f"out={out}", f"llm.url={server.url}", f"llm.cache_dir={out / 'cache'}",
                                          *base])
            before = fetch_metrics(server.url)
            started = time.perf_counter()
            summary = annotate.run(ours_cfg, work / "docs", quiet=True)
            seconds = time.perf_counter() - started
            assert summary["this_run"]["requests"] >= len(requests) and summary["labels"] == len(requests)
            ours_rates.append(len(requests) / seconds)
            ours_steady.append(len(requests) / (seconds - summary["this_run"]["startup_s"]))
            ours_hits.append(prefix_cache_hit_rate(before, fetch_metrics(server.url)))
            print(f"round {round_index + 1}: (a) plain loop {plain_rates[-1]:.2f} req/s, "
                  f"(b) curate annotate {ours_rates[-1]:.2f} req/s "
                  f"({ours_steady[-1]:.2f} after its {summary['this_run']['startup_s']:.1f}s actor start-up) "
                  f"[{summary['ok']} ok, {summary['error_total']} errors, "
                  f"{summary['this_run']['retries']} retries]")

    plain, ours = statistics.median(plain_rates), statistics.median(ours_rates)
    print(f"(a) limit, plain asyncio OpenAI loop: {plain:.2f} requests/s (median of {args.rounds})")
    print(f"(b) curate annotate (Ray actor, async client, parse, Parquet): {ours:.2f} requests/s")
    print(f"ratio (b)/(a): {ours / plain:.2f} (target >= 0.9); without the actor start-up, a fixed cost: "
          f"{statistics.median(ours_steady) / plain:.2f}")
    print(f"prefix-cache hit rate reported by the server: (a) {statistics.median(plain_hits):.1%}, "
          f"(b) {statistics.median(ours_hits):.1%} of prompt tokens")


if __name__ == "__main__":  # Ray and vLLM re-import __main__ in worker processes
    main()
