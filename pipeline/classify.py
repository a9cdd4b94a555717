"""Classify stage: score every document with the distilled classifier, then decide keep/drop, then write the
kept corpus as sharded Parquet. Two stages of the runtime (pipeline.runtime), run in this order:

- `ScoreStage` (`classify-score`, Ray actor pool, the model loaded once per actor by `setup`): every input
  file of unique/ (or docs/, or `classify.docs`) becomes `scores/part-<shard>.parquet` with the SCORED schema
  (quality_prob, topics, topic_probs, format, format_probs). Nothing is decided here. Its plan identity is the classifier: the
  same classifier reuses every stored score, another one rescores everything.
- `DecideStage` (`classify`, in the driver, cheap, no model): for each stored score shard,
  `quality_prob >= threshold` keeps the document, else it is dropped with reason `below_quality` (`no_text`
  when there was nothing to score); decisions go to `decisions/classify/`, stats markers to
  `_state/classify/`. Its `finish` writes the kept rows to `corpus/`, rewritten whole and replaced atomically
  (`part-00000.parquet`..., target size per file, `_manifest.json` with checksums, a dataset card README.md).
  It reads only stored scores, so `curate classify --rethreshold T` (or `run(cfg, rethreshold=T)`) runs only
  this stage, without the model; so do `--target-tokens N` and `--target-keep-rate R`, which decide at the
  threshold that keeps about N tokens (R of the documents) of the stored scores (`threshold_for_target`).
  The card and the summary hold `threshold_table`: keep rate, kept documents and tokens, and the held-out
  teacher labels' precision and recall over a grid of thresholds (the pure function over arrays).
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
from pipeline.config import ConfigError
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
# The thresholds the card and the summary report (plus the chosen one): 0.05, 0.10, ..., 0.95.
THRESHOLD_GRID = tuple(round(0.05 * i, 2) for i in range(1, 20))
# Documents whose tokens are counted (TokenCounter) to measure the tokens-per-word ratio of the stored scores.
TOKEN_SAMPLE_DOCS = 2000
THRESHOLD_SOURCES = ("threshold", "target_tokens", "target_keep_rate")


class ClassifyError(CurateError):
    """The stage cannot run (no input, no usable classifier, no stored scores); the message says what to do."""


# ---------------------------------------------------------------------------------------------------- score


def as_unique(table: pa.Table) -> pa.Table:
    """A docs/ or unique/ batch with the UNIQUE schema: dedup's columns are null when reading docs/."""
    for field in DUP_FIELDS:
        if field.name not in table.column_names:
            table = table.append_column(field, pa.nulls(table.num_rows, field.type))
    return table.select(schemas.UNIQUE.names).cast(schemas.UNIQUE)


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
    """Pure scoring step: UNIQUE rows -> SCORED rows (quality_prob; the top-k topics and formats with their
    probabilities when the classifier has those models, else nulls). Empty texts get null scores."""
    probs, tag_scores = classifier.score_all(table.column("text").to_pylist())
    quality = pa.array(probs, pa.float32(), mask=np.isnan(probs))
    topics, topic_probs = top_tags(tag_scores["topics"], topics_top_k, table.num_rows)
    formats, format_probs = top_tags(tag_scores["formats"], formats_top_k, table.num_rows)
    return (table.append_column("quality_prob", quality).append_column("topics", topics)
            .append_column("topic_probs", topic_probs).append_column("format", formats)
            .append_column("format_probs", format_probs))


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
        for kind in ("topics", "formats"):
            if config.get(kind):
                files[kind] = config[kind]["model_file"]
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
        return {"classify.topics_top_k": self.cfg.classify.topics_top_k,
                "classify.formats_top_k": self.cfg.classify.formats_top_k}

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
                                         self.cfg.classify.topics_top_k,
                                         self.cfg.classify.formats_top_k).cast(schemas.SCORED))
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


# ------------------------------------------------------------------------------------ choosing the threshold


def _as_float32(values) -> np.ndarray:
    """Scores as float32 (what keep_mask compares), NaN where there is no score (no text: never kept)."""
    return np.asarray([np.nan if v is None else v for v in values] if isinstance(values, list) else values,
                      dtype=np.float32)


