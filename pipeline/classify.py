"""Classify stage: score every document with the distilled classifier, then decide keep/drop, then write the
kept corpus as sharded Parquet.

Score and decide are separate steps:
- score (Ray actor pool, the model loaded once per actor): every input file of unique/ (or docs/) becomes
  `scores/part-<shard>.parquet` with the SCORED schema (quality_prob, topics, topic_probs), plus a marker in
  `_state/classify-score/`. Nothing is decided here; scores of a finished shard are reused by reruns.
- decide (driver, cheap, no model): for each shard, `quality_prob >= threshold` keeps the document, else it
  is dropped with reason `below_quality` (`no_text` when there was nothing to score); decisions go to
  `decisions/classify/`, stats markers to `_state/classify/`, and the kept rows to `corpus/`, rewritten whole
  (`part-00000.parquet`..., target size per file, `_manifest.json` with checksums, a dataset card README.md).
  It reads only stored scores; during a run it takes each shard as soon as that shard's scores land, so it
  overlaps scoring. `--rethreshold T` runs only this step.
"""

from __future__ import annotations

import hashlib
import json
import os
import resource
import shutil
import sys
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline import schemas
from pipeline.config import ClassifyConfig
from pipeline.errors import CurateError
from pipeline.io import (PARQUET_COMPRESSION, RunLayout, _atomic_target, parquet_files, shard_key, write_json,
                         write_parquet)
from pipeline.report import ShardStats

STAGE = "classify"
SCORE_STATE = "classify-score"  # markers of the score step (the stage's ShardStats markers are decide's)
REASON_BELOW = "below_quality"
REASON_NO_TEXT = "no_text"
DUP_FIELDS = [f for f in schemas.UNIQUE if f.name not in schemas.DOCS.names]


class ClassifyError(CurateError):
    """The stage cannot run (no input, no classifier, no stored scores); the message says what to do."""


# ---------------------------------------------------------------------------------------------------- score


def as_unique(table: pa.Table) -> pa.Table:
    """A docs/ or unique/ batch with the UNIQUE schema: dedup's columns are null when reading docs/."""
    for field in DUP_FIELDS:
        if field.name not in table.column_names:
            table = table.append_column(field, pa.nulls(table.num_rows, field.type))
    return table.select(schemas.UNIQUE.names).cast(schemas.UNIQUE)


def score_batch(classifier, table: pa.Table, topics_top_k: int) -> pa.Table:
    """Pure scoring step: UNIQUE rows -> SCORED rows (quality_prob; the top-k topics and their probabilities
    when the classifier has a topic model, else nulls). Empty texts get null scores."""
    probs, topic_scores = classifier.score_with_topics(table.column("text").to_pylist())
    quality = pa.array(probs, pa.float32(), mask=np.isnan(probs))
    if topic_scores is not None:
        names: list[list[str] | None] = []
        values: list[list[float] | None] = []
        for scores in topic_scores:
            if not scores:
                names.append(None)
                values.append(None)
                continue
            top = sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))[:topics_top_k]
            names.append([t for t, _ in top])
            values.append([p for _, p in top])
        topics = pa.array(names, pa.list_(pa.string()))
        topic_probs = pa.array(values, pa.list_(pa.float32()))
    else:
        topics = pa.nulls(table.num_rows, pa.list_(pa.string()))
        topic_probs = pa.nulls(table.num_rows, pa.list_(pa.float32()))
    return (table.append_column("quality_prob", quality).append_column("topics", topics)
            .append_column("topic_probs", topic_probs))


def classifier_fingerprint(classifier_dir: str | Path) -> str:
    """sha256 over the artifact's config and model files: stored scores are reused only for the same model."""
    folder = Path(classifier_dir)
    digest = hashlib.sha256()
    for name in sorted(p.name for p in folder.iterdir() if p.suffix in (".yaml", ".bin", ".ftz")):
        digest.update(name.encode())
        with open(folder / name, "rb") as fh:
            while chunk := fh.read(1 << 22):
                digest.update(chunk)
    return digest.hexdigest()


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def read_ahead(items: Iterator[Any], executor: ThreadPoolExecutor) -> Iterator[Any]:
    """Yield from `items` while the next item is already being produced on `executor`."""
    end = object()
    future = executor.submit(next, items, end)
    while True:
        item = future.result()
        if item is end:
            return
        future = executor.submit(next, items, end)
        yield item


