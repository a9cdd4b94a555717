"""The stage contract: what a stage declares, and what its per-shard function returns.

A stage is a class with a name, the config section it reads, the datasets it reads (`inputs`) and writes
(`outputs`, each with a schema from `pipeline.schemas`), the settings its output depends on, a plan of
shards, a per-worker `setup` and a pure per-shard `process`. It knows nothing of Ray, of where files go, of
markers or of the command line: `pipeline.runtime.runner` runs every stage the same way, on an executor from
`pipeline.runtime.executor`. The run's data flow (what a stage reads by default, the conservation chain,
`curate run`'s order, explain's walk) follows from these declarations and the registry (`pipeline.stages`).

    class Shout(Stage):
        name = "shout"
        inputs = (Input(DOCUMENTS),)
        outputs = (Output("shouted", SHOUTED),)

        def plan(self):
            files = parquet_files(self.input_folder())
            return [Shard(key=path.stem, source=str(path)) for path in files]

        def process(self, worker, shard):
            stats = self.new_stats(shard)
            rows = [...]
            return ShardResult(rows={"shouted": rows}, decisions=[], stats=stats)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

import pyarrow as pa

from pipeline.accounting import ShardStats
from pipeline.config import RunConfig
from pipeline.io import RunLayout

# The run's documents as a stage reads them: the kept output of the nearest filter stage before it (in
# registry order) that has written files in this run: unique/ after dedup, docs/ after the rules, ...
DOCUMENTS = "documents"


@dataclass(frozen=True)
class Output:
    """A Parquet dataset a stage writes. `per_shard`: one file per shard, `<run>/<dataset>/<shard key>.parquet`,
    written by the runner; False: written whole by the stage's `finish` (the sharded corpus), which the
    runner's stale-shard cleanup leaves alone."""

    dataset: str
    schema: pa.Schema
    per_shard: bool = True


@dataclass(frozen=True)
class Input:
    """A dataset a stage reads: another stage's output by name, or DOCUMENTS. `config` is the dotted config key
    that points the stage at another folder instead (`classify.docs`); unset, the run folder's dataset."""

    dataset: str
    config: str | None = None


@dataclass(frozen=True)
class Shard:
    """One unit of resumable work. `key` names its files (deterministic: the same input gives the same
    key); `source` is what it reads, as decisions and markers name it; `payload` is whatever else
    `process` needs (small and picklable: it travels to the worker)."""

    key: str
    source: str
    payload: Any = None
    # local files the shard reads whose rewrite since the shard finished redoes it (an extracted/ file written
    # again by a retried WARC, a score file scored again): the runner compares them with the shard's marker
    reads: tuple[str, ...] = ()


@dataclass
class ShardResult:
    """What `process` returns: rows per output dataset (an empty list writes an empty file with the schema; an
    output the shard does not name gets no file), decision rows (one per record that left: dropped or
    errored, with a reason) and the shard's counts. `transient` counts the records that failed for a
    reason worth another try (a source that could not be fetched, a request that timed out): a shard with
    any is written, but not done, and the next run redoes it. `artifacts` are folders made by the stage
    (e.g. a trained classifier) that the runner installs whole, atomically, at the given destinations."""

    rows: dict[str, pa.Table | list[dict[str, Any]]]
    decisions: pa.Table | list[dict[str, Any]]
    stats: ShardStats
    transient: int = 0
    artifacts: dict[str, Path] = field(default_factory=dict)


@dataclass(frozen=True)
class Resources:
    """How the executor runs a stage's shards. `task`: one stateless task per shard (CPU stages; `setup`
    runs once per worker process and is cached). `actor`: a pool of `num_actors` long-lived workers,
    each holding what `setup` built (a model, an HTTP client), with `per_actor` shards in flight on each
    (async stages overlap their requests across shards). `local`: in the driver process, whatever the
    executor (one training process, a cheap step: Ray would only add overhead)."""

    kind: Literal["task", "actor", "local"] = "task"
    num_cpus: float = 1.0
    num_actors: int = 1
    per_actor: int = 1
    num_gpus: float = 0.0
    env: dict[str, str] = field(default_factory=dict)


