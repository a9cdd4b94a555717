"""Classify stage: score every document with the distilled classifier, then decide keep/drop, then write the
kept corpus as sharded Parquet. Two stages of the runtime (pipeline.runtime), run in this order:

- `ScoreStage` (`classify-score`, Ray actor pool, the model loaded once per actor by `setup`): every input
  file of unique/ (or docs/, or `classify.docs`) becomes `scores/part-<shard>.parquet` with the SCORED schema
  (quality_prob, topics, topic_probs). Nothing is decided here. Its plan identity is the classifier: the
  same classifier reuses every stored score, another one rescores everything.
- `DecideStage` (`classify`, in the driver, cheap, no model): for each stored score shard,
  `quality_prob >= threshold` keeps the document, else it is dropped with reason `below_quality` (`no_text`
  when there was nothing to score); decisions go to `decisions/classify/`, stats markers to
  `_state/classify/`. Its `finish` writes the kept rows to `corpus/`, rewritten whole and replaced atomically
  (`part-00000.parquet`..., target size per file, `_manifest.json` with checksums, a dataset card README.md).
  It reads only stored scores, so `curate classify --rethreshold T` (or `run(cfg, rethreshold=T)`) runs only
  this stage, without the model.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
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
from pipeline.errors import CurateError
from pipeline.io import PARQUET_COMPRESSION, RunLayout, parquet_files, shard_key, write_json
from pipeline.report import peak_rss_mb
from pipeline.runtime import Output, Resources, Shard, ShardResult, Stage, run_stage
from pipeline.runtime.runner import replace_dir

STAGE = "classify"
SCORE_STAGE = "classify-score"  # markers of the score stage (the filter stage's ShardStats markers are decide's)
REASON_BELOW = "below_quality"
REASON_NO_TEXT = "no_text"
DUP_FIELDS = [f for f in schemas.UNIQUE if f.name not in schemas.DOCS.names]
DECIDE_COLUMNS = ["doc_id", "url", "quality_prob"]


class ClassifyError(CurateError):
    """The stage cannot run (no input, no usable classifier, no stored scores); the message says what to do."""


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


def classifier_folder(cfg) -> Path:
    """classify.classifier, else the run's own classifier/ (distil's output)."""
    return Path(cfg.classify.classifier) if cfg.classify.classifier else RunLayout(cfg.out).dataset("classifier")


def check_classifier(folder: Path) -> None:
    """Refuse, with one message naming the file, a classifier folder that cannot be loaded: no config.yaml, or a
    model file its config.yaml names that is not there (otherwise every scoring actor would fail alike)."""
    import yaml

    config_path = folder / "config.yaml"
    if not config_path.is_file():
        raise ClassifyError(f"--classifier {folder}: not a classifier folder, {config_path.name} is missing (run "
                            "`curate distil` first, or set classify.classifier)")
    try:
        config = yaml.safe_load(config_path.read_text())
        files = {"quality": config["quality"]["model_file"]}
        if config.get("topics"):
            files["topics"] = config["topics"]["model_file"]
    except (yaml.YAMLError, TypeError, KeyError) as exc:
        raise ClassifyError(f"--classifier {folder}: {config_path} is not a classifier config "
                            f"({type(exc).__name__}: {exc})") from None
    for section, name in files.items():
        if not (folder / name).is_file():
            raise ClassifyError(f"--classifier {folder}: the {section} model file {name} named in config.yaml is "
                                f"missing ({folder / name}); copy the whole classifier folder, or distil again")


class ScoreStage(Stage):
    """unique/ (or docs/) -> scores/: one shard per input file, on a pool of actors that each load the
    classifier once."""

    name = SCORE_STAGE
    section = "classify"
    outputs = (Output("scores", schemas.SCORED),)
    writes_decisions = False
    role = "step"
    unit = "file"

    def __init__(self, cfg):
        super().__init__(cfg)
        self.classifier_dir = classifier_folder(cfg)
        self.docs_dir = Path(cfg.classify.docs) if cfg.classify.docs else RunLayout(cfg.out).documents()
        self._fingerprint: str | None = None

    def fingerprint(self) -> str:
        if self._fingerprint is None:
            self._fingerprint = classifier_fingerprint(self.classifier_dir)
        return self._fingerprint

    def settings(self) -> dict[str, Any]:
        return {"classify.topics_top_k": self.cfg.classify.topics_top_k}

    def plan_identity(self) -> dict[str, Any]:
        # another classifier (or another input folder whose files have the same names) rescores everything
        return {"classifier": self.fingerprint(), "docs": str(self.docs_dir.resolve())}

    def check(self) -> None:
        check_classifier(self.classifier_dir)
        check_inputs(input_files(self.docs_dir))

    def plan(self) -> list[Shard]:
        return [Shard(key=f"part-{shard_key(path.name)}", source=str(path)) for path in input_files(self.docs_dir)]

    def resources(self) -> Resources:
        try:
            from pipeline.runtime.executor import cluster_cpus

            cpus = cluster_cpus()
        except Exception:  # noqa: BLE001 - Ray not started (yet): size by this machine
            cpus = os.cpu_count() or 1
        return Resources(kind="actor", num_cpus=1, num_actors=max(1, min(self.cfg.classify.num_actors, cpus)))

    def setup(self):
        from classifiers.artifact import QualityClassifier

        return QualityClassifier.load(self.classifier_dir)

    def process(self, classifier, shard: Shard) -> ShardResult:
        stats = self.new_stats(shard)
        parquet = pq.ParquetFile(shard.source)
        columns = [name for name in schemas.UNIQUE.names if name in parquet.schema_arrow.names]
        # Reading the next batch (Arrow releases the GIL) overlaps scoring the current one, batch by batch. The
        # scored file is returned whole for the runner to write, so a worker holds one input file's scored rows
        # (a docs/unique file is one extract shard: tens of MB of text) where a streaming writer would hold a
        # few batches; writing it is no longer overlapped with scoring.
        parts: list[pa.Table] = []
        with ThreadPoolExecutor(max_workers=1) as reader:
            batches = parquet.iter_batches(batch_size=self.cfg.classify.batch_size, columns=columns)
            for batch in read_ahead(batches, reader):
                parts.append(score_batch(classifier, as_unique(pa.Table.from_batches([batch])),
                                         self.cfg.classify.topics_top_k).cast(schemas.SCORED))
        table = pa.concat_tables(parts) if parts else schemas.SCORED.empty_table()
        stats.input = stats.kept = table.num_rows  # every document gets a row (null scores without text)
        stats.extra["peak_rss_mb"] = peak_rss_mb()
        return ShardResult(rows={"scores": table}, decisions=[], stats=stats)

    def teardown(self, worker) -> dict[str, float]:
        return {"peak_rss_mb": peak_rss_mb()}

    def finish(self, summary: dict[str, Any], markers: list[dict[str, Any]]) -> dict[str, Any]:
        """The stage marker records what the stored scores are (the decide stage and --rethreshold read it)."""
        counters = summary.get("counters") or []
        peaks = [c["peak_rss_mb"] for c in counters if isinstance(c, dict) and c.get("peak_rss_mb")]
        return {"classifier": str(self.classifier_dir), "classifier_fingerprint": self.fingerprint(),
                "docs_dir": str(self.docs_dir), "plan": [[m["shard"], m["source"]] for m in markers],
                "actor_peak_rss_mb": max(peaks, default=None)}

    def format_summary(self, summary: dict[str, Any]) -> str:
        return (f"[{self.name}] {summary['shards']} file(s), {summary['shards_run']} scored now with "
                f"{self.classifier_dir}: {summary['input']} documents, {summary['seconds']:.1f}s")


# --------------------------------------------------------------------------------------------------- decide


def keep_mask(scored: pa.Table, threshold: float) -> pa.ChunkedArray:
    """True where quality_prob >= threshold (never where there was no text to score)."""
    return pc.fill_null(pc.greater_equal(scored.column("quality_prob"), pa.scalar(threshold, pa.float32())), False)


def decide_table(scored: pa.Table, threshold: float, source: str) -> tuple[pa.Table, pa.Table, dict[str, int]]:
    """Pure decision step: (kept rows, decision rows, {reason: count}). Keep when quality_prob >= threshold."""
    keep = keep_mask(scored, threshold)
    no_text = pc.is_null(scored.column("quality_prob"))
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


def stored_scores(layout: RunLayout) -> dict[str, Any]:
    """What the score stage stored (classifier, input folder, shards in plan order), from its stage marker."""
    marker = layout.stage_marker(SCORE_STAGE)
    if not marker.exists():
        raise ClassifyError(f"no stored scores in {layout.root} (run `curate classify --docs ... --classifier ...` "
                            "first, to the end; --rethreshold only re-decides)")
    stored = json.loads(marker.read_text())
    if "plan" not in stored:
        raise ClassifyError(f"{marker}: scores stored by an older version; run `curate classify` once without "
                            "--rethreshold")
    return stored


def resolve_threshold(cfg, classifier_dir: Path) -> float:
    """classify.threshold when set, else the decision threshold chosen at distillation (config.yaml)."""
    if cfg.classify.threshold is not None:
        return cfg.classify.threshold
    import yaml

    config_path = classifier_dir / "config.yaml"
    try:
        return float(yaml.safe_load(config_path.read_text())["quality"]["decision_threshold"])
    except (OSError, KeyError, TypeError, ValueError) as exc:
        raise ClassifyError(f"classify.threshold is not set and {config_path} (the classifier of the stored scores) "
                            f"gives no decision threshold ({type(exc).__name__}); set classify.threshold or "
                            "--rethreshold T") from None


class DecideStage(Stage):
    """scores/ -> decisions/classify/ and corpus/: one shard per score shard, decided at the threshold in the
    driver; `finish` writes the kept rows as the sharded corpus."""

    name = STAGE
    section = "classify"
    outputs = ()
    role = "filter"
    unit = "file"

    def __init__(self, cfg):
        super().__init__(cfg)
        self.layout = RunLayout(cfg.out)
        self._stored: dict[str, Any] | None = None
        self._threshold: float | None = None

    def stored(self) -> dict[str, Any]:
        if self._stored is None:
            self._stored = stored_scores(self.layout)
        return self._stored

    def threshold(self) -> float:
        if self._threshold is None:
            self._threshold = resolve_threshold(self.cfg, Path(self.stored()["classifier"]))
        return self._threshold

    def check(self) -> None:
        self.threshold()

    def plan_identity(self) -> dict[str, Any]:
        # a new threshold (or new scores, or another file sizing) redoes every decision and the corpus
        stored = self.stored()
        return {"threshold": self.threshold(), "classifier": stored["classifier_fingerprint"],
                "docs": stored["docs_dir"], "rows_per_file": self.cfg.classify.rows_per_file,
                "bytes_per_file": self.cfg.classify.bytes_per_file}

    def _scores_path(self, key: str) -> Path:
        return self.layout.dataset("scores") / f"{key}.parquet"

    def plan(self) -> list[Shard]:
        shards = []
        for key, source in self.stored()["plan"]:
            scores = self._scores_path(key)
            if not scores.exists():
                raise ClassifyError(f"stored scores missing: {scores} (run `curate classify` without --rethreshold)")
            marker = self.layout.marker(self.name, key)
            if marker.exists() and marker.stat().st_mtime_ns < scores.stat().st_mtime_ns:
                marker.unlink()  # scored again since it was decided: decide it again
            shards.append(Shard(key=key, source=source))
        return shards

    def resources(self) -> Resources:
        return Resources(kind="local")  # reads a score file and compares a column: not worth a Ray task

    def process(self, worker, shard: Shard) -> ShardResult:
        # only what a decision row needs (the text is read once, by finish, for the kept rows)
        scored = pq.read_table(self._scores_path(shard.key), columns=DECIDE_COLUMNS)
        kept, decisions, counts = decide_table(scored, self.threshold(), shard.source)
        stats = self.new_stats(shard)
        stats.input, stats.kept = scored.num_rows, kept.num_rows
        for reason, n in counts.items():
            if n:
                stats.drop(reason, n)
        stats.extra["threshold"] = self.threshold()
        return ShardResult(rows={}, decisions=decisions, stats=stats)

    def corpus_fingerprint(self, keys: list[str]) -> str:
        payload = {"identity": self.plan_identity(), "shards": keys}
        return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()

    def finish(self, summary: dict[str, Any], markers: list[dict[str, Any]]) -> dict[str, Any]:
        """corpus/ from the stored scores at the threshold, in plan order (the same corpus whatever order the
        shards were scored in); left as it is when nothing was redone and it was written from this input."""
        stored, threshold = self.stored(), self.threshold()
        keys = [marker["shard"] for marker in markers]
        totals = {"input": summary["input"], "kept": summary["kept"],
                  REASON_BELOW: summary["dropped"].get(REASON_BELOW, 0),
                  REASON_NO_TEXT: summary["dropped"].get(REASON_NO_TEXT, 0)}
        fingerprint = self.corpus_fingerprint(keys)
        corpus_dir = self.layout.dataset("corpus")
        manifest_path = corpus_dir / "_manifest.json"
        rewritten = True
        if summary["shards_run"] == 0 and manifest_path.exists():
            manifest = json.loads(manifest_path.read_text())
            if manifest.get("fingerprint") == fingerprint:
                files, rewritten = manifest["files"], False
        if rewritten:
            files = self._write_corpus(stored, threshold, keys, totals, fingerprint, corpus_dir)
        return {"threshold": threshold, "classifier": stored["classifier"], REASON_BELOW: totals[REASON_BELOW],
                REASON_NO_TEXT: totals[REASON_NO_TEXT], "files": files, "corpus_files": len(files),
                "corpus_rewritten": rewritten}

    def _write_corpus(self, stored: dict[str, Any], threshold: float, keys: list[str], totals: dict[str, int],
                      fingerprint: str, corpus_dir: Path) -> list[dict[str, Any]]:
        staging = corpus_dir.with_name(f".corpus.tmp-{uuid.uuid4().hex[:8]}")
        writer = ShardedParquetWriter(staging, schemas.SCORED, rows_per_file=self.cfg.classify.rows_per_file,
                                      bytes_per_file=self.cfg.classify.bytes_per_file)
        try:
            # the next score file is read (Arrow releases the GIL) while the current one is written
            tables = (pq.read_table(self._scores_path(key), schema=schemas.SCORED) for key in keys)
            with ThreadPoolExecutor(max_workers=1) as reader:
                for scored in read_ahead(tables, reader):
                    writer.write(scored.filter(keep_mask(scored, threshold)))
            files = writer.close()
            manifest = {"schema": "pipeline.schemas.SCORED", "compression": PARQUET_COMPRESSION,
                        "rows": totals["kept"], "files": files, "fingerprint": fingerprint}
            write_json(manifest, staging / "_manifest.json")
            (staging / "README.md").write_text(dataset_card(self.cfg, self.layout, stored, threshold, totals, files))
            replace_dir(staging, corpus_dir)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return files

    def format_summary(self, summary: dict[str, Any]) -> str:
        where = self.layout.dataset("corpus")
        return (f"[{self.name}] threshold {summary['threshold']:.4f}: {summary['input']} documents, "
                f"{summary['kept']} kept, {summary[REASON_BELOW]} {REASON_BELOW}, {summary[REASON_NO_TEXT]} "
                f"{REASON_NO_TEXT}; corpus: {summary['corpus_files']} file(s) in {where}"
                + ("" if summary["corpus_rewritten"] else " (unchanged)"))


# --------------------------------------------------------------------------------------------------- driver


def run(cfg, docs_dir: str | Path | None = None, *, rethreshold: float | None = None,
        quiet: bool = False) -> dict[str, Any]:
    """Score (unless only re-thresholding) and decide. Defaults: docs from classify.docs (or <out>/unique, else
    <out>/docs), the classifier from classify.classifier (or <out>/classifier), the threshold from
    classify.threshold (or the classifier card's). Returns the decide stage's summary (kept, threshold, files,
    below_quality, ...) with `scored_now` (files scored by this call) and the scoring actors' peak memory."""
    started = time.perf_counter()
    classify_cfg = cfg.classify
    if rethreshold is not None:
        if not 0 <= rethreshold <= 1:
            raise ClassifyError(f"--rethreshold must be between 0 and 1, got {rethreshold}")
        cfg = cfg.model_copy(update={"classify": classify_cfg.model_copy(update={"threshold": rethreshold})})
        return {**run_stage(DecideStage(cfg), quiet=quiet), "scored_now": 0, "actor_peak_rss_mb": None}
    if docs_dir is not None:
        cfg = cfg.model_copy(update={"classify": classify_cfg.model_copy(update={"docs": str(docs_dir)})})
    scored = run_stage(ScoreStage(cfg), quiet=quiet)
    decided = run_stage(DecideStage(cfg), quiet=quiet)
    return {**decided, "scored_now": scored["shards_run"], "actor_peak_rss_mb": scored.get("actor_peak_rss_mb"),
            "seconds": round(time.perf_counter() - started, 3)}
