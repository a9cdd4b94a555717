"""Annotate stage: a seeded, stratified sample of documents -> LLM quality score (0-5), topic and format tags
-> labels/.

Annotation samples; it does not filter: no document is dropped here, so the stage is not one of the
report's FILTER_STAGES. Every (document, task) of the sample gets exactly one labels/ row, valid or with
an `error` kind and the raw answer kept; never a default score.

Two modes (`annotate.mode`): `combined` (default) asks once per page for every label (`prompts/labels_v1.txt`:
reason, score, 1-3 topics, 1-2 formats; task `labels`), `separate` asks once per task (`quality`, `topics`).
Score requests ask for the logprobs of the score token: `quality_probs` (p(0..5)) and `quality_expected`
(sum k * p(k)) come from them, null when the server returned none (sampled score only).

Teacher self-consistency: a seeded subset of the sample (`annotate.consistency_sample`) is labelled a second
time at `annotate.consistency_temperature` with `annotate.consistency_seed`, as shards of their own
(`consistency-*`, their own cache entries) writing to labels_consistency/, so labels/ (what distil reads)
holds the first pass only. `finish` compares the two passes (`self_consistency`: exact and within-1
agreement and quadratic-weighted kappa of the score, mean Jaccard of topics and of formats) into the
summary and the labels card, labels/README.md.

Steps, each testable alone:
- `select_sample`: deterministic (seeded hash order) and stratified by language and a coarse rule-score
  bucket, so low- and high-quality pages are both present.
- `TaskSet.requests` / `label_row`: prompt rendering and parsing, pure.
- `consistency_subset`, `self_consistency` (and the agreement measures under it): pure; the labels card is
  pipeline.cards.labels.
- `AnnotateStage`: an LLM stage (pipeline.llm.stage): the sample's shards are answered by the HTTP client or
  the in-process vLLM engine on Ray actors, and the runtime writes labels/ and the shard markers. It runs
  through the registry: `pipeline.stages.run_stages(cfg, "annotate")`.

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
from pipeline.cards.labels import consistency_line, labels_card, noise_warning
from pipeline.config import ConfigError, RunConfig
from pipeline.io import RunLayout, parquet_files, read_dataset, write_text
from pipeline.llm.client import Completion, LLMError, canonical_json
from pipeline.llm.parse import (
    QUALITY_MAX,
    QUALITY_MIN,
    Parsed,
    labels_schema,
    parse_labels,
    parse_quality,
    parse_topics,
    quality_schema,
    score_distribution,
    topics_schema,
)
from pipeline.llm.prompts import Prompt, PromptError, load_prompt
from pipeline.llm.stage import LLMStage, LLMWorker, is_transient, sampling_params
from pipeline.runtime import DOCUMENTS, Input, Output, Shard, ShardResult
from pipeline.sources import InputError

STAGE = "annotate"
LABELS = "labels"
CONSISTENCY = "labels_consistency"  # the second, self-consistency pass (same schema; distil never reads it)
COMBINED = "labels"  # the task of a combined row: every label from one answer
# Tasks whose answer carries the score: their requests ask for the score token's top alternatives.
SCORED_TASKS = ("quality", COMBINED)
TOP_LOGPROBS = 20  # the most vLLM returns; at the score token the grammar leaves only the digits 0-5
CARD = "README.md"
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


def plan_shards(sample: Sequence[dict[str, Any]], shard_size: int, signature: str = "",
                prefix: str = "part") -> list[tuple[str, list[dict[str, Any]]]]:
    """Consecutive groups of `shard_size` documents, each named by a hash of its doc_ids and of `signature`
    (what the labels depend on: tasks, prompt hashes, model, sampling). A changed sample or labelling setup
    gives new names; an unchanged one the same names, so finished shards are skipped."""
    shards = []
    for start in range(0, len(sample), shard_size):
        members = list(sample[start : start + shard_size])
        digest = hashlib.sha1("\n".join([signature, *(d["doc_id"] for d in members)]).encode()).hexdigest()[:16]
        shards.append((f"{prefix}-{digest}", members))
    return shards


def consistency_subset(sample: Sequence[dict[str, Any]], n: int, seed: int) -> list[dict[str, Any]]:
    """The pages labelled a second time: the first `n` of the sample in the order seeded by `seed` (the same
    sample and seed give the same subset, in a stable order)."""
    if n <= 0:
        return []
    return sorted(sample, key=lambda d: _seeded_rank(seed, d["doc_id"]))[:n]


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
    """The configured tasks with their prompts, answer schemas, token budgets and sampling parameters.
    `temperature` / `seed` override llm.temperature / llm.seed (the self-consistency pass)."""

    def __init__(self, cfg: RunConfig, *, temperature: float | None = None, seed: int | None = None):
        annotate = cfg.annotate
        self.mode = annotate.mode
        self.max_doc_chars = annotate.max_doc_chars
        self.model = cfg.llm.model
        self.params = sampling_params(cfg.llm)
        if temperature is not None:
            self.params["temperature"] = temperature
        if seed is not None:
            self.params["seed"] = seed
        # Both backends return the score token's alternatives (the engine's converted to the server's shape).
        self.logprobs = annotate.score_probs
        if self.mode == "combined":
            if sorted(annotate.tasks) != ["quality", "topics"]:
                raise ConfigError(f"annotate.tasks={list(annotate.tasks)} applies to annotate.mode=separate: "
                                  "annotate.mode=combined asks for every label (score, topics, format) in one "
                                  "request; set annotate.mode=separate to run only some tasks")
            tasks = [COMBINED]
        else:
            tasks = list(annotate.tasks)
        prompt_ids = {"quality": annotate.quality_prompt, "topics": annotate.topics_prompt,
                      COMBINED: annotate.labels_prompt}
        self.prompts: dict[str, Prompt] = {}
        self.schemas: dict[str, dict[str, Any]] = {}
        self.max_tokens: dict[str, int] = {}
        for task in tasks:
            prompt = load_prompt(prompt_ids[task], cfg.llm.prompts_dir)
            option = "labels_prompt" if task == COMBINED else f"{task}_prompt"
            if prompt.task != task:
                raise PromptError(f"annotate.{option}={prompt.prompt_id!r} is a {prompt.task!r} prompt")
            if task in ("topics", COMBINED) and not prompt.taxonomy:
                raise PromptError(f"{prompt.path}: a {task} prompt needs a `taxonomy:` header line")
            if task == COMBINED and not prompt.formats:
                raise PromptError(f"{prompt.path}: a labels prompt needs a `formats:` header line")
            self.prompts[task] = prompt
            if task == COMBINED:
                self.schemas[task] = labels_schema(prompt.topic_ids, prompt.format_ids)
            else:
                self.schemas[task] = quality_schema() if task == "quality" else topics_schema(prompt.topic_ids)
            self.max_tokens[task] = annotate.labels_max_tokens if task == COMBINED else annotate.max_tokens

    def task_params(self, task: str) -> dict[str, Any]:
        """The request's sampling parameters; a score request also asks for the top alternatives per token."""
        if self.logprobs and task in SCORED_TASKS:
            return {**self.params, "logprobs": True, "top_logprobs": TOP_LOGPROBS}
        return dict(self.params)

    def signature(self) -> str:
        """What every label depends on besides the page: tasks, prompt hashes, model, sampling, truncation."""
        return canonical_json({"prompts": {t: p.prompt_hash for t, p in self.prompts.items()}, "model": self.model,
                               "params": {t: self.task_params(t) for t in self.prompts},
                               "max_tokens": self.max_tokens, "max_doc_chars": self.max_doc_chars})

    def requests(self, doc: dict[str, Any]) -> list[LabelRequest]:
        return [LabelRequest(doc_id=doc["doc_id"], task=task, prompt=prompt,
                             messages=prompt.render(doc["text"] or "", self.max_doc_chars),
                             schema=self.schemas[task], max_tokens=self.max_tokens[task],
                             params=self.task_params(task))
                for task, prompt in self.prompts.items()]


