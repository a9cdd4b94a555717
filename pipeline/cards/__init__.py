"""Cards: one small module per artifact a run writes, each rendering the README.md that describes it.

- `dataset`: the kept corpus (corpus/README.md), written by the classify stage.
- `labels`: the teacher's labels (labels/README.md), written by the annotate stage.
- `synthetic`: the rewrites (synthetic/README.md), written by the rewrite stage.

The classifier's own model card is classifiers.card (it travels with the classifier folder).
"""