class ScoreWorker:
    """Holds one loaded classifier; scores whole input files into score shards (run as a Ray actor)."""

    def __init__(self, classifier_dir: str, cfg: ClassifyConfig):
        from classifiers.artifact import QualityClassifier

        self.classifier = QualityClassifier.load(classifier_dir)
        self.cfg = cfg

    def score_file(self, source: str, out_root: str, key: str, fingerprint: str) -> dict[str, Any]:
        layout = RunLayout(out_root)
        started = time.perf_counter()
        target = layout.dataset("scores") / f"part-{key}.parquet"
        tmp = _atomic_target(target)
        parquet = pq.ParquetFile(source)
        columns = [name for name in schemas.UNIQUE.names if name in parquet.schema_arrow.names]
        missing = {"doc_id", "text"} - set(columns)
        if missing:
            raise ClassifyError(f"{source}: not a docs/unique file, missing column(s) {sorted(missing)}")
        rows = 0
        try:
            # Reading the next batch and compressing/writing the previous one (Arrow releases the GIL) overlap
            # scoring the current one; at most one batch waits on each side, so memory stays at three batches.
            with pq.ParquetWriter(tmp, schemas.SCORED, compression=PARQUET_COMPRESSION) as writer, \
                    ThreadPoolExecutor(max_workers=2) as io_threads:
                pending = None
                batches = parquet.iter_batches(batch_size=self.cfg.batch_size, columns=columns)
                for batch in read_ahead(batches, io_threads):
                    scored = score_batch(self.classifier, as_unique(pa.Table.from_batches([batch])),
                                         self.cfg.topics_top_k).cast(schemas.SCORED)
                    if pending is not None:
                        pending.result()
                    pending = io_threads.submit(writer.write_table, scored)
                    rows += scored.num_rows
                if pending is not None:
                    pending.result()
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)
        result = {"shard": key, "source": source, "rows": rows, "classifier": fingerprint,
                  "seconds": round(time.perf_counter() - started, 3), "peak_rss_mb": round(peak_rss_mb(), 1)}
        write_json(result, layout.marker(SCORE_STATE, key))
        return result


def input_files(docs_dir: str | Path) -> list[Path]:
    folder = Path(docs_dir)
    if not folder.is_dir():
        raise ClassifyError(f"--docs {folder}: no such folder (expected a run's unique/ or docs/)")
    files = parquet_files(folder)
    if not files:
        raise ClassifyError(f"--docs {folder}: no Parquet files")
    return files


def _score_done(layout: RunLayout, key: str, fingerprint: str) -> bool:
    marker = layout.marker(SCORE_STATE, key)
    if not marker.exists() or not (layout.dataset("scores") / f"part-{key}.parquet").exists():
        return False
    return json.loads(marker.read_text()).get("classifier") == fingerprint


def plan_scoring(docs_dir: Path, classifier_dir: Path) -> dict[str, Any]:
    """What the score step covers: input shards in order, their sources, and the classifier's identity."""
    files = input_files(docs_dir)
    return {"stage": SCORE_STATE, "docs_dir": str(docs_dir), "classifier": str(classifier_dir),
            "classifier_fingerprint": classifier_fingerprint(classifier_dir),
            "shards": [shard_key(f.name) for f in files], "sources": [str(f) for f in files]}