def parse_answer(request: LabelRequest, text: str | None, finish_reason: str | None) -> Parsed:
    if request.task == COMBINED:
        return parse_labels(text, request.prompt.topic_ids, request.prompt.format_ids, finish_reason)
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
        if request.task in SCORED_TASKS:
            # the score's distribution when the answer kept the score token's alternatives; else sampled only
            distribution = score_distribution((result.logprobs or {}).get("score"), parsed.value["quality_score"])
            if distribution is not None:
                row.update(quality_probs=distribution[0], quality_expected=distribution[1])
    else:
        row.update(error=parsed.error, error_detail=parsed.detail)
    return row


# ------------------------------------------------------------------------------- teacher self-consistency
def exact_agreement(first: Sequence[int], second: Sequence[int]) -> float | None:
    """Share of pages given the same score by both passes (None without pages)."""
    if not first:
        return None
    return sum(a == b for a, b in zip(first, second)) / len(first)


def within_one_agreement(first: Sequence[int], second: Sequence[int]) -> float | None:
    """Share of pages whose two scores differ by at most 1."""
    if not first:
        return None
    return sum(abs(a - b) <= 1 for a, b in zip(first, second)) / len(first)


def quadratic_weighted_kappa(first: Sequence[int], second: Sequence[int], low: int = QUALITY_MIN,
                             high: int = QUALITY_MAX) -> float | None:
    """Cohen's kappa with quadratic weights over the scores low..high: 1 - sum(w * observed) / sum(w * expected),
    w_ij = (i - j)^2 / (k - 1)^2, expected from the two passes' marginals. 1 is perfect agreement, 0 what
    chance gives. None without pages, or when it is undefined (both passes gave one same score throughout)."""
    n, k = len(first), high - low + 1
    if n == 0:
        return None
    observed = [[0.0] * k for _ in range(k)]
    for a, b in zip(first, second):
        observed[a - low][b - low] += 1
    rows = [sum(observed[i]) for i in range(k)]
    cols = [sum(observed[i][j] for i in range(k)) for j in range(k)]
    weight = [[(i - j) ** 2 / (k - 1) ** 2 for j in range(k)] for i in range(k)]
    disagreement = sum(weight[i][j] * observed[i][j] for i in range(k) for j in range(k))
    chance = sum(weight[i][j] * rows[i] * cols[j] / n for i in range(k) for j in range(k))
    if chance == 0:
        return None
    return 1.0 - disagreement / chance