def _kept_at(probs: np.ndarray, weights: np.ndarray, thresholds) -> tuple[np.ndarray, np.ndarray]:
    """(documents, summed weights) with probs >= each threshold, compared in float32 like keep_mask."""
    scored = ~np.isnan(probs)
    order = np.argsort(probs[scored], kind="stable")
    ascending, w = probs[scored][order], weights[scored][order]
    above = np.concatenate([np.cumsum(w[::-1])[::-1], [0.0]])  # above[i]: weight of ascending[i:]
    first = np.searchsorted(ascending, np.asarray(thresholds, dtype=np.float32), side="left")
    return len(ascending) - first, above[first]


def threshold_table(probs, tokens, thresholds=THRESHOLD_GRID, *, chosen: float | None = None,
                    heldout_probs=None, heldout_labels=None) -> list[dict[str, Any]]:
    """Pure: what each threshold would keep, from per-document arrays.

    `probs`: quality_prob per document (NaN/None: no text, never kept); `tokens`: its (estimated) tokens.
    `heldout_probs`/`heldout_labels`: scores and teacher labels (True: positive) of held-out documents, for
    precision (kept positives / kept) and recall (kept positives / positives); None where undefined or
    without held-out labels. `chosen` is added to the grid (once) and its row marked. One row per threshold,
    ascending: threshold, keep_rate (of every document, scored or not), kept_docs, kept_tokens, precision,
    recall, chosen."""
    probs = _as_float32(probs)
    tokens = np.asarray(tokens, dtype=np.float64)
    if tokens.shape != probs.shape:
        raise ValueError(f"probs and tokens differ in length ({len(probs)} != {len(tokens)})")
    grid = sorted({float(np.float32(t)): t for t in [*thresholds, *([] if chosen is None else [chosen])]}.items())
    cuts = [t for _, t in grid]
    chosen32 = None if chosen is None else float(np.float32(chosen))
    docs, kept_tokens = _kept_at(probs, tokens, cuts)
    precision: list[float | None] = [None] * len(cuts)
    recall: list[float | None] = [None] * len(cuts)
    if heldout_probs is not None and heldout_labels is not None:
        held = _as_float32(heldout_probs)
        labels = np.asarray(heldout_labels, dtype=bool)
        if labels.shape != held.shape:
            raise ValueError(f"heldout_probs and heldout_labels differ in length ({len(held)} != {len(labels)})")
        kept_h, tp = _kept_at(held, labels.astype(np.float64), cuts)
        positives = int(labels[~np.isnan(held)].sum())
        precision = [float(t / k) if k else None for t, k in zip(tp, kept_h)]
        recall = [float(t / positives) if positives else None for t in tp]
    n = len(probs)
    return [{"threshold": float(cut), "keep_rate": float(k / n) if n else 0.0, "kept_docs": int(k),
             "kept_tokens": int(round(t)), "precision": p, "recall": r, "chosen": key == chosen32}
            for (key, cut), k, t, p, r in zip(grid, docs, kept_tokens, precision, recall)]


def threshold_for_target(probs, weights, target: float) -> tuple[float, float]:
    """Pure: (threshold, kept weight) for the threshold whose kept weight (summed over documents with
    probs >= threshold) is closest to `target`; on a tie, the higher threshold. The candidates are the scores
    themselves, so at least the best-scored documents are kept; NaN (no text) is never kept."""
    probs = _as_float32(probs)
    weights = np.asarray(weights, dtype=np.float64)
    scored = ~np.isnan(probs)
    if not scored.any():
        raise ClassifyError("no scored documents in the stored scores: no threshold keeps anything")
    order = np.argsort(-probs[scored], kind="stable")
    descending, kept = probs[scored][order], np.cumsum(weights[scored][order])
    last_of_tie = np.r_[descending[1:] != descending[:-1], True]  # equal scores are kept together
    candidates, kept = descending[last_of_tie], kept[last_of_tie]
    best = int(np.argmin(np.abs(kept - target)))
    return float(candidates[best]), float(kept[best])


