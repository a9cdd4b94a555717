"""Helpers for per-stage tests: run one stage on a few inputs in this process (the runtime's local
executor), as a user's run would, and read back the shard's counts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pipeline import extract
from pipeline.config import ExtractConfig, InputConfig, RunConfig
from pipeline.io import RunLayout
from pipeline.runtime import StageFailed, run_stage
from pipeline.runtime.executor import LocalExecutor
from pipeline.rules_stage import RulesStage


def extract_one(source: str, extract_cfg: ExtractConfig, input_cfg: InputConfig, out: str | Path) -> dict[str, Any]:
    """The extract stage over one WARC file (path or URL) into `out`, then the rules stage (docs/), as
    `curate extract` runs them; returns the extract shard's marker."""
    cfg = RunConfig(out=str(out), input=input_cfg.model_copy(update={"warcs": [source]}), extract=extract_cfg)
    try:
        run_stage(extract.ExtractStage(cfg), executor=LocalExecutor(), quiet=True)
    except StageFailed:
        pass  # every record of the file errored: recorded, then said
    run_stage(RulesStage(cfg), executor=LocalExecutor(), quiet=True)
    (marker,) = RunLayout(out).shard_stats("extract")
    return marker


def decide_rules(cfg: RunConfig) -> dict[str, Any]:
    """The rules stage alone (re-deciding from the stored metrics) on the local executor; its summary."""
    return run_stage(RulesStage(cfg), executor=LocalExecutor(), quiet=True)


def without_timings(value: Any) -> Any:
    """A metrics or card structure without its timing fields (`*seconds`): what must be equal run to run."""
    if isinstance(value, dict):
        return {k: without_timings(v) for k, v in value.items() if not k.endswith("seconds")}
    if isinstance(value, list):
        return [without_timings(v) for v in value]
    return value
