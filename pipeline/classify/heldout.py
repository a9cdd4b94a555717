"""The held-out teacher labels of a classifier, for the precision and recall columns of the threshold table."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from classifiers.artifact import ClassifierArtifact
from pipeline.errors import CurateError


class HeldoutLabels:
    """The teacher's labels of the classifier's held-out documents (`heldout_doc_ids.txt`, never trained on
    nor used to pick the card's threshold), read with distil's own loader (classifiers.labels) from the labels
    the artifact records (`ClassifierArtifact.teacher`), so a label is what distil trained on: a labels/ folder
    with the docs folder their texts came from (at the card's label_threshold, and distil.label_source when the
    card records one), or a JSONL file. `labels` is empty, and `note` says why, when the folder or the labels
    are not there."""

    def __init__(self, classifier_dir: Path):
        self.classifier_dir = classifier_dir
        self.labels: dict[str, bool] = {}
        self.texts: dict[str, str] = {}
        self.docs_dir: Path | None = None  # where the teacher's documents came from (LLM labels)
        self.note = ""
        self._artifact: ClassifierArtifact | None = None
        try:
            self._load()
        except (OSError, ValueError, KeyError, TypeError, CurateError) as exc:
            self.labels, self.texts = {}, {}
            self.note = f"no held-out labels: not readable ({type(exc).__name__}: {exc})"

    def _load(self) -> None:
        from classifiers.labels import load_jsonl_labels, load_llm_labels

        ids_path = self.classifier_dir / "heldout_doc_ids.txt"
        if not ids_path.is_file():
            self.note = f"no held-out labels: {ids_path} not found"
            return
        ids = {line.strip() for line in ids_path.read_text().splitlines() if line.strip()}
        artifact = self._artifact = ClassifierArtifact.read(self.classifier_dir)
        if artifact.label_threshold is None:
            raise KeyError("label_threshold")
        label_threshold = float(artifact.label_threshold)
        teacher = artifact.teacher
        if teacher.labels_jsonl is not None:
            label_set = load_jsonl_labels(teacher.labels_jsonl, label_threshold)
        elif teacher.labels_dir is not None:
            if not Path(teacher.labels_dir).is_dir():
                self.note = f"no held-out labels: the teacher's labels folder {teacher.labels_dir} is not there"
                return
            self.docs_dir = Path(teacher.docs_dir)
            options = {}
            if artifact.label_source is not None:  # recorded by distil versions that can label from expected scores
                options["label_source"] = artifact.label_source
            label_set = load_llm_labels(teacher.labels_dir, teacher.docs_dir, label_threshold, **options)
        else:
            self.note = f"no held-out labels: unknown teacher source {teacher.source!r} in config.yaml"
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
        artifact = self._artifact or ClassifierArtifact.read(self.classifier_dir)
        stored = artifact.heldout_scores() if artifact.refit_all else None
        if stored is not None:
            # the shipped model was refit on every label, these included: its scores would flatter it, so the
            # held-out model's scores (recorded by distil) stand for them
            probs = {i: stored[i][1] for i in ids if i in stored}
            kept_ids = [i for i in ids if i in probs]
            if not kept_ids:
                return None
            note = (f"{len(kept_ids)} held-out documents of the classifier ({self.classifier_dir}) with the "
                    "teacher's labels, scored by the held-out model (the shipped model is refit on every label, "
                    "these included)")
        else:
            probs = {i: found[i] for i in ids if found.get(i) is not None}
            missing = [i for i in ids if i not in probs and (self.texts.get(i) or "").strip()]
            if missing:
                from classifiers.artifact import load_fasttext, positive_probabilities
                from classifiers.normalize import normalize_many

                model = load_fasttext(artifact.model_path("quality"))
                scores = positive_probabilities(model, normalize_many([self.texts[i] for i in missing],
                                                                      artifact.max_chars))
                probs.update((i, float(p)) for i, p in zip(missing, scores) if not np.isnan(p))
            kept_ids = [i for i in ids if i in probs]
            if not kept_ids:
                return None
            scored_now = len(kept_ids) - sum(1 for i in kept_ids if found.get(i) is not None)
            note = (f"{len(kept_ids)} held-out documents of the classifier ({self.classifier_dir}) with the "
                    f"teacher's labels: {len(kept_ids) - scored_now} scores read from scores/, {scored_now} scored "
                    "now with the classifier (their stored scores were not available)")
        if len(kept_ids) < len(ids):
            note += f"; {len(ids) - len(kept_ids)} without text or a score left out"
        return (np.array([probs[i] for i in kept_ids], np.float32),
                np.array([self.labels[i] for i in kept_ids], bool), note)
