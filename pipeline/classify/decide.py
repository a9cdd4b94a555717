"""The decide stage (`classify`, in the driver, cheap, no model): for each stored score shard,
`quality_prob >= threshold` keeps the document, else it is dropped with reason `below_quality` (`no_text` when
there was nothing to score); decisions go to `decisions/classify/`, stats markers to `_state/classify/`. Its
`finish` writes the kept rows to `corpus/`, rewritten whole and replaced atomically (`part-00000.parquet`...,
target size per file, `_manifest.json` with checksums and the classifier that scored them, the dataset card
README.md, `pipeline.cards.dataset`).

It reads only stored scores, so another threshold (`classify.threshold`, `curate classify --threshold T`)
re-decides without the model (the score stage before it has nothing left to do); so do `classify.target_tokens`
and `classify.target_keep_rate`, which decide at the threshold that keeps about N tokens (R of the documents)
of the stored scores (`pipeline.classify.thresholds.threshold_for_target`). The card and the summary hold the
threshold table: keep rate, kept documents and tokens, and the held-out teacher labels' precision and recall
over a grid of thresholds.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from classifiers.artifact import ArtifactError, ClassifierArtifact
from pipeline import schemas
from pipeline.cards.dataset import dataset_card
from pipeline.classify.common import REASON_BELOW, REASON_NO_TEXT, SCORE_STAGE, STAGE, ClassifyError, read_ahead
from pipeline.classify.heldout import HeldoutLabels
from pipeline.classify.thresholds import (
    THRESHOLD_GRID,
    ScoreProfile,
    format_threshold_table,
    keep_mask,
    read_profile,
    threshold_for_target,
    threshold_table,
)
from pipeline.config import RunConfig
from pipeline.errors import CurateError
from pipeline.io import PARQUET_COMPRESSION, RunLayout, ShardedParquetWriter, replace_dir, write_json, write_text
from pipeline.runtime import Input, Output, Resources, Shard, ShardResult, Stage

DECIDE_COLUMNS = ["doc_id", "url", "quality_prob"]
CORPUS = "corpus"
MANIFEST = "_manifest.json"
CARD = "README.md"


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


def stored_scores(layout: RunLayout) -> dict[str, Any]:
    """What the score stage stored (classifier, input folder, shards in plan order), from its stage marker."""
    marker = layout.stage_marker(SCORE_STAGE)
    if not marker.exists():
        raise ClassifyError(f"no stored scores in {layout.root} (run `curate classify --docs ... --classifier ...` "
                            "first, to the end)")
    stored = json.loads(marker.read_text())
    if "plan" not in stored:
        raise ClassifyError(f"{marker}: scores stored by an older version; run `curate classify` once without "
                            "--threshold")
    return stored


def card_threshold(classifier_dir: Path) -> float:
    """The decision threshold chosen at distillation, from the classifier of the stored scores."""
    try:
        threshold, why = ClassifierArtifact.read(classifier_dir).threshold, "KeyError"
    except ArtifactError as exc:
        threshold, why = None, type(exc.__cause__ or exc).__name__
    if threshold is None:
        raise ClassifyError(f"classify.threshold is not set and {classifier_dir / 'config.yaml'} (the classifier of "
                            f"the stored scores) gives no decision threshold ({why}); set classify.threshold or "
                            "--threshold T")
    return threshold


def classifier_card_meta(classifier_dir: Path) -> dict[str, Any]:
    """What the corpus card says of the classifier of the stored scores (teacher models, label threshold,
    held-out ROC AUC); empty when its folder or metrics cannot be read (the card stands without them)."""
    try:
        classifier = ClassifierArtifact.read(classifier_dir)
        return {"teacher": classifier.teacher.models, "label_threshold": classifier.label_threshold,
                "heldout_roc_auc": classifier.metrics()["quality"]["roc_auc"]}
    except (OSError, KeyError, ValueError):  # ArtifactError is a ValueError
        return {}


class DecideStage(Stage):
    """scores/ -> decisions/classify/ and corpus/: one shard per score shard, decided at the threshold in the
    driver; `finish` writes the kept rows as the sharded corpus."""

    name = STAGE
    section = "classify"
    inputs = (Input("scores"),)
    # the kept documents, written whole by `finish` (not one file per shard)
    outputs = (Output(CORPUS, schemas.SCORED, per_shard=False),)
    role = "filter"
    unit = "file"

    def __init__(self, cfg: RunConfig):
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
                                        "--threshold)")
            heldout = self.heldout()
            wanted = set(heldout.labels) if heldout.stored_scores_usable(self.stored()["docs_dir"]) else None
            self._profile = read_profile(paths, TokenCounter(resolve_tokenizer(self.cfg)), wanted)
        return self._profile

    def choice(self) -> tuple[float, str]:
        """(threshold, why): classify.target_tokens or target_keep_rate (found in the stored scores),
        classify.threshold, else the classifier card's decision threshold."""
        if self._choice is None:
            classify_cfg = self.cfg.classify  # at most one way of choosing is set (ClassifyConfig validates it)
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
                threshold = card_threshold(Path(self.stored()["classifier"]))
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
        return self.input_folder("scores") / f"{key}.parquet"

    def plan(self) -> list[Shard]:
        shards = []
        for key, source in self.stored()["plan"]:
            scores = self._scores_path(key)
            if not scores.exists():
                raise ClassifyError(f"stored scores missing: {scores} (run `curate classify` to the end first)")
            # a file scored again since it was decided is decided again (the runner compares it with the marker)
            shards.append(Shard(key=key, source=source, reads=(str(scores),)))
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
        corpus_dir = self.layout.dataset(CORPUS)
        manifest_path = corpus_dir / MANIFEST
        rewritten = True
        if summary["shards_run"] == 0 and manifest_path.exists():
            manifest = json.loads(manifest_path.read_text())
            # a corpus written before manifests named their classifier is written again (the same files)
            if manifest.get("fingerprint") == fingerprint and "classifier" in manifest:
                files, rewritten = manifest["files"], False
        if not rewritten and previous.get("threshold_table") and previous.get("threshold_reason") == why:
            table, notes = previous["threshold_table"], previous.get("threshold_notes", {})  # as in the card
        else:
            table, notes = self.threshold_report(threshold)
        choice = {"reason": why, "table_lines": format_threshold_table(table, markdown=True), "notes": notes}
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
                        "rows": totals["kept"], "files": files, "fingerprint": fingerprint,
                        # the classifier whose scores made this corpus (rewrite scores its rewrites with it)
                        "classifier": {"path": stored["classifier"],
                                       "fingerprint": stored["classifier_fingerprint"]}}
            write_json(manifest, staging / MANIFEST)
            card = dataset_card(self.cfg, self.layout, stored, threshold, totals, files, choice,
                                classifier=classifier_card_meta(Path(stored["classifier"])), stage=self.name)
            write_text(card, staging / CARD)
            replace_dir(staging, corpus_dir)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return files

    def format_summary(self, summary: dict[str, Any]) -> str:
        where = self.layout.dataset(CORPUS)
        notes = summary.get("threshold_notes", {})
        return "\n".join([
            f"[{self.name}] threshold {summary['threshold']:.4f} ({summary['threshold_reason']}): {summary['input']} "
            f"documents, {summary['kept']} kept, {summary[REASON_BELOW]} {REASON_BELOW}, {summary[REASON_NO_TEXT]} "
            f"{REASON_NO_TEXT}; corpus: {summary['corpus_files']} file(s) in {where}"
            + ("" if summary["corpus_rewritten"] else " (unchanged)"),
            f"[{self.name}] what other thresholds would keep (from scores/, no model run; `curate classify "
            "--threshold T | --target-tokens N | --target-keep-rate R` to re-decide):",
            *format_threshold_table(summary["threshold_table"]),
            f"  tokens: {notes.get('tokens')}",
            f"  precision/recall: {notes.get('heldout')}",
        ])
