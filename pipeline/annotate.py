"""Annotate stage: a seeded, stratified sample of documents -> LLM quality score (0-5) and topic tags -> labels/.

Annotation samples; it does not filter: no document is dropped here, so the stage is not one of the
report's FILTER_STAGES. Every (document, task) of the sample gets exactly one labels/ row, valid or with
an `error` kind and the raw answer kept; never a default score.

Steps, each testable alone:
- `select_sample`: deterministic (seeded hash order) and stratified by language and a coarse rule-score
  bucket, so low- and high-quality pages are both present.
- `TaskSet.requests` / `label_row`: prompt rendering and parsing, pure.
- `AnnotateStage`: an LLM stage (pipeline.llm.stage): the sample's shards are answered by the HTTP client or
  the in-process vLLM engine on Ray actors, and the runtime writes labels/ and the shard markers.
- `run`: the Python API, `run_stage(AnnotateStage(cfg))`.

A shard whose requests failed for transient reasons (server down, timeouts) is written with those errors
and redone by the next run; thanks to the response cache the rerun pays only for what failed. The sample
size and seed are the plan, not settings: a larger sample only pays for the new pages.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from pipeline import schemas
from pipeline.io import RunLayout, parquet_files
from pipeline.llm.client import Completion, LLMError, canonical_json
from pipeline.llm.parse import Parsed, parse_quality, parse_topics, quality_schema, topics_schema
from pipeline.llm.prompts import Prompt, PromptError, load_prompt
from pipeline.llm.stage import LLMStage, LLMWorker, is_transient, sampling_params
from pipeline.runtime import Output, Shard, ShardResult, run_stage
from pipeline.sources import InputError

STAGE = "annotate"
LABELS = "labels"
# Coarse quality proxy from extract's rule scores (each in [0, 1], higher is cleaner prose).
BUCKET_EDGES = (0.5, 0.75)


class AnnotateInputError(InputError):
    """The documents to sample are not there, or are not docs rows."""


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


# ------------------------------------------------------------------------------------------ input
def resolve_docs_dir(cfg) -> Path:
    """annotate.docs, else the run's unique/ (after dedup), else its docs/; it must hold Parquet files."""
    folder = Path(cfg.annotate.docs) if cfg.annotate.docs else RunLayout(cfg.out).documents()
    if not any(folder.glob("*.parquet")):
        raise AnnotateInputError(f"annotate: no Parquet files in {folder} (run extract/dedup first or pass --docs)")
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
            raise AnnotateInputError(f"annotate: {path} has no column(s) {sorted(missing)}")
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




# ------------------------------------------------------------------------------------------- the stage
class AnnotateStage(LLMStage):
    """The sample -> labels/: one shard per `annotate.shard_size` sampled documents, answered on LLM actors.
    Label rows carry their own errors (no decisions/ rows): a shard's input is its (document, task) labels,
    kept = valid, errored = by error kind."""

    name = STAGE
    section = "annotate"
    outputs = (Output(LABELS, schemas.LABELS),)
    writes_decisions = False
    supports_engine = True

    def __init__(self, cfg):
        super().__init__(cfg)
        self.docs_dir: Path | None = None
        self.sampled = 0

    @cached_property
    def tasks(self) -> TaskSet:
        return TaskSet(self.cfg)

    def check(self) -> None:
        super().check()
        self.tasks  # noqa: B018 - a broken prompt or taxonomy file fails here, in the driver

    def settings(self) -> dict[str, Any]:
        """What every label depends on besides the page (the sample size and seed are the plan)."""
        tasks = self.tasks
        return {"annotate.prompts": {task: {"prompt_id": p.prompt_id, "prompt_hash": p.prompt_hash}
                                     for task, p in tasks.prompts.items()},
                "llm.model": tasks.model, "sampling_params": tasks.params,
                "annotate.max_tokens": tasks.max_tokens, "annotate.max_doc_chars": tasks.max_doc_chars}

    def plan(self) -> list[Shard]:
        annotate = self.cfg.annotate
        self.docs_dir = resolve_docs_dir(self.cfg)
        sample = load_sample(self.docs_dir, annotate.sample, annotate.seed, annotate.max_doc_chars)
        self.sampled = len(sample)
        return [Shard(key=key, source=str(self.docs_dir), payload=docs)
                for key, docs in plan_shards(sample, annotate.shard_size, self.tasks.signature())]

    def requests(self, worker: LLMWorker, shard: Shard) -> list[LabelRequest]:
        return [request for doc in shard.payload for request in self.tasks.requests(doc)]

    def result(self, worker: LLMWorker, shard: Shard, requests: Sequence[LabelRequest],
               answers: list[Completion | LLMError]) -> ShardResult:
        rows = [label_row(request, answer, self.tasks.model) for request, answer in zip(requests, answers)]
        stats = self.new_stats(shard)
        stats.input = len(rows)
        for row in rows:
            if row.get("error"):
                stats.error(row["error"])
            else:
                stats.kept += 1
        stats.extra.update(docs=len(shard.payload), cached=sum(1 for row in rows if row.get("cached")),
                           prompt_tokens=sum(row.get("prompt_tokens") or 0 for row in rows),
                           completion_tokens=sum(row.get("completion_tokens") or 0 for row in rows))
        transient = sum(1 for row in rows if is_transient(row.get("error")))
        return ShardResult(rows={LABELS: rows}, decisions=[], stats=stats, transient=transient)

    def finish(self, summary: dict[str, Any], markers: list[dict[str, Any]]) -> dict[str, Any]:
        extra = super().finish(summary, markers)
        extra["this_run"]["labels_per_s"] = extra["this_run"]["answers_per_s"]
        totals = {name: sum(m.get(name, 0) for m in markers)
                  for name in ("docs", "cached", "prompt_tokens", "completion_tokens")}
        return {**extra, **totals, "docs_dir": str(self.docs_dir), "sampled": self.sampled,
                "labels": summary["input"], "ok": summary["kept"], "errors": dict(summary["errored"]),
                "error_total": sum(summary["errored"].values())}

    def format_summary(self, summary: dict[str, Any]) -> str:
        run_stats = summary["this_run"]
        lines = [f"[{STAGE}] {summary['sampled']} docs sampled from {summary['docs_dir']}, {summary['labels']} "
                 f"labels: {summary['ok']} ok, {summary['error_total']} errors"]
        for kind, count in summary["errors"].items():
            lines.append(f"  error {kind}: {count}")
        lines.append(f"  tokens in/out {summary['prompt_tokens']}/{summary['completion_tokens']}; this run: "
                     f"{run_stats['requests']} requests ({run_stats['requests_per_s']}/s), "
                     f"{run_stats['cache_hits']} cache hits, {run_stats['retries']} retries, {run_stats['seconds']}s")
        if not summary["complete"]:
            lines.append(f"  incomplete: {summary['transient_errors']} labels failed on transient errors; rerun to "
                         "retry them")
        return "\n".join(lines)


def run(cfg, docs_dir: str | Path | None = None, *, quiet: bool = False) -> dict[str, Any]:
    """Annotate a sample of `docs_dir` (default: annotate.docs, else the run's unique/ or docs/) into
    `<cfg.out>/labels`; returns the stage summary (`complete` is False while transient errors remain)."""
    if docs_dir is not None:
        cfg = cfg.model_copy(update={"annotate": cfg.annotate.model_copy(update={"docs": str(docs_dir)})})
    return run_stage(AnnotateStage(cfg), quiet=quiet)
