"""Labelled documents for distillation, from the pipeline's labels/ (LLM teacher) or a user's JSONL file.

Both sources end as the same `LabelSet`: one `LabelledDoc` per document with its text, its quality score
(0-5, or a 0/1 label), its expected score when the teacher's score probabilities were kept, its topics and
formats, plus counts of what was skipped and why, and the teacher's provenance (models, prompt ids and
hashes, the labels folder and documents folder or the JSONL file: `LabelSet.teacher()`, which config.yaml and
the model card record).

labels/ rows come in two shapes, read alike: combined rows (task `labels`: score, topics and format from one
answer) and separate ones (task `quality`, task `topics`). The binary label is the sampled score >= the
threshold (`label_source="sampled"`), or the expected score >= the threshold (`"expected"`), falling back to
the sampled score for a document whose labels kept no distribution.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from classifiers.artifact import Teacher
from pipeline import schemas
from pipeline.errors import CurateError


class LabelsError(CurateError, ValueError):
    """Labels that cannot be read; the message names the file, line or column."""


@dataclass
class LabelledDoc:
    doc_id: str
    text: str
    quality_score: float | None = None  # teacher score 0-5 (mean when labelled more than once)
    is_positive: bool | None = None  # the binary quality label; None when the doc has no quality label
    topics: list[str] | None = None  # None when the doc has no topics label; [] means "no topic applies"
    format: list[str] | None = None  # WebOrganizer format ids (combined labels); None when not labelled
    quality_expected: float | None = None  # sum k * p(k) of the teacher's score distribution, when kept


@dataclass
class LabelSet:
    docs: list[LabelledDoc]
    skipped: Counter = field(default_factory=Counter)
    teacher_models: list[str] = field(default_factory=list)
    prompts: list[dict[str, Any]] = field(default_factory=list)  # {task, prompt_id, prompt_hash}
    label_threshold: float = 3
    label_source: str = "sampled"  # what `is_positive` was decided on: sampled | expected
    expected_labels: int = 0  # documents whose binary label came from the expected score
    # where the labels came from: an annotate labels/ folder joined to the texts of docs_dir, or a JSONL file
    labels_dir: str | None = None
    docs_dir: str | None = None
    labels_jsonl: str | None = None
    # How much of each page the teacher read: the first `teacher_chars` characters (annotate.max_doc_chars),
    # None for the whole text (a JSONL file's labels, unless distil.teacher_chars says otherwise), and where
    # that number came from (`teacher_chars_source`: the labels' run record, or the configuration).
    teacher_chars: int | None = None
    teacher_chars_source: str | None = None

    def teacher(self) -> Teacher:
        """The teacher's provenance as the classifier artifact records it (config.yaml's `teacher`)."""
        return Teacher(models=self.teacher_models, prompts=self.prompts, labels_dir=self.labels_dir,
                       docs_dir=self.docs_dir, labels_jsonl=self.labels_jsonl)

    @property
    def source(self) -> str:
        """Where the labels came from, in words ("labels: L; docs: D" or "labels-jsonl: F")."""
        return self.teacher().source

    def counts(self) -> dict[str, Any]:
        return {
            "documents": len(self.docs),
            "quality_labels": sum(d.is_positive is not None for d in self.docs),
            "topic_labels": sum(d.topics is not None for d in self.docs),
            "format_labels": sum(d.format is not None for d in self.docs),
            "label_source": self.label_source,
            "expected_labels": self.expected_labels,
            "skipped": dict(sorted(self.skipped.items())),
        }


def parquet_files_under(folder: str | Path) -> list[Path]:
    """Every Parquet file under `folder` (sorted; temp files of interrupted writes, `.name`, excluded)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise LabelsError(f"not a folder: {folder}")
    return sorted(p for p in folder.rglob("*.parquet") if not p.name.startswith("."))


def _read_label_rows(labels_dir: str | Path) -> pa.Table:
    files = parquet_files_under(labels_dir)
    if not files:
        raise LabelsError(f"no Parquet files in {labels_dir} (expected annotate's labels/ with the LABELS schema)")
    needed = ["doc_id", "task", "prompt_id", "prompt_hash", "model", "quality_score", "quality_expected", "topics",
              "format", "error"]
    tables = []
    for path in files:
        names = set(pq.read_schema(path).names)
        missing = [c for c in ("doc_id", "task") if c not in names]
        if missing:
            raise LabelsError(f"{path}: not a labels file, missing column(s) {missing}")
        table = pq.read_table(path, columns=[c for c in needed if c in names])
        for name in needed:
            if name not in table.column_names:
                table = table.append_column(name, pa.nulls(table.num_rows, schemas.LABELS.field(name).type))
        tables.append(table.select(needed).cast(pa.schema([schemas.LABELS.field(n) for n in needed])))
    return pa.concat_tables(tables)


