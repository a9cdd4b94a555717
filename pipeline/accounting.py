"""Counting records: a shard's counts (`ShardStats`, what every shard marker holds) and their sums per stage,
with the conservation check `input == kept + dropped + errored`, per shard and per stage. A mismatch is an
error, never a warning.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from pipeline.errors import CurateError


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


def summarize_stage(stage: str, markers: list[dict[str, Any]]) -> dict[str, Any]:
    """The sums of a stage's shard markers; raises ConservationError naming the first shard that does not add
    up. `transient_errors` counts the records a rerun retries."""
    dropped: Counter = Counter()
    errored: Counter = Counter()
    total_in = kept = transient = 0
    for marker in markers:
        accounted = marker["kept"] + sum(marker["dropped"].values()) + sum(marker["errored"].values())
        if accounted != marker["input"]:
            raise ConservationError(f"{stage} shard {marker['shard']}: input {marker['input']} != "
                                    f"accounted {accounted}")
        total_in += marker["input"]
        kept += marker["kept"]
        dropped.update(marker["dropped"])
        errored.update(marker["errored"])
        transient += marker.get("transient_errors", 0)
    return {"shards": len(markers), "input": total_in, "kept": kept, "dropped": dict(sorted(dropped.items())),
            "errored": dict(sorted(errored.items())), "transient_errors": transient,
            "conserved": total_in == kept + sum(dropped.values()) + sum(errored.values())}
