"""Annotate stage: a seeded, stratified sample of documents -> LLM quality score (0-5) and topic tags -> labels/.

Annotation samples; it does not filter: no document is dropped here, so the stage is not one of the
report's FILTER_STAGES. Every (document, task) of the sample gets exactly one labels/ row, valid or with
an `error` kind and the raw answer kept; never a default score.

Steps, each testable alone:
- `select_sample`: deterministic (seeded hash order) and stratified by language and a coarse rule-score
  bucket, so low- and high-quality pages are both present.
- `TaskSet.requests` / `label_row`: prompt rendering and parsing, pure.
- `Annotator.annotate_shard`: one shard's requests through a caller (the async HTTP client, or the
  in-process vLLM engine), then its labels/ file and its `_state/annotate/` marker (written last).
- `run`: plans shards, skips complete ones, runs the rest on Ray actors, writes counts into report.json.

A shard whose requests failed for transient reasons (server down, timeouts) is written with those errors
and redone by the next run; thanks to the response cache the rerun pays only for what failed.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from pipeline import schemas
from pipeline.io import RunLayout, parquet_files, write_json, write_parquet
from pipeline.report import ShardStats
from pipeline.llm.client import RETRYABLE_STATUS, Completion, LLMClient, LLMError, canonical_json
from pipeline.llm.parse import Parsed, parse_quality, parse_topics, quality_schema, topics_schema
from pipeline.llm.prompts import Prompt, PromptError, load_prompt

STAGE = "annotate"
LABELS = "labels"
# Request failures worth another try on the next run (the server was down or overloaded). A 4xx such as a
# prompt longer than the model's context fails the same way every time.
# Coarse quality proxy from extract's rule scores (each in [0, 1], higher is cleaner prose).
BUCKET_EDGES = (0.5, 0.75)


# ---------------------------------------------------------------------------------------------- sampling
def rule_bucket(doc: dict[str, Any]) -> str:
    """`fails_rules`, `low`, `mid`, `high` from the rule-score columns, or `unscored` (rules not applied,
    e.g. to a language the rules are not written for)."""
    if doc.get("rule_failures"):
        return "fails_rules"
    parts = [doc.get("line_punct_ratio"), doc.get("alpha_word_ratio")]
    if doc.get("short_line_ratio") is not None:
        parts.append(1.0 - doc["short_line_ratio"])
    values = [float(v) for v in parts if v is not None]
    if not values:
        return "unscored"
    score = sum(values) / len(values)
    return "low" if score < BUCKET_EDGES[0] else "mid" if score < BUCKET_EDGES[1] else "high"


def _seeded_rank(seed: int, doc_id: str) -> str:
    return hashlib.sha1(f"{seed}\x00{doc_id}".encode()).hexdigest()


def allocate(sizes: dict[Any, int], n: int) -> dict[Any, int]:
    """How many documents to take from each stratum: one from each (largest first) while n allows, the rest
    proportional to what is left (largest remainder), never more than a stratum holds."""
    keys = sorted(sizes)
    if n >= sum(sizes.values()):
        return dict(sizes)
    taken = {k: 0 for k in keys}
    for k in sorted(keys, key=lambda k: (-sizes[k], str(k)))[:n]:
        taken[k] = 1
    remaining = n - sum(taken.values())
    while remaining > 0:
        spare = {k: sizes[k] - taken[k] for k in keys if sizes[k] > taken[k]}
        total = sum(spare.values())
        shares = {k: remaining * spare[k] / total for k in spare}
        give = {k: min(spare[k], int(shares[k])) for k in spare}
        leftover = remaining - sum(give.values())
        for k in sorted(spare, key=lambda k: (-(shares[k] - int(shares[k])), str(k))):
            if leftover == 0:
                break
            if give[k] < spare[k]:
                give[k] += 1
                leftover -= 1
        for k, count in give.items():
            taken[k] += count
        remaining = n - sum(taken.values())
    return taken


def select_sample(docs: Sequence[dict[str, Any]], n: int, seed: int) -> list[dict[str, Any]]:
    """A deterministic sample of `n` documents stratified by (language, rule bucket); the same seed and
    input give the same sample, in a stable order (by seeded hash)."""
    strata: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for doc in docs:
        strata[(doc.get("language") or "und", rule_bucket(doc))].append(doc)
    counts = allocate({key: len(members) for key, members in strata.items()}, n)
    chosen: list[dict[str, Any]] = []
    for key, members in strata.items():
        members.sort(key=lambda d: _seeded_rank(seed, d["doc_id"]))
        chosen.extend(members[: counts[key]])
    chosen.sort(key=lambda d: _seeded_rank(seed, d["doc_id"]))
    return chosen


def plan_shards(sample: Sequence[dict[str, Any]], shard_size: int,
                signature: str = "") -> list[tuple[str, list[dict[str, Any]]]]:
    """Consecutive groups of `shard_size` documents, each named by a hash of its doc_ids and of `signature`
    (what the labels depend on: tasks, prompt hashes, model, sampling). A changed sample or labelling setup
    gives new names; an unchanged one the same names, so finished shards are skipped."""
    shards = []
    for start in range(0, len(sample), shard_size):
        members = list(sample[start : start + shard_size])
        digest = hashlib.sha1("\n".join([signature, *(d["doc_id"] for d in members)]).encode()).hexdigest()[:16]
        shards.append((f"part-{digest}", members))
    return shards


# ------------------------------------------------------------------------------------- requests, rows
@dataclass(frozen=True)
class LabelRequest:
    doc_id: str
    task: str
    prompt: Prompt
    messages: list[dict[str, str]]
    schema: dict[str, Any]
    max_tokens: int
    params: dict[str, Any]


class TaskSet:
    """The configured tasks with their prompts and answer schemas."""

    def __init__(self, cfg):
        self.max_doc_chars = cfg.annotate.max_doc_chars
        self.max_tokens = cfg.annotate.max_tokens
        self.model = cfg.llm.model
        self.params = sampling_params(cfg.llm)
        prompt_ids = {"quality": cfg.annotate.quality_prompt, "topics": cfg.annotate.topics_prompt}
        self.prompts: dict[str, Prompt] = {}
        self.schemas: dict[str, dict[str, Any]] = {}
        for task in cfg.annotate.tasks:
            prompt = load_prompt(prompt_ids[task], cfg.llm.prompts_dir)
            if prompt.task != task:
                raise PromptError(f"annotate.{task}_prompt={prompt.prompt_id!r} is a {prompt.task!r} prompt")
            if task == "topics" and not prompt.taxonomy:
                raise PromptError(f"{prompt.path}: a topics prompt needs a `taxonomy:` header line")
            self.prompts[task] = prompt
            self.schemas[task] = quality_schema() if task == "quality" else topics_schema(prompt.topic_ids)

    def signature(self) -> str:
        """What every label depends on besides the page: tasks, prompt hashes, model, sampling, truncation."""
        return canonical_json({"prompts": {t: p.prompt_hash for t, p in self.prompts.items()}, "model": self.model,
                               "params": self.params, "max_tokens": self.max_tokens,
                               "max_doc_chars": self.max_doc_chars})

    def requests(self, doc: dict[str, Any]) -> list[LabelRequest]:
        return [LabelRequest(doc_id=doc["doc_id"], task=task, prompt=prompt,
                             messages=prompt.render(doc["text"] or "", self.max_doc_chars),
                             schema=self.schemas[task], max_tokens=self.max_tokens, params=self.params)
                for task, prompt in self.prompts.items()]


def sampling_params(llm_cfg) -> dict[str, Any]:
    params: dict[str, Any] = {"temperature": llm_cfg.temperature}
    if llm_cfg.seed is not None:
        params["seed"] = llm_cfg.seed
    return params


def parse_answer(request: LabelRequest, text: str | None, finish_reason: str | None) -> Parsed:
    if request.task == "quality":
        return parse_quality(text, finish_reason)
    return parse_topics(text, request.prompt.topic_ids, finish_reason)


def label_row(request: LabelRequest, result: Completion | LLMError, model: str) -> dict[str, Any]:
    """One labels/ row: provenance, then either the parsed fields or the error kind (raw text kept)."""
    row: dict[str, Any] = {
        "doc_id": request.doc_id, "task": request.task, "prompt_id": request.prompt.prompt_id,
        "prompt_hash": request.prompt.prompt_hash, "model": model,
        "sampling_params": canonical_json({**request.params, "max_tokens": request.max_tokens}),
    }
    if isinstance(result, LLMError):
        row.update(error=f"request_{result.kind}", error_detail=f"{result.detail} ({result.attempts} attempts)"[:1000])
        return row
    parsed = parse_answer(request, result.text, result.finish_reason)
    row.update(raw_text=result.text, latency_s=result.latency_s, prompt_tokens=result.prompt_tokens,
               completion_tokens=result.completion_tokens, cached=result.cached, model=result.model or model)
    if parsed.ok:
        row.update(parsed.value)
    else:
        row.update(error=parsed.error, error_detail=parsed.detail)
    return row


def is_transient(error: str | None) -> bool:
    """A request error worth retrying on a rerun: exactly what the client itself retries (its
    RETRYABLE_STATUS, timeouts, lost connections, unreadable bodies)."""
    if not error or not error.startswith("request_"):
        return False
    kind = error.removeprefix("request_")
    status = kind.removeprefix("http_")
    if status != kind:
        return status.isdigit() and int(status) in RETRYABLE_STATUS
    return kind in ("timeout", "connection_error", "bad_response")


# ------------------------------------------------------------------------------------------ one shard
class Annotator:
    """Per-actor state (prompts, the caller) and the per-shard step. `caller` is an async function
    `(requests) -> [Completion | LLMError]`; by default the HTTP client of `cfg.llm`."""

    def __init__(self, cfg, out_root: str, caller=None, stats=None):
        self.cfg = cfg
        self.layout = RunLayout(out_root)
        self.tasks = TaskSet(cfg)
        self.client = None
        if caller is None:
            self.client = LLMClient.from_config(cfg.llm, cache_dir=cache_dir(cfg))
            caller = self._call_server
            stats = self.client.stats
        self.caller = caller
        self.stats = stats

    async def _call_server(self, requests: Sequence[LabelRequest]) -> list[Completion | LLMError]:
        async def one(request: LabelRequest) -> Completion | LLMError:
            try:
                return await self.client.chat(request.messages, schema=request.schema, schema_name=request.task,
                                              max_tokens=request.max_tokens, **request.params)
            except LLMError as exc:
                return exc

        return list(await asyncio.gather(*(one(r) for r in requests)))

    async def annotate_shard(self, key: str, docs: Sequence[dict[str, Any]], source: str = "") -> dict[str, Any]:
        started = time.perf_counter()
        requests = [request for doc in docs for request in self.tasks.requests(doc)]
        results = await self.caller(requests)
        rows = [label_row(request, result, self.tasks.model) for request, result in zip(requests, results)]
        write_parquet(schemas.from_rows(rows, schemas.LABELS), self.layout.dataset(LABELS) / f"{key}.parquet",
                      schemas.LABELS)
        marker = shard_summary(rows, key, source)
        marker.update(docs=len(docs), seconds=round(time.perf_counter() - started, 3))
        write_json(marker, self.layout.marker(STAGE, key))
        return marker

    def client_stats(self) -> dict[str, Any]:
        return self.stats.to_json() if self.stats is not None else {}


def shard_summary(rows: Sequence[dict[str, Any]], key: str, source: str) -> dict[str, Any]:
    """The shard's marker, in the report's ShardStats shape: input = label requests (document x task),
    kept = valid labels, errored = labels with an error, by kind (annotation drops nothing)."""
    stats = ShardStats(stage=STAGE, shard=key, source=source, input=len(rows))
    for row in rows:
        if row.get("error"):
            stats.error(row["error"])
        else:
            stats.kept += 1
    stats.check()
    stats.extra.update(
        transient_errors=sum(n for kind, n in stats.errored.items() if is_transient(kind)),
        cached=sum(1 for row in rows if row.get("cached")),
        prompt_tokens=sum(row.get("prompt_tokens") or 0 for row in rows),
        completion_tokens=sum(row.get("completion_tokens") or 0 for row in rows),
    )
    return stats.to_json()


def cache_dir(cfg) -> str:
    return cfg.llm.cache_dir or str(Path(cfg.out) / ".llm_cache")


# ----------------------------------------------------------------------------------------- Ray driver
def _actor_classes():
    import ray

    class AnnotateActor:
        """Async actor: its shards share one event loop and one client, so the client's bound on requests in
        flight holds across shards and there is no idle gap between them."""

        def __init__(self, cfg, out_root: str):
            self.annotator = Annotator(cfg, out_root)

        async def annotate_shard(self, key: str, docs: list[dict[str, Any]], source: str) -> dict[str, Any]:
            return await self.annotator.annotate_shard(key, docs, source)

        async def client_stats(self) -> dict[str, Any]:
            return self.annotator.client_stats()

    class EngineAnnotateActor:
        """vLLM's in-process engine in the actor (one model copy per actor; on GPU clusters, one per GPU)."""

        def __init__(self, cfg, out_root: str):
            from pipeline.llm.engine import EngineCaller

            self.engine = EngineCaller.from_config(cfg.llm, cache_dir=cache_dir(cfg))
            self.annotator = Annotator(cfg, out_root, caller=self.engine.complete_async, stats=self.engine.stats)

        async def annotate_shard(self, key: str, docs: list[dict[str, Any]], source: str) -> dict[str, Any]:
            return await self.annotator.annotate_shard(key, docs, source)

        async def client_stats(self) -> dict[str, Any]:
            return self.annotator.client_stats()

    # Waiting on HTTP costs little CPU: a fraction of a core keeps actors schedulable next to other work.
    server_actor = ray.remote(num_cpus=0.1, max_concurrency=4)(AnnotateActor)
    engine_env = {"VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_HOST_IP": "127.0.0.1", "HF_HUB_OFFLINE": "1",
                  "VLLM_NO_USAGE_STATS": "1"}
    engine_actor = ray.remote(num_cpus=1, max_concurrency=1, runtime_env={"env_vars": engine_env})(
        EngineAnnotateActor)
    return server_actor, engine_actor