def threshold_sources(classify_cfg) -> list[str]:
    """The classify fields set that choose the threshold; more than one is a ConfigError naming them."""
    chosen = [f"classify.{name}" for name in THRESHOLD_SOURCES if getattr(classify_cfg, name) is not None]
    if len(chosen) > 1:
        raise ConfigError(f"{', '.join(chosen)} are mutually exclusive (each chooses the threshold): set only one")
    return chosen


class ScoreProfile:
    """Per stored document: quality_prob (float32, NaN without text) and its length in characters (the stored
    `n_chars`); tokens are characters x a tokens-per-character ratio measured with a TokenCounter on a sample
    of the documents (the same for every threshold, so kept tokens are comparable across rows). Read from
    scores/ without the model and without the texts (only the sample's): 12 bytes per document in memory."""

    def __init__(self, probs: np.ndarray, chars: np.ndarray, tokens_per_char: float, tokenizer: str,
                 sampled_docs: int, found: dict[str, float]):
        self.probs, self.chars = probs, chars
        self.tokens_per_char, self.tokenizer, self.sampled_docs = tokens_per_char, tokenizer, sampled_docs
        self.found = found  # stored scores of the documents asked for (the held-out ones)

    @property
    def tokens(self) -> np.ndarray:
        return self.chars * self.tokens_per_char

    def describe(self) -> str:
        return (f"characters x {self.tokens_per_char:.4f} tokens per character (ratio measured with "
                f"{self.tokenizer} on {self.sampled_docs} stored documents)")


