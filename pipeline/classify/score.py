"""The score stage (`classify-score`): every input file of the run's documents (unique/, else docs/, or
`classify.docs`) becomes `scores/part-<shard>.parquet` with the SCORED schema (quality_prob, topics,
topic_probs, format, format_probs), on a pool of actors that each load the classifier once. Nothing is decided
here. Its plan identity is the classifier's fingerprint and the input folder: the same classifier reuses every
stored score (re-deciding at another threshold runs no model), another one rescores everything."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from classifiers.artifact import ArtifactError, ClassifierArtifact
from pipeline import schemas, store
from pipeline.accounting import peak_rss_mb
from pipeline.classify.common import SCORE_STAGE, ClassifyError, read_ahead
from pipeline.io import RunLayout, parquet_files, shard_key
from pipeline.runtime import DOCUMENTS, Input, Output, Resources, Shard, ShardResult, Stage

LATER_FIELDS = [f for f in schemas.SAFE if f.name not in schemas.DOCS.names]


def as_safe(table: pa.Table) -> pa.Table:
    """A batch of the run's documents with the SAFE schema: dedup's and the safety stage's columns are null
    when the documents did not go through them (docs/, unique/)."""
    for field in LATER_FIELDS:
        if field.name not in table.column_names:
            table = table.append_column(field, pa.nulls(table.num_rows, field.type))
    return table.select(schemas.SAFE.names).cast(schemas.SAFE)


def top_tags(scores: list[dict[str, float]] | None, k: int, n_rows: int) -> tuple[pa.Array, pa.Array]:
    """The k most probable tags per row and their probabilities (ties by name), as two list columns; nulls
    for a row with no scores (empty text) and for every row when there is no model."""
    if scores is None:
        return pa.nulls(n_rows, pa.list_(pa.string())), pa.nulls(n_rows, pa.list_(pa.float32()))
    names: list[list[str] | None] = []
    values: list[list[float] | None] = []
    for row in scores:
        top = sorted(row.items(), key=lambda kv: (-kv[1], kv[0]))[:k] if row else None
        names.append([t for t, _ in top] if top else None)
        values.append([p for _, p in top] if top else None)
    return pa.array(names, pa.list_(pa.string())), pa.array(values, pa.list_(pa.float32()))


def score_batch(classifier, table: pa.Table, topics_top_k: int, formats_top_k: int = 2) -> pa.Table:
    """Pure scoring step: SAFE rows -> SCORED rows (quality_prob; the top-k topics and formats with their
    probabilities when the classifier has those models, else nulls). Empty texts get null scores."""
    probs, tag_scores = classifier.score_all(table.column("text").to_pylist())
    quality = pa.array(probs, pa.float32(), mask=np.isnan(probs))
    topics, topic_probs = top_tags(tag_scores["topics"], topics_top_k, table.num_rows)
    formats, format_probs = top_tags(tag_scores["formats"], formats_top_k, table.num_rows)
    return (table.append_column("quality_prob", quality).append_column("topics", topics)
            .append_column("topic_probs", topic_probs).append_column("format", formats)
            .append_column("format_probs", format_probs))


def input_files(docs_dir: str | Path) -> list[Path]:
    folder = Path(docs_dir)
    if not folder.is_dir():
        raise ClassifyError(f"--docs {folder}: no such folder (expected a run's unique/ or docs/)")
    files = parquet_files(folder)
    if not files:
        raise ClassifyError(f"--docs {folder}: no Parquet files")
    return files


def check_inputs(files: list[Path]) -> None:
    """Every input file is a docs/ or unique/ file (footers only: nothing is read)."""
    for path in files:
        try:
            names = set(pq.read_schema(path).names)
        except (OSError, pa.ArrowInvalid) as exc:
            raise ClassifyError(f"{path}: not a readable Parquet file ({exc})") from None
        missing = {"doc_id", "text"} - names
        if missing:
            raise ClassifyError(f"{path}: not a docs/unique file, missing column(s) {sorted(missing)}")


def stored_scores_marker(layout: RunLayout) -> dict[str, Any] | None:
    """What the score stage recorded when it last finished (classifier, fingerprint, input folder, plan)."""
    marker = layout.stage_marker(SCORE_STAGE)
    try:
        return json.loads(marker.read_text()) if marker.exists() else None
    except (OSError, ValueError):
        return None


class ScoreStage(Stage):
    """The run's documents -> scores/: one shard per input file, on a pool of actors that each load the
    classifier once.

    The classifier is classify.classifier, else the run's classifier/ (distil's output); when the run has none
    but holds complete scores, the classifier they were made with. A classifier that cannot be loaded stops the
    stage before anything is written, unless every file is already scored with it (its stored fingerprint then
    stands in): re-deciding from stored scores needs no model."""

    name = SCORE_STAGE
    section = "classify"
    inputs = (Input(DOCUMENTS, config="classify.docs"),)
    outputs = (Output("scores", schemas.SCORED),)
    writes_decisions = False
    role = "step"
    unit = "file"

    @cached_property
    def layout(self) -> RunLayout:
        return RunLayout(self.cfg.out)

    @cached_property
    def stored(self) -> dict[str, Any] | None:
        return stored_scores_marker(self.layout)

    @cached_property
    def classifier_dir(self) -> Path:
        if self.cfg.classify.classifier:  # a path, or a URL (its local copy: the same path on every node)
            return store.local_folder(self.cfg.classify.classifier)
        own = self.layout.dataset("classifier")
        if not (own / "config.yaml").is_file() and self.stored and self.stored.get("classifier"):
            return Path(self.stored["classifier"])  # the classifier of the scores this run holds
        return own

    @property
    def docs_dir(self) -> Path:
        return self.input_folder(DOCUMENTS)

    @cached_property
    def artifact(self) -> ClassifierArtifact | None:
        """The classifier, loaded and checked; None when it cannot be loaded but is not needed (every file is
        scored with it already)."""
        try:
            return ClassifierArtifact.load(self.classifier_dir)
        except ArtifactError as exc:
            if self._scores_stand_in():
                return None
            raise ClassifyError(f"--classifier {exc}") from None

    def _scores_stand_in(self) -> bool:
        stored = self.stored or {}
        if not stored.get("classifier_fingerprint") or stored.get("classifier") != str(self.classifier_dir):
            return False
        return all(self.layout.is_shard_done(self.name, shard.key) for shard in self.plan())

    def fingerprint(self) -> str:
        if self.artifact is None:
            return self.stored["classifier_fingerprint"]
        return self._fingerprint

    @cached_property
    def _fingerprint(self) -> str:
        return self.artifact.fingerprint()

    def settings(self) -> dict[str, Any]:
        return {"classify.topics_top_k": self.cfg.classify.topics_top_k,
                "classify.formats_top_k": self.cfg.classify.formats_top_k}

    def docs_identity(self) -> str:
        """The input folder as the plan identity holds it: relative to the run folder when inside it (a copied run
        folder keeps its scores), else absolute."""
        docs, root = self.docs_dir.resolve(), self.layout.root.resolve()
        return str(docs.relative_to(root)) if docs.is_relative_to(root) else str(docs)

    def plan_identity(self) -> dict[str, Any]:
        # another classifier (or another input folder whose files have the same names) rescores everything
        return {"classifier": self.fingerprint(), "docs": self.docs_identity()}

    def check(self) -> None:
        self.artifact  # noqa: B018 - an unusable classifier fails here, in the driver, before anything is written
        check_inputs(input_files(self.docs_dir))

    def plan(self) -> list[Shard]:
        # a documents file written again since it was scored (the safety stage re-decided) is scored again
        return [Shard(key=f"part-{shard_key(path.name)}", source=str(path), reads=(str(path),))
                for path in input_files(self.docs_dir)]

    def resources(self) -> Resources:
        # the executor caps the pool by the CPUs of the machine or cluster it runs on
        return Resources(kind="actor", num_cpus=1, num_actors=self.cfg.classify.num_actors)

    def worker_reads(self) -> list[Path | str]:
        return [self.cfg.classify.classifier or self.classifier_dir]

    def setup(self):
        from classifiers.artifact import QualityClassifier

        return QualityClassifier.load(self.classifier_dir)

    def process(self, classifier, shard: Shard) -> ShardResult:
        stats = self.new_stats(shard)
        parquet = pq.ParquetFile(shard.source)
        columns = [name for name in schemas.SAFE.names if name in parquet.schema_arrow.names]
        # Reading the next batch (Arrow releases the GIL) overlaps scoring the current one, batch by batch. The
        # scored file is returned whole for the runner to write, so a worker holds one input file's scored rows
        # (a docs/unique file is one extract shard: tens of MB of text) where a streaming writer would hold a
        # few batches; writing it is no longer overlapped with scoring.
        parts: list[pa.Table] = []
        with ThreadPoolExecutor(max_workers=1) as reader:
            batches = parquet.iter_batches(batch_size=self.cfg.classify.batch_size, columns=columns)
            for batch in read_ahead(batches, reader):
                parts.append(score_batch(classifier, as_safe(pa.Table.from_batches([batch])),
                                         self.cfg.classify.topics_top_k,
                                         self.cfg.classify.formats_top_k).cast(schemas.SCORED))
        table = pa.concat_tables(parts) if parts else schemas.SCORED.empty_table()
        stats.input = stats.kept = table.num_rows  # every document gets a row (null scores without text)
        stats.extra["peak_rss_mb"] = peak_rss_mb()
        return ShardResult(rows={"scores": table}, decisions=[], stats=stats)

    def teardown(self, worker) -> dict[str, float]:
        return {"peak_rss_mb": peak_rss_mb()}

    def finish(self, summary: dict[str, Any], markers: list[dict[str, Any]]) -> dict[str, Any]:
        """The stage marker records what the stored scores are (the decide stage reads it)."""
        counters = summary.get("counters") or []
        peaks = [c["peak_rss_mb"] for c in counters if isinstance(c, dict) and c.get("peak_rss_mb")]
        return {"classifier": str(self.classifier_dir), "classifier_fingerprint": self.fingerprint(),
                "docs_dir": str(self.docs_dir), "plan": [[m["shard"], m["source"]] for m in markers],
                "actor_peak_rss_mb": max(peaks, default=None)}

    def format_summary(self, summary: dict[str, Any]) -> str:
        return (f"[{self.name}] {summary['shards']} file(s), {summary['shards_run']} scored now with "
                f"{self.classifier_dir}: {summary['input']} documents, {summary['seconds']:.1f}s")