def resolve_docs_dir(cfg, docs_dir: str | Path | None) -> Path:
    if docs_dir or cfg.annotate.docs:
        folder = Path(docs_dir or cfg.annotate.docs)
    else:
        unique = Path(cfg.out) / "unique"
        folder = unique if any(unique.glob("*.parquet")) else Path(cfg.out) / "docs"
    if not any(folder.glob("*.parquet")):
        raise FileNotFoundError(f"annotate: no Parquet files in {folder} (run extract/dedup first or pass --docs)")
    return folder


SAMPLING_COLUMNS = ["doc_id", "language", "rule_failures", "line_punct_ratio", "alpha_word_ratio",
                    "short_line_ratio"]


def load_sample(folder: Path, n: int, seed: int, max_chars: int) -> list[dict[str, Any]]:
    """Pick the sample from the light columns, then read only the sampled documents' text (truncated:
    the prompts use the first `max_chars` characters)."""
    files = parquet_files(folder)
    candidates: list[dict[str, Any]] = []
    for path in files:
        names = set(pq.read_schema(path).names)
        missing = {"doc_id", "text"} - names
        if missing:
            raise ValueError(f"annotate: {path} has no column(s) {sorted(missing)}")
        table = pq.read_table(path, columns=[c for c in SAMPLING_COLUMNS if c in names])
        candidates.extend(table.to_pylist())
    sample = select_sample(candidates, n, seed)
    if not sample:
        return []
    wanted = {doc["doc_id"] for doc in sample}
    texts: dict[str, str] = {}
    for path in files:
        table = pq.read_table(path, columns=["doc_id", "text"], filters=[("doc_id", "in", list(wanted))])
        for doc_id, text in zip(table.column("doc_id").to_pylist(), table.column("text").to_pylist()):
            texts[doc_id] = (text or "")[:max_chars]
    return [{"doc_id": d["doc_id"], "language": d.get("language"), "text": texts[d["doc_id"]]} for d in sample]