def read_profile(paths: list[Path], counter, wanted: set[str] | None = None,
                 sample_docs: int = TOKEN_SAMPLE_DOCS) -> ScoreProfile:
    """One pass over the light columns of the score files (scores, n_chars, doc_id; one file at a time), the
    texts of only the first documents of each file (`sample_docs` in all) to measure the token ratio, and
    the stored scores of `wanted`."""
    per_file = -(-sample_docs // max(len(paths), 1))
    probs, chars, found = [], [], {}
    sampled = sample_chars = sample_tokens = 0
    for path in paths:
        table = pq.read_table(path, columns=["doc_id", "quality_prob", "n_chars"])
        probs.append(np.asarray(table.column("quality_prob").to_numpy(), dtype=np.float32))
        lengths = pc.fill_null(table.column("n_chars"), 0).to_numpy().astype(np.int64)
        chars.append(lengths)
        take = min(per_file, sample_docs - sampled, table.num_rows)
        if take > 0:
            batch = next(pq.ParquetFile(path).iter_batches(batch_size=take, columns=["text"]))
            texts = [t or "" for t in batch.column("text").to_pylist()[:take]]
            sampled += len(texts)
            sample_chars += sum(len(t) for t in texts)
            sample_tokens += sum(counter.count_many(texts))
        if wanted:
            hit = table.filter(pc.is_in(table.column("doc_id"), value_set=pa.array(sorted(wanted), pa.string())))
            found.update(zip(hit.column("doc_id").to_pylist(), hit.column("quality_prob").to_pylist()))
    probs_all = np.concatenate(probs) if probs else np.zeros(0, np.float32)
    probs_all[~np.isfinite(probs_all)] = np.nan  # null scores (no text) read as NaN
    return ScoreProfile(probs_all, np.concatenate(chars) if chars else np.zeros(0, np.int64),
                        sample_tokens / sample_chars if sample_chars else 0.0, counter.name, sampled, found)


class HeldoutLabels:
    """The teacher's labels of the classifier's held-out documents (`heldout_doc_ids.txt`, never trained on
    nor used to pick the card's threshold), read with distil's own loader (classifiers.labels) from the labels
    its config.yaml names (`teacher.source`), so a label is what distil trained on: a labels/ folder with the
    docs folder their texts came from (at the card's label_threshold, and distil.label_source when the card
    records one), or a JSONL file. `labels` is empty, and `note` says why, when the folder or the labels are
    not there."""

    def __init__(self, classifier_dir: Path):
        self.classifier_dir = classifier_dir
        self.labels: dict[str, bool] = {}
        self.texts: dict[str, str] = {}
        self.docs_dir: Path | None = None  # where the teacher's documents came from (LLM labels)
        self.note = ""
        try:
            self._load()
        except (OSError, ValueError, KeyError, TypeError, CurateError) as exc:
            self.labels, self.texts = {}, {}
            self.note = f"no held-out labels: not readable ({type(exc).__name__}: {exc})"

    def _load(self) -> None:
        import yaml

        from classifiers.labels import load_jsonl_labels, load_llm_labels

        ids_path = self.classifier_dir / "heldout_doc_ids.txt"
        if not ids_path.is_file():
            self.note = f"no held-out labels: {ids_path} not found"
            return
        ids = {line.strip() for line in ids_path.read_text().splitlines() if line.strip()}
        config = yaml.safe_load((self.classifier_dir / "config.yaml").read_text())
        label_threshold = float(config["quality"]["label_threshold"])
        source = str((config.get("teacher") or {}).get("source") or "")
        if source.startswith("labels-jsonl: "):
            label_set = load_jsonl_labels(source.removeprefix("labels-jsonl: "), label_threshold)
        elif source.startswith("labels: ") and "; docs: " in source:
            labels_dir, docs_dir = source.removeprefix("labels: ").split("; docs: ", 1)
            if not Path(labels_dir).is_dir():
                self.note = f"no held-out labels: the teacher's labels folder {labels_dir} is not there"
                return
            self.docs_dir = Path(docs_dir)
            options = {}
            label_source = (config.get("distil") or {}).get("label_source")
            if label_source is not None:  # recorded by distil versions that can label from expected scores
                options["label_source"] = label_source
            label_set = load_llm_labels(labels_dir, docs_dir, label_threshold, **options)
        else:
            self.note = f"no held-out labels: unknown teacher source {source!r} in config.yaml"
            return
        for doc in label_set.docs:
            if doc.doc_id in ids and doc.is_positive is not None:
                self.labels[doc.doc_id], self.texts[doc.doc_id] = bool(doc.is_positive), doc.text
        if not self.labels:
            self.note = f"no held-out labels: none of the {len(ids)} held-out documents has a quality label"

    def stored_scores_usable(self, scores_docs_dir: str) -> bool:
        """The stored scores are the classifier's on the same texts when the scores were made from the folder
        the teacher's documents came from (same doc_id, same text)."""
        return (self.docs_dir is not None and bool(self.labels)
                and self.docs_dir.resolve() == Path(scores_docs_dir).resolve())

    def evaluate(self, found: dict[str, float | None]) -> tuple[np.ndarray, np.ndarray, str] | None:
        """(probs, labels, note) of the held-out documents: their stored score when `found` holds it, else
        the classifier's score of their text (only those few documents are scored, in this process)."""
        if not self.labels:
            return None
        ids = sorted(self.labels)
        probs = {i: found[i] for i in ids if found.get(i) is not None}
        missing = [i for i in ids if i not in probs and (self.texts.get(i) or "").strip()]
        if missing:
            import yaml

            from classifiers.artifact import load_fasttext, positive_probabilities
            from classifiers.normalize import normalize_many

            config = yaml.safe_load((self.classifier_dir / "config.yaml").read_text())
            model = load_fasttext(self.classifier_dir / config["quality"]["model_file"])
            scores = positive_probabilities(model, normalize_many([self.texts[i] for i in missing]))
            probs.update((i, float(p)) for i, p in zip(missing, scores) if not np.isnan(p))
        kept_ids = [i for i in ids if i in probs]
        if not kept_ids:
            return None
        scored_now = len(kept_ids) - sum(1 for i in kept_ids if found.get(i) is not None)
        note = (f"{len(kept_ids)} held-out documents of the classifier ({self.classifier_dir}) with the teacher's "
                f"labels: {len(kept_ids) - scored_now} scores read from scores/, {scored_now} scored now with the "
                "classifier (their stored scores were not available)")
        if len(kept_ids) < len(ids):
            note += f"; {len(ids) - len(kept_ids)} without text or a score left out"
        return (np.array([probs[i] for i in kept_ids], np.float32),
                np.array([self.labels[i] for i in kept_ids], bool), note)


def format_threshold_table(rows: list[dict[str, Any]], *, markdown: bool = False) -> list[str]:
    """The threshold table as text lines (the summary) or a Markdown table (the card)."""
    def cell(value, digits=3):
        return "-" if value is None else f"{value:.{digits}f}"

    if markdown:
        lines = ["| threshold | keep rate | kept docs | kept tokens | precision | recall |",
                 "|---|---|---|---|---|---|"]
        for r in rows:
            mark = " **(chosen)**" if r["chosen"] else ""
            lines.append(f"| {r['threshold']:.4f}{mark} | {r['keep_rate']:.3f} | {r['kept_docs']} | "
                         f"{r['kept_tokens']} | {cell(r['precision'])} | {cell(r['recall'])} |")
        return lines
    lines = [f"  {'threshold':>9}  {'keep rate':>9}  {'kept docs':>10}  {'kept tokens':>12}  {'precision':>9}  "
             f"{'recall':>6}"]
    for r in rows:
        lines.append(f"  {r['threshold']:>9.4f}  {r['keep_rate']:>9.3f}  {r['kept_docs']:>10}  {r['kept_tokens']:>12}  "
                     f"{cell(r['precision']):>9}  {cell(r['recall']):>6}" + ("  <- chosen" if r["chosen"] else ""))
    return lines


def stored_threshold_table(run_dir: str | Path) -> dict[str, Any] | None:
    """The threshold table of a run's last complete classify (its stage marker): {"rows": [...], "reason",
    "tokens", "heldout"}; None when classify has not finished there (or finished before this table existed)."""
    marker = RunLayout(run_dir).stage_marker(STAGE)
    if not marker.exists():
        return None
    summary = json.loads(marker.read_text())
    if "threshold_table" not in summary:
        return None
    return {"rows": summary["threshold_table"], "reason": summary.get("threshold_reason"),
            **summary.get("threshold_notes", {})}


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
                 totals: dict[str, int], files: list[dict[str, Any]], choice: dict[str, Any] | None = None) -> str:
    """README.md of corpus/: where the data came from, what filtered it, counts, classifier, the threshold and
    why it was chosen (`choice`: reason, table, notes), what other thresholds would keep, schema."""
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
        "threshold_chosen_by": (choice or {}).get("reason"),
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
        *_threshold_section(choice),
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
        "probable topics, most probable first (null without a topic model); `format`/`format_probs`: the same "
        "for the WebOrganizer format ids (null without a format model). The dedup columns are null when "
        "the input was docs/.", "",
    ])


