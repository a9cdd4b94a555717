"""Rewrite stage: corpus/ pages -> styles routed by the classifier's quality_prob -> checked rewrites in synthetic/.

Rewriting makes copies; it removes nothing from the corpus, so it is one of the report's SIDE_STAGES. Its
units are (document, style) pairs, plus one unit for each document routed to no style; every unit ends kept
(a synthetic/ row), dropped (a check failed, or the page was not routed) or errored (the request failed),
with its reason in decisions/rewrite, and each shard marker satisfies input == kept + dropped + errored.

Steps, each testable alone:
- `route`: quality_prob -> the styles to write, or the reason for none (pure).
- `plan_doc`: the page's chunks (pipeline.rewrite.chunking) and the requests for each style (pure).
- `assemble`: one (document, style)'s chunk answers -> a synthetic row or a failure (pure; the checks are
  in pipeline.rewrite.checks).
- `Rewriter.rewrite_shard`: one shard's requests through the shared LLM client (retries, response cache),
  then its synthetic/ and decisions/ files and its `_state/rewrite/` marker (written last).
- `run`: streams the corpus into shards, skips complete ones, runs the rest on Ray actors, writes the
  dataset card (synthetic/README.md) and the counts into report.json.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from pipeline import schemas
from pipeline.annotate import cache_dir, is_transient, sampling_params
from pipeline.io import RunLayout, write_json, write_parquet
from pipeline.llm.client import Completion, LLMClient, LLMError, LLMUnavailable, canonical_json, check_server
from pipeline.llm.prompts import Prompt, PromptError, load_prompt
from pipeline.report import ShardStats
from pipeline.rewrite.checks import Failure, check_answer, check_rewrite, format_qa_pairs, parse_qa_pairs
from pipeline.rewrite.chunking import TokenCounter, chunk_text

STAGE = "rewrite"
SYNTHETIC = "synthetic"
# Reasons a document is routed to no style.
NO_QUALITY_SCORE = "no_quality_score"
BELOW_THRESHOLD = "below_rewrite_threshold"
STYLE_NOT_SELECTED = "style_not_selected"
# Reasons a (document, style) is not attempted.
EMPTY_SOURCE = "empty_source"
SOURCE_TOO_LONG = "source_too_long"
# The prompt tasks this stage knows how to check and assemble; QA answers must parse into pairs.
STYLE_TASKS = ("rewrite_wiki", "qa_pairs", "distill", "knowledge_list")
QA_TASKS = ("qa_pairs",)
CORPUS_COLUMNS = ["doc_id", "url", "text", "language", "quality_prob"]


# ---------------------------------------------------------------------------------------------- routing
def route(quality_prob: float | None, rewrite_cfg) -> list[str] | Failure:
    """The prompt ids a page with this score is rewritten with, or why it is not rewritten."""
    if quality_prob is None or math.isnan(quality_prob):
        return Failure(NO_QUALITY_SCORE, "the corpus row has no quality_prob (run classify first)")
    if quality_prob >= rewrite_cfg.high_threshold:
        tier, routed = "high", rewrite_cfg.high_styles
    elif quality_prob >= rewrite_cfg.mid_threshold:
        tier, routed = "mid", rewrite_cfg.mid_styles
    else:
        return Failure(BELOW_THRESHOLD,
                       f"quality_prob {quality_prob:.3f} < rewrite.mid_threshold {rewrite_cfg.mid_threshold}")
    styles = [style for style in routed if style in rewrite_cfg.styles]
    if not styles:
        return Failure(STYLE_NOT_SELECTED, f"quality_prob {quality_prob:.3f} routes to the {tier} styles "
                                           f"{routed}, none of them in rewrite.styles {rewrite_cfg.styles}")
    return styles


# ------------------------------------------------------------------------------------ styles, requests
@dataclass(frozen=True)
class Style:
    prompt: Prompt
    max_tokens: int

    @property
    def prompt_id(self) -> str:
        return self.prompt.prompt_id

    @property
    def name(self) -> str:
        return self.prompt.task

    @property
    def qa(self) -> bool:
        return self.prompt.task in QA_TASKS


class StyleSet:
    """The selected styles with their prompts, output limits and sampling parameters; checks the config."""

    def __init__(self, cfg):
        rewrite = cfg.rewrite
        routed = set(rewrite.mid_styles) | set(rewrite.high_styles)
        unrouted = [s for s in rewrite.styles if s not in routed]
        if unrouted:
            raise ValueError(f"rewrite.styles: {unrouted} in neither rewrite.mid_styles {rewrite.mid_styles} nor "
                             f"rewrite.high_styles {rewrite.high_styles}")
        if not rewrite.styles:
            raise ValueError("rewrite.styles is empty: nothing to rewrite")
        self.styles: dict[str, Style] = {}
        for prompt_id in rewrite.styles:
            prompt = load_prompt(prompt_id, cfg.llm.prompts_dir)
            if prompt.task not in STYLE_TASKS:
                raise PromptError(f"{prompt.path}: task {prompt.task!r} is not a rewrite style "
                                  f"(one of {', '.join(STYLE_TASKS)})")
            if prompt.task not in rewrite.max_output_tokens:
                raise ValueError(f"rewrite.max_output_tokens has no limit for style {prompt.task!r} "
                                 f"(prompt {prompt_id})")
            self.styles[prompt_id] = Style(prompt, rewrite.max_output_tokens[prompt.task])
        self.model = cfg.llm.model
        params = sampling_params(cfg.llm)
        if rewrite.temperature is not None:
            params["temperature"] = rewrite.temperature
        self.params = params

    def params_json(self, style: Style) -> str:
        return canonical_json({**self.params, "max_tokens": style.max_tokens})

    def fingerprint(self) -> dict[str, Any]:
        """What determines the answers: a change gives new shard names (and cache keys)."""
        return {"model": self.model, "params": self.params,
                "prompts": {pid: [s.prompt.prompt_hash, s.max_tokens] for pid, s in self.styles.items()}}


@dataclass(frozen=True)
class ChunkRequest:
    """One chat request: a chunk of a page in one style. `schema`/`task` match what the LLM callers take."""

    doc_id: str
    style: str  # prompt id
    chunk_index: int
    messages: list[dict[str, str]]
    max_tokens: int
    params: dict[str, Any]
    task: str
    schema: dict[str, Any] | None = None


@dataclass
class DocPlan:
    doc: dict[str, Any]
    styles: list[str]
    chunks: list[str]
    chunk_tokens: list[int]
    # Why the page gets no requests (then `styles` are the units it stands for, or none if it was not routed).
    failure: Failure | None = None


def plan_doc(doc: dict[str, Any], rewrite_cfg, counter: TokenCounter) -> DocPlan:
    """Route the page, then split it into chunks; a page that cannot be chunked fails every routed style."""
    routed = route(doc.get("quality_prob"), rewrite_cfg)
    if isinstance(routed, Failure):
        return DocPlan(doc, [], [], [], routed)
    chunks = chunk_text(doc.get("text") or "", rewrite_cfg.chunk_tokens, counter)
    if not chunks:
        return DocPlan(doc, routed, [], [], Failure(EMPTY_SOURCE, "the page has no text"))
    if len(chunks) > rewrite_cfg.max_chunks_per_doc:
        return DocPlan(doc, routed, chunks, [], Failure(
            SOURCE_TOO_LONG, f"{len(chunks)} chunks of <= {rewrite_cfg.chunk_tokens} tokens "
                             f"> rewrite.max_chunks_per_doc={rewrite_cfg.max_chunks_per_doc}"))
    return DocPlan(doc, routed, chunks, counter.count_many(chunks))


def plan_requests(plan: DocPlan, styles: StyleSet) -> list[ChunkRequest]:
    if plan.failure is not None:
        return []
    return [ChunkRequest(doc_id=plan.doc["doc_id"], style=prompt_id, chunk_index=index,
                         messages=styles.styles[prompt_id].prompt.render(chunk),
                         max_tokens=styles.styles[prompt_id].max_tokens, params=styles.params,
                         task=styles.styles[prompt_id].name)
            for prompt_id in plan.styles for index, chunk in enumerate(plan.chunks)]


# ------------------------------------------------------------------------------------------- assembly
def synthetic_id(doc_id: str, style: Style, model: str, params_json: str) -> str:
    key = "\x00".join([doc_id, style.prompt_id, style.prompt.prompt_hash, model, params_json])
    return hashlib.sha1(key.encode()).hexdigest()[:20]


def assemble(plan: DocPlan, style: Style, answers: Sequence[Completion | LLMError], *, model: str,
             params_json: str, langid=None, rewrite_cfg) -> dict[str, Any] | tuple[str, Failure]:
    """One (page, style): its chunk answers, in order, -> a synthetic row, or (outcome, failure).

    A request that failed is `errored` with reason request_<kind>; a check that failed is `dropped`. Any
    chunk failing fails the whole rewrite: a page with a hole in it is not a rewrite of the page."""
    n = len(answers)
    for index, answer in enumerate(answers):
        if isinstance(answer, LLMError):
            return schemas.ERRORED, Failure(f"request_{answer.kind}",
                                            f"chunk {index + 1}/{n}: {answer.detail} ({answer.attempts} attempts)")
    parts: list[str] = []
    pairs: list[tuple[str, str]] = []
    for index, answer in enumerate(answers):
        failure = check_answer(answer.text, answer.finish_reason, qa=style.qa)
        if failure is not None:
            return schemas.DROPPED, Failure(failure.reason, f"chunk {index + 1}/{n}: {failure.detail}")
        if style.qa:
            pairs.extend(parse_qa_pairs(answer.text))  # parses: check_answer said so
        else:
            parts.append(answer.text.strip())
    text = format_qa_pairs(pairs) if style.qa else "\n\n".join(parts)
    source_text = "\n".join(plan.chunks)
    source_language = plan.doc.get("language")
    output_language = None
    if langid is not None and rewrite_cfg.check_language:
        output_language = langid.identify(text)[0]
        if not source_language:
            source_language = langid.identify(source_text)[0]
    failure = check_rewrite(source_text, text, source_language=source_language, output_language=output_language,
                            max_copy_ratio=rewrite_cfg.max_copy_ratio, ngram=rewrite_cfg.copy_ngram)
    if failure is not None:
        return schemas.DROPPED, failure
    return {
        "synthetic_id": synthetic_id(plan.doc["doc_id"], style, model, params_json),
        "doc_id": plan.doc["doc_id"], "style": style.name, "prompt_id": style.prompt_id,
        "prompt_hash": style.prompt.prompt_hash, "model": answers[0].model or model,
        "sampling_params": params_json, "n_chunks": n, "text": text, "language": plan.doc.get("language"),
        "quality_prob": plan.doc.get("quality_prob"), "source_tokens": sum(plan.chunk_tokens),
        "prompt_tokens": sum(a.prompt_tokens for a in answers),
        "completion_tokens": sum(a.completion_tokens for a in answers),
    }


def decision_row(doc: dict[str, Any], outcome: str, failure: Failure, source: str,
                 style: str | None = None) -> dict[str, Any]:
    # decisions/ has one row per unit: the style is named first in the detail ("style=<prompt id>; ...").
    detail = f"style={style}; {failure.detail}" if style else failure.detail
    return {"doc_id": doc["doc_id"], "stage": STAGE, "outcome": outcome, "reason": failure.reason,
            "detail": detail[:1000], "url": doc.get("url"), "source": source}


# ------------------------------------------------------------------------------------------ one shard
class Rewriter:
    """Per-actor state (styles, tokenizer, language model, the client) and the per-shard step. `caller` is
    an async function `(requests) -> [Completion | LLMError]`; by default the HTTP client of `cfg.llm`."""

    def __init__(self, cfg, out_root: str, source: str, caller=None, stats=None):
        from pipeline.langid import LanguageIdentifier

        self.cfg = cfg
        self.rewrite_cfg = cfg.rewrite
        self.layout = RunLayout(out_root)
        self.source = source
        self.styles = StyleSet(cfg)
        self.counter = TokenCounter(resolve_tokenizer(cfg))
        self.langid = LanguageIdentifier(cfg.extract.langid_model) if cfg.rewrite.check_language else None
        self.client = None
        if caller is None:
            self.client = LLMClient.from_config(cfg.llm, cache_dir=cache_dir(cfg))
            caller = self._call_server
            stats = self.client.stats
        self.caller = caller
        self.stats = stats

    async def _call_server(self, requests: Sequence[ChunkRequest]) -> list[Completion | LLMError]:
        async def one(request: ChunkRequest) -> Completion | LLMError:
            try:
                return await self.client.chat(request.messages, max_tokens=request.max_tokens, **request.params)
            except LLMError as exc:
                return exc

        return list(await asyncio.gather(*(one(r) for r in requests)))

    async def rewrite_shard(self, key: str, docs: Sequence[dict[str, Any]]) -> dict[str, Any]:
        started = time.perf_counter()
        plans = [plan_doc(doc, self.rewrite_cfg, self.counter) for doc in docs]
        requests = [request for plan in plans for request in plan_requests(plan, self.styles)]
        results = await self.caller(requests) if requests else []
        answers: dict[tuple[str, str], list[Completion | LLMError]] = {}
        for request, result in zip(requests, results):
            answers.setdefault((request.doc_id, request.style), []).append(result)

        stats = ShardStats(stage=STAGE, shard=key, source=self.source)
        rows: list[dict[str, Any]] = []
        decisions: list[dict[str, Any]] = []
        kept_by_style: Counter = Counter()
        for plan in plans:
            if plan.failure is not None and not plan.styles:  # routed to no style: one unit
                stats.input += 1
                stats.drop(plan.failure.reason)
                decisions.append(decision_row(plan.doc, schemas.DROPPED, plan.failure, self.source))
                continue
            for prompt_id in plan.styles:
                stats.input += 1
                style = self.styles.styles[prompt_id]
                if plan.failure is not None:
                    outcome, result = schemas.DROPPED, plan.failure
                else:
                    result = assemble(plan, style, answers[(plan.doc["doc_id"], prompt_id)], model=self.styles.model,
                                      params_json=self.styles.params_json(style), langid=self.langid,
                                      rewrite_cfg=self.rewrite_cfg)
                    if isinstance(result, dict):
                        stats.kept += 1
                        kept_by_style[style.name] += 1
                        rows.append(result)
                        continue
                    outcome, result = result
                (stats.drop if outcome == schemas.DROPPED else stats.error)(result.reason)
                decisions.append(decision_row(plan.doc, outcome, result, self.source, prompt_id))
        stats.check()
        write_parquet(schemas.from_rows(rows, schemas.SYNTHETIC), self.layout.dataset(SYNTHETIC) / f"{key}.parquet",
                      schemas.SYNTHETIC)
        write_parquet(schemas.from_rows(decisions, schemas.DECISIONS), self.layout.decisions(STAGE) / f"{key}.parquet",
                      schemas.DECISIONS)
        completions = [r for r in results if isinstance(r, Completion)]
        stats.extra.update(
            docs=len(docs), requests=len(requests), cached=sum(1 for c in completions if c.cached),
            transient_errors=sum(n for reason, n in stats.errored.items() if is_transient(reason)),
            kept_by_style=dict(sorted(kept_by_style.items())),
            kept_completion_tokens=sum(row["completion_tokens"] for row in rows),
            prompt_tokens=sum(c.prompt_tokens for c in completions),
            completion_tokens=sum(c.completion_tokens for c in completions),
            seconds=round(time.perf_counter() - started, 3),
        )
        marker = stats.to_json()
        write_json(marker, self.layout.marker(STAGE, key))
        return marker

    def client_stats(self) -> dict[str, Any]:
        return self.stats.to_json() if self.stats is not None else {}


def resolve_tokenizer(cfg) -> str | None:
    """The first folder holding the served model's tokenizer.json: rewrite.tokenizer, llm.engine_model,
    llm.tiny_model_dir, or the demo's <out>/tiny-llama; None (the estimate) when there is none."""
    candidates = [cfg.rewrite.tokenizer, cfg.llm.engine_model, cfg.llm.tiny_model_dir]
    if cfg.llm.serve_tiny_model:
        candidates.append(str(Path(cfg.out) / "tiny-llama"))
    if cfg.rewrite.tokenizer and not (Path(cfg.rewrite.tokenizer) / "tokenizer.json").is_file():
        raise FileNotFoundError(f"rewrite.tokenizer: no tokenizer.json in {cfg.rewrite.tokenizer}")
    return next((c for c in candidates if c and (Path(c) / "tokenizer.json").is_file()), None)


