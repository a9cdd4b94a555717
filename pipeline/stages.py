"""The stage registry: every stage of the pipeline, in pipeline order, by name, and the run's data flow.

`STAGES` is the one list of stages. Everything else that depends on which stages exist is derived from it and
from what each stage declares (`inputs`, `outputs`, `role`, `enabled`, `needs_llm`): `curate run`'s order, the
folder a stage reads by default (the run's documents after the last filter stage before it), the filter and
side stages of the report and its conservation chain, and `curate explain`'s walk. Adding a stage is its
module, its schema and one line here.

A stage class is imported only when it is used (its heavy imports stay out of `curate --help`).
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from pathlib import Path

from pipeline.config import RunConfig
from pipeline.io import RunLayout, parquet_files
from pipeline.runtime.stage import DOCUMENTS, Stage

# name -> "module:Class", in pipeline order
STAGES: dict[str, str] = {
    "extract": "pipeline.extract:ExtractStage",
    "rules": "pipeline.rules_stage:RulesStage",
    "dedup": "pipeline.dedup.stage:DedupStage",
    "safety": "pipeline.safety.stage:SafetyStage",
    "annotate": "pipeline.annotate:AnnotateStage",
    "distil": "classifiers.distil:DistilStage",
    "classify-score": "pipeline.classify.score:ScoreStage",
    "classify": "pipeline.classify.decide:DecideStage",
    "rewrite": "pipeline.rewrite.stage:RewriteStage",
    # after rewrite: a mix may take a share of the rewrites (mix.synthetic_share)
    "mix": "pipeline.mix.stage:MixStage",
    "tokenize": "pipeline.mix.tokenize:TokenizeStage",
}


def pipeline_order() -> tuple[str, ...]:
    return tuple(STAGES)


def stage_class(name: str) -> type[Stage]:
    target = STAGES.get(name)
    if target is None:
        raise KeyError(f"no stage named {name!r} in the registry (pipeline.stages.STAGES: {', '.join(STAGES)})")
    if not isinstance(target, str):
        return target
    module, _, cls = target.partition(":")
    return getattr(importlib.import_module(module), cls)


def stage_classes() -> dict[str, type[Stage]]:
    return {name: stage_class(name) for name in STAGES}


def filter_stages() -> list[str]:
    """Stages that take every record the previous filter stage kept and keep, drop or error each."""
    return [name for name, cls in stage_classes().items() if cls.role == "filter"]


def side_stages() -> list[str]:
    """Stages that work on a sample or a copy (labels, rewrites): conserved on their own units."""
    return [name for name, cls in stage_classes().items() if cls.role == "side"]


def kept_dataset(name: str) -> str | None:
    """The dataset a filter stage's kept records go to (its first output)."""
    cls = stage_class(name)
    return cls.outputs[0].dataset if cls.role == "filter" and cls.outputs else None


def producer(dataset: str) -> str | None:
    """The stage that writes `dataset`."""
    return next((name for name, cls in stage_classes().items() if any(o.dataset == dataset for o in cls.outputs)),
                None)


def documents_before(name: str, layout: RunLayout) -> Path:
    """The run's documents as stage `name` reads them: the kept dataset of the nearest filter stage before it
    that has files in this run (unique/ after dedup, else docs/, ...); the nearest one's folder when none has."""
    order = pipeline_order()
    before = order[: order.index(name)] if name in order else order
    candidates = [dataset for stage in reversed(before) if (dataset := kept_dataset(stage))]
    for dataset in candidates:
        if parquet_files(layout.dataset(dataset)):
            return layout.dataset(dataset)
    return layout.dataset(candidates[0]) if candidates else layout.dataset("docs")


def documents(layout: RunLayout) -> Path:
    """The run's documents after its last filter stage that has written files (for tools outside a stage)."""
    return documents_before("", layout)


def resolve_inputs(name: str, cls: type[Stage], cfg: RunConfig) -> dict[str, Path]:
    layout = RunLayout(cfg.out)
    return {spec.dataset: documents_before(name, layout) if spec.dataset == DOCUMENTS else layout.dataset(spec.dataset)
            for spec in cls.inputs}


def make_stage(name: str, cfg: RunConfig) -> Stage:
    """The stage `name` for this run, its inputs bound to the folders the data flow gives them."""
    cls = stage_class(name)
    stage = cls(cfg)
    stage.input_dirs = resolve_inputs(name, cls, cfg)
    return stage


def wanted(cfg: RunConfig) -> Iterator[str]:
    """The stages `curate run` goes through with this config, in order."""
    return (name for name in STAGES if stage_class(name).enabled(cfg))


def register(name: str, target: str | type[Stage], *, after: str | None = None) -> None:
    """Add a stage to the registry ("module:Class" or the class), after stage `after` (default: last). For
    plug-ins and tests; the project's own stages are the lines of STAGES above."""
    global STAGES
    items = [(key, value) for key, value in STAGES.items() if key != name]
    at = len(items) if after is None else [key for key, _ in items].index(after) + 1
    items.insert(at, (name, target))
    STAGES = dict(items)