def _threshold_section(choice: dict[str, Any] | None) -> list[str]:
    if not choice:
        return []
    notes = choice.get("notes", {})
    return [
        "## Threshold", "",
        f"Chosen by {choice['reason']}. What other thresholds would keep, from the stored scores (no model run; "
        "`curate classify --rethreshold T`, `--target-tokens N` or `--target-keep-rate R` rewrites this folder "
        "at another one):", "",
        *format_threshold_table(choice["table"], markdown=True), "",
        f"Keep rate: of all {STAGE} input documents. Kept tokens: {notes.get('tokens')}. Precision and recall: "
        f"against the teacher's labels, {notes.get('heldout')}.", "",
    ]


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
        self._choice: tuple[float, str] | None = None
        self._profile: ScoreProfile | None = None
        self._heldout: HeldoutLabels | None = None

    def stored(self) -> dict[str, Any]:
        if self._stored is None:
            self._stored = stored_scores(self.layout)
        return self._stored

    def heldout(self) -> HeldoutLabels:
        if self._heldout is None:
            self._heldout = HeldoutLabels(Path(self.stored()["classifier"]))
        return self._heldout

    def profile(self) -> ScoreProfile:
        """Scores and token estimates of every stored document (one read of scores/, no model)."""
        if self._profile is None:
            from pipeline.llm.tokens import TokenCounter, resolve_tokenizer

            paths = [self._scores_path(key) for key, _ in self.stored()["plan"]]
            for path in paths:
                if not path.exists():
                    raise ClassifyError(f"stored scores missing: {path} (run `curate classify` without "
                                        "--rethreshold)")
            heldout = self.heldout()
            wanted = set(heldout.labels) if heldout.stored_scores_usable(self.stored()["docs_dir"]) else None
            self._profile = read_profile(paths, TokenCounter(resolve_tokenizer(self.cfg)), wanted)
        return self._profile

    def choice(self) -> tuple[float, str]:
        """(threshold, why): classify.target_tokens or target_keep_rate (found in the stored scores),
        classify.threshold, else the classifier card's decision threshold."""
        if self._choice is None:
            classify_cfg = self.cfg.classify
            threshold_sources(classify_cfg)
            if classify_cfg.target_tokens is not None:
                profile = self.profile()
                threshold, kept = threshold_for_target(profile.probs, profile.tokens, classify_cfg.target_tokens)
                why = (f"target_tokens={classify_cfg.target_tokens}: kept {round(kept)} tokens at threshold "
                       f"{threshold:.4f}")
            elif classify_cfg.target_keep_rate is not None:
                profile = self.profile()
                n = len(profile.probs)
                threshold, kept = threshold_for_target(profile.probs, np.ones(n), classify_cfg.target_keep_rate * n)
                why = (f"target_keep_rate={classify_cfg.target_keep_rate}: kept {int(kept)} of {n} documents "
                       f"({kept / n:.4f}) at threshold {threshold:.4f}")
            elif classify_cfg.threshold is not None:
                threshold, why = classify_cfg.threshold, "classify.threshold"
            else:
                threshold = resolve_threshold(self.cfg, Path(self.stored()["classifier"]))
                why = "classifier card's threshold"
            self._choice = (threshold, why)
        return self._choice

    def threshold(self) -> float:
        return self.choice()[0]

    def check(self) -> None:
        self.choice()

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
        # why the threshold was chosen is in the card: another reason for the same threshold rewrites it
        payload = {"identity": self.plan_identity(), "shards": keys, "threshold_reason": self.choice()[1]}
        return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()

    def finish(self, summary: dict[str, Any], markers: list[dict[str, Any]]) -> dict[str, Any]:
        """corpus/ from the stored scores at the threshold, in plan order (the same corpus whatever order the
        shards were scored in); left as it is when nothing was redone and it was written from this input."""
        stored, (threshold, why) = self.stored(), self.choice()
        previous_path = self.layout.stage_marker(self.name)
        previous = json.loads(previous_path.read_text()) if previous_path.exists() else {}
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
        if not rewritten and previous.get("threshold_table") and previous.get("threshold_reason") == why:
            table, notes = previous["threshold_table"], previous.get("threshold_notes", {})  # as in the card
        else:
            table, notes = self.threshold_report(threshold)
        choice = {"reason": why, "table": table, "notes": notes}
        if rewritten:
            files = self._write_corpus(stored, threshold, keys, totals, fingerprint, corpus_dir, choice)
        return {"threshold": threshold, "threshold_reason": why, "classifier": stored["classifier"],
                REASON_BELOW: totals[REASON_BELOW], REASON_NO_TEXT: totals[REASON_NO_TEXT], "files": files,
                "corpus_files": len(files), "corpus_rewritten": rewritten, "threshold_table": table,
                "threshold_notes": notes}

    def threshold_report(self, threshold: float) -> tuple[list[dict[str, Any]], dict[str, str]]:
        """The threshold table over THRESHOLD_GRID and the chosen threshold, from the stored scores, with the
        held-out teacher labels' precision and recall when the classifier folder has them."""
        profile = self.profile()
        held_probs = held_labels = None
        try:
            evaluated = self.heldout().evaluate(profile.found)
        except (OSError, ValueError, KeyError, CurateError) as exc:  # the table stands without them
            evaluated, held_note = None, f"held-out labels not scored ({type(exc).__name__}: {exc})"
        else:
            held_note = self.heldout().note or "no held-out labels"
        if evaluated is not None:
            held_probs, held_labels, held_note = evaluated
        table = threshold_table(profile.probs, profile.tokens, THRESHOLD_GRID, chosen=threshold,
                                heldout_probs=held_probs, heldout_labels=held_labels)
        return table, {"tokens": profile.describe(), "tokens_per_char": profile.tokens_per_char,
                       "tokenizer": profile.tokenizer, "heldout": held_note,
                       "heldout_docs": 0 if held_labels is None else len(held_labels)}

    def _write_corpus(self, stored: dict[str, Any], threshold: float, keys: list[str], totals: dict[str, int],
                      fingerprint: str, corpus_dir: Path, choice: dict[str, Any]) -> list[dict[str, Any]]:
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
            (staging / "README.md").write_text(dataset_card(self.cfg, self.layout, stored, threshold, totals, files,
                                                            choice))
            replace_dir(staging, corpus_dir)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return files

    def format_summary(self, summary: dict[str, Any]) -> str:
        where = self.layout.dataset("corpus")
        notes = summary.get("threshold_notes", {})
        return "\n".join([
            f"[{self.name}] threshold {summary['threshold']:.4f} ({summary['threshold_reason']}): {summary['input']} "
            f"documents, {summary['kept']} kept, {summary[REASON_BELOW]} {REASON_BELOW}, {summary[REASON_NO_TEXT]} "
            f"{REASON_NO_TEXT}; corpus: {summary['corpus_files']} file(s) in {where}"
            + ("" if summary["corpus_rewritten"] else " (unchanged)"),
            f"[{self.name}] what other thresholds would keep (from scores/, no model run; `curate classify "
            "--rethreshold T | --target-tokens N | --target-keep-rate R` to re-decide):",
            *format_threshold_table(summary["threshold_table"]),
            f"  tokens: {notes.get('tokens')}",
            f"  precision/recall: {notes.get('heldout')}",
        ])