# ------------------------------------------------------------------------------------------- planning
def resolve_corpus_dir(cfg, corpus_dir: str | Path | None) -> Path:
    folder = Path(corpus_dir or cfg.rewrite.corpus or Path(cfg.out) / "corpus")
    if not any(folder.glob("*.parquet")):
        raise FileNotFoundError(f"rewrite: no Parquet files in {folder} (run classify first or pass --corpus)")
    for path in sorted(folder.glob("*.parquet")):
        missing = sorted({"doc_id", "text", "quality_prob"} - set(pq.read_schema(path).names))
        if missing:
            raise ValueError(f"rewrite: {path} has no column(s) {missing} (expected classify's corpus/ rows)")
    return folder


def iter_shards(folder: Path, shard_size: int, limit: int | None,
                fingerprint: dict[str, Any]) -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """The corpus, streamed in file order, as shards of `shard_size` documents. A shard's name hashes its
    doc_ids and the settings that determine its answers: the same input and settings give the same names
    (complete shards are skipped), changed ones give new names."""
    settings = canonical_json(fingerprint)
    batch: list[dict[str, Any]] = []
    taken = 0

    def shard(members: list[dict[str, Any]]) -> tuple[str, list[dict[str, Any]]]:
        digest = hashlib.sha1((settings + "\n" + "\n".join(d["doc_id"] for d in members)).encode()).hexdigest()
        return f"part-{digest[:16]}", members

    for path in sorted(folder.glob("*.parquet")):
        parquet = pq.ParquetFile(path)
        columns = [c for c in CORPUS_COLUMNS if c in parquet.schema_arrow.names]
        for record_batch in parquet.iter_batches(batch_size=shard_size, columns=columns):
            for doc in record_batch.to_pylist():
                if limit is not None and taken >= limit:
                    break
                batch.append(doc)
                taken += 1
                if len(batch) == shard_size:
                    yield shard(batch)
                    batch = []
    if batch:
        yield shard(batch)


