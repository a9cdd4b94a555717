"""The one runner: every stage is planned, resumed, executed, written and accounted for the same way.

Driver side (`run_stage`):
1. `stage.check()`: misconfiguration stops the stage before anything is recorded or written.
2. Settings guard: a run folder holds one set of the settings a stage's output depends on; once the stage
   has outputs, a rerun with other settings is refused with the change named. Settings are recorded just
   before the first shard runs, so a run that never got that far locks nothing.
3. Plan, then remove stale shards (outputs, decisions and markers whose key is not in the plan: a changed
   sample, a new classifier) and half-written temp files.
4. Skip done shards. The one resume rule (`RunLayout.is_shard_done`): a shard is done iff its marker exists
   and it recorded no transient error.
5. Run the rest on the executor; each shard is written in the worker by `execute_shard`.
6. Sum the markers (conservation per shard and per stage), `stage.finish()`, the stage marker when nothing
   is left to retry, the summary line.

Worker side (`execute_shard`): `process` -> conservation check -> data files -> decisions -> marker, in
that order, each written atomically under a deterministic name: a crash at any point leaves either no
marker (the shard is redone, its files overwritten, no duplicate rows) or a complete shard.
"""

from __future__ import annotations

import inspect
import json
import os
import shutil
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import pyarrow as pa

from pipeline import schemas
from pipeline.errors import CurateError, output_error
from pipeline.io import RunLayout, write_json, write_parquet
from pipeline.report import ConservationError
from pipeline.runtime.stage import Shard, ShardResult, Stage


class StageFailed(CurateError):
    """Every input of a stage errored: there is nothing to pass on (the decisions say why)."""


class StageIncomplete(CurateError):
    """Shards of a stage failed for transient reasons; a rerun of the same command retries only those."""


# ------------------------------------------------------------------------------------------- worker side
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
    for output in stage.outputs:
        if output.dataset not in result.rows:
            continue  # a shard that makes no rows of this output at all (one pass of a two-output stage)
        table = _as_table(result.rows[output.dataset], output.schema)  # empty rows: an empty file, same schema
        write_parquet(table, layout.dataset(output.dataset) / f"{shard.key}.parquet", output.schema)
    if stage.writes_decisions:
        write_parquet(_as_table(result.decisions, schemas.DECISIONS),
                      layout.decisions(stage.name) / f"{shard.key}.parquet", schemas.DECISIONS)
    for destination, folder in result.artifacts.items():
        replace_dir(Path(folder), Path(destination))
    marker = result.stats.to_json()
    marker["transient_errors"] = result.transient
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


def replace_dir(new: Path, target: Path) -> None:
    """Replace folder `target` with the finished folder `new` by two renames: readers see the old folder or
    the new one, never a half-written one."""
    target.parent.mkdir(parents=True, exist_ok=True)
    old = target.with_name(f".{target.name}.old-{uuid.uuid4().hex[:8]}")
    if target.exists():
        target.rename(old)
    new.rename(target)
    shutil.rmtree(old, ignore_errors=True)


# ------------------------------------------------------------------------------------------- driver side
def _stage_folders(layout: RunLayout, stage: Stage) -> list[Path]:
    folders = [layout.dataset(output.dataset) for output in stage.outputs]
    if stage.writes_decisions:
        folders.append(layout.decisions(stage.name))
    return folders


def remove_stale(layout: RunLayout, stage: Stage, keys: set[str]) -> int:
    """Remove shard files whose key is not in the plan, and temp files a crashed write left behind, so the
    report and readers see only this plan's shards. Returns how many shards were removed."""
    removed: set[str] = set()
    for folder in _stage_folders(layout, stage):
        for path in folder.glob("*.parquet") if folder.is_dir() else []:
            if path.stem not in keys:
                path.unlink(missing_ok=True)
                removed.add(path.stem)
        for path in folder.glob(".*.tmp") if folder.is_dir() else []:
            path.unlink(missing_ok=True)
    state = layout.state(stage.name)
    for path in state.glob("*.json") if state.is_dir() else []:
        if not path.name.startswith(("_", ".")) and path.stem not in keys:
            path.unlink(missing_ok=True)
            removed.add(path.stem)
    return len(removed)


def forget_shards(layout: RunLayout, stage: Stage) -> None:
    """Remove every shard marker of the stage (its files are overwritten when the shards are redone)."""
    state = layout.state(stage.name)
    for path in state.glob("*.json") if state.is_dir() else []:
        if not path.name.startswith("."):
            path.unlink(missing_ok=True)


def _canonical(value: Any) -> Any:
    return json.loads(json.dumps(value, sort_keys=True, default=str))


def read_markers(layout: RunLayout, stage: Stage, keys: list[str]) -> list[dict[str, Any]]:
    markers = []
    for key in keys:
        path = layout.marker(stage.name, key)
        if path.exists():
            markers.append(json.loads(path.read_text()))
    return markers


