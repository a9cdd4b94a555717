"""The run report: every stage's shard markers summed, conservation checked within and between stages.

Each stage writes one counts marker per shard (`pipeline.accounting.ShardStats`). The report sums them per
stage and checks `input == kept + Σ dropped + Σ errored` for every shard and stage, and that each filter
stage read what the filter stage before it (in the registry's order, among those with outputs here) kept.
Which stages are filter and side stages comes from the registry (`pipeline.stages`), never from a list
written here. A mismatch is an error, never a warning.
"""

from __future__ import annotations

import json
from typing import Any

from pipeline.accounting import ConservationError, ShardStats, peak_rss_mb, summarize_stage
from pipeline.io import RunLayout, write_json

__all__ = ["ConservationError", "ShardStats", "build_report", "format_report", "peak_rss_mb", "summarize_stage"]


def _report_fields(summary: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in summary.items() if key != "transient_errors"}


class DamagedRun(ConservationError):
    """Files the shard markers record are missing or differ from what was written."""


def build_report(layout: RunLayout, extra: dict[str, Any] | None = None, *, verify: bool = False) -> dict[str, Any]:
    """Sum every stage's shard markers, check conservation within and between stages, check that every file a
    marker records is there with its size (and its sha256 with `verify`), write report.json."""
    stages: dict[str, Any] = {}
    previous_kept: int | None = None
    previous_stage: str | None = None
    problems: list[str] = []
    from pipeline.stages import filter_stages, side_stages

    for stage in filter_stages():
        shards = layout.shard_stats(stage)
        if not shards:
            continue
        summary = summarize_stage(stage, shards)
        if previous_kept is not None and summary["input"] != previous_kept and layout.is_stage_done(stage):
            problems.append(f"{stage} read {summary['input']} records but {previous_stage} kept {previous_kept}")
        if not summary["conserved"]:
            problems.append(f"{stage}: input != kept + dropped + errored")
        stages[stage] = _report_fields(summary)
        previous_kept, previous_stage = summary["kept"], stage
    side: dict[str, Any] = {}
    for stage in side_stages():
        shards = layout.shard_stats(stage)
        if shards:
            side[stage] = _report_fields(summarize_stage(stage, shards))
            if not side[stage]["conserved"]:
                problems.append(f"{stage}: input != kept + dropped + errored")
    damaged = [problem for stage in stages.keys() | side.keys() for marker in layout.shard_stats(stage)
               for problem in layout.damaged_files(marker, checksums=verify)]
    report: dict[str, Any] = {"stages": stages, "side_stages": side, "conserved": not problems,
                              "problems": problems, "damaged": sorted(damaged)}
    if layout.report_path.exists():
        try:
            old = json.loads(layout.report_path.read_text())
            report = {**{k: v for k, v in old.items() if k not in report}, **report}
        except (json.JSONDecodeError, OSError):
            pass
    report.update(extra or {})
    write_json(report, layout.report_path)
    if problems:
        raise ConservationError("; ".join(problems))
    if damaged:
        raise DamagedRun(f"{len(damaged)} file(s) of {layout.root} are damaged or missing:\n  "
                         + "\n  ".join(sorted(damaged))
                         + "\nrun the command that wrote them again: it redoes exactly those shards")
    return report


def format_report(report: dict[str, Any]) -> str:
    rows = [("stage", "outcome", "reason", "count")]
    for stage, summary in {**report.get("stages", {}), **report.get("side_stages", {})}.items():
        rows.append((stage, "input", "", str(summary["input"])))
        rows.append((stage, "kept", "", str(summary["kept"])))
        for outcome in ("dropped", "errored"):
            for reason, count in summary[outcome].items():
                rows.append((stage, outcome, reason, str(count)))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = ["  ".join(cell.ljust(widths[i]) if i < 3 else cell.rjust(widths[i]) for i, cell in enumerate(row))
             for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    for stage, summary in {**report.get("stages", {}), **report.get("side_stages", {})}.items():
        dropped = sum(summary["dropped"].values())
        errored = sum(summary["errored"].values())
        mark = "ok" if summary["conserved"] else "MISMATCH"
        lines.append(f"conservation {stage}: {summary['input']} in = {summary['kept']} kept + {dropped} dropped "
                     f"+ {errored} errored [{mark}]")
    for problem in report.get("problems", []):
        lines.append(f"PROBLEM: {problem}")
    return "\n".join(lines)