def shard_done(layout: RunLayout, key: str) -> bool:
    marker = layout.marker(STAGE, key)
    return marker.exists() and json.loads(marker.read_text()).get("transient_errors", 0) == 0


def _remove_stale(layout: RunLayout, keys: set[str]) -> None:
    """Drop outputs of shards not in the current plan (changed corpus, limit or settings): their answers
    stay in the response cache, so nothing paid for is lost."""
    for folder, suffix in ((layout.dataset(SYNTHETIC), ".parquet"), (layout.decisions(STAGE), ".parquet"),
                           (layout.state(STAGE), ".json")):
        for path in list(folder.glob(f"part-*{suffix}")):
            if path.stem not in keys:
                path.unlink()


# ----------------------------------------------------------------------------------------- Ray driver
def _actor_class():
    import ray

    class RewriteActor:
        """Async actor: its shards share one event loop and one client, so the bound on requests in flight
        holds across shards and there is no idle gap between them."""

        def __init__(self, cfg, out_root: str, source: str):
            self.rewriter = Rewriter(cfg, out_root, source)

        async def rewrite_shard(self, key: str, docs: list[dict[str, Any]]) -> dict[str, Any]:
            return await self.rewriter.rewrite_shard(key, docs)

        async def client_stats(self) -> dict[str, Any]:
            return self.rewriter.client_stats()

    # Waiting on HTTP costs little CPU: a fraction of a core keeps actors schedulable next to other work.
    return ray.remote(num_cpus=0.1, max_concurrency=4)(RewriteActor)


