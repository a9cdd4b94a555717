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

Worker side: `pipeline.runtime.shards` (`execute_shard`), run by the executors.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from pipeline.accounting import summarize_stage
from pipeline.errors import CurateError
from pipeline.io import RunLayout, canonical, read_json, write_json
from pipeline.runtime.executor import default_executor
from pipeline.runtime.stage import Shard, Stage


class StageFailed(CurateError):
    """Every input of a stage errored: there is nothing to pass on (the decisions say why)."""


class StageIncomplete(CurateError):
    """Shards of a stage failed for transient reasons; a rerun of the same command retries only those."""


# ------------------------------------------------------------------------------------------- driver side
def _stage_folders(layout: RunLayout, stage: Stage) -> list[Path]:
    """The folders holding one file per shard of the stage (not those `finish` writes whole)."""
    folders = [layout.dataset(output.dataset) for output in stage.outputs if output.per_shard]
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
                layout.remove(path)
                removed.add(path.stem)
        for path in folder.glob(".*.tmp") if folder.is_dir() else []:
            path.unlink(missing_ok=True)
    state = layout.state(stage.name)
    for path in state.glob("*.json") if state.is_dir() else []:
        if not path.name.startswith(("_", ".")) and path.stem not in keys:
            layout.remove(path)
            removed.add(path.stem)
    return len(removed)


def forget_shards(layout: RunLayout, stage: Stage) -> None:
    """Remove every shard marker of the stage (its files are overwritten when the shards are redone)."""
    state = layout.state(stage.name)
    for path in state.glob("*.json") if state.is_dir() else []:
        if not path.name.startswith("."):
            layout.remove(path)


def forget_rewritten_inputs(layout: RunLayout, stage: Stage, shards: list[Shard]) -> None:
    """A shard whose input files (`Shard.reads`) were written again after it finished is redone: the settings
    guard cannot see that (same settings, new input rows: a WARC retried by extract, a file scored again)."""
    for shard in shards:
        marker = layout.marker(stage.name, shard.key)
        if not shard.reads or not marker.exists():
            continue
        done_at = marker.stat().st_mtime_ns
        if any(Path(path).exists() and Path(path).stat().st_mtime_ns > done_at for path in shard.reads):
            layout.remove(marker)


def read_markers(layout: RunLayout, stage: Stage, keys: list[str]) -> list[dict[str, Any]]:
    markers = []
    for key in keys:
        path = layout.marker(stage.name, key)
        if path.exists():
            markers.append(read_json(path))
    return markers


def summarize(stage: Stage, shards: list[Shard], markers: list[dict[str, Any]]) -> dict[str, Any]:
    """Totals over the plan's markers; conservation is checked per shard and for the stage."""
    totals = summarize_stage(stage.name, markers)
    return {"stage": stage.name, **{key: value for key, value in totals.items() if key != "conserved"},
            "shards": len(shards), "complete": len(markers) == len(shards) and totals["transient_errors"] == 0}


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


def default_settings(stage: Stage) -> dict[str, Any] | None:
    """The stage's settings under the default config (same run folder and inputs): what a setting added to the
    project since a run folder was made held when its outputs were made. None when they cannot be computed."""
    cfg = stage.cfg
    try:
        default = type(stage)(type(cfg)(out=cfg.out, input=cfg.input))
        default.input_dirs = dict(stage.input_dirs)
        return default.settings()
    except Exception:  # noqa: BLE001 - a stage whose settings need more than the defaults: no leniency
        return None


def check_output_root(layout: RunLayout) -> None:
    """The run folder must be a folder we can write into: say so before any work, not after it. Nothing is
    created here (a run stopped by its checks leaves no folder behind). On object storage the folder is the
    local copy under the run cache."""
    root = layout.root.absolute()
    existing = next(path for path in (root, *root.parents) if path.exists())
    if not existing.is_dir():
        what = "is a file" if existing == root else f"is inside {existing}, which is a file"
        raise CurateError(f"--out {layout.root}: {what}, not a folder (give a folder for the run's outputs)")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise CurateError(f"--out {layout.root}: permission denied ({existing} is not writable by this user)")