def score_shards(cfg, plan: dict[str, Any], *, quiet: bool = False) -> Iterator[str]:
    """Score every planned shard not already scored by this classifier on a pool of Ray actors (the model
    loaded once per actor); yield each shard key as soon as its scores are on disk (already-scored shards
    first). When all are done, the plan is written as the score step's marker, with timings."""
    import ray
    from ray.util import ActorPool

    from pipeline.progress import progress
    from pipeline.ray_exec import ensure_ray

    layout = RunLayout(cfg.out)
    fingerprint = plan["classifier_fingerprint"]
    todo = []
    for key, source in zip(plan["shards"], plan["sources"]):
        if _score_done(layout, key, fingerprint):
            yield key
        else:
            todo.append((key, source))
    started = time.perf_counter()
    results: list[dict[str, Any]] = []
    if todo:
        ensure_ray(cfg.ray)
        cpus = int(ray.cluster_resources().get("CPU", 1)) or 1
        n_actors = max(1, min(cfg.classify.num_actors, len(todo), cpus))
        actor_class = ray.remote(num_cpus=1, max_restarts=1, max_task_retries=1)(ScoreWorker)
        actors = [actor_class.remote(plan["classifier"], cfg.classify) for _ in range(n_actors)]
        bar = progress(STAGE, len(todo), quiet=quiet, unit="file")
        try:
            pool = ActorPool(actors)
            work = pool.map_unordered(
                lambda actor, item: actor.score_file.remote(item[1], str(layout.root), item[0], fingerprint), todo)
            for result in work:
                results.append(result)
                bar.update()
                yield result["shard"]
        finally:
            bar.close()
            for actor in actors:
                ray.kill(actor)
    write_json({**plan, "scored_now": len(results), "seconds": round(time.perf_counter() - started, 3),
                "actor_peak_rss_mb": max((r["peak_rss_mb"] for r in results), default=None)},
               layout.stage_marker(SCORE_STATE))


# --------------------------------------------------------------------------------------------------- decide


def decide_table(scored: pa.Table, threshold: float, source: str) -> tuple[pa.Table, pa.Table, dict[str, int]]:
    """Pure decision step: (kept rows, decision rows, {reason: count}). Keep when quality_prob >= threshold."""
    prob = scored.column("quality_prob")
    keep = pc.fill_null(pc.greater_equal(prob, pa.scalar(threshold, pa.float32())), False)
    no_text = pc.is_null(prob)
    below = pc.and_(pc.invert(keep), pc.invert(no_text))
    dropped_parts = []
    counts: dict[str, int] = {}
    for reason, mask in ((REASON_BELOW, below), (REASON_NO_TEXT, no_text)):
        rows = scored.filter(mask)
        counts[reason] = rows.num_rows
        if not rows.num_rows:
            continue
        if reason == REASON_BELOW:
            shown = pc.cast(pc.round(rows.column("quality_prob"), 4), pa.string())
            detail = pc.binary_join_element_wise("quality_prob ", shown, f" < threshold {threshold:.4f}", "")
        else:
            detail = pa.nulls(rows.num_rows, pa.string())
        dropped_parts.append(pa.table({
            "doc_id": rows.column("doc_id"),
            "stage": pa.array([STAGE] * rows.num_rows, pa.string()),
            "outcome": pa.array([schemas.DROPPED] * rows.num_rows, pa.string()),
            "reason": pa.array([reason] * rows.num_rows, pa.string()),
            "detail": detail,
            "url": rows.column("url"),
            "source": pa.array([source] * rows.num_rows, pa.string()),
            "duplicate_of": pa.nulls(rows.num_rows, pa.string()),
        }))
    decisions = pa.concat_tables(dropped_parts) if dropped_parts else schemas.DECISIONS.empty_table()
    return scored.filter(keep), decisions.cast(schemas.DECISIONS), counts