class _ShardPool:
    """Rewrite shards on `num_actors` actors, started on the first shard (a rerun with nothing left to do
    starts none), with at most `per_actor` shards queued on each."""

    def __init__(self, cfg, out_root: str, source: str, per_actor: int = 2, quiet: bool = False):
        self.cfg, self.out_root, self.source = cfg, out_root, source
        self.per_actor, self.quiet = per_actor, quiet
        self.actors: list[Any] = []
        self.queue = None

    @property
    def submitted(self) -> int:
        return self.queue.submitted if self.queue is not None else 0

    def submit(self, key: str, docs: list[dict[str, Any]]) -> None:
        if self.queue is None:
            from pipeline.ray_exec import ActorQueue, ensure_ray

            check_server(self.cfg.llm, STAGE)
            ensure_ray(self.cfg.ray)
            actor_cls = _actor_class()
            self.actors = [actor_cls.remote(self.cfg, self.out_root, self.source)
                           for _ in range(self.cfg.rewrite.num_actors)]
            self.queue = ActorQueue(self.actors, "rewrite_shard", self.per_actor, STAGE, quiet=self.quiet)
        self.queue.submit(key, docs)

    def finish(self) -> list[dict[str, Any]]:
        """Wait for every shard; the actors' client counters; stop the actors."""
        if self.queue is None:
            return []
        import ray

        try:
            self.queue.drain()
            return ray.get([actor.client_stats.remote() for actor in self.actors])
        finally:
            for actor in self.actors:
                ray.kill(actor)


