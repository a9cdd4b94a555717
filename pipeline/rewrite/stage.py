"""Rewrite stage: corpus/ pages -> styles routed by the classifier's quality_prob -> checked rewrites in synthetic/.

Rewriting makes copies; it removes nothing from the corpus, so it is one of the report's SIDE_STAGES. Its
units are (document, style) pairs, plus one unit for each document routed to no style; every unit ends kept
(a synthetic/ row), dropped (a check failed, or the page was not routed) or errored (the request failed),
with its reason in decisions/rewrite, and each shard marker satisfies input == kept + dropped + errored.

Steps, each testable alone:
- `route`: quality_prob -> the styles to write, or the reason for none (pure).
- `plan_doc`: the page's chunks (pipeline.rewrite.chunking) and the requests for each style (pure).
- `assemble`: one (document, style)'s chunk answers -> a format-checked `Candidate` with its faithfulness to
  the source chunks, or a failure (pure; the checks are in pipeline.rewrite.checks, the faithfulness measure
  in pipeline.rewrite.faithfulness).
- `decide`: a candidate and the quality classifier's score of its text -> the synthetic row, or the score
  that missed its threshold (`unfaithful_rewrite`, `low_rewrite_quality`; pure).
- `RewriteStage`: an LLM stage (pipeline.llm.stage): the corpus streamed into shards, each answered through
  the shared LLM client (retries, response cache) on Ray actors; the runtime writes synthetic/, decisions/
  and the shard markers, and `finish` the dataset card (synthetic/README.md, pipeline.cards.synthetic). It
  runs through the registry: `pipeline.stages.run_stages(cfg, "rewrite")`.
"""

from __future__ import annotations

import hashlib
import math
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from classifiers.artifact import ArtifactError, ClassifierArtifact
from pipeline import schemas
from pipeline.cards.synthetic import (
    SCORE_COLUMNS,
    ScoreLegend,
    merge_score_stats,
    score_stats,
    scores_line,
    write_card,
)
from pipeline.config import ConfigError, RunConfig
from pipeline.io import RunLayout
from pipeline.llm.client import Completion, LLMError, canonical_json
from pipeline.llm.prompts import Prompt, PromptError, load_prompt
from pipeline.llm.stage import LLMStage, LLMWorker, Requests, is_transient, sampling_params
from pipeline.llm.tokens import TokenCounter, resolve_tokenizer
from pipeline.rewrite import faithfulness as faith
from pipeline.rewrite.checks import (
    LOW_REWRITE_QUALITY,
    UNFAITHFUL_REWRITE,
    Failure,
    RewriteScores,
    check_answer,
    check_rewrite,
    check_scores,
    format_qa_pairs,
    parse_qa_pairs,
    threshold_on,
)
from pipeline.rewrite.chunking import chunk_text
from pipeline.runtime import Input, Output, Shard, ShardResult
from pipeline.sources import InputError

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
# Rewrite settings that do not shape the answers: the input selection and how the work is cut and spread.
NOT_SETTINGS = {"enabled", "corpus", "limit", "shard_size", "num_actors", "styles"}
# The reasons of a score drop (the scores are pipeline.cards.synthetic.SCORE_COLUMNS).
SCORE_REASONS = (UNFAITHFUL_REWRITE, LOW_REWRITE_QUALITY)
# What the card and the summary say of the scores.
SCORE_LEGEND = ScoreLegend(method=faith.METHOD, coverage_target=faith.COVERAGE_TARGET, unfaithful=UNFAITHFUL_REWRITE,
                           low_quality=LOW_REWRITE_QUALITY, threshold_on=threshold_on)


