"""The stage runtime: a stage contract (`stage`), one runner for every stage (`runner`), what a worker does
with a shard (`shards`), and the executors that run shards on Ray or in-process (`executor`, the only module
that imports Ray). See docs/architecture.md.

This package exports the contract only: a stage module imports it without importing the runner or Ray.
"""

from pipeline.runtime.stage import DOCUMENTS, Input, Output, Resources, Shard, ShardResult, Stage

__all__ = ["DOCUMENTS", "Input", "Output", "Resources", "Shard", "ShardResult", "Stage"]