def summarize_shards(layout: RunLayout, keys: Sequence[str]) -> dict[str, Any]:
    """Totals over the current plan's shard markers."""
    totals = {"docs": 0, "input": 0, "kept": 0, "requests": 0, "transient_errors": 0, "prompt_tokens": 0,
              "completion_tokens": 0, "kept_completion_tokens": 0}
    dropped: Counter = Counter()
    errored: Counter = Counter()
    by_style: Counter = Counter()
    for key in keys:
        marker = layout.marker(STAGE, key)
        if not marker.exists():
            continue
        data = json.loads(marker.read_text())
        for name in totals:
            totals[name] += data.get(name, 0)
        dropped.update(data["dropped"])
        errored.update(data["errored"])
        by_style.update(data.get("kept_by_style", {}))
    return {**totals, "dropped": dict(sorted(dropped.items())), "errored": dict(sorted(errored.items())),
            "kept_by_style": dict(sorted(by_style.items()))}


def run(cfg, corpus_dir: str | Path | None = None, *, quiet: bool = False) -> dict[str, Any]:
    """Rewrite `corpus_dir` (default: rewrite.corpus, else <cfg.out>/corpus) into `<cfg.out>/synthetic`."""
    from pipeline.report import build_report

    layout = RunLayout(cfg.out)
    folder = resolve_corpus_dir(cfg, corpus_dir)
    if cfg.llm.backend != "server":
        raise ValueError("rewrite supports llm.backend=server only (point llm.url at a vLLM server)")
    styles = StyleSet(cfg)  # fail fast, in the driver, on a broken prompt or config
    tokenizer = resolve_tokenizer(cfg)
    fingerprint = {**styles.fingerprint(), "tokenizer": tokenizer,
                   "rewrite": cfg.rewrite.model_dump(exclude={"enabled", "corpus", "limit", "shard_size",
                                                              "num_actors", "styles"})}
    started = time.perf_counter()
    keys: list[str] = []
    pool = _ShardPool(cfg, str(layout.root), str(folder), quiet=quiet)
    client_stats: list[dict[str, Any]] = []
    try:
        for key, docs in iter_shards(folder, cfg.rewrite.shard_size, cfg.rewrite.limit, fingerprint):
            keys.append(key)
            if not shard_done(layout, key):
                pool.submit(key, docs)
    finally:
        client_stats = pool.finish()
    seconds = time.perf_counter() - started
    _remove_stale(layout, set(keys))

    totals = summarize_shards(layout, keys)
    fresh_tokens = sum(s.get("completion_tokens", 0) for s in client_stats)
    summary = {
        "corpus": str(folder), "shards": len(keys), "shards_run": pool.submitted, **totals,
        "styles": {pid: {"style": s.name, "prompt_hash": s.prompt.prompt_hash, "max_tokens": s.max_tokens}
                   for pid, s in styles.styles.items()},
        "model": styles.model, "sampling_params": styles.params,
        "tokenizer": TokenCounter(tokenizer).name,
        "this_run": {
            "seconds": round(seconds, 3),
            "http_requests": sum(s.get("requests", 0) for s in client_stats),
            "completions": sum(s.get("completions", 0) for s in client_stats),
            "cache_hits": sum(s.get("cache_hits", 0) for s in client_stats),
            "retries": sum(s.get("retries", 0) for s in client_stats),
            "failures": dict(sum((Counter(s.get("failures", {})) for s in client_stats), Counter())),
            "prompt_tokens": sum(s.get("prompt_tokens", 0) for s in client_stats),
            "completion_tokens": fresh_tokens,
            "completion_tokens_per_s": round(fresh_tokens / seconds, 1) if seconds > 0 else 0.0,
        },
    }
    summary["complete"] = totals["transient_errors"] == 0 and all(layout.marker(STAGE, k).exists() for k in keys)
    write_card(layout, cfg, summary)
    if summary["complete"]:
        write_json(summary, layout.stage_marker(STAGE))
    else:  # the whole-pipeline run must not skip a stage that still has shards to redo
        layout.stage_marker(STAGE).unlink(missing_ok=True)
    build_report(layout, extra={STAGE: summary})
    if not quiet:
        print(format_summary(summary))
    return summary


