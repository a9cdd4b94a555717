"""Counting every record: per-shard stats, the conservation check, and the run report.

Each filtering stage writes one stats marker per shard. The report sums them per stage and checks
`input == kept + Σ dropped + Σ errored` for every shard and stage, and that a stage's input equals the
previous filtering stage's kept count. A mismatch is an error, never a warning.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from pipeline.io import RunLayout, write_json
from pipeline.errors import CurateError

# Stages that take every record of the previous one and keep, drop or error each (in pipeline order).
# extract keeps every page that got text; rules keeps those that pass the quality rules (docs/).
FILTER_STAGES = ["extract", "rules", "dedup", "classify"]
# Stages that work on a sample or a copy (LLM labels, rewrites): each is conserved on its own units
# (input == kept + dropped + errored) but does not remove documents from the corpus.
SIDE_STAGES = ["annotate", "rewrite"]


class ConservationError(CurateError):
    pass


def peak_rss_mb() -> float:
    """This process's peak resident memory, MiB (Linux reports KiB)."""
    import resource

    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


@dataclass
class ShardStats:
    stage: str
    shard: str
    source: str
    input: int = 0
    kept: int = 0
    dropped: Counter = field(default_factory=Counter)
    errored: Counter = field(default_factory=Counter)
    extra: dict[str, Any] = field(default_factory=dict)

    def drop(self, reason: str, n: int = 1) -> None:
        self.dropped[reason] += n

    def error(self, reason: str, n: int = 1) -> None:
        self.errored[reason] += n

    @property
    def accounted(self) -> int:
        return self.kept + sum(self.dropped.values()) + sum(self.errored.values())

    def check(self) -> None:
        if self.input != self.accounted:
            raise ConservationError(
                f"{self.stage} shard {self.shard} ({self.source}): input {self.input} != kept {self.kept} + "
                f"dropped {sum(self.dropped.values())} + errored {sum(self.errored.values())}"
            )

    def to_json(self) -> dict[str, Any]:
        return {"stage": self.stage, "shard": self.shard, "source": self.source, "input": self.input,
                "kept": self.kept, "dropped": dict(self.dropped), "errored": dict(self.errored), **self.extra}


def summarize_stage(stage: str, shards: list[dict]) -> dict[str, Any]:
    dropped: Counter = Counter()
    errored: Counter = Counter()
    total_in = kept = 0
    for shard in shards:
        total_in += shard["input"]
        kept += shard["kept"]
        dropped.update(shard["dropped"])
        errored.update(shard["errored"])
        accounted = shard["kept"] + sum(shard["dropped"].values()) + sum(shard["errored"].values())
        if accounted != shard["input"]:
            raise ConservationError(f"{stage} shard {shard['shard']}: input {shard['input']} != accounted {accounted}")
    summary = {
        "shards": len(shards),
        "input": total_in,
        "kept": kept,
        "dropped": dict(sorted(dropped.items())),
        "errored": dict(sorted(errored.items())),
    }
    summary["conserved"] = total_in == kept + sum(dropped.values()) + sum(errored.values())
    return summary


def build_report(layout: RunLayout, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Sum every stage's shard markers, check conservation within and between stages, write report.json."""
    stages: dict[str, Any] = {}
    previous_kept: int | None = None
    previous_stage: str | None = None
    problems: list[str] = []
    for stage in FILTER_STAGES:
        shards = layout.shard_stats(stage)
        if not shards:
            continue
        summary = summarize_stage(stage, shards)
        if previous_kept is not None and summary["input"] != previous_kept and layout.is_stage_done(stage):
            problems.append(f"{stage} read {summary['input']} records but {previous_stage} kept {previous_kept}")
        if not summary["conserved"]:
            problems.append(f"{stage}: input != kept + dropped + errored")
        stages[stage] = summary
        previous_kept, previous_stage = summary["kept"], stage
    side: dict[str, Any] = {}
    for stage in SIDE_STAGES:
        shards = layout.shard_stats(stage)
        if shards:
            side[stage] = summarize_stage(stage, shards)
            if not side[stage]["conserved"]:
                problems.append(f"{stage}: input != kept + dropped + errored")
    report: dict[str, Any] = {"stages": stages, "side_stages": side, "conserved": not problems,
                              "problems": problems}
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