def read_texts(docs_dir: str | Path, doc_ids: set[str]) -> dict[str, str]:
    """Texts of `doc_ids` from a docs/ or unique/ folder, reading only those two columns file by file."""
    files = parquet_files_under(docs_dir)
    if not files:
        raise LabelsError(f"no Parquet files in {docs_dir} (expected docs/ or unique/)")
    wanted = pa.array(sorted(doc_ids), pa.string())
    texts: dict[str, str] = {}
    for path in files:
        table = pq.read_table(path, columns=["doc_id", "text"])
        table = table.filter(pc.is_in(table.column("doc_id"), value_set=wanted))
        texts.update(zip(table.column("doc_id").to_pylist(), table.column("text").to_pylist()))
    return texts


LABEL_SOURCES = ("sampled", "expected")


def recorded_teacher_chars(labels_dir: str | Path) -> int | None:
    """`annotate.max_doc_chars` as the run that wrote `labels_dir` recorded it (RUN/_state/_settings/annotate.json
    beside RUN/labels), None when there is no such record."""
    path = Path(labels_dir).parent / "_state" / "_settings" / "annotate.json"
    try:
        value = json.loads(path.read_text()).get("annotate.max_doc_chars")
    except (OSError, ValueError, AttributeError):
        return None
    return int(value) if isinstance(value, int) and value > 0 else None


def load_llm_labels(labels_dir: str | Path, docs_dir: str | Path, label_threshold: float,
                    label_source: str = "sampled", teacher_chars: int | None = None) -> LabelSet:
    """Join labels/ rows (schemas.LABELS) to their documents' text by doc_id.

    Rows with an error are skipped (`label_error`), as are labels whose document is not in `docs_dir`
    (`missing_doc`) and tasks other than labels/quality/topics (`unknown_task`). A combined (`labels`) row
    gives a document its score, topics and format at once; a `quality` row its score, a `topics` row its
    topics. A document labelled more than once gets the mean quality score (and mean expected score) and the
    union of its topics and formats. `label_source`: "sampled" or "expected" (module docstring).
    The teacher read the first `annotate.max_doc_chars` characters of each page: the value the labels' run
    recorded, else `teacher_chars` (the caller's configured annotate.max_doc_chars), else the whole text.
    """
    if label_source not in LABEL_SOURCES:
        raise LabelsError(f"distil.label_source={label_source!r}: expected one of {', '.join(LABEL_SOURCES)}")
    rows = _read_label_rows(labels_dir).to_pylist()
    skipped: Counter = Counter()
    scores: dict[str, list[float]] = defaultdict(list)
    expected: dict[str, list[float]] = defaultdict(list)
    topics: dict[str, set[str]] = {}
    formats: dict[str, set[str]] = {}
    # provenance per document, so the card names only the teachers and prompts of labels actually used
    models: dict[str, set[str]] = defaultdict(set)
    prompts: dict[str, set[tuple[str, str | None, str | None]]] = defaultdict(set)
    for row in rows:
        if row["error"] is not None:
            skipped["label_error"] += 1
            continue
        task, doc_id = row["task"], row["doc_id"]
        if task not in ("labels", "quality", "topics"):
            skipped["unknown_task"] += 1
            continue
        if task in ("labels", "quality"):
            if row["quality_score"] is None:
                skipped["quality_score_missing"] += 1
                continue
            scores[doc_id].append(float(row["quality_score"]))
            if row["quality_expected"] is not None:
                expected[doc_id].append(float(row["quality_expected"]))
        if task in ("labels", "topics") and row["topics"] is not None:
            topics.setdefault(doc_id, set()).update(t for t in row["topics"] if t)
        if task == "labels" and row["format"] is not None:
            formats.setdefault(doc_id, set()).update(f for f in row["format"] if f)
        if row["model"]:
            models[doc_id].add(row["model"])
        prompts[doc_id].add((task, row["prompt_id"], row["prompt_hash"]))
    ids = set(scores) | set(topics)
    texts = read_texts(docs_dir, ids)
    recorded = recorded_teacher_chars(labels_dir)
    docs: list[LabelledDoc] = []
    used_models: set[str] = set()
    used_prompts: set[tuple[str, str | None, str | None]] = set()
    from_expected = 0
    for doc_id in sorted(ids):
        if doc_id not in texts:
            # one per label row left out: a combined row counts once, whatever it labelled
            rows_of_doc = {p[0] for p in prompts[doc_id]}
            skipped["missing_doc"] += (len(scores.get(doc_id, [])) + (doc_id in topics and "topics" in rows_of_doc))
            continue
        used_models |= models[doc_id]
        used_prompts |= prompts[doc_id]
        score = sum(scores[doc_id]) / len(scores[doc_id]) if doc_id in scores else None
        mean_expected = sum(expected[doc_id]) / len(expected[doc_id]) if expected.get(doc_id) else None
        decided_on = score
        if label_source == "expected" and mean_expected is not None and score is not None:
            decided_on = mean_expected
            from_expected += 1
        docs.append(LabelledDoc(
            doc_id=doc_id, text=texts[doc_id] or "", quality_score=score,
            is_positive=None if decided_on is None else decided_on >= label_threshold,
            topics=sorted(topics[doc_id]) if doc_id in topics else None,
            format=sorted(formats[doc_id]) if doc_id in formats else None,
            quality_expected=mean_expected,
        ))
    return LabelSet(
        docs=docs, labels_dir=str(labels_dir), docs_dir=str(docs_dir), skipped=skipped,
        teacher_models=sorted(used_models), label_threshold=label_threshold,
        prompts=[{"task": t, "prompt_id": i, "prompt_hash": h} for t, i, h in sorted(used_prompts, key=str)],
        label_source=label_source, expected_labels=from_expected,
        teacher_chars=recorded if recorded is not None else teacher_chars,
        teacher_chars_source=("recorded" if recorded is not None
                              else "annotate.max_doc_chars" if teacher_chars is not None else None),
    )


