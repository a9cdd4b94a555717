"""The classifier artifact: a folder anyone can reuse on any text.

    quality.bin     fastText supervised model, labels __label__hq (teacher score >= label threshold) and
                    __label__lq; quality.ftz instead when quantised. One model on its own: plain fastText
                    and datatrove load it. With `distil.refit_all` (the default) refit on every label.
    quality.bag-<m>.bin  the other models of a bag (`distil.bag` > 1; config.yaml `quality.bag_files`):
                    QualityClassifier scores the mean P(hq) of quality.bin and these
    topics.bin      optional fastText one-vs-all model, one __label__<slug> per topic (slugs in config.yaml)
    formats.bin     optional fastText one-vs-all model over the WebOrganizer format ids, the same way
    config.yaml     file names, label names, decision threshold, topic slugs, training hyper-parameters, and
                    where the teacher's labels came from
    metrics.json    held-out evaluation against the teacher labels
    heldout_doc_ids.txt  the documents held out at distillation (the held-out model never trained on them,
                    nor was the threshold chosen on them; a refit shipped model has seen them)
    heldout_scores.jsonl  the held-out model's score of each held-out document, with its teacher label
    README.md       model card (YAML front matter: teacher, prompts, threshold, sizes, metrics)

`ClassifierArtifact.load(DIR)` is the folder as typed fields (validated: config.yaml well-formed, every
model file it names present), with its `fingerprint()`; every reader of config.yaml goes through it.
`QualityClassifier.load(DIR)` is the Python API that scores texts; texts are normalised by
classifiers.normalize exactly as at training time, cut to the text view's first `max_chars` characters
when the artifact records one (config.yaml `text_view`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from classifiers.normalize import normalize_many
from pipeline import store
from pipeline.errors import CurateError
from pipeline.io import file_digest

FORMAT = "webcurate-fasttext-classifier/1"
POSITIVE_LABEL = "__label__hq"
NEGATIVE_LABEL = "__label__lq"
LABEL_PREFIX = "__label__"
# The one-vs-all tag models an artifact may hold: config.yaml section -> what one tag is called
TAG_KINDS = {"topics": "topic", "formats": "format"}
CONFIG = "config.yaml"
METRICS = "metrics.json"
HELDOUT_IDS = "heldout_doc_ids.txt"
HELDOUT_SCORES = "heldout_scores.jsonl"
# The files the fingerprint covers: the config and the models (not the card, the metrics or the held-out ids)
FINGERPRINT_SUFFIXES = (".yaml", ".bin", ".ftz")
# How config.yaml's `teacher.source` names where the labels came from (the card shows it as written)
_LLM_SOURCE = ("labels: ", "; docs: ")
_JSONL_SOURCE = "labels-jsonl: "


class ArtifactError(CurateError, ValueError):
    """A classifier folder that cannot be loaded; the message names the folder and the file."""


@dataclass(frozen=True)
class Teacher:
    """Where the labels a classifier was distilled from came from: the teacher models and prompts, and either an
    annotate labels/ folder joined by doc_id to the documents' text in `docs_dir`, or a user's JSONL file.

    config.yaml records the source as one line of text (`teacher.source`: "labels: L; docs: D" or
    "labels-jsonl: F", shown as is by the model card); `source` writes it and `from_config` reads it back, in
    this one place. A source in neither form (hand-edited) is kept as `recorded`, with no folder or file."""

    models: list[str] = field(default_factory=list)
    prompts: list[dict[str, Any]] = field(default_factory=list)
    labels_dir: str | None = None
    docs_dir: str | None = None
    labels_jsonl: str | None = None
    recorded: str | None = None  # the source text as found, when it is in neither form

    @property
    def source(self) -> str:
        if self.labels_jsonl is not None:
            return f"{_JSONL_SOURCE}{self.labels_jsonl}"
        if self.labels_dir is not None:
            return f"{_LLM_SOURCE[0]}{self.labels_dir}{_LLM_SOURCE[1]}{self.docs_dir}"
        return self.recorded or ""

    def to_config(self) -> dict[str, Any]:
        """config.yaml's `teacher` section."""
        return {"models": self.models, "prompts": self.prompts, "source": self.source}

    @classmethod
    def from_config(cls, section: Any) -> Teacher:
        section = section if isinstance(section, dict) else {}
        models, prompts = list(section.get("models") or []), list(section.get("prompts") or [])
        if section.get("labels_jsonl") or section.get("labels_dir"):  # typed fields, if a config has them
            return cls(models, prompts, labels_dir=_text(section.get("labels_dir")),
                       docs_dir=_text(section.get("docs_dir")), labels_jsonl=_text(section.get("labels_jsonl")))
        source = str(section.get("source") or "")
        if source.startswith(_JSONL_SOURCE):
            return cls(models, prompts, labels_jsonl=source.removeprefix(_JSONL_SOURCE))
        if source.startswith(_LLM_SOURCE[0]) and _LLM_SOURCE[1] in source:
            labels_dir, docs_dir = source.removeprefix(_LLM_SOURCE[0]).split(_LLM_SOURCE[1], 1)
            return cls(models, prompts, labels_dir=labels_dir, docs_dir=docs_dir)
        return cls(models, prompts, recorded=source)


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


