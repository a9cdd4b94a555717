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
import pyarrow.compute as pc

from pipeline import schemas, store
from pipeline.errors import output_error
from pipeline.io import RunLayout, file_record, replace_dir, write_json, write_parquet
from pipeline.runtime.stage import Shard, ShardResult, Stage
from pipeline.store import inside


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
        decisions = _named_by_url(_as_table(result.decisions, schemas.DECISIONS), layout)
        written.append(write_parquet(decisions, layout.decisions(stage.name) / f"{shard.key}.parquet",
                                     schemas.DECISIONS))
    for destination, folder in result.artifacts.items():
        replace_dir(Path(folder), Path(destination))
    marker = result.stats.to_json()
    if layout.remote is not None:
        marker["source"] = str(marker.get("source", "")).replace(str(layout.root), layout.remote.url)
    marker["transient_errors"] = result.transient
    # what was written, so a file damaged or cut short later is found (the resume rule, `curate report`)
    marker["files"] = {str(path.relative_to(layout.root)): file_record(path) for path in written}
    marker["artifacts"] = sorted(str(Path(destination).absolute()) for destination in result.artifacts)
    marker.setdefault("seconds", round(time.perf_counter() - started, 3))
    write_json(marker, layout.marker(stage.name, shard.key))
    return marker


def copy_in(stage: Stage, shard: Shard | None = None) -> None:
    """On a run folder on object storage: bring into this node's copy what a worker reads (`shard=None`: what
    `setup` reads; else the shard's input). Nothing to do for a local run folder."""
    layout = RunLayout(stage.cfg.out)
    if layout.remote is None:
        return
    if shard is None:
        paths = []
        for path in stage.worker_reads():
            if store.is_remote(path):
                store.local_folder(path)  # a folder of its own on object storage (a classifier)
            else:
                paths.append(Path(path))
    else:
        paths = [Path(path) for path in stage.shard_files(shard)]
    wanted = [layout.remote.relative(path) for path in paths if inside(Path(path), layout.root)]
    if wanted:
        layout.remote.pull(wanted)


def _named_by_url(decisions: pa.Table, layout: RunLayout) -> pa.Table:
    """On object storage, decisions name the run folder's files by their URL, not by this node's copy."""
    if layout.remote is None or not decisions.num_rows:
        return decisions
    for name in ("source", "detail"):
        column = pc.replace_substring(decisions.column(name), str(layout.root), layout.remote.url)
        decisions = decisions.set_column(decisions.schema.get_field_index(name), name, column)
    return decisions


def execute_shard(stage: Stage, worker: Any, shard: Shard) -> dict[str, Any]:
    """Run one shard to completion in this process (sync `process`)."""
    started = time.perf_counter()
    copy_in(stage, shard)
    return write_shard(stage, shard, stage.process(worker, shard), started)


async def execute_shard_async(stage: Stage, worker: Any, shard: Shard) -> dict[str, Any]:
    """Run one shard to completion (async `process`: LLM stages share one event loop and client)."""
    started = time.perf_counter()
    copy_in(stage, shard)
    return write_shard(stage, shard, await stage.process(worker, shard), started)


def setup_worker(stage: Stage) -> Any:
    """A worker's state for `stage` (its `setup`), after copying in what setup reads."""
    copy_in(stage)
    return stage.setup()


def is_async(stage: Stage) -> bool:
    return inspect.iscoroutinefunction(type(stage).process)