def parse_jsonl_label(line: str, where: str, label_threshold: float, index: int) -> LabelledDoc:
    """One user label: {"text": ..., "label": 0|1} or {"text": ..., "score": 0-5}, optional "id"/"doc_id"
    "topics" and "format" (WebOrganizer format ids). Raises LabelsError naming `where` (file:line) and the
    problem."""
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as exc:
        raise LabelsError(f"{where}: not valid JSON ({exc.msg})") from None
    if not isinstance(obj, dict):
        raise LabelsError(f"{where}: expected a JSON object, got {type(obj).__name__}")
    text = obj.get("text")
    if not isinstance(text, str):
        raise LabelsError(f"{where}: missing string field 'text'")
    doc_id = str(obj.get("doc_id") or obj.get("id") or f"line-{index:08d}")
    score: float | None = None
    positive: bool | None = None
    if "label" in obj and obj["label"] is not None:
        if obj["label"] not in (0, 1):
            raise LabelsError(f"{where}: 'label' must be 0 or 1, got {obj['label']!r}")
        positive = bool(obj["label"])
    elif "score" in obj and obj["score"] is not None:
        value = obj["score"]
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 5:
            raise LabelsError(f"{where}: 'score' must be a number from 0 to 5, got {value!r}")
        score = float(value)
        positive = score >= label_threshold
    tags = {}
    for name in ("topics", "format"):
        value = obj.get(name)
        if value is not None and not (isinstance(value, list) and all(isinstance(t, str) for t in value)):
            raise LabelsError(f"{where}: '{name}' must be a list of strings, got {value!r}")
        tags[name] = sorted(set(value)) if value is not None else None
    if positive is None and tags["topics"] is None and tags["format"] is None:
        raise LabelsError(f"{where}: needs 'label' (0/1), 'score' (0-5), 'topics' or 'format'")
    return LabelledDoc(doc_id=doc_id, text=text, quality_score=score, is_positive=positive, **tags)


def load_jsonl_labels(path: str | Path, label_threshold: float) -> LabelSet:
    """Labels a user brings (human or any other source), one JSON object per line."""
    path = Path(path)
    if not path.is_file():
        raise LabelsError(f"labels file not found: {path}")
    docs: list[LabelledDoc] = []
    seen: set[str] = set()
    with path.open(encoding="utf-8") as fh:
        for number, line in enumerate(fh, 1):
            if not line.strip():
                continue
            doc = parse_jsonl_label(line, f"{path}:{number}", label_threshold, number)
            if doc.doc_id in seen:
                raise LabelsError(f"{path}:{number}: duplicate id {doc.doc_id!r}")
            seen.add(doc.doc_id)
            docs.append(doc)
    if not docs:
        raise LabelsError(f"{path}: no labels (empty file)")
    return LabelSet(docs=docs, labels_jsonl=str(path), teacher_models=[f"user labels ({path.name})"],
                    label_threshold=label_threshold)