@dataclass(frozen=True)
class TagModel:
    """A one-vs-all tag model of the artifact (topics or formats): its file, {fastText label: tag}, and the
    probability from which a tag applies."""

    kind: str
    model_file: str
    labels: dict[str, str]
    threshold: float

    @property
    def tags(self) -> list[str]:
        return list(self.labels.values())


@dataclass(frozen=True)
class ClassifierArtifact:
    """A classifier folder as typed fields. `load` validates it (config.yaml present and well-formed, its
    format known, every model file it names present); `read` parses config.yaml only (for readers that need
    no model: a card, a threshold, the teacher's provenance). `config` is config.yaml as parsed."""

    path: Path
    config: dict[str, Any]
    quality_file: str
    threshold: float | None  # the decision threshold chosen at distillation (keep when score >= it)
    label_threshold: Any  # teacher score from which a label is positive, as recorded (an int 1-5)
    tags: dict[str, TagModel]  # kind -> model, only the kinds the artifact has
    teacher: Teacher
    label_source: str | None  # distil.label_source, when the config records it (sampled | expected)
    max_chars: int | None = None  # the text view: score the first max_chars characters (None: the whole text)
    bag_files: tuple[str, ...] = ()  # the other models of a bag, averaged with quality_file
    refit_all: bool = False  # the shipped quality model was refit on every label, the held-out ones included

    @classmethod
    def read(cls, directory: str | Path) -> ClassifierArtifact:
        """config.yaml of `directory` as typed fields; ArtifactError when it is missing or not a classifier
        config (the model files are not looked at)."""
        folder = store.local_folder(directory)  # a classifier on object storage: its local copy
        config_path = folder / CONFIG
        if not config_path.is_file():
            raise ArtifactError(f"{folder}: not a classifier folder, {CONFIG} is missing (run `curate distil` "
                                "first, or set classify.classifier)") from FileNotFoundError(str(config_path))
        try:
            config = yaml.safe_load(config_path.read_text())
            quality = config["quality"]
            quality_file = quality["model_file"]
            tags = {kind: _tag_model(kind, config[kind]) for kind in TAG_KINDS if config.get(kind)}
            view = config.get("text_view") or {}
            max_chars = None if view.get("max_chars") is None else int(view["max_chars"])
            bag_files = tuple(str(name) for name in quality.get("bag_files") or ())
        except (yaml.YAMLError, TypeError, KeyError, AttributeError, ValueError) as exc:
            raise ArtifactError(f"{folder}: {config_path} is not a classifier config "
                                f"({type(exc).__name__}: {exc})") from exc
        return cls(path=folder, config=config, quality_file=str(quality_file),
                   threshold=_float_or_none(quality.get("decision_threshold")),
                   label_threshold=quality.get("label_threshold"), tags=tags,
                   teacher=Teacher.from_config(config.get("teacher")),
                   label_source=(config.get("distil") or {}).get("label_source"), max_chars=max_chars,
                   bag_files=bag_files, refit_all=bool(quality.get("refit_all", False)))

    @classmethod
    def load(cls, directory: str | Path) -> ClassifierArtifact:
        """The artifact in `directory`, refused with one message naming the file when it cannot be used: no
        config.yaml, a config.yaml that is not a classifier's (or of an unknown format), or a model file it
        names that is not there."""
        artifact = cls.read(directory)
        folder = artifact.path
        if artifact.config.get("format") != FORMAT:
            raise ArtifactError(f"{folder}: {folder / CONFIG}: unknown format {artifact.config.get('format')!r}, "
                                f"expected {FORMAT}")
        for section, name in artifact.model_files().items():
            if not (folder / name).is_file():
                raise ArtifactError(f"{folder}: the {section} model file {name} named in {CONFIG} is missing "
                                    f"({folder / name}); copy the whole classifier folder, or distil again")
        return artifact

    def model_files(self) -> dict[str, str]:
        """{"quality": file, "quality.bag-1": file, ..., "topics": file, "formats": file}: the model files
        config.yaml names."""
        return {"quality": self.quality_file, **{f"quality.bag-{m}": name for m, name in enumerate(self.bag_files, 1)},
                **{kind: tag.model_file for kind, tag in self.tags.items()}}

    def model_path(self, section: str = "quality") -> Path:
        return self.path / self.model_files()[section]

    def fingerprint(self) -> str:
        """sha256 over the artifact's config and model files (names and bytes, in name order): stored scores are
        reused only for the same model, wherever its folder is."""
        return fingerprint_folder(self.path)

    def metrics(self) -> dict[str, Any]:
        """metrics.json (held-out evaluation); OSError / ValueError when it is missing or unreadable."""
        return json.loads((self.path / METRICS).read_text())

    def heldout_ids_path(self) -> Path:
        return self.path / HELDOUT_IDS

    def heldout_scores(self) -> dict[str, tuple[bool, float]] | None:
        """{doc_id: (teacher label, score)} of the held-out documents, scored by the held-out model (the one the
        metrics are of, which never saw them); None for an artifact without the file (older distil)."""
        path = self.path / HELDOUT_SCORES
        if not path.is_file():
            return None
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        return {str(r["doc_id"]): (bool(r["label"]), float(r["score"])) for r in rows}


