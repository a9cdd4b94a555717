"""The classifier artifact: a folder anyone can reuse on any text.

    quality.bin     fastText supervised model, labels __label__hq (teacher score >= label threshold) and
                    __label__lq; quality.ftz instead when quantised
    topics.bin      optional fastText one-vs-all model, one __label__<slug> per topic (slugs in config.yaml)
    formats.bin     optional fastText one-vs-all model over the WebOrganizer format ids, the same way
    config.yaml     file names, label names, decision threshold, topic slugs, training hyper-parameters
    metrics.json    held-out evaluation against the teacher labels
    README.md       model card (YAML front matter: teacher, prompts, threshold, sizes, metrics)

`QualityClassifier.load(DIR)` is the Python API; texts are normalised by classifiers.normalize exactly as
at training time.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from classifiers.normalize import normalize_many
from pipeline.errors import CurateError

FORMAT = "webcurate-fasttext-classifier/1"
POSITIVE_LABEL = "__label__hq"
NEGATIVE_LABEL = "__label__lq"
LABEL_PREFIX = "__label__"
# The one-vs-all tag models an artifact may hold: config.yaml section -> what one tag is called
TAG_KINDS = {"topics": "topic", "formats": "format"}


class ArtifactError(CurateError, ValueError):
    """A classifier folder that cannot be loaded; the message names the file."""


def load_fasttext(path: str | Path):
    import fasttext

    # fasttext prints a deprecation warning for load_model on some builds; the model object is what we need
    return fasttext.load_model(str(path))


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

    path: Path
    config: dict[str, Any]
    quality_model: Any
    topics_model: Any | None
    formats_model: Any | None = None

    @classmethod
    def load(cls, directory: str | Path) -> QualityClassifier:
        path = Path(directory)
        config_path = path / "config.yaml"
        if not config_path.is_file():
            raise ArtifactError(f"{path} is not a classifier folder: {config_path.name} is missing "
                                "(expected the output of `curate distil`)")
        config = yaml.safe_load(config_path.read_text())
        if not isinstance(config, dict) or config.get("format") != FORMAT:
            raise ArtifactError(f"{config_path}: unknown format {config.get('format') if isinstance(config, dict) else None!r}, "
                                f"expected {FORMAT}")
        quality_file = path / config["quality"]["model_file"]
        if not quality_file.is_file():
            raise ArtifactError(f"{quality_file} is missing")
        tag_models: dict[str, Any] = {}
        for kind in TAG_KINDS:
            if config.get(kind):
                tag_file = path / config[kind]["model_file"]
                if not tag_file.is_file():
                    raise ArtifactError(f"{tag_file} is missing")
                tag_models[kind] = load_fasttext(tag_file)
        return cls(path=path, config=config, quality_model=load_fasttext(quality_file),
                   topics_model=tag_models.get("topics"), formats_model=tag_models.get("formats"))

    @property
    def threshold(self) -> float:
        """The decision threshold chosen at distillation (keep a text when score >= threshold)."""
        return float(self.config["quality"]["decision_threshold"])

    def tag_model(self, kind: str) -> Any | None:
        """The one-vs-all model of `kind` ("topics" or "formats"), None when the artifact has none."""
        if kind not in TAG_KINDS:
            raise ValueError(f"unknown tag kind {kind!r}; expected one of {sorted(TAG_KINDS)}")
        return self.topics_model if kind == "topics" else self.formats_model

    def tags(self, kind: str) -> list[str]:
        """Every tag the `kind` model knows ([] without that model)."""
        return list(self.config[kind]["labels"].values()) if self.tag_model(kind) is not None else []

    def tag_threshold(self, kind: str) -> float:
        return float(self.config[kind]["threshold"]) if self.tag_model(kind) is not None else 0.5

    def tag_scores(self, kind: str, texts: Sequence[str | None]) -> list[dict[str, float]]:
        """{tag: probability} over every tag of `kind`, per text; raises when the artifact has no such model."""
        model = self.tag_model(kind)
        if model is None:
            raise ArtifactError(f"{self.path} has no {TAG_KINDS[kind]} model (distilled without {kind} labels)")
        return tag_probabilities(model, normalize_many(list(texts)), self.config[kind]["labels"])

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
        """P(high quality) per text, float32; NaN where the text is empty."""
        return positive_probabilities(self.quality_model, normalize_many(list(texts)))

    def score_all(self, texts: Sequence[str | None]) -> tuple[np.ndarray, dict[str, list[dict[str, float]] | None]]:
        """`score` and, per tag kind, `tag_scores` (None without that model), the texts normalised once."""
        normalized = normalize_many(list(texts))
        tags = {kind: (tag_probabilities(self.tag_model(kind), normalized, self.config[kind]["labels"])
                       if self.tag_model(kind) is not None else None) for kind in TAG_KINDS}
        return positive_probabilities(self.quality_model, normalized), tags

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