def _written_folders(stage: Stage) -> list[Path]:
    layout = RunLayout(stage.cfg.out)
    folders = [layout.dataset(output.dataset) for output in stage.outputs]
    folders += [layout.dataset(name) for name in stage.artifacts]
    return folders + ([layout.decisions(stage.name)] if stage.writes_decisions else [])


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def check_inputs_not_outputs(stages: list[Stage]) -> None:
    """Refuse, before anything is written, a command whose stage would read a folder that it or a later stage
    of the same command writes (`--docs RUN/unique --out RUN` for dedup, `--docs RUN/corpus --out RUN` for
    classify): the input would be overwritten while it is read. Paths are compared resolved (symlinks, `..`).
    A stage reading what an earlier stage of the command wrote is the data flow, not a conflict."""
    for at, stage in enumerate(stages):
        for spec in stage.inputs:
            source = stage.input_folder(spec.dataset).resolve()
            for later in stages[at:]:
                for written in _written_folders(later):
                    if _inside(source, written.resolve()):
                        option = f" (--set {spec.config}=...)" if spec.config else ""
                        raise CurateError(
                            f"{stage.name}: its input {stage.input_folder(spec.dataset)}{option} is "
                            f"{'' if source == written.resolve() else 'inside '}{written}, which {later.name} "
                            "writes in this run: it would be overwritten while it is read. Give an input outside "
                            "the run folder's outputs, or another --out")


def run_stage(stage: Stage, *, executor=None, quiet: bool = False) -> dict[str, Any]:
    """Run `stage` in its run folder (`stage.cfg.out`): skip what is done, redo what is not, account for
    every record. Returns the stage summary (also written as the stage marker when complete). A run folder on
    object storage: the caller (`pipeline.run.run_stages`) has brought the local copy up to date."""
    layout = RunLayout(stage.cfg.out)
    check_output_root(layout)
    stage.check()
    settings = stage.settings()
    layout.check_settings(stage.name, settings, lambda: default_settings(stage))
    if stage.plan_follows_settings and layout.is_stage_done(stage.name) and layout.is_stage_intact(stage.name):
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
    identity = canonical(stage.plan_identity())
    identity_path = layout.settings_path(stage.name).with_suffix(".plan.json")
    if identity is not None and identity_path.exists() and read_json(identity_path) != identity:
        forget_shards(layout, stage)  # another classifier, threshold, ...: every shard is redone
    forget_rewritten_inputs(layout, stage, shards)
    todo = [shard for shard in shards if not layout.is_shard_done(stage.name, shard.key)]
    counters: list[Any] = []
    if todo:
        layout.record_settings(stage.name, settings)
        if identity is not None:
            write_json(identity, identity_path)
        layout.remove(layout.stage_marker(stage.name))
        executor = executor or default_executor(stage.cfg)
        stage.prepare(todo, executor)
        counters = executor.run_shards(stage, todo, quiet=quiet)
        layout.pull()  # on object storage: the markers and files the workers of other nodes put
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
        layout.remove(layout.stage_marker(stage.name))
    if not quiet:
        print(stage.format_summary(summary) or standard_line(summary, stage.unit), flush=True)
    if summary["input"] and summary["kept"] == 0 and sum(summary["errored"].values()) == summary["input"]:
        reasons = ", ".join(f"{reason} {n}" for reason, n in summary["errored"].items())
        retry = " (transient: rerun the same command to retry)" if summary["transient_errors"] else ""
        raise StageFailed(f"{stage.name}: every one of its {summary['input']} input record(s) errored ({reasons})"
                          f"{retry}; reasons per record in {layout.decisions(stage.name)}")
    return summary