def fingerprint_folder(folder: str | Path) -> str:
    """`ClassifierArtifact.fingerprint` of a folder, without parsing its config."""
    folder = Path(folder)
    digest = hashlib.sha256()
    for name in sorted(p.name for p in folder.iterdir() if p.suffix in FINGERPRINT_SUFFIXES):
        digest.update(name.encode())
        file_digest(folder / name, digest)
    return digest.hexdigest()


def _tag_model(kind: str, section: dict[str, Any]) -> TagModel:
    return TagModel(kind=kind, model_file=str(section["model_file"]), labels=dict(section.get("labels") or {}),
                    threshold=float(section.get("threshold", 0.5)))


def _float_or_none(value: Any) -> float | None:
    try:
        return None if value is None else float(value)
    except (TypeError, ValueError):
        return None


def load_fasttext(path: str | Path):
    import fasttext

    # fasttext prints a deprecation warning for load_model on some builds; the model object is what we need
    return fasttext.load_model(str(path))


def mean_positive_probabilities(models: Sequence[Any], normalized: Sequence[str]) -> np.ndarray:
    """The mean P(__label__hq) of a bag of models (one model: its own); NaN for empty texts."""
    if len(models) == 1:
        return positive_probabilities(models[0], normalized)
    return np.mean([positive_probabilities(m, normalized) for m in models], axis=0).astype(np.float32)


def positive_probabilities(model, normalized: Sequence[str]) -> np.ndarray:
    """P(__label__hq) per text (already normalised); NaN for empty texts, which carry no evidence."""
    out = np.full(len(normalized), np.nan, dtype=np.float32)
    present = [i for i, text in enumerate(normalized) if text]
    if not present:
        return out
    labels, probs = model.predict([normalized[i] for i in present], k=2)
    for i, row_labels, row_probs in zip(present, labels, probs):
        # fastText's softmax can return 1.00001; a probability is clipped into [0, 1]
        by_label = dict(zip(row_labels, row_probs))
        if POSITIVE_LABEL in by_label:
            out[i] = min(float(by_label[POSITIVE_LABEL]), 1.0)
        else:
            out[i] = max(0.0, 1.0 - float(by_label.get(NEGATIVE_LABEL, 1.0)))
    return out


def tag_probabilities(model, normalized: Sequence[str], slug_to_topic: dict[str, str]) -> list[dict[str, float]]:
    """{tag: probability} per text over every tag of a one-vs-all model (topics or formats; the probabilities
    are independent)."""
    out: list[dict[str, float]] = [{} for _ in normalized]
    present = [i for i, text in enumerate(normalized) if text]
    if not present:
        return out
    labels, probs = model.predict([normalized[i] for i in present], k=-1, threshold=0.0)
    for i, row_labels, row_probs in zip(present, labels, probs):
        out[i] = {slug_to_topic.get(label, label.removeprefix(LABEL_PREFIX)): min(float(p), 1.0)
                  for label, p in zip(row_labels, row_probs)}
    return out


