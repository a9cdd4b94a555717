"""The classifier artifact: a folder anyone can reuse on any text.

    quality.bin     fastText supervised model, labels __label__hq (teacher score >= label threshold) and
                    __label__lq; quality.ftz instead when quantised
    topics.bin      optional fastText one-vs-all model, one __label__<slug> per topic (slugs in config.yaml)
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


def topic_probabilities(model, normalized: Sequence[str], slug_to_topic: dict[str, str]) -> list[dict[str, float]]:
    """{topic: probability} per text over every topic (one-vs-all: probabilities are independent)."""
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
    """A loaded artifact: `score` gives P(high quality); `predict_topics` the teacher-style topics."""

    path: Path
    config: dict[str, Any]
    quality_model: Any
    topics_model: Any | None

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
        topics_model = None
        if config.get("topics"):
            topics_file = path / config["topics"]["model_file"]
            if not topics_file.is_file():
                raise ArtifactError(f"{topics_file} is missing")
            topics_model = load_fasttext(topics_file)
        return cls(path=path, config=config, quality_model=load_fasttext(quality_file), topics_model=topics_model)

    @property
    def threshold(self) -> float:
        """The decision threshold chosen at distillation (keep a text when score >= threshold)."""
        return float(self.config["quality"]["decision_threshold"])

    @property
    def topics(self) -> list[str]:
        return list(self.config["topics"]["labels"].values()) if self.config.get("topics") else []

    @property
    def topic_threshold(self) -> float:
        return float(self.config["topics"]["threshold"]) if self.config.get("topics") else 0.5

    def score(self, texts: Sequence[str | None]) -> np.ndarray:
        """P(high quality) per text, float32; NaN where the text is empty."""
        return positive_probabilities(self.quality_model, normalize_many(list(texts)))

    def score_with_topics(self, texts: Sequence[str | None]) -> tuple[np.ndarray, list[dict[str, float]] | None]:
        """`score` and `topic_scores` (None without a topic model) with the texts normalised once."""
        normalized = normalize_many(list(texts))
        topics = (topic_probabilities(self.topics_model, normalized, self.config["topics"]["labels"])
                  if self.topics_model is not None else None)
        return positive_probabilities(self.quality_model, normalized), topics

    def predict(self, texts: Sequence[str | None], threshold: float | None = None) -> np.ndarray:
        """Keep (True) / drop per text at the artifact's threshold (or `threshold`)."""
        scores = self.score(texts)
        return np.nan_to_num(scores, nan=-1.0) >= (self.threshold if threshold is None else threshold)

    def topic_scores(self, texts: Sequence[str | None]) -> list[dict[str, float]]:
        """{topic: probability} over every topic, per text; raises when the artifact has no topic model."""
        if self.topics_model is None:
            raise ArtifactError(f"{self.path} has no topic model (distilled without topic labels)")
        return topic_probabilities(self.topics_model, normalize_many(list(texts)),
                                   self.config["topics"]["labels"])

    def predict_topics(self, texts: Sequence[str | None], k: int | None = None,
                       threshold: float | None = None) -> list[list[tuple[str, float]]]:
        """Per text, the topics whose probability reaches the threshold, most probable first (at most k)."""
        cut = self.topic_threshold if threshold is None else threshold
        out = []
        for probs in self.topic_scores(texts):
            ranked = sorted(((t, p) for t, p in probs.items() if p >= cut), key=lambda tp: (-tp[1], tp[0]))
            out.append(ranked[:k] if k else ranked)
        return out