def jaccard(first: Sequence[str], second: Sequence[str]) -> float:
    a, b = set(first), set(second)
    return 1.0 if not a and not b else len(a & b) / len(a | b)


def mean_jaccard(pairs: Sequence[tuple[Sequence[str], Sequence[str]]]) -> float | None:
    return sum(jaccard(a, b) for a, b in pairs) / len(pairs) if pairs else None


def doc_labels(rows: Sequence[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per document, the valid labels of label rows (combined or separate): score, topics, format."""
    labels: dict[str, dict[str, Any]] = {}
    for row in rows:
        if row.get("error") is not None:
            continue
        doc = labels.setdefault(row["doc_id"], {"score": None, "topics": None, "format": None})
        for field, column in (("score", "quality_score"), ("topics", "topics"), ("format", "format")):
            if row.get(column) is not None:
                doc[field] = row[column]
    return labels


def self_consistency(first: dict[str, dict[str, Any]], second: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Agreement of the teacher with itself on the pages both passes labelled (`doc_labels` of each pass):
    exact / within-1 agreement and quadratic-weighted kappa of the score, mean Jaccard of topics and of
    formats, and how many pages each figure is over. A figure without pages is None."""

    def paired(field: str) -> list[tuple[Any, Any]]:
        return [(first[d][field], second[d][field]) for d in sorted(second)
                if d in first and first[d][field] is not None and second[d][field] is not None]

    scores, topics, formats = paired("score"), paired("topics"), paired("format")
    a, b = [x for x, _ in scores], [y for _, y in scores]

    def rounded(value: float | None) -> float | None:
        return None if value is None else round(value, 4)

    return {"pages": len(scores), "exact": rounded(exact_agreement(a, b)),
            "within_1": rounded(within_one_agreement(a, b)), "kappa": rounded(quadratic_weighted_kappa(a, b)),
            "topics_jaccard": rounded(mean_jaccard(topics)), "topics_pages": len(topics),
            "format_jaccard": rounded(mean_jaccard(formats)), "format_pages": len(formats)}


# ------------------------------------------------------------------------------------------ input
def check_docs_dir(folder: Path) -> Path:
    """The folder to sample (annotate.docs, else the run's unique/ after dedup, else its docs/) must hold
    Parquet files."""
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
def _pass_counts(markers: Sequence[dict[str, Any]]) -> dict[str, Any]:
    errors: dict[str, int] = defaultdict(int)
    for marker in markers:
        for kind, n in marker["errored"].items():
            errors[kind] += n
    return {"labels": sum(m["input"] for m in markers), "ok": sum(m["kept"] for m in markers),
            "errors": dict(sorted(errors.items())), "error_total": sum(errors.values()),
            "with_probs": sum(m.get("with_probs", 0) for m in markers)}


class AnnotateStage(LLMStage):
    """The sample -> labels/: one shard per `annotate.shard_size` sampled documents, answered on LLM actors;
    then the self-consistency subset -> labels_consistency/, shards of their own. Label rows carry their own
    errors (no decisions/ rows): a shard's input is its (document, task) labels, kept = valid, errored = by
    error kind. A shard writes only its own pass's dataset."""

    name = STAGE
    section = "annotate"
    inputs = (Input(DOCUMENTS, config="annotate.docs"),)
    outputs = (Output(LABELS, schemas.LABELS), Output(CONSISTENCY, schemas.LABELS))
    writes_decisions = False
    supports_engine = True

    def __init__(self, cfg: RunConfig):
        super().__init__(cfg)
        self.docs_dir: Path | None = None
        self.sampled = 0
        self.consistency_ids: list[str] = []

    @classmethod
    def enabled(cls, cfg: RunConfig) -> bool:
        """Labelled only when no classifier is given (`classify.classifier` reuses one)."""
        return cfg.classify.classifier is None

    @cached_property
    def tasks(self) -> TaskSet:
        return TaskSet(self.cfg)

    @cached_property
    def consistency_tasks(self) -> TaskSet:
        annotate = self.cfg.annotate
        return TaskSet(self.cfg, temperature=annotate.consistency_temperature, seed=annotate.consistency_seed)

    def task_set(self, shard: Shard) -> TaskSet:
        return self.consistency_tasks if shard.payload["pass"] else self.tasks

    def check(self) -> None:
        super().check()
        self.tasks  # noqa: B018 - a broken prompt or taxonomy file fails here, in the driver
        self.consistency_tasks  # noqa: B018

    def settings(self) -> dict[str, Any]:
        """What every first-pass label depends on besides the page (the sample size and seed are the plan; so is
        the self-consistency pass: another temperature or seed names other shards, which replace the old)."""
        tasks = self.tasks
        return {"annotate.mode": tasks.mode,
                "annotate.prompts": {task: {"prompt_id": p.prompt_id, "prompt_hash": p.prompt_hash}
                                     for task, p in tasks.prompts.items()},
                "llm.model": tasks.model, "sampling_params": {t: tasks.task_params(t) for t in tasks.prompts},
                "annotate.max_tokens": tasks.max_tokens, "annotate.max_doc_chars": tasks.max_doc_chars}

    def shard_files(self, shard: Shard) -> list[str]:
        return []  # a shard carries its documents' text

    def plan(self) -> list[Shard]:
        annotate = self.cfg.annotate
        self.docs_dir = check_docs_dir(self.input_folder())
        sample = load_sample(self.docs_dir, annotate.sample, annotate.seed, annotate.max_doc_chars)
        self.sampled = len(sample)
        source = str(self.docs_dir)
        shards = [Shard(key=key, source=source, payload={"pass": 0, "docs": docs})
                  for key, docs in plan_shards(sample, annotate.shard_size, self.tasks.signature())]
        subset = consistency_subset(sample, annotate.consistency_sample, annotate.consistency_seed)
        self.consistency_ids = [doc["doc_id"] for doc in subset]
        shards += [Shard(key=key, source=source, payload={"pass": 1, "docs": docs})
                   for key, docs in plan_shards(subset, annotate.shard_size, self.consistency_tasks.signature(),
                                                prefix="consistency")]
        return shards

    def requests(self, worker: LLMWorker, shard: Shard) -> list[LabelRequest]:
        tasks = self.task_set(shard)
        return [request for doc in shard.payload["docs"] for request in tasks.requests(doc)]

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
        stats.extra.update(docs=len(shard.payload["docs"]), cached=sum(1 for row in rows if row.get("cached")),
                           prompt_tokens=sum(row.get("prompt_tokens") or 0 for row in rows),
                           completion_tokens=sum(row.get("completion_tokens") or 0 for row in rows),
                           with_probs=sum(1 for row in rows if row.get("quality_probs") is not None),
                           **{"pass": shard.payload["pass"]})
        transient = sum(1 for row in rows if is_transient(row.get("error")))
        dataset = CONSISTENCY if shard.payload["pass"] else LABELS
        return ShardResult(rows={dataset: rows}, decisions=[], stats=stats, transient=transient)

    def measure_consistency(self) -> dict[str, Any] | None:
        """The two passes compared on the consistency subset (None when the pass is off or the sample empty)."""
        if not self.consistency_ids:
            return None
        layout = RunLayout(self.cfg.out)
        wanted = set(self.consistency_ids)
        columns = ["doc_id", "quality_score", "topics", "format", "error"]
        first = [r for r in read_dataset(layout.dataset(LABELS), schemas.LABELS, columns).to_pylist()
                 if r["doc_id"] in wanted]
        second = read_dataset(layout.dataset(CONSISTENCY), schemas.LABELS, columns).to_pylist()
        annotate = self.cfg.annotate
        figures = self_consistency(doc_labels(first), doc_labels(second))
        figures.update(temperature=annotate.consistency_temperature, seed=annotate.consistency_seed,
                       min_kappa=annotate.min_kappa,
                       noisy=figures["kappa"] is not None and figures["kappa"] < annotate.min_kappa)
        return figures

    def finish(self, summary: dict[str, Any], markers: list[dict[str, Any]]) -> dict[str, Any]:
        extra = super().finish(summary, markers)
        extra["this_run"]["labels_per_s"] = extra["this_run"]["answers_per_s"]
        totals = {name: sum(m.get(name, 0) for m in markers)
                  for name in ("docs", "cached", "prompt_tokens", "completion_tokens")}
        first = _pass_counts([m for m in markers if not m.get("pass")])
        second = _pass_counts([m for m in markers if m.get("pass")])
        result = {**extra, **totals, "docs_dir": str(self.docs_dir), "sampled": self.sampled, "mode": self.tasks.mode,
                  **first, "consistency_labels": second, "self_consistency": self.measure_consistency()}
        write_text(labels_card(result, self.tasks, self.consistency_tasks),
                   RunLayout(self.cfg.out).dataset(LABELS) / CARD)
        return result

    def format_summary(self, summary: dict[str, Any]) -> str:
        run_stats = summary["this_run"]
        lines = [f"[{STAGE}] {summary['sampled']} docs sampled from {summary['docs_dir']}, {summary['labels']} "
                 f"labels: {summary['ok']} ok, {summary['error_total']} errors"]
        for kind, count in summary["errors"].items():
            lines.append(f"  error {kind}: {count}")
        lines.append(f"  tokens in/out {summary['prompt_tokens']}/{summary['completion_tokens']}; this run: "
                     f"{run_stats['requests']} requests ({run_stats['requests_per_s']}/s), "
                     f"{run_stats['cache_hits']} cache hits, {run_stats['retries']} retries, {run_stats['seconds']}s")
        consistency = summary.get("self_consistency")
        line, warning = consistency_line(consistency), noise_warning(consistency)
        if line:
            second = summary["consistency_labels"]
            lines.append(f"  {line} ({second['ok']} of {second['labels']} second-pass labels ok)")
        if warning:
            lines.append(f"  {warning}")
        if not summary["complete"]:
            lines.append(f"  incomplete: {summary['transient_errors']} labels failed on transient errors; rerun to "
                         "retry them")
        return "\n".join(lines)