@dataclass
class QualityClassifier:
    """A loaded artifact: `score` gives P(high quality); `predict_topics` / `predict_formats` the teacher-style
    topics and formats (each present when the artifact has that tag model)."""

    artifact: ClassifierArtifact
    quality_model: Any
    topics_model: Any | None
    formats_model: Any | None = None
    bag_models: list[Any] = field(default_factory=list)  # the other models of a bag (config.yaml bag_files)

    @classmethod
    def load(cls, directory: str | Path) -> QualityClassifier:
        artifact = ClassifierArtifact.load(directory)
        tag_models = {kind: load_fasttext(artifact.model_path(kind)) for kind in artifact.tags}
        return cls(artifact=artifact, quality_model=load_fasttext(artifact.model_path("quality")),
                   topics_model=tag_models.get("topics"), formats_model=tag_models.get("formats"),
                   bag_models=[load_fasttext(artifact.path / name) for name in artifact.bag_files])

    @property
    def quality_models(self) -> list[Any]:
        """quality.bin and the other models of its bag, if any: `score` is their mean P(hq)."""
        return [self.quality_model, *self.bag_models]

    def normalize(self, texts: Sequence[str | None]) -> list[str]:
        """The texts as the models read them: the artifact's text view, newlines as spaces."""
        return normalize_many(list(texts), self.artifact.max_chars)

    @property
    def path(self) -> Path:
        return self.artifact.path

    @property
    def config(self) -> dict[str, Any]:
        """config.yaml as parsed (the typed fields are on `artifact`)."""
        return self.artifact.config

    @property
    def threshold(self) -> float:
        """The decision threshold chosen at distillation (keep a text when score >= threshold)."""
        if self.artifact.threshold is None:
            raise ArtifactError(f"{self.path / CONFIG} gives no quality.decision_threshold")
        return self.artifact.threshold

    def tag_model(self, kind: str) -> Any | None:
        """The one-vs-all model of `kind` ("topics" or "formats"), None when the artifact has none."""
        if kind not in TAG_KINDS:
            raise ValueError(f"unknown tag kind {kind!r}; expected one of {sorted(TAG_KINDS)}")
        return self.topics_model if kind == "topics" else self.formats_model

    def tags(self, kind: str) -> list[str]:
        """Every tag the `kind` model knows ([] without that model)."""
        return self.artifact.tags[kind].tags if self.tag_model(kind) is not None else []

    def tag_threshold(self, kind: str) -> float:
        return self.artifact.tags[kind].threshold if self.tag_model(kind) is not None else 0.5

    def tag_scores(self, kind: str, texts: Sequence[str | None]) -> list[dict[str, float]]:
        """{tag: probability} over every tag of `kind`, per text; raises when the artifact has no such model."""
        model = self.tag_model(kind)
        if model is None:
            raise ArtifactError(f"{self.path} has no {TAG_KINDS[kind]} model (distilled without {kind} labels)")
        return tag_probabilities(model, self.normalize(texts), self.artifact.tags[kind].labels)

    def predict_tags(self, kind: str, texts: Sequence[str | None], k: int | None = None,
                     threshold: float | None = None) -> list[list[tuple[str, float]]]:
        """Per text, the tags whose probability reaches the threshold, most probable first (at most k)."""
        cut = self.tag_threshold(kind) if threshold is None else threshold
        out = []
        for probs in self.tag_scores(kind, texts):
            ranked = sorted(((t, p) for t, p in probs.items() if p >= cut), key=lambda tp: (-tp[1], tp[0]))
            out.append(ranked[:k] if k else ranked)
        return out

    def score(self, texts: Sequence[str | None]) -> np.ndarray:
        """P(high quality) per text, float32; NaN where the text is empty. A bag: the mean of its models'."""
        return mean_positive_probabilities(self.quality_models, self.normalize(texts))

    def score_all(self, texts: Sequence[str | None]) -> tuple[np.ndarray, dict[str, list[dict[str, float]] | None]]:
        """`score` and, per tag kind, `tag_scores` (None without that model), the texts normalised once."""
        normalized = self.normalize(texts)
        tags = {kind: (tag_probabilities(self.tag_model(kind), normalized, self.artifact.tags[kind].labels)
                       if self.tag_model(kind) is not None else None) for kind in TAG_KINDS}
        return mean_positive_probabilities(self.quality_models, normalized), tags

    def predict(self, texts: Sequence[str | None], threshold: float | None = None) -> np.ndarray:
        """Keep (True) / drop per text at the artifact's threshold (or `threshold`)."""
        scores = self.score(texts)
        return np.nan_to_num(scores, nan=-1.0) >= (self.threshold if threshold is None else threshold)

    # Topics and formats by name: the tag API for each kind.
    @property
    def topics(self) -> list[str]:
        return self.tags("topics")

    @property
    def topic_threshold(self) -> float:
        return self.tag_threshold("topics")

    def topic_scores(self, texts: Sequence[str | None]) -> list[dict[str, float]]:
        return self.tag_scores("topics", texts)

    def predict_topics(self, texts: Sequence[str | None], k: int | None = None,
                       threshold: float | None = None) -> list[list[tuple[str, float]]]:
        return self.predict_tags("topics", texts, k, threshold)

    @property
    def formats(self) -> list[str]:
        return self.tags("formats")

    def format_scores(self, texts: Sequence[str | None]) -> list[dict[str, float]]:
        return self.tag_scores("formats", texts)

    def predict_formats(self, texts: Sequence[str | None], k: int | None = None,
                        threshold: float | None = None) -> list[list[tuple[str, float]]]:
        return self.predict_tags("formats", texts, k, threshold)