# ------------------------------------------------------------------------------------- card, summary
def card_section(cfg, summary: dict[str, Any]) -> str:
    """The synthetic data's section of a dataset card (markdown)."""
    rewrite = cfg.rewrite
    lines = [
        "## Synthetic rewrites",
        "",
        f"Rewrites of pages of `{summary['corpus']}` by `{summary['model']}` (served by vLLM), made by "
        "`curate rewrite`. Each row's `doc_id` is its source page's; `prompt_id`, `prompt_hash`, `model` and "
        "`sampling_params` say how it was made. Pages were routed by the classifier's `quality_prob`, in the "
        "manner of Nemotron-CC:",
        "",
        f"- `quality_prob >= {rewrite.high_threshold}`: {', '.join(f'`{s}`' for s in rewrite.high_styles)}",
        f"- `{rewrite.mid_threshold} <= quality_prob < {rewrite.high_threshold}`: "
        f"{', '.join(f'`{s}`' for s in rewrite.mid_styles)}",
        f"- below `{rewrite.mid_threshold}`: not rewritten",
        "",
        f"Styles run: {', '.join(f'`{s}`' for s in rewrite.styles)}. Pages were split on paragraph boundaries "
        f"into chunks of at most {rewrite.chunk_tokens} tokens (counted with {summary['tokenizer']}), rewritten "
        "chunk by chunk and reassembled in order.",
        "",
        "| prompt id | style | prompt hash | max tokens per chunk | rows |",
        "|---|---|---|---|---|",
    ]
    for prompt_id, style in summary["styles"].items():
        lines.append(f"| `{prompt_id}` | {style['style']} | `{style['prompt_hash']}` | {style['max_tokens']} | "
                     f"{summary['kept_by_style'].get(style['style'], 0)} |")
    lines += [
        "",
        f"Sampling parameters: `{canonical_json(summary['sampling_params'])}`.",
        "",
        f"Of {summary['input']} (page, style) units from {summary['docs']} pages, {summary['kept']} passed every "
        f"check ({summary['kept_completion_tokens']} generated tokens kept). A rewrite is dropped when an answer "
        "is empty or cut at the token limit, a question-answer answer does not parse into pairs, the output "
        f"copies the source verbatim (more than {rewrite.max_copy_ratio:.0%} of its words in runs of "
        f"{rewrite.copy_ngram}), or is in another language than the source"
        f"{'' if rewrite.check_language else ' (language check off)'}. Reasons, per unit, are in "
        "`decisions/rewrite`:",
        "",
        "| outcome | reason | units |",
        "|---|---|---|",
    ]
    for outcome in ("dropped", "errored"):
        for reason, count in summary[outcome].items():
            lines.append(f"| {outcome} | {reason} | {count} |")
    return "\n".join(lines) + "\n"