def _remove_stale(layout: RunLayout, keys: set[str]) -> int:
    """Drop labels/markers of shards not in the current plan (a changed sample size or seed): their answers
    are still in the response cache, so nothing paid for is lost."""
    removed = 0
    for path in list(layout.dataset(LABELS).glob("part-*.parquet")):
        if path.stem not in keys:
            path.unlink()
            removed += 1
    for path in list(layout.state(STAGE).glob("part-*.json")):
        if path.stem not in keys:
            path.unlink()
    return removed


def shard_done(layout: RunLayout, key: str) -> bool:
    marker = layout.marker(STAGE, key)
    if not marker.exists():
        return False
    return json.loads(marker.read_text()).get("transient_errors", 0) == 0


def summarize_labels(layout: RunLayout, keys: Sequence[str]) -> dict[str, Any]:
    """Totals over the current plan's shard markers: labels ok / errors by kind, tokens in and out."""
    totals: dict[str, Any] = {"docs": 0, "labels": 0, "ok": 0, "transient_errors": 0, "cached": 0,
                              "prompt_tokens": 0, "completion_tokens": 0}
    errors: Counter = Counter()
    for key in keys:
        marker = layout.marker(STAGE, key)
        if not marker.exists():
            continue
        data = json.loads(marker.read_text())
        totals["labels"] += data["input"]
        totals["ok"] += data["kept"]
        errors.update(data["errored"])
        for name in ("docs", "transient_errors", "cached", "prompt_tokens", "completion_tokens"):
            totals[name] += data.get(name, 0)
    totals["errors"] = dict(sorted(errors.items()))
    totals["error_total"] = sum(errors.values())
    return totals


