"""The stage runtime: a stage contract (`stage`), one runner for every stage (`runner`), and the executors
that run shards on Ray or in-process (`executor`, the only module that imports Ray). See
docs/architecture.md."""

from pipeline.runtime.runner import StageFailed, StageIncomplete, run_stage
from pipeline.runtime.stage import Output, Resources, Shard, ShardResult, Stage

__all__ = ["Output", "Resources", "Shard", "ShardResult", "Stage", "StageFailed", "StageIncomplete", "run_stage"]