class RewriteInputError(InputError):
    """The corpus to rewrite is not there, or is not classify's corpus/ rows."""


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

    def __init__(self, cfg: RunConfig):
        rewrite = cfg.rewrite
        routed = set(rewrite.mid_styles) | set(rewrite.high_styles)
        unrouted = [s for s in rewrite.styles if s not in routed]
        if unrouted:
            raise ConfigError(f"rewrite.styles: {unrouted} in neither rewrite.mid_styles {rewrite.mid_styles} nor "
                             f"rewrite.high_styles {rewrite.high_styles}")
        if not rewrite.styles:
            raise ConfigError("rewrite.styles is empty: nothing to rewrite")
        self.styles: dict[str, Style] = {}
        for prompt_id in rewrite.styles:
            prompt = load_prompt(prompt_id, cfg.llm.prompts_dir)
            if prompt.task not in STYLE_TASKS:
                raise PromptError(f"{prompt.path}: task {prompt.task!r} is not a rewrite style "
                                  f"(one of {', '.join(STYLE_TASKS)})")
            if prompt.task not in rewrite.max_output_tokens:
                raise ConfigError(f"rewrite.max_output_tokens has no limit for style {prompt.task!r} "
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


@dataclass(frozen=True)
class Candidate:
    """A (page, style) rewrite that passed the format checks: its synthetic row without the quality score yet,
    and its faithfulness to the source chunks (pipeline.rewrite.faithfulness.score_rewrite)."""

    row: dict[str, Any]
    faithfulness: faith.RewriteFaithfulness


def assemble(plan: DocPlan, style: Style, answers: Sequence[Completion | LLMError], *, model: str,
             params_json: str, langid=None, rewrite_cfg) -> Candidate | tuple[str, Failure]:
    """One (page, style): its chunk answers, in order, -> a format-checked `Candidate`, or (outcome, failure).

    A request that failed is `errored` with reason request_<kind>; a check that failed is `dropped`. Any
    chunk failing fails the whole rewrite: a page with a hole in it is not a rewrite of the page. Each
    chunk's answer (for question-answer styles: its pairs, as stored) is scored for faithfulness against its
    own chunk."""
    n = len(answers)
    for index, answer in enumerate(answers):
        if isinstance(answer, LLMError):
            return schemas.ERRORED, Failure(f"request_{answer.kind}",
                                            f"chunk {index + 1}/{n}: {answer.detail} ({answer.attempts} attempts)")
    parts: list[str] = []  # one per chunk: the answer as stored
    for index, answer in enumerate(answers):
        failure = check_answer(answer.text, answer.finish_reason, qa=style.qa)
        if failure is not None:
            return schemas.DROPPED, Failure(failure.reason, f"chunk {index + 1}/{n}: {failure.detail}")
        # question-answer answers parse (check_answer said so) and are stored as their pairs
        parts.append(format_qa_pairs(parse_qa_pairs(answer.text)) if style.qa else answer.text.strip())
    text = "\n\n".join(parts)
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
    faithfulness = faith.score_rewrite(plan.chunks, parts, style.name)
    return Candidate(row={
        "synthetic_id": synthetic_id(plan.doc["doc_id"], style, model, params_json),
        "doc_id": plan.doc["doc_id"], "style": style.name, "prompt_id": style.prompt_id,
        "prompt_hash": style.prompt.prompt_hash, "model": answers[0].model or model,
        "sampling_params": params_json, "n_chunks": n, "text": text, "language": plan.doc.get("language"),
        "quality_prob": plan.doc.get("quality_prob"), "source_tokens": sum(plan.chunk_tokens),
        "prompt_tokens": sum(a.prompt_tokens for a in answers),
        "completion_tokens": sum(a.completion_tokens for a in answers),
        "faithfulness": faithfulness.faithfulness, "kept_content_frac": faithfulness.kept_content_frac,
        "invented_frac": faithfulness.invented_frac,
    }, faithfulness=faithfulness)


def rewrite_scores(candidate: Candidate, quality_prob: float | None) -> RewriteScores:
    """The scores a candidate is decided on: the classifier's on its text (None: no classifier) and its
    faithfulness."""
    f = candidate.faithfulness
    return RewriteScores(quality_prob=quality_prob, faithfulness=f.faithfulness,
                         kept_content_frac=f.kept_content_frac, invented_frac=f.invented_frac, invented=f.invented)


def decide(candidate: Candidate, quality_prob: float | None, rewrite_cfg) -> dict[str, Any] | Failure:
    """The synthetic row of a candidate whose scores pass rewrite.min_faithfulness and rewrite.min_quality_prob
    (pipeline.rewrite.checks.check_scores), or the failure naming the score that missed its threshold."""
    scores = rewrite_scores(candidate, quality_prob)
    failure = check_scores(scores, min_faithfulness=rewrite_cfg.min_faithfulness,
                           min_quality_prob=rewrite_cfg.min_quality_prob)
    if failure is not None:
        chunks = len(candidate.faithfulness.chunks)
        if failure.reason == UNFAITHFUL_REWRITE and chunks > 1:
            failure = Failure(failure.reason, f"{failure.detail}; lowest faithfulness in chunk "
                                              f"{candidate.faithfulness.worst_chunk + 1}/{chunks}")
        return failure
    scored = None if quality_prob is None or math.isnan(quality_prob) else float(quality_prob)
    return {**candidate.row, "rewrite_quality_prob": scored}


def decision_row(doc: dict[str, Any], outcome: str, failure: Failure, source: str,
                 style: str | None = None) -> dict[str, Any]:
    # decisions/ has one row per unit: the style is named first in the detail ("style=<prompt id>; ...").
    detail = f"style={style}; {failure.detail}" if style else failure.detail
    return {"doc_id": doc["doc_id"], "stage": STAGE, "outcome": outcome, "reason": failure.reason,
            "detail": detail[:1000], "url": doc.get("url"), "source": source}


# ------------------------------------------------------------------------------------------- planning
def check_corpus_dir(folder: Path) -> Path:
    """The corpus to rewrite (rewrite.corpus, else the run's corpus/: classify's kept pages) must hold Parquet
    files with the columns routing needs."""
    if not any(folder.glob("*.parquet")):
        raise RewriteInputError(f"rewrite: no Parquet files in {folder} (run classify first or pass --corpus)")
    for path in sorted(folder.glob("*.parquet")):
        missing = sorted({"doc_id", "text", "quality_prob"} - set(pq.read_schema(path).names))
        if missing:
            raise RewriteInputError(f"rewrite: {path} has no column(s) {missing} (expected classify's corpus/ rows)")
    return folder


def corpus_folder(cfg: RunConfig) -> Path:
    """rewrite.corpus, else the run's corpus/ (what the stage's input resolves to; unchecked)."""
    return Path(cfg.rewrite.corpus or RunLayout(cfg.out).dataset("corpus"))


def manifest_classifier(corpus_dir: Path) -> str | None:
    """The classifier folder that scored the corpus, as its manifest records it (`classifier.path` of
    `_manifest.json`, written by classify), or None when the corpus has no such manifest."""
    import json

    try:
        manifest = json.loads((corpus_dir / "_manifest.json").read_text())
    except (OSError, ValueError):
        return None
    classifier = manifest.get("classifier") if isinstance(manifest, dict) else None
    path = classifier.get("path") if isinstance(classifier, dict) else None
    return str(path) if path else None


@dataclass(frozen=True)
class ClassifierChoice:
    """The quality classifier rewrites are scored with (None: none found) and where it was found."""

    folder: str | None
    found_by: str  # the setting or file that named it, or what was looked at


def resolve_quality_classifier(cfg: RunConfig, corpus_dir: Path | None = None) -> ClassifierChoice:
    """The classifier that scored the corpus, to score its rewrites on the same scale: classify.classifier
    (this config names it), else the one the corpus manifest names (the one whose quality_prob routed these
    pages), else the run's <out>/classifier (distil's output). A named folder that is not a usable classifier
    is an error; with none found, quality scoring is off, which rewrite.min_quality_prob must allow (checked
    by `check_quality_classifier`). `corpus_dir`: the corpus rewritten (default: rewrite.corpus, else
    <out>/corpus)."""

    def usable(folder: Path, named_by: str) -> bool:
        if not (folder / "config.yaml").is_file():
            return False
        try:
            ClassifierArtifact.load(folder)
        except ArtifactError as exc:
            raise ConfigError(f"rewrite: the quality classifier named by {named_by} is not usable: {exc}") from None
        return True

    explicit = cfg.classify.classifier
    if explicit:
        if not usable(Path(explicit), "classify.classifier"):
            raise ConfigError(f"classify.classifier: {explicit} is not a classifier folder (no config.yaml); "
                              "rewrites are scored with it (rewrite.min_quality_prob)")
        return ClassifierChoice(str(explicit), "classify.classifier")
    corpus = corpus_folder(cfg) if corpus_dir is None else Path(corpus_dir)
    manifest = corpus / "_manifest.json"
    from_manifest = manifest_classifier(corpus)
    if from_manifest and usable(Path(from_manifest), f"the corpus manifest {manifest}"):
        return ClassifierChoice(from_manifest, f"the corpus manifest ({manifest})")
    own = RunLayout(cfg.out).dataset("classifier")
    if usable(own, f"the run folder ({own})"):
        return ClassifierChoice(str(own), "the run folder (<out>/classifier)")
    looked = ["classify.classifier (not set)", f"the corpus manifest {manifest}"
              + (f" (names {from_manifest}, not a classifier folder)" if from_manifest else " (none or no classifier)"),
              f"{own} (no config.yaml)"]
    return ClassifierChoice(None, "none found: looked at " + ", ".join(looked))


def check_quality_classifier(choice: ClassifierChoice, rewrite_cfg) -> None:
    """rewrite.min_quality_prob on with no classifier to score with: refused, naming the field and the fix."""
    if choice.folder is None and threshold_on(rewrite_cfg.min_quality_prob):
        raise ConfigError(f"rewrite.min_quality_prob={rewrite_cfg.min_quality_prob} needs the quality classifier "
                          f"to score rewrites, and there is {choice.found_by}. Set classify.classifier to a "
                          "classifier folder (`curate distil`'s output), or rewrite.min_quality_prob to null to "
                          "keep rewrites without a quality score")


def quality_scores(classifier, texts: list[str]) -> list[float | None]:
    """The classifier's P(high quality) of each text (NaN: nothing left after its normalisation); None for
    every text when there is no classifier."""
    if classifier is None:
        return [None] * len(texts)
    return [float(p) for p in classifier.score(texts)] if texts else []


def iter_shards(folder: Path, shard_size: int, limit: int | None,
                fingerprint: dict[str, Any]) -> Iterator[tuple[str, str, list[str]]]:
    """The corpus in file order as shards of up to `shard_size` documents of one file: (name, file, doc_ids).
    Only the ids are read here (the driver never holds the pages; a shard reads its own). A shard's name
    hashes its doc_ids and the settings that determine its answers: the same input and settings give the
    same names (complete shards are skipped), changed ones give new names."""
    settings = canonical_json(fingerprint)
    taken = 0
    for path in sorted(folder.glob("*.parquet")):
        for record_batch in pq.ParquetFile(path).iter_batches(batch_size=shard_size, columns=["doc_id"]):
            ids = record_batch.column("doc_id").to_pylist()
            if limit is not None:
                ids = ids[: max(limit - taken, 0)]
            if not ids:
                return
            taken += len(ids)
            digest = hashlib.sha1((settings + "\n" + "\n".join(ids)).encode()).hexdigest()
            yield f"part-{digest[:16]}", str(path), ids


def read_shard_docs(path: str, doc_ids: list[str]) -> list[dict[str, Any]]:
    """The corpus rows of one shard, in the shard's order."""
    columns = [c for c in CORPUS_COLUMNS if c in pq.read_schema(path).names]
    table = pq.read_table(path, columns=columns, filters=[("doc_id", "in", doc_ids)])
    by_id = {row["doc_id"]: row for row in table.to_pylist()}
    return [by_id[doc_id] for doc_id in doc_ids if doc_id in by_id]


# ------------------------------------------------------------------------------------------- the stage
@dataclass
class RewriteTools:
    """Per-worker state besides the client: the token counter (chunking), the language model (checks) and
    the quality classifier (scores; None when none was found and rewrite.min_quality_prob is off)."""

    counter: TokenCounter
    langid: Any = None
    classifier: Any = None
    eval_index: Any = None  # the safety stage's n-gram index of the eval sets (decontam.eval_sets), or None


class RewriteStage(LLMStage):
    """corpus/ -> synthetic/ + decisions/rewrite: one shard per `rewrite.shard_size` pages, on LLM actors."""

    name = STAGE
    section = "rewrite"
    inputs = (Input("corpus", config="rewrite.corpus"),)
    outputs = (Output(SYNTHETIC, schemas.SYNTHETIC),)

    @classmethod
    def enabled(cls, cfg: RunConfig) -> bool:
        return cfg.rewrite.enabled

    def __init__(self, cfg: RunConfig):
        super().__init__(cfg)
        self.corpus_dir: Path | None = None

    @cached_property
    def styles(self) -> StyleSet:
        return StyleSet(self.cfg)

    @cached_property
    def tokenizer(self) -> str | None:
        """The folder of the tokenizer chunks are counted with (None: the estimate)."""
        return resolve_tokenizer(self.cfg)

    @cached_property
    def quality_classifier(self) -> ClassifierChoice:
        """The classifier rewrites are scored with (resolve_quality_classifier), resolved once in the driver."""
        return resolve_quality_classifier(self.cfg, self.input_folder("corpus"))

    @cached_property
    def quality_classifier_fingerprint(self) -> str | None:
        folder = self.quality_classifier.folder
        return ClassifierArtifact.load(folder).fingerprint() if folder else None

    def check(self) -> None:
        super().check()
        # a broken prompt, route, tokenizer or classifier setting fails here, in the driver
        self.styles, self.tokenizer  # noqa: B018
        check_quality_classifier(self.quality_classifier, self.cfg.rewrite)

    def plan_identity(self) -> dict[str, Any]:
        """Another quality classifier, or another faithfulness measure, rescores every rewrite (from the
        response cache: no request is sent again); the thresholds are settings."""
        return {"quality_classifier": self.quality_classifier_fingerprint, "faithfulness": faith.METHOD}

    def settings(self) -> dict[str, Any]:
        """The style fingerprint: what determines the answers (and so the cache keys and shard names)."""
        styles = self.styles
        rewrite = self.cfg.rewrite.model_dump(mode="json", exclude=NOT_SETTINGS)
        return {"llm.model": styles.model, "sampling_params": styles.params,
                "rewrite.prompts": {pid: [s.prompt.prompt_hash, s.max_tokens] for pid, s in styles.styles.items()},
                "tokenizer": self.tokenizer, **{f"rewrite.{key}": value for key, value in rewrite.items()}}

    def shard_files(self, shard: Shard) -> list[str]:
        return [shard.payload[0]]  # the corpus file its documents are in

    def plan(self) -> list[Shard]:
        self.corpus_dir = check_corpus_dir(self.input_folder("corpus"))
        rewrite = self.cfg.rewrite
        return [Shard(key=key, source=str(self.corpus_dir), payload=(path, doc_ids))
                for key, path, doc_ids in iter_shards(self.corpus_dir, rewrite.shard_size, rewrite.limit,
                                                      self.settings())]

    def setup_state(self) -> RewriteTools:
        from pipeline.langid import LanguageIdentifier

        langid = LanguageIdentifier(self.cfg.extract.langid_model) if self.cfg.rewrite.check_language else None
        classifier = None
        if self.quality_classifier.folder is not None:
            from classifiers import QualityClassifier

            classifier = QualityClassifier.load(self.quality_classifier.folder)
        from pipeline.safety.stage import load_or_build_index

        return RewriteTools(TokenCounter(self.tokenizer), langid, classifier, load_or_build_index(self.cfg))

    def requests(self, worker: LLMWorker, shard: Shard) -> Requests:
        plans = [plan_doc(doc, self.cfg.rewrite, worker.state.counter) for doc in read_shard_docs(*shard.payload)]
        return Requests([request for plan in plans for request in plan_requests(plan, self.styles)], plan=plans)

    def result(self, worker: LLMWorker, shard: Shard, requests: Requests,
               answers: list[Completion | LLMError]) -> ShardResult:
        styles = self.styles
        by_unit: dict[tuple[str, str], list[Completion | LLMError]] = {}
        for request, answer in zip(requests, answers):
            by_unit.setdefault((request.doc_id, request.style), []).append(answer)
        stats = self.new_stats(shard)
        rows: list[dict[str, Any]] = []
        decisions: list[dict[str, Any]] = []
        kept_by_style: Counter = Counter()
        candidates: list[tuple[DocPlan, str, Candidate]] = []  # passed the format checks: decided on scores below
        for plan in requests.plan:
            if plan.failure is not None and not plan.styles:  # routed to no style: one unit
                stats.input += 1
                stats.drop(plan.failure.reason)
                decisions.append(decision_row(plan.doc, schemas.DROPPED, plan.failure, shard.source))
                continue
            for prompt_id in plan.styles:
                stats.input += 1
                style = styles.styles[prompt_id]
                if plan.failure is not None:
                    outcome, failure = schemas.DROPPED, plan.failure
                else:
                    made = assemble(plan, style, by_unit[(plan.doc["doc_id"], prompt_id)], model=styles.model,
                                    params_json=styles.params_json(style), langid=worker.state.langid,
                                    rewrite_cfg=self.cfg.rewrite)
                    if isinstance(made, Candidate):
                        candidates.append((plan, prompt_id, made))
                        continue
                    outcome, failure = made
                (stats.drop if outcome == schemas.DROPPED else stats.error)(failure.reason)
                decisions.append(decision_row(plan.doc, outcome, failure, shard.source, prompt_id))
        # the scores: the classifier once over every candidate's text, then each decided on both scores
        qualities = quality_scores(worker.state.classifier, [c.row["text"] for _, _, c in candidates])
        scored: dict[str, dict[str, list[float | None]]] = {
            group: {column: [] for column in SCORE_COLUMNS} for group in ("kept", "dropped")}
        for (plan, prompt_id, candidate), quality in zip(candidates, qualities):
            decided = decide(candidate, quality, self.cfg.rewrite)
            hits = worker.state.eval_index.find(candidate.row["text"]) if worker.state.eval_index else []
            if hits and not isinstance(decided, Failure):
                # the model can write out a benchmark it memorised: synthetic text is decontaminated too
                from pipeline.safety.stage import contamination_detail

                decided = Failure("contaminated", contamination_detail(hits))
            group = "dropped" if isinstance(decided, Failure) else "kept"
            scored[group]["rewrite_quality_prob"].append(quality)
            scored[group]["faithfulness"].append(candidate.faithfulness.faithfulness)
            if isinstance(decided, Failure):
                stats.drop(decided.reason)
                decisions.append(decision_row(plan.doc, schemas.DROPPED, decided, shard.source, prompt_id))
                continue
            stats.kept += 1
            kept_by_style[styles.styles[prompt_id].name] += 1
            rows.append(decided)
        completions = [a for a in answers if isinstance(a, Completion)]
        stats.extra.update(
            docs=len(requests.plan), requests=len(requests), cached=sum(1 for c in completions if c.cached),
            kept_by_style=dict(sorted(kept_by_style.items())),
            kept_completion_tokens=sum(row["completion_tokens"] for row in rows),
            scores={group: {column: score_stats(values) for column, values in columns.items()}
                    for group, columns in scored.items()},
            prompt_tokens=sum(c.prompt_tokens for c in completions),
            completion_tokens=sum(c.completion_tokens for c in completions),
        )
        transient = sum(n for reason, n in stats.errored.items() if is_transient(reason))
        return ShardResult(rows={SYNTHETIC: rows}, decisions=decisions, stats=stats, transient=transient)

    def finish(self, summary: dict[str, Any], markers: list[dict[str, Any]]) -> dict[str, Any]:
        extra = super().finish(summary, markers)
        extra["this_run"]["http_requests"] = extra["this_run"]["requests"]
        totals = {name: sum(m.get(name, 0) for m in markers)
                  for name in ("docs", "requests", "cached", "prompt_tokens", "completion_tokens",
                               "kept_completion_tokens")}
        by_style = sum((Counter(m.get("kept_by_style", {})) for m in markers), Counter())
        styles = self.styles
        extra.update(totals, corpus=str(self.corpus_dir), kept_by_style=dict(sorted(by_style.items())),
                     styles={pid: {"style": s.name, "prompt_hash": s.prompt.prompt_hash, "max_tokens": s.max_tokens}
                             for pid, s in styles.styles.items()},
                     model=styles.model, sampling_params=styles.params, tokenizer=TokenCounter(self.tokenizer).name,
                     scores=merge_score_stats(markers),
                     quality_classifier={"path": self.quality_classifier.folder,
                                         "found_by": self.quality_classifier.found_by,
                                         "sha256": self.quality_classifier_fingerprint})
        write_card(RunLayout(self.cfg.out), self.cfg, {**summary, **extra}, SCORE_LEGEND)
        return extra

    def format_summary(self, summary: dict[str, Any]) -> str:
        this_run = summary["this_run"]
        lines = [f"[{STAGE}] {summary['docs']} pages from {summary['corpus']}: {summary['input']} units, "
                 f"{summary['kept']} rewrites kept {summary['kept_by_style']}"]
        for outcome in ("dropped", "errored"):
            for reason, count in summary[outcome].items():
                lines.append(f"  {outcome} {reason}: {count}")
        lines.append(f"  {scores_line(summary['scores'], self.cfg.rewrite, SCORE_LEGEND)}")
        lines.append(f"  this run: {this_run['http_requests']} requests, {this_run['cache_hits']} cache hits, "
                     f"{this_run['completion_tokens']} tokens generated ({this_run['completion_tokens_per_s']}/s), "
                     f"{this_run['seconds']}s")
        if not summary["complete"]:
            lines.append(f"  incomplete: {summary['transient_errors']} units failed on transient errors; rerun to "
                         "retry")
        return "\n".join(lines)
