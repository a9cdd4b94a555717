"""Distilled fastText classifiers (quality and topics), reusable on any text."""

from classifiers.artifact import ArtifactError, QualityClassifier
from classifiers.normalize import normalize_text

__all__ = ["ArtifactError", "QualityClassifier", "normalize_text"]
