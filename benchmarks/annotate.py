"""Annotate throughput against the limit, on one tiny vLLM server, same documents, same concurrency.

  (a) limit: a plain asyncio loop of `openai.AsyncOpenAI` chat requests, at most --concurrency in flight,
      with exactly the requests annotate makes (same prompts, schemas, max_tokens, sampling parameters).
      No sampling, parsing, caching, Ray or output.
  (b) ours:  the annotate stage (what `curate annotate` runs): sample, Ray actor(s) with the async
      client, parse, labels/ Parquet, markers, report. A fresh output folder and response cache per round,
      so every request reaches the server.
  (c) ours, separate: the same with annotate.mode=separate (one request per page and task, quality_v1 and
      topics_v1) instead of the default combined mode (one labels_v1 request per page): labelled pages per
      second, requests and prompt tokens per labelled page, and the prefix-cache hit rate of each; and the
      combined mode without the score's logprobs (annotate.score_probs=false), which says what they cost.

(a) and (b) use the default combined mode. The self-consistency pass is off (annotate.consistency_sample=0):
this measures the labelling itself.

Before each measured pass the server's prefix cache is reset (vLLM's dev endpoint, enabled for this
server only), so neither pass inherits the other's cached prompts; the prefix-cache hit rate printed per
pass is then what the shared instructions alone earn (the server's own counters, from /metrics).

Documents: the article bodies of the extraction benchmark (../shared/data/extraction-benchmark when
present, else the bundled data/extraction-benchmark), the first --docs of them.

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


# (label, overrides): the default combined mode, the separate one, and combined without the score's logprobs
MODES = {"combined": ["annotate.mode=combined"], "separate": ["annotate.mode=separate"],
         "combined, no probs": ["annotate.mode=combined", "annotate.score_probs=false"]}


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
    from pipeline.run import run_stages
    from pipeline.runtime.executor import ensure_ray

    work = Path(tempfile.mkdtemp(prefix="bench-annotate-"))
    model_dir = args.model or str(build_tiny_model(work / "tiny-llama"))
    n_docs, source = write_docs(work / "docs", args.docs)
    base = [f"annotate.sample={n_docs}", f"llm.max_concurrency={args.concurrency}", "annotate.num_actors=1",
            "ray.num_cpus=2", "annotate.consistency_sample=0"]

    server = VLLMServer(model_dir, log_path=work / "server.log", extra_env={"VLLM_SERVER_DEV_MODE": "1"})
    with server:
        cfg = load_config(None, [f"out={work / 'plan'}", f"llm.url={server.url}", *base])
        sample = annotate.load_sample(work / "docs", n_docs, cfg.annotate.seed, cfg.annotate.max_doc_chars)
        tasks = annotate.TaskSet(cfg)
        requests = [r for doc in sample for r in tasks.requests(doc)]
        ensure_ray(cfg.ray)  # Ray start-up is not part of a stage's run
        print(f"{n_docs} documents from {source}, {len(requests)} requests per pass (combined; separate: "
              f"{2 * n_docs}), concurrency {args.concurrency}, server {server.url} (tiny model, CPU)")
        asyncio.run(plain_loop(server.url, cfg.llm.model, requests[:8], args.concurrency))  # warm-up

        plain_rates, plain_hits = [], []
        ours: dict[str, dict[str, list[float]]] = {mode: {"pages_per_s": [], "requests_per_s": [], "steady": [],
                                                         "hit": [], "requests_per_page": [],
                                                         "prompt_tokens_per_page": [], "completion_tokens_per_page": []}
                                                  for mode in MODES}
        for round_index in range(args.rounds):
            reset_prefix_cache(server.url)
            before = fetch_metrics(server.url)
            started = time.perf_counter()
            sent = asyncio.run(plain_loop(server.url, cfg.llm.model, requests, args.concurrency))
            plain_rates.append(sent / (time.perf_counter() - started))
            plain_hits.append(prefix_cache_hit_rate(before, fetch_metrics(server.url)))
            parts = [f"round {round_index + 1}: (a) plain loop {plain_rates[-1]:.2f} req/s"]
            for mode in MODES:
                reset_prefix_cache(server.url)
                out = work / f"{mode.replace(', ', '-').replace(' ', '-')}-{round_index}"
                mode_cfg = load_config(None, [f"out={out}", f"llm.url={server.url}", f"llm.cache_dir={out / 'cache'}",
                                              *MODES[mode], *base])
                expected = n_docs * len(annotate.TaskSet(mode_cfg).prompts)
                before = fetch_metrics(server.url)
                started = time.perf_counter()
                mode_cfg = mode_cfg.updated(**{"annotate.docs": str(work / "docs")})
                summary = run_stages(mode_cfg, "annotate", quiet=True)["annotate"]
                seconds = time.perf_counter() - started
                run_stats = summary["this_run"]
                assert run_stats["requests"] >= expected and summary["labels"] == expected, (mode, summary)
                measured = ours[mode]
                measured["pages_per_s"].append(n_docs / seconds)
                measured["requests_per_s"].append(expected / seconds)
                measured["steady"].append(n_docs / (seconds - run_stats["startup_s"]))
                measured["hit"].append(prefix_cache_hit_rate(before, fetch_metrics(server.url)) or 0.0)
                measured["requests_per_page"].append(run_stats["requests"] / n_docs)
                measured["prompt_tokens_per_page"].append(summary["prompt_tokens"] / n_docs)
                measured["completion_tokens_per_page"].append(summary["completion_tokens"] / n_docs)
                parts.append(f"{mode} {measured['pages_per_s'][-1]:.2f} pages/s "
                             f"= {measured['requests_per_s'][-1]:.2f} req/s ({measured['steady'][-1]:.2f} pages/s "
                             f"after its {run_stats['startup_s']:.1f}s actor start-up) [{summary['ok']} ok, "
                             f"{summary['error_total']} errors, {run_stats['retries']} retries]")
            print(", ".join(parts))

    def median(mode: str, key: str) -> float:
        return statistics.median(ours[mode][key])

    plain = statistics.median(plain_rates)
    print(f"(a) limit, plain asyncio OpenAI loop (combined requests): {plain:.2f} requests/s "
          f"(median of {args.rounds})")
    print(f"(b) curate annotate, combined (Ray actor, async client, parse, Parquet): "
          f"{median('combined', 'requests_per_s'):.2f} requests/s")
    print(f"ratio (b)/(a): {median('combined', 'requests_per_s') / plain:.2f} (target >= 0.9); without the actor "
          f"start-up, a fixed cost: {median('combined', 'steady') / plain:.2f}")
    print(f"prefix-cache hit rate reported by the server: (a) {statistics.median(plain_hits):.1%} of prompt tokens")
    print("combined vs separate (medians):")
    print(f"  {'mode':<18} {'pages/s':>8} {'requests/page':>14} {'prompt tok/page':>16} {'compl. tok/page':>16} "
          f"{'prefix hit':>10}")
    for mode in MODES:
        print(f"  {mode:<18} {median(mode, 'pages_per_s'):>8.2f} {median(mode, 'requests_per_page'):>14.2f} "
              f"{median(mode, 'prompt_tokens_per_page'):>16.0f} {median(mode, 'completion_tokens_per_page'):>16.0f} "
              f"{median(mode, 'hit'):>10.1%}")
    ratio = median("combined", "pages_per_s") / median("separate", "pages_per_s")
    print(f"labelled pages per second, combined / separate: {ratio:.2f}x (target >= 1.6x); without the actor "
          f"start-up: {median('combined', 'steady') / median('separate', 'steady'):.2f}x; combined without the "
          f"score probabilities / separate: "
          f"{median('combined, no probs', 'pages_per_s') / median('separate', 'pages_per_s'):.2f}x")


if __name__ == "__main__":  # Ray and vLLM re-import __main__ in worker processes
    main()