def run(cfg, docs_dir: str | Path | None = None, *, quiet: bool = False) -> dict[str, Any]:
    """Annotate a sample of `docs_dir` (default: the run's unique/ or docs/) into `<cfg.out>/labels`."""
    import ray

    from pipeline.llm.client import check_server
    from pipeline.ray_exec import ActorQueue, ensure_ray
    from pipeline.report import build_report

    layout = RunLayout(cfg.out)
    folder = resolve_docs_dir(cfg, docs_dir)
    tasks = TaskSet(cfg)  # fail fast, in the driver, on a broken prompt or taxonomy file
    if cfg.llm.backend == "engine" and not cfg.llm.engine_model:
        raise ValueError("llm.backend=engine needs llm.engine_model (a model folder)")
    sample = load_sample(folder, cfg.annotate.sample, cfg.annotate.seed, cfg.annotate.max_doc_chars)
    shards = plan_shards(sample, cfg.annotate.shard_size, tasks.signature())
    keys = [key for key, _ in shards]
    _remove_stale(layout, set(keys))
    todo = [(key, docs) for key, docs in shards if not shard_done(layout, key)]

    started = time.perf_counter()
    startup_s = 0.0
    client_stats: list[dict[str, Any]] = []
    if todo:
        if cfg.llm.backend == "server":
            check_server(cfg.llm, STAGE)
        ensure_ray(cfg.ray)
        server_actor, engine_actor = _actor_classes()
        actor_cls, per_actor = (engine_actor, 1) if cfg.llm.backend == "engine" else (server_actor, 2)
        if cfg.llm.backend == "engine" and cfg.llm.engine_num_gpus:
            actor_cls = actor_cls.options(num_gpus=cfg.llm.engine_num_gpus)
        actors = [actor_cls.remote(cfg, str(layout.root))
                  for _ in range(min(cfg.annotate.num_actors, len(todo)))]
        try:
            ray.get([actor.client_stats.remote() for actor in actors])  # ready: worker started, model loaded
            startup_s = time.perf_counter() - started
            queue = ActorQueue(actors, "annotate_shard", per_actor, STAGE, total=len(todo), quiet=quiet)
            for key, docs in todo:
                queue.submit(key, docs, str(folder))
            queue.drain()
            client_stats = ray.get([actor.client_stats.remote() for actor in actors])
        finally:
            for actor in actors:
                ray.kill(actor)
    seconds = time.perf_counter() - started

    labels = summarize_labels(layout, keys)
    requests = sum(s.get("requests", 0) for s in client_stats)
    answered = sum(s.get("completions", 0) + s.get("cache_hits", 0) for s in client_stats)
    summary = {
        "docs_dir": str(folder), "sampled": len(sample), "shards": len(shards), "shards_run": len(todo),
        **labels,
        "this_run": {
            "seconds": round(seconds, 3),
            "requests": requests,
            "completions": sum(s.get("completions", 0) for s in client_stats),
            "cache_hits": sum(s.get("cache_hits", 0) for s in client_stats),
            "retries": sum(s.get("retries", 0) for s in client_stats),
            "failures": dict(sum((Counter(s.get("failures", {})) for s in client_stats), Counter())),
            "prompt_tokens": sum(s.get("prompt_tokens", 0) for s in client_stats),
            "completion_tokens": sum(s.get("completion_tokens", 0) for s in client_stats),
            "requests_per_s": round(requests / seconds, 3) if seconds > 0 and requests else 0.0,
            "labels_per_s": round(answered / seconds, 3) if seconds > 0 and answered else 0.0,
            # actor start-up (worker process, imports; the model load for the engine backend) is a fixed cost
            "startup_s": round(startup_s, 3),
            "steady_requests_per_s": round(requests / (seconds - startup_s), 3)
            if seconds > startup_s and requests else 0.0,
        },
        "complete": labels["labels"] == len(sample) * len(cfg.annotate.tasks) and labels["transient_errors"] == 0,
    }
    # The stage marker means "nothing left to retry" (the whole-pipeline run skips a done stage).
    if summary["complete"]:
        write_json(summary, layout.stage_marker(STAGE))
    else:
        layout.stage_marker(STAGE).unlink(missing_ok=True)
    build_report(layout, extra={STAGE: summary})
    if not quiet:
        print(format_summary(summary))
    return summary


