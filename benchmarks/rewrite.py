"""Rewrite throughput against the limit, on one tiny vLLM server, same chunks, same concurrency.

  (a) limit: a plain asyncio loop of `openai.AsyncOpenAI` chat requests, at most --concurrency in flight,
      with exactly the requests the rewrite stage makes (same routing, chunks, prompts, per-style
      max_tokens and sampling parameters). No routing, checks, caching, Ray or output.
  (c) client: the same requests through the project's shared async client (`pipeline.llm.client.LLMClient`,
      no cache) in a plain asyncio loop: separates what the stage adds from what the client costs.
  (b) ours:  the rewrite stage (what `curate rewrite` runs): stream the corpus, route, chunk with the
      served model's tokenizer, Ray actor(s) with the async client, checks, synthetic/ and decisions/
      Parquet, markers, dataset card, report. A fresh output folder and response cache per round, so every
      request reaches the server.

The measure is generated (completion) tokens per second as the server reported them in each answer's
usage; both passes generate the same tokens (temperature 0: the tiny model runs to each style's token
limit). The order of the three passes rotates from round to round (the machine may be shared and its load
drift). Before each pass the server's prefix cache is reset (vLLM's dev endpoint, enabled for this server
only), so neither pass inherits the other's cached prompts. Ray is started once, before the passes; the
stage's own actor start-up is inside (b).

Documents: the article bodies of the extraction benchmark (../shared/data/extraction-benchmark when
present, else the bundled data/extraction-benchmark), the first --docs of them, with quality_prob
alternating high (qa_pairs, distill, knowledge_list) and mid (rewrite_wiki).

    .venv/bin/python benchmarks/rewrite.py [--docs 60] [--concurrency 16] [--rounds 3] [--max-tokens 64]
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


def write_corpus(folder: Path, n: int) -> tuple[list[dict], str]:
    """A classify-shaped corpus (schemas.SCORED) of real article text, in two part files."""
    from pipeline import schemas
    from pipeline.io import write_parquet

    source = SHARED_ARTICLES if SHARED_ARTICLES.exists() else BUNDLED_ARTICLES
    articles = json.loads(source.read_text())
    bodies = [(key, value["articleBody"]) for key, value in sorted(articles.items())
              if value.get("articleBody", "").strip()]
    rows = [{"doc_id": key, "url": articles[key].get("url"), "text": text, "language": "en", "n_chars": len(text),
             "quality_prob": 0.9 if index % 2 else 0.4, "topics": [], "topic_probs": []}
            for index, (key, text) in enumerate(bodies[:n])]
    table = schemas.from_rows(rows, schemas.SCORED)
    half = len(rows) // 2
    write_parquet(table.slice(0, half), folder / "part-00000.parquet", schemas.SCORED)
    write_parquet(table.slice(half), folder / "part-00001.parquet", schemas.SCORED)
    return rows, str(source)


async def plain_loop(url: str, model: str, requests, concurrency: int) -> int:
    """Send every request, at most `concurrency` at once; returns the completion tokens generated."""
    from openai import AsyncOpenAI

    client = AsyncOpenAI(base_url=url, api_key="unused", max_retries=0, timeout=600)
    slots = asyncio.Semaphore(concurrency)

    async def one(request) -> int:
        async with slots:
            response = await client.chat.completions.create(model=model, messages=request.messages,
                                                            max_tokens=request.max_tokens, **request.params)
            return response.usage.completion_tokens

    tokens = await asyncio.gather(*(one(r) for r in requests))
    await client.close()
    return sum(tokens)


async def client_loop(url: str, model: str, requests, concurrency: int) -> int:
    from pipeline.llm.client import LLMClient

    async with LLMClient(url, model, max_concurrency=concurrency, max_retries=0, timeout_s=600) as client:
        answers = await asyncio.gather(*(client.chat(r.messages, max_tokens=r.max_tokens, **r.params)
                                         for r in requests))
    return sum(answer.completion_tokens for answer in answers)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--docs", type=int, default=60)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--max-tokens", type=int, default=64, help="output token limit per chunk, every style")
    parser.add_argument("--model", help="model folder (default: build the tiny model in a temp folder)")
    args = parser.parse_args()

    from pipeline import rewrite
    from pipeline.config import load_config
    from pipeline.llm.server import VLLMServer, reset_prefix_cache
    from pipeline.llm.tiny_model import build_tiny_model
    from pipeline.llm.tokens import TokenCounter
    from pipeline.rewrite.stage import StyleSet, plan_doc, plan_requests
    from pipeline.run import run_stages
    from pipeline.runtime.executor import ensure_ray

    work = Path(tempfile.mkdtemp(prefix="bench-rewrite-"))
    model_dir = args.model or str(build_tiny_model(work / "tiny-llama"))
    docs, source = write_corpus(work / "corpus", args.docs)
    limits = "{" + ", ".join(f"{style}: {args.max_tokens}" for style in rewrite.stage.STYLE_TASKS) + "}"
    base = [f"llm.max_concurrency={args.concurrency}", f"llm.tiny_model_dir={model_dir}", "ray.num_cpus=2",
            "rewrite.mid_threshold=0.2", "rewrite.high_threshold=0.6", f"rewrite.max_output_tokens={limits}",
            "rewrite.min_quality_prob=null"]  # the benchmark's corpus comes without a classifier to score with

    server = VLLMServer(model_dir, log_path=work / "server.log", extra_env={"VLLM_SERVER_DEV_MODE": "1"})
    with server:
        cfg = load_config(None, [f"out={work / 'plan'}", f"llm.url={server.url}", *base])
        styles, counter = StyleSet(cfg), TokenCounter(model_dir)
        requests = [r for doc in docs for r in plan_requests(plan_doc(doc, cfg.rewrite, counter), styles)]
        ensure_ray(cfg.ray)  # Ray start-up is not part of a stage's run
        print(f"{len(docs)} documents from {source}: {len(requests)} chunk requests per pass "
              f"(<= {cfg.rewrite.chunk_tokens} source tokens each, {args.max_tokens} output tokens max), "
              f"concurrency {args.concurrency}, server {server.url} (tiny model, CPU)")
        asyncio.run(plain_loop(server.url, cfg.llm.model, requests[:16], args.concurrency))  # warm-up

        rates: dict[str, list[float]] = {"plain": [], "client": [], "ours": []}

        def timed(loop) -> None:
            reset_prefix_cache(server.url)
            started = time.perf_counter()
            tokens = asyncio.run(loop(server.url, cfg.llm.model, requests, args.concurrency))
            rates["plain" if loop is plain_loop else "client"].append(tokens / (time.perf_counter() - started))

        def stage(round_index: int) -> None:
            reset_prefix_cache(server.url)
            out = work / f"ours-{round_index}"
            ours_cfg = load_config(None, [f"out={out}", f"llm.url={server.url}", f"llm.cache_dir={out / 'cache'}",
                                          *base])
            started = time.perf_counter()
            ours_cfg = ours_cfg.updated(**{"rewrite.corpus": str(work / "corpus")})
            summary = run_stages(ours_cfg, "rewrite", quiet=True)["rewrite"]
            seconds = time.perf_counter() - started
            this_run = summary["this_run"]
            assert this_run["http_requests"] == len(requests) and this_run["cache_hits"] == 0, this_run
            rates["ours"].append(this_run["completion_tokens"] / seconds)
            print(f"  (b) {summary['input']} units: {summary['kept']} kept, dropped {summary['dropped']}, "
                  f"errored {summary['errored']}, {this_run['completion_tokens']} tokens in {seconds:.1f}s")

        passes = [lambda i: timed(plain_loop), lambda i: timed(client_loop), stage]
        for round_index in range(args.rounds):
            for index in range(3):
                passes[(index + round_index) % 3](round_index)
            print(f"round {round_index + 1}: (a) plain loop {rates['plain'][-1]:.0f}, (c) shared client "
                  f"{rates['client'][-1]:.0f}, (b) curate rewrite {rates['ours'][-1]:.0f} tokens/s; "
                  f"(b)/(a) {rates['ours'][-1] / rates['plain'][-1]:.2f}", flush=True)

    plain, client, ours = (statistics.median(rates[k]) for k in ("plain", "client", "ours"))
    print(f"(a) limit, plain asyncio OpenAI loop: {plain:.0f} generated tokens/s (median of {args.rounds})")
    print(f"(c) shared LLMClient loop, no cache: {client:.0f} generated tokens/s")
    print(f"(b) curate rewrite (Ray actor, async client, cache, checks, Parquet): {ours:.0f} generated tokens/s")
    # The passes of one round run back to back, under about the same machine load; rounds may not. The
    # median of the per-round ratios is the figure to read on a shared machine.
    per_round = [o / p for o, p in zip(rates["ours"], rates["plain"])]
    print(f"ratio (b)/(a): median of per-round ratios {statistics.median(per_round):.2f} "
          f"({', '.join(f'{r:.2f}' for r in per_round)}); of medians {ours / plain:.2f} (target >= 0.9)")
    print(f"(b)/(c): {ours / client:.2f}; (c)/(a): {client / plain:.2f}")

if __name__ == "__main__":  # Ray and vLLM re-import __main__ in worker processes
    main()