def write_card(layout: RunLayout, cfg, summary: dict[str, Any]) -> Path:
    """synthetic/README.md: a YAML header for tools, then the card section."""
    import yaml

    from pipeline.io import _atomic_target

    header = {"pretty_name": "synthetic rewrites", "source_corpus": summary["corpus"], "model": summary["model"],
              "styles": {pid: s["prompt_hash"] for pid, s in summary["styles"].items()},
              "rows": summary["kept"], "complete": summary["complete"]}
    text = "---\n" + yaml.safe_dump(header, sort_keys=True) + "---\n\n" + card_section(cfg, summary)
    path = layout.dataset(SYNTHETIC) / "README.md"
    tmp = _atomic_target(path)
    try:
        tmp.write_text(text)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def format_summary(summary: dict[str, Any]) -> str:
    this_run = summary["this_run"]
    lines = [f"[{STAGE}] {summary['docs']} pages from {summary['corpus']}: {summary['input']} units, "
             f"{summary['kept']} rewrites kept {summary['kept_by_style']}"]
    for outcome in ("dropped", "errored"):
        for reason, count in summary[outcome].items():
            lines.append(f"  {outcome} {reason}: {count}")
    lines.append(f"  this run: {this_run['http_requests']} requests, {this_run['cache_hits']} cache hits, "
                 f"{this_run['completion_tokens']} tokens generated ({this_run['completion_tokens_per_s']}/s), "
                 f"{this_run['seconds']}s")
    if not summary["complete"]:
        lines.append(f"  incomplete: {summary['transient_errors']} units failed on transient errors; rerun to retry")
    return "\n".join(lines)


