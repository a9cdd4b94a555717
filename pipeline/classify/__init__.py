"""The classify stages: score every document with the distilled classifier, decide keep/drop at a threshold,
write the kept corpus. Two stages of the registry (pipeline.stages), run in this order:

- `score` (`classify-score`, `ScoreStage`): the run's documents -> scores/, on Ray actors holding the model.
- `decide` (`classify`, `DecideStage`): scores/ -> decisions/classify/ and corpus/ (with its manifest and
  the dataset card, pipeline.cards.dataset), in the driver, no model.

`thresholds` holds the threshold maths (what each threshold keeps, the threshold for a target amount) and
`heldout` the classifier's held-out teacher labels (precision and recall in the threshold table). The
classifier folder itself is read through classifiers.artifact.ClassifierArtifact.
"""

from pipeline.classify.thresholds import stored_threshold_table

__all__ = ["stored_threshold_table"]