# --------------------------------------------------------------------------------------------------- driver


def run(cfg, docs_dir: str | Path | None = None, *, rethreshold: float | None = None,
        target_tokens: int | None = None, target_keep_rate: float | None = None,
        quiet: bool = False) -> dict[str, Any]:
    """Score (unless only re-deciding) and decide. Defaults: docs from classify.docs (or <out>/unique, else
    <out>/docs), the classifier from classify.classifier (or <out>/classifier), the threshold from
    classify.threshold, classify.target_tokens or classify.target_keep_rate (or the classifier card's).
    `rethreshold`, `target_tokens` and `target_keep_rate` set those fields (at most one may be set, in all)
    and only re-decide from the stored scores: no model, no Ray. Returns the decide stage's summary (kept,
    threshold, threshold_reason, threshold_table, files, below_quality, ...) with `scored_now` (files scored
    by this call) and the scoring actors' peak memory."""
    started = time.perf_counter()
    classify_cfg = cfg.classify
    redecide = {name: value for name, value in (("threshold", rethreshold), ("target_tokens", target_tokens),
                                                ("target_keep_rate", target_keep_rate)) if value is not None}
    if redecide:
        if rethreshold is not None and not 0 <= rethreshold <= 1:
            raise ClassifyError(f"--rethreshold must be between 0 and 1, got {rethreshold}")
        if target_tokens is not None and target_tokens < 1:
            raise ClassifyError(f"--target-tokens must be at least 1, got {target_tokens}")
        if target_keep_rate is not None and not 0 < target_keep_rate <= 1:
            raise ClassifyError(f"--target-keep-rate must be in (0, 1], got {target_keep_rate}")
        cfg = cfg.model_copy(update={"classify": classify_cfg.model_copy(update=redecide)})
        threshold_sources(cfg.classify)  # model_copy does not validate: refuse two ways of choosing here
        return {**run_stage(DecideStage(cfg), quiet=quiet), "scored_now": 0, "actor_peak_rss_mb": None}
    if docs_dir is not None:
        cfg = cfg.model_copy(update={"classify": classify_cfg.model_copy(update={"docs": str(docs_dir)})})
    threshold_sources(cfg.classify)
    scored = run_stage(ScoreStage(cfg), quiet=quiet)
    decided = run_stage(DecideStage(cfg), quiet=quiet)
    return {**decided, "scored_now": scored["shards_run"], "actor_peak_rss_mb": scored.get("actor_peak_rss_mb"),
            "seconds": round(time.perf_counter() - started, 3)}