class ShardedParquetWriter:
    """Rows in, `part-00000.parquet`, `part-00001.parquet`, ... out: explicit schema, zstd, a new file once
    the current one reaches `rows_per_file` rows (exact) or `bytes_per_file` bytes on disk (checked after each
    row group, so a file ends up to one row group plus its footer above the target). Each file is written
    under a temporary name and renamed when complete."""

    def __init__(self, folder: Path, schema: pa.Schema, *, rows_per_file: int | None, bytes_per_file: int,
                 row_group_rows: int = 50_000):
        self.folder = folder
        self.schema = schema
        self.rows_per_file = rows_per_file
        self.bytes_per_file = bytes_per_file
        self.row_group_rows = min(row_group_rows, rows_per_file or row_group_rows)
        # Row groups of up to half the target in memory (about a sixth on disk with zstd on text): big enough
        # that the footer (per row group and column) stays small, small enough to overshoot the target little.
        self.row_group_bytes = max(min(bytes_per_file // 2, 64 * 1024 * 1024), 1)
        self.files: list[dict[str, Any]] = []
        self._pending: list[pa.Table] = []
        self._pending_rows = 0
        self._pending_bytes = 0
        self._sink = None
        self._writer = None
        self._tmp: Path | None = None
        self._rows_in_file = 0
        self._row_groups_in_file = 0
        # The footer grows by about this much per row group (column chunk metadata); a first guess, then
        # measured on each finished file. It counts toward the byte target.
        self._footer_per_row_group = 100 * len(schema)

    def write(self, table: pa.Table) -> None:
        table = table.select(self.schema.names).cast(self.schema)
        row_bytes = max(1, table.nbytes // max(table.num_rows, 1))
        while table.num_rows:
            room = self.row_group_rows - self._pending_rows
            room = max(1, min(room, (self.row_group_bytes - self._pending_bytes) // row_bytes))
            if self.rows_per_file:
                room = min(room, self.rows_per_file - self._rows_in_file - self._pending_rows)
            part, table = table.slice(0, room), table.slice(room)
            self._pending.append(part)
            self._pending_rows += part.num_rows
            self._pending_bytes += part.nbytes
            file_full = self.rows_per_file and self._rows_in_file + self._pending_rows >= self.rows_per_file
            if self._pending_rows >= self.row_group_rows or self._pending_bytes >= self.row_group_bytes or file_full:
                self._flush()

    def _flush(self) -> None:
        if not self._pending_rows:
            return
        if self._writer is None:
            self._open_file()
        self._writer.write_table(pa.concat_tables(self._pending))
        self._rows_in_file += self._pending_rows
        self._row_groups_in_file += 1
        self._pending, self._pending_rows, self._pending_bytes = [], 0, 0
        full_rows = self.rows_per_file and self._rows_in_file >= self.rows_per_file
        expected_size = self._sink.tell() + self._row_groups_in_file * self._footer_per_row_group
        if full_rows or expected_size >= self.bytes_per_file:
            self._close_file()

    def _open_file(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        name = f"part-{len(self.files):05d}.parquet"
        self._tmp = self.folder / f".{name}.tmp"
        self._sink = pa.OSFile(str(self._tmp), "wb")
        self._writer = pq.ParquetWriter(self._sink, self.schema, compression=PARQUET_COMPRESSION)
        self._rows_in_file = self._row_groups_in_file = 0

    def _close_file(self) -> None:
        data_bytes = self._sink.tell()
        self._writer.close()
        if self._row_groups_in_file:
            self._footer_per_row_group = (self._sink.tell() - data_bytes) // self._row_groups_in_file
        self._sink.close()
        name = self._tmp.name.removeprefix(".").removesuffix(".tmp")
        final = self.folder / name
        os.replace(self._tmp, final)
        self.files.append({"file": name, "rows": self._rows_in_file, "bytes": final.stat().st_size,
                           "sha256": _sha256(final)})
        self._writer = self._sink = self._tmp = None
        self._rows_in_file = self._row_groups_in_file = 0

    def close(self) -> list[dict[str, Any]]:
        if not self.files and not self._pending_rows and self._writer is None:
            # nothing kept: one empty file with the schema, so readers see an empty dataset, not no dataset
            self._open_file()
            self._writer.write_table(self.schema.empty_table())
            self._close_file()
            return self.files
        self._flush()
        if self._writer is not None:
            self._close_file()
        return self.files


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 22):
            digest.update(chunk)
    return digest.hexdigest()


def _in_order(shards: list[str], completed: Iterator[str]) -> Iterator[str]:
    """Shard keys in plan order, each as soon as it and every shard before it have completed."""
    done: set[str] = set()
    position = 0
    for key in completed:
        done.add(key)
        while position < len(shards) and shards[position] in done:
            yield shards[position]
            position += 1
    if position < len(shards):
        raise ClassifyError(f"{len(shards) - position} shard(s) were never scored, first {shards[position]}")


def stored_plan(layout: RunLayout) -> dict[str, Any]:
    marker = layout.stage_marker(SCORE_STATE)
    if not marker.exists():
        raise ClassifyError(f"no stored scores in {layout.root} (run `curate classify --docs ... --classifier ...` "
                            "first; --rethreshold only re-decides)")
    return json.loads(marker.read_text())


def _decision_fingerprint(plan: dict[str, Any], threshold: float, classify_cfg: ClassifyConfig) -> str:
    """What the corpus depends on: the input shards, the classifier, the threshold and the file sizing."""
    payload = {"shards": plan["shards"], "classifier": plan["classifier_fingerprint"], "threshold": threshold,
               "rows_per_file": classify_cfg.rows_per_file, "bytes_per_file": classify_cfg.bytes_per_file}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def _finished_decision(layout: RunLayout, plan: dict[str, Any], threshold: float,
                       classify_cfg: ClassifyConfig) -> dict[str, Any] | None:
    """The stage marker when corpus/ was already written from exactly this input (a rerun skips it)."""
    marker = layout.stage_marker(STAGE)
    if not marker.exists() or not (layout.dataset("corpus") / "_manifest.json").exists():
        return None
    done = json.loads(marker.read_text())
    return done if done.get("fingerprint") == _decision_fingerprint(plan, threshold, classify_cfg) else None


def decide_all(cfg, threshold: float, plan: dict[str, Any], completed: Iterator[str] | None = None, *,
               quiet: bool = False) -> dict[str, Any]:
    """Decisions, stats markers and the corpus from the stored scores of `plan`'s shards, at `threshold`.

    `completed` yields shard keys as their scores land (while scoring runs, so deciding overlaps it);
    shards are decided in plan order, so the corpus is the same whatever order scoring finished in.
    Without it, every shard's scores must already be stored (re-thresholding)."""
    layout = RunLayout(cfg.out)
    shards: list[str] = plan["shards"]
    sources = dict(zip(shards, plan["sources"]))
    started = time.perf_counter()
    # stats/decisions of shards that are no longer inputs would be counted by the report: remove them
    for folder, prefix in ((layout.state(STAGE), ""), (layout.decisions(STAGE), "part-")):
        if folder.exists():
            for path in folder.iterdir():
                stem = path.name.removeprefix(prefix).removesuffix(".json").removesuffix(".parquet")
                if not path.name.startswith(("_", ".")) and stem not in shards:
                    path.unlink()
    layout.stage_marker(STAGE).unlink(missing_ok=True)
    corpus_dir = layout.dataset("corpus")
    staging = corpus_dir.with_name(f".corpus.tmp-{uuid.uuid4().hex[:8]}")
    writer = ShardedParquetWriter(staging, schemas.SCORED, rows_per_file=cfg.classify.rows_per_file,
                                  bytes_per_file=cfg.classify.bytes_per_file)
    totals = {"input": 0, "kept": 0, REASON_BELOW: 0, REASON_NO_TEXT: 0}
    try:
        for key in _in_order(shards, completed if completed is not None else iter(shards)):
            path = layout.dataset("scores") / f"part-{key}.parquet"
            if not path.exists():
                raise ClassifyError(f"stored scores missing: {path} (run `curate classify` without --rethreshold)")
            scored = pq.read_table(path, schema=schemas.SCORED)
            kept, decisions, counts = decide_table(scored, threshold, sources[key])
            writer.write(kept)
            write_parquet(decisions, layout.decisions(STAGE) / f"part-{key}.parquet", schemas.DECISIONS)
            stats = ShardStats(stage=STAGE, shard=key, source=sources[key], input=scored.num_rows,
                               kept=kept.num_rows)
            for reason, n in counts.items():
                if n:
                    stats.drop(reason, n)
            stats.check()
            stats.extra["threshold"] = threshold
            write_json(stats.to_json(), layout.marker(STAGE, key))
            totals["input"] += scored.num_rows
            totals["kept"] += kept.num_rows
            for reason, n in counts.items():
                totals[reason] += n
        files = writer.close()
        manifest = {"schema": "pipeline.schemas.SCORED", "compression": PARQUET_COMPRESSION,
                    "rows": totals["kept"], "files": files}
        write_json(manifest, staging / "_manifest.json")
        (staging / "README.md").write_text(dataset_card(cfg, layout, plan, threshold, totals, files))
        replace_dir(staging, corpus_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    seconds = time.perf_counter() - started
    write_json({"stage": STAGE, "threshold": threshold, "classifier": plan["classifier"], **totals,
                "corpus_files": len(files), "seconds": round(seconds, 3),
                "fingerprint": _decision_fingerprint(plan, threshold, cfg.classify)}, layout.stage_marker(STAGE))
    if not quiet:
        print(f"[{STAGE}] threshold {threshold:.4f}: {totals['input']} documents, {totals['kept']} kept, "
              f"{totals[REASON_BELOW]} {REASON_BELOW}, {totals[REASON_NO_TEXT]} {REASON_NO_TEXT}; corpus: "
              f"{len(files)} file(s) in {corpus_dir}")
    return {**totals, "threshold": threshold, "files": files}


def replace_dir(new: Path, target: Path) -> None:
    """Replace folder `target` with the finished folder `new` by two renames: readers see the old folder or
    the new one, never a half-written one."""
    old = target.with_name(f".{target.name}.old-{uuid.uuid4().hex[:8]}")
    if target.exists():
        target.rename(old)
    new.rename(target)
    shutil.rmtree(old, ignore_errors=True)


def dataset_card(cfg, layout: RunLayout, plan: dict[str, Any], threshold: float,
                 totals: dict[str, int], files: list[dict[str, Any]]) -> str:
    """README.md of corpus/: where the data came from, what filtered it, counts, classifier, schema."""
    import yaml

    classifier_dir = Path(plan["classifier"])
    card_meta: dict[str, Any] = {}
    try:
        classifier_config = yaml.safe_load((classifier_dir / "config.yaml").read_text())
        metrics = json.loads((classifier_dir / "metrics.json").read_text())
        card_meta = {"teacher": classifier_config["teacher"]["models"],
                     "label_threshold": classifier_config["quality"]["label_threshold"],
                     "heldout_roc_auc": metrics["quality"]["roc_auc"]}
    except (OSError, KeyError, ValueError):
        pass
    stages = {}
    for stage in ("extract", "dedup"):
        summary = layout.shard_stats(stage)
        if summary:
            stages[stage] = {"input": sum(s["input"] for s in summary), "kept": sum(s["kept"] for s in summary)}
    stages[STAGE] = {"input": totals["input"], "kept": totals["kept"],
                     "dropped": {REASON_BELOW: totals[REASON_BELOW], REASON_NO_TEXT: totals[REASON_NO_TEXT]}}
    source = cfg.input.snapshot or (f"{len(cfg.input.warcs)} WARC path pattern(s)" if cfg.input.warcs else None)
    header = {
        "configs": [{"config_name": "default", "data_files": "part-*.parquet"}],
        "source": source or f"documents from {plan['docs_dir']}",
        "docs_dir": plan["docs_dir"],
        "classifier": {"path": str(classifier_dir), "sha256": plan["classifier_fingerprint"], **card_meta},
        "quality_threshold": threshold,
        "stages": stages,
        "rows": totals["kept"],
        "files": len(files),
    }
    schema_lines = [f"| `{f.name}` | `{f.type}` |" for f in schemas.SCORED]
    extract_cfg = cfg.extract.model_dump()
    return "\n".join([
        "---", yaml.safe_dump(header, sort_keys=False).rstrip(), "---", "",
        "# Curated web text (webcurate)", "",
        f"Documents extracted from web pages ({header['source']}), deduplicated when the run's dedup stage "
        f"ran, then filtered by a fastText quality classifier distilled from LLM labels: a document is kept "
        f"when `quality_prob >= {threshold:.4f}`.", "",
        "## Stages and counts", "",
        "| stage | input | kept |", "|---|---|---|",
        *[f"| {name} | {s['input']} | {s['kept']} |" for name, s in stages.items()], "",
        f"Dropped by classify: {totals[REASON_BELOW]} `{REASON_BELOW}`, {totals[REASON_NO_TEXT]} `{REASON_NO_TEXT}` "
        "(one row each in `decisions/classify/` of the run).", "",
        f"Extraction: trafilatura, languages {extract_cfg['languages'] or 'all'}, heuristic rules "
        f"{'on' if extract_cfg['rules']['enabled'] else 'off'}.", "",
        "## Classifier", "",
        f"`{classifier_dir}` (see its README.md model card); stored scores in the run's `scores/`, so "
        "`curate classify --rethreshold T` rewrites this folder without re-running the model.", "",
        "## Files", "",
        f"{len(files)} Parquet file(s), zstd, listed with rows and sha256 in `_manifest.json`. Load with "
        "`datasets.load_dataset(\"parquet\", data_files=\"corpus/part-*.parquet\")` or DuckDB "
        "`SELECT * FROM 'corpus/part-*.parquet'`.", "",
        "## Schema", "",
        "| column | type |", "|---|---|", *schema_lines, "",
        "`quality_prob`: P(high quality) from the classifier; `topics`/`topic_probs`: the classifier's most "
        "probable topics, most probable first (null without a topic model). The dedup columns are null when "
        "the input was docs/.", "",
    ])


# --------------------------------------------------------------------------------------------------- driver


def resolve_threshold(cfg, classifier_dir: Path) -> float:
    """classify.threshold when set, else the decision threshold chosen at distillation (config.yaml)."""
    if cfg.classify.threshold is not None:
        return cfg.classify.threshold
    import yaml

    config = yaml.safe_load((classifier_dir / "config.yaml").read_text())
    return float(config["quality"]["decision_threshold"])


def run(cfg, docs_dir: str | Path | None = None, *, rethreshold: float | None = None,
        quiet: bool = False) -> dict[str, Any]:
    """Score (unless only re-thresholding) and decide. Defaults: docs from <out>/unique (or <out>/docs), the
    classifier from classify.classifier (or <out>/classifier), the threshold from classify.threshold (or the
    classifier card's)."""
    from classifiers.distil import default_docs_dir

    layout = RunLayout(cfg.out)
    if rethreshold is not None:
        if not 0 <= rethreshold <= 1:
            raise ClassifyError(f"--rethreshold must be between 0 and 1, got {rethreshold}")
        return decide_all(cfg, rethreshold, stored_plan(layout), quiet=quiet)
    classifier_dir = Path(cfg.classify.classifier) if cfg.classify.classifier else layout.dataset("classifier")
    if not (classifier_dir / "config.yaml").exists():
        raise ClassifyError(f"--classifier {classifier_dir}: not a classifier folder (run `curate distil` first)")
    docs_dir = Path(docs_dir) if docs_dir else default_docs_dir(cfg.out)
    threshold = resolve_threshold(cfg, classifier_dir)
    plan = plan_scoring(docs_dir, classifier_dir)
    done = _finished_decision(layout, plan, threshold, cfg.classify)
    if done is not None:
        if not quiet:
            print(f"[{STAGE}] already decided at threshold {threshold:.4f} with this classifier and input: "
                  f"{done['kept']} kept, corpus in {layout.dataset('corpus')} (skipped)")
        manifest = json.loads((layout.dataset("corpus") / "_manifest.json").read_text())
        return {**done, "files": manifest["files"], "scored_now": 0, "skipped": True}
    started = time.perf_counter()
    result = decide_all(cfg, threshold, plan, score_shards(cfg, plan, quiet=quiet), quiet=quiet)
    scored = stored_plan(layout)
    return {**result, "scored_now": scored["scored_now"], "seconds": round(time.perf_counter() - started, 3),
            "actor_peak_rss_mb": scored["actor_peak_rss_mb"]}


def cmd_classify(args) -> int:
    from pipeline.cli import _config, _print_report

    extra = [f"classify.classifier={args.classifier}"] if args.classifier else []
    cfg = _config(args, extra)
    try:
        run(cfg, args.docs, rethreshold=args.rethreshold)
    except ClassifyError as exc:
        print(f"curate classify: {exc}", file=sys.stderr)
        return 2
    _print_report(cfg)
    return 0


def register_cli(sub) -> None:
    from pipeline.cli import _common

    p = sub.add_parser("classify", help="score unique/ (or docs/) with a distilled classifier -> scores/, "
                                        "decisions/, corpus/ (sharded Parquet)")
    _common(p)
    p.add_argument("--docs", help="input folder: a run's unique/ or docs/ (default <out>/unique, else <out>/docs)")
    p.add_argument("--classifier", help="classifier folder from `curate distil` (config: classify.classifier)")
    p.add_argument("--rethreshold", type=float, metavar="T",
                   help="only re-decide from the stored scores at threshold T (no model run)")
    p.set_defaults(handler=cmd_classify)