# -------------------------------------------------------------------------------------------- CLI
def register_cli(subparsers) -> None:
    from pipeline.cli import _common, _llm_flags

    p = subparsers.add_parser("rewrite", help="rewrite corpus pages in styles routed by quality -> synthetic/ (Ray)")
    _common(p)
    _llm_flags(p)
    p.add_argument("--corpus", help="input Parquet folder (default: OUT/corpus, classify's kept pages)")
    p.add_argument("--styles", nargs="+", metavar="PROMPT_ID",
                   help="prompt ids to run, e.g. rewrite_wiki_v1 qa_pairs_v1 (config: rewrite.styles)")
    p.add_argument("--limit", type=int, help="rewrite only the first N pages (config: rewrite.limit)")
    p.set_defaults(handler=_cmd_rewrite)


def _cmd_rewrite(args) -> int:
    import sys

    from pipeline.cli import _config, _print_report

    extra = []
    if args.styles:
        extra.append(f"rewrite.styles={json.dumps(args.styles)}")
    if args.limit:
        extra.append(f"rewrite.limit={args.limit}")
    cfg = _config(args, extra)
    try:
        summary = run(cfg, args.corpus)
    except (FileNotFoundError, PromptError, ValueError, LLMUnavailable) as exc:
        print(f"curate rewrite: {exc}", file=sys.stderr)
        return 2
    _print_report(cfg)
    print(f"synthetic: {Path(cfg.out) / SYNTHETIC}")
    return 0 if summary["complete"] else 1