def summarize(stage: Stage, shards: list[Shard], markers: list[dict[str, Any]]) -> dict[str, Any]:
    """Totals over the plan's markers; conservation is checked per shard and for the stage."""
    dropped: Counter = Counter()
    errored: Counter = Counter()
    total_in = kept = transient = 0
    for marker in markers:
        accounted = marker["kept"] + sum(marker["dropped"].values()) + sum(marker["errored"].values())
        if accounted != marker["input"]:
            raise ConservationError(f"{stage.name} shard {marker['shard']}: input {marker['input']} != "
                                    f"accounted {accounted}")
        total_in += marker["input"]
        kept += marker["kept"]
        dropped.update(marker["dropped"])
        errored.update(marker["errored"])
        transient += marker.get("transient_errors", 0)
    return {"stage": stage.name, "shards": len(shards), "input": total_in, "kept": kept,
            "dropped": dict(sorted(dropped.items())), "errored": dict(sorted(errored.items())),
            "transient_errors": transient, "complete": len(markers) == len(shards) and transient == 0}


def standard_line(summary: dict[str, Any], unit: str) -> str:
    dropped = sum(summary["dropped"].values())
    errored = sum(summary["errored"].values())
    line = (f"[{summary['stage']}] {summary['shards']} {unit}s ({summary['shards_run']} run now): "
            f"{summary['input']} in, {summary['kept']} kept, {dropped} dropped, {errored} errored, "
            f"{summary['seconds']:.1f}s")
    if summary["transient_errors"]:
        line += (f"\n[{summary['stage']}] incomplete: {summary['transient_errors']} record(s) failed for "
                 "transient reasons; run the same command again to retry only those")
    return line


def check_output_root(layout: RunLayout) -> None:
    """The run folder must be a folder we can write into: say so before any work, not after it. Nothing is
    created here (a run stopped by its checks leaves no folder behind)."""
    root = layout.root.absolute()
    existing = next(path for path in (root, *root.parents) if path.exists())
    if not existing.is_dir():
        what = "is a file" if existing == root else f"is inside {existing}, which is a file"
        raise CurateError(f"--out {layout.root}: {what}, not a folder (give a folder for the run's outputs)")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise CurateError(f"--out {layout.root}: permission denied ({existing} is not writable by this user)")


def run_stage(stage: Stage, *, executor=None, quiet: bool = False) -> dict[str, Any]:
    """Run `stage` in its run folder (`stage.cfg.out`): skip what is done, redo what is not, account for
    every record. Returns the stage summary (also written as the stage marker when complete)."""
    from pipeline.runtime.executor import default_executor

    layout = RunLayout(stage.cfg.out)
    stage.check()
    check_output_root(layout)
    settings = stage.settings()
    layout.check_settings(stage.name, settings)
    if stage.plan_follows_settings and layout.is_stage_done(stage.name):
        if not quiet:
            print(f"[{stage.name}] complete in {layout.root}, skipped")
        return {"skipped": True}
    started = time.perf_counter()
    shards = stage.plan()
    keys = [shard.key for shard in shards]
    if len(set(keys)) != len(keys):
        raise CurateError(f"{stage.name}: two shards of the plan have the same key; their inputs have the "
                          "same name")
    remove_stale(layout, stage, set(keys))
    identity = _canonical(stage.plan_identity())
    identity_path = layout.settings_path(stage.name).with_suffix(".plan.json")
    if identity is not None and identity_path.exists() and json.loads(identity_path.read_text()) != identity:
        forget_shards(layout, stage)  # another classifier, threshold, ...: every shard is redone
    todo = [shard for shard in shards if not layout.is_shard_done(stage.name, shard.key)]
    counters: list[Any] = []
    if todo:
        layout.record_settings(stage.name, settings)
        if identity is not None:
            write_json(identity, identity_path)
        layout.stage_marker(stage.name).unlink(missing_ok=True)
        executor = executor or default_executor(stage.cfg)
        stage.prepare(todo, executor)
        counters = executor.run_shards(stage, todo, quiet=quiet)
    markers = read_markers(layout, stage, keys)
    missing = [key for key in keys if not layout.marker(stage.name, key).exists()]
    if missing:
        raise RuntimeError(f"{stage.name}: {len(missing)} shard(s) did not finish: {missing[:5]}")
    summary = summarize(stage, shards, markers)
    summary["shards_run"] = len(todo)
    summary["seconds"] = round(time.perf_counter() - started, 3)
    summary.update(stage.finish({**summary, "counters": counters}, markers))
    if summary["complete"]:
        write_json(summary, layout.stage_marker(stage.name))
    else:
        layout.stage_marker(stage.name).unlink(missing_ok=True)
    if stage.role == "side":
        # side stages (labels, rewrites) keep their summary in report.json: the run summary prints it
        from pipeline.report import build_report

        build_report(layout, extra={stage.name: summary})
    if not quiet:
        print(stage.format_summary(summary) or standard_line(summary, stage.unit), flush=True)
    if summary["input"] and summary["kept"] == 0 and sum(summary["errored"].values()) == summary["input"]:
        reasons = ", ".join(f"{reason} {n}" for reason, n in summary["errored"].items())
        retry = " (transient: rerun the same command to retry)" if summary["transient_errors"] else ""
        raise StageFailed(f"{stage.name}: every one of its {summary['input']} input record(s) errored ({reasons})"
                          f"{retry}; reasons per record in {layout.decisions(stage.name)}")
    return summary