class Stage:
    """Base class of every stage. Subclasses set the class attributes and implement `plan` and `process`;
    the other hooks have defaults that do nothing."""

    name: ClassVar[str]
    # The config section holding this stage's settings (its resources, `curate <stage> --help`).
    section: ClassVar[str | None] = None
    inputs: ClassVar[tuple[Input, ...]] = ()
    outputs: ClassVar[tuple[Output, ...]] = ()
    # Folders of the run the stage installs whole through ShardResult.artifacts (a trained classifier).
    artifacts: ClassVar[tuple[str, ...]] = ()
    # Whether the stage writes decisions/<name>/ rows. Filter stages remove records from the corpus; side
    # stages (labels, rewrites) are conserved on their own units but remove nothing; steps (scoring,
    # training) transform without accounting of their own. A filter stage's first output is its kept records:
    # the conservation chain runs through the filter stages in registry order.
    writes_decisions: ClassVar[bool] = True
    role: ClassVar[Literal["filter", "side", "step"]] = "filter"
    # Whether the stage talks to the LLM endpoint (`curate run` starts the demo's tiny server before the first).
    needs_llm: ClassVar[bool] = False
    # True when the plan follows from the settings alone (extract, dedup): a finished stage is then skipped
    # without planning again. False when the plan can change without a settings change (a larger sample, a
    # new classifier), so every run plans and skips only the shards already done.
    plan_follows_settings: ClassVar[bool] = False
    unit: ClassVar[str] = "shard"

    def __init__(self, cfg: RunConfig):
        self.cfg = cfg
        # input dataset -> folder, bound by the registry (pipeline.stages.make_stage) from the run's data flow
        self.input_dirs: dict[str, Path] = {}

    @classmethod
    def enabled(cls, cfg: RunConfig) -> bool:
        """Whether `curate run` goes through this stage with this config (rewriting only when enabled, ...)."""
        return True

    def input_folder(self, dataset: str = DOCUMENTS) -> Path:
        """The folder of one of the declared inputs: the config key that overrides it when set, else the
        folder the run's data flow gives it (bound by the registry), else `<out>/<dataset>`."""
        declared = next((spec for spec in self.inputs if spec.dataset == dataset), None)
        if declared is None:
            raise KeyError(f"stage {self.name} does not declare the input {dataset!r}")
        if declared.config:
            override = self.cfg.get(declared.config)
            if override:
                return Path(override)
        if dataset in self.input_dirs:
            return self.input_dirs[dataset]
        if dataset == DOCUMENTS:
            raise RuntimeError(f"stage {self.name} reads the run's documents: build it with "
                               "pipeline.stages.make_stage, which resolves them from the registry")
        return RunLayout(self.cfg.out).dataset(dataset)

    # ---- declared in the driver ----
    def settings(self) -> dict[str, Any]:
        """The settings this stage's output depends on. A run folder holds one set: once the stage has any
        output, a rerun with other values is refused, naming the change."""
        return {}

    def plan_identity(self) -> dict[str, Any] | None:
        """What every shard's output depends on besides the settings, when it may change between runs without
        being refused (the classifier a corpus is scored with, the threshold it is decided at): a change
        redoes every shard of the stage. None: shards are identified by their keys alone."""
        return None

    def check(self) -> None:
        """Refuse a misconfiguration (a missing model file, a bad prompt, an unreachable endpoint) before
        anything is planned, recorded or written. Raise a CurateError naming what is wrong."""

    def plan(self) -> list[Shard]:
        raise NotImplementedError

    def resources(self) -> Resources:
        return Resources()

    def prepare(self, shards: list[Shard], executor) -> None:
        """Stage-wide work before the shards run (dedup's shuffle steps), through `executor.map`."""

    def finish(self, summary: dict[str, Any], markers: list[dict[str, Any]]) -> dict[str, Any]:
        """Stage-wide work after every shard is done (cards, the corpus files); returns extra summary fields."""
        return {}

    def format_summary(self, summary: dict[str, Any]) -> str | None:
        """A line (or lines) printed at the end of the stage; None: the runner's standard line."""
        return None

    # ---- run in the worker ----
    def worker_reads(self) -> list[Path | str]:
        """Files or folders of the run folder that every worker reads besides its shard's input (a classifier,
        an index, scratch files of `prepare`): a worker on another node copies them in from object storage
        before `setup` (a URL: a folder of its own on object storage). A shard's own files: `shard_files`."""
        return []

    def shard_files(self, shard: Shard) -> list[str]:
        """The run folder's files one shard reads: a worker on another node copies them in from object storage
        before `process`. Its `reads`, else its `source`."""
        return list(shard.reads or (shard.source,))

    def setup(self) -> Any:
        """Per-worker state (a language model, a classifier, an HTTP client); built once per worker."""
        return None

    def process(self, worker: Any, shard: Shard) -> ShardResult:
        """The pure per-shard function (may be `async def`): no files written, no markers, no Ray."""
        raise NotImplementedError

    def teardown(self, worker: Any) -> Any:
        """Called once per worker when the stage ends; returns counters to add to the summary (or None)."""
        return None

    # ---- helpers for subclasses ----
    def new_stats(self, shard: Shard) -> ShardStats:
        return ShardStats(stage=self.name, shard=shard.key, source=shard.source)
