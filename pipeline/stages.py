"""The stage registry: every stage of the pipeline, in pipeline order, by name.

`curate run` walks `PIPELINE`; each `curate <stage>` command runs the stages it names. A stage class is
imported only when it is used (its heavy imports stay out of `curate --help`).
"""

from __future__ import annotations

import importlib

# name -> "module:class"
STAGES: dict[str, str] = {
    "extract": "pipeline.extract:ExtractStage",
    "rules": "pipeline.rules_stage:RulesStage",
    "dedup": "pipeline.dedup.stage:DedupStage",
    "annotate": "pipeline.annotate:AnnotateStage",
    "distil": "classifiers.distil:DistilStage",
    "classify-score": "pipeline.classify:ScoreStage",
    "classify": "pipeline.classify:DecideStage",
    "rewrite": "pipeline.rewrite.stage:RewriteStage",
}
PIPELINE = tuple(STAGES)
# Stages that need the LLM endpoint (the demo starts its tiny server before the first of them).
LLM_STAGES = ("annotate", "rewrite")


def stage_class(name: str):
    module, _, cls = STAGES[name].partition(":")
    return getattr(importlib.import_module(module), cls)


def make_stage(name: str, cfg):
    return stage_class(name)(cfg)