def format_summary(summary: dict[str, Any]) -> str:
    run_stats = summary["this_run"]
    lines = [
        f"[{STAGE}] {summary['sampled']} docs sampled from {summary['docs_dir']}, {summary['labels']} labels: "
        f"{summary['ok']} ok, {summary['error_total']} errors",
    ]
    for kind, count in summary["errors"].items():
        lines.append(f"  error {kind}: {count}")
    lines.append(f"  tokens in/out {summary['prompt_tokens']}/{summary['completion_tokens']}; this run: "
                 f"{run_stats['requests']} requests ({run_stats['requests_per_s']}/s), "
                 f"{run_stats['cache_hits']} cache hits, {run_stats['retries']} retries, {run_stats['seconds']}s")
    if not summary["complete"]:
        lines.append(f"  incomplete: {summary['transient_errors']} labels failed on transient errors; rerun to retry them")
    return "\n".join(lines)


# -------------------------------------------------------------------------------------------- CLI
def register_cli(subparsers) -> None:
    from pipeline.cli import _common, _llm_flags

    p = subparsers.add_parser("annotate", help="LLM quality scores and topic tags for a sample -> labels/ (Ray)")
    _common(p)
    _llm_flags(p)
    p.add_argument("--docs", help="input Parquet folder (default: OUT/unique, else OUT/docs)")
    p.add_argument("--sample", type=int, help="documents to annotate (config: annotate.sample)")
    p.set_defaults(handler=_cmd_annotate)


def _cmd_annotate(args) -> int:
    import sys

    from pipeline.cli import _config
    from pipeline.llm.client import LLMUnavailable

    extra = [f"annotate.sample={args.sample}"] if args.sample else []
    cfg = _config(args, extra)
    try:
        summary = run(cfg, args.docs)
    except (FileNotFoundError, PromptError, ValueError, LLMUnavailable) as exc:
        print(f"curate annotate: {exc}", file=sys.stderr)
        return 2
    print(f"labels: {Path(cfg.out) / LABELS}")
    return 0 if summary["complete"] else 1
