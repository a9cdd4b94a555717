"""What a worker does with one shard: `process` -> conservation check -> data files -> decisions -> marker,
in that order, each written atomically under a deterministic name. A crash at any point leaves either no
marker (the shard is redone, its files overwritten, no duplicate rows) or a complete shard. Used by both
executors; the driver side is `pipeline.runtime.runner`.
"""

from __future__ import annotations

import inspect
import time
from pathlib import Path
from typing import Any

import pyarrow as pa

from pipeline import schemas
from pipeline.errors import output_error
from pipeline.io import RunLayout, file_record, replace_dir, write_json, write_parquet
from pipeline.runtime.stage import Shard, ShardResult, Stage


def _as_table(rows: pa.Table | list[dict[str, Any]], schema: pa.Schema) -> pa.Table:
    return rows if isinstance(rows, pa.Table) else schemas.from_rows(rows, schema)


def write_shard(stage: Stage, shard: Shard, result: ShardResult, started: float) -> dict[str, Any]:
    """Data files, then decisions, then the marker (last: a shard is complete exactly when it exists)."""
    layout = RunLayout(stage.cfg.out)
    result.stats.check()
    try:
        return _write_files(stage, shard, result, started, layout)
    except OSError as exc:
        fixable = output_error(exc)
        if fixable is None:
            raise
        raise fixable from None


def _write_files(stage: Stage, shard: Shard, result: ShardResult, started: float, layout: RunLayout) -> dict[str, Any]:
    written: list[Path] = []
    for output in stage.outputs:
        if not output.per_shard or output.dataset not in result.rows:
            continue  # a shard that makes no rows of this output at all (one pass of a two-output stage)
        table = _as_table(result.rows[output.dataset], output.schema)  # empty rows: an empty file, same schema
        written.append(write_parquet(table, layout.dataset(output.dataset) / f"{shard.key}.parquet", output.schema))
    if stage.writes_decisions:
        written.append(write_parquet(_as_table(result.decisions, schemas.DECISIONS),
                                     layout.decisions(stage.name) / f"{shard.key}.parquet", schemas.DECISIONS))
    for destination, folder in result.artifacts.items():
        replace_dir(Path(folder), Path(destination))
    marker = result.stats.to_json()
    marker["transient_errors"] = result.transient
    # what was written, so a file damaged or cut short later is found (the resume rule, `curate report`)
    marker["files"] = {str(path.relative_to(layout.root)): file_record(path) for path in written}
    marker["artifacts"] = sorted(str(Path(destination).absolute()) for destination in result.artifacts)
    marker.setdefault("seconds", round(time.perf_counter() - started, 3))
    write_json(marker, layout.marker(stage.name, shard.key))
    return marker


def execute_shard(stage: Stage, worker: Any, shard: Shard) -> dict[str, Any]:
    """Run one shard to completion in this process (sync `process`)."""
    started = time.perf_counter()
    return write_shard(stage, shard, stage.process(worker, shard), started)


async def execute_shard_async(stage: Stage, worker: Any, shard: Shard) -> dict[str, Any]:
    """Run one shard to completion (async `process`: LLM stages share one event loop and client)."""
    started = time.perf_counter()
    return write_shard(stage, shard, await stage.process(worker, shard), started)


def is_async(stage: Stage) -> bool:
    return inspect.iscoroutinefunction(type(stage).process)
