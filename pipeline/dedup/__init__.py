"""Dedup stage: exact, URL and MinHash-LSH near-duplicates with distributed connected components, then
repeated-line removal. `DedupStage` is the stage (pipeline.dedup.stage); the registry runs it
(`pipeline.stages.run_stages(cfg, "dedup")`, `curate dedup`)."""

from pipeline.dedup.stage import STAGE, DedupInputError, DedupStage

__all__ = ["STAGE", "DedupInputError", "DedupStage"]
