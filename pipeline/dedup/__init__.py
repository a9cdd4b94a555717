"""Dedup stage: exact, URL and MinHash-LSH near-duplicates with distributed connected components, then
repeated-line removal. `DedupStage` is the stage (pipeline.dedup.stage); `run(cfg, docs_dir=None)` runs it."""

from pipeline.dedup.stage import STAGE, DedupInputError, DedupStage, run

__all__ = ["STAGE", "DedupInputError", "DedupStage", "run"]
