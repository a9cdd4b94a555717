"""Executors: where a stage's shards run. This module is the only one in the project that imports Ray.

- `RayExecutor`: a task per shard for CPU stages (`setup` cached once per worker process; Ray retries a
  task whose worker died), or a pool of actors for stages that hold a model or a client (`setup` once per
  actor; Ray restarts a dead actor and retries its shard), with a bounded number of shards in flight.
- `LocalExecutor`: the same contract in this process, no Ray: the runner's semantics are tested on it, and
  it is handy for debugging a stage with a plain debugger.

Both also `map` a function over items (dedup's shuffle steps), and both turn a fixable error raised in a
worker (a `CurateError`) back into that error in the driver, so the command prints its message, not a
remote traceback.
"""

from __future__ import annotations

import asyncio
import hashlib
import inspect
import os
import sys
from collections.abc import Callable, Iterable
from typing import Any

from pipeline import store
from pipeline.config import RayConfig, RunConfig
from pipeline.errors import CurateError
from pipeline.progress import progress
from pipeline.runtime.shards import execute_shard, execute_shard_async, is_async, setup_worker
from pipeline.runtime.stage import Shard, Stage

# Ray resolves "127.0.0.1" to the host's interface address and binds its raylet, GCS and agents there.
# Its single-machine switch (named for Windows/macOS) keeps every socket on loopback; it is read when Ray
# is imported, and the processes a local Ray starts inherit it from this environment.
LOOPBACK_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_USAGE_STATS_ENABLED": "0"}


def use_loopback_only() -> None:
    """Keep a local Ray on 127.0.0.1 (call before Ray starts; harmless when Ray is already imported)."""
    os.environ.update(LOOPBACK_ENV)
    if "ray" in sys.modules:
        from ray._private import ray_constants

        ray_constants.ENABLE_RAY_CLUSTER = False


def ensure_ray(cfg: RayConfig) -> None:
    """Join `cfg.address` or RAY_ADDRESS when given; otherwise start a local Ray bound to 127.0.0.1."""
    address = cfg.address or os.environ.get("RAY_ADDRESS")
    if not address:
        use_loopback_only()
    import ray

    if ray.is_initialized():
        return
    # the run folder's storage settings (a run folder on object storage), for workers on every node
    env = {"RAY_USAGE_STATS_ENABLED": "0", **store.worker_env()}
    if address:
        ray.init(address=address, log_to_driver=True, runtime_env={"env_vars": env})
        return
    env.update(LOOPBACK_ENV)
    ray.init(num_cpus=cfg.num_cpus, include_dashboard=False, _node_ip_address="127.0.0.1", log_to_driver=True,
             runtime_env={"env_vars": env})


def cluster_cpus() -> int:
    import ray

    return int(ray.cluster_resources().get("CPU", 1)) or 1


def _run_maybe_async(loop: asyncio.AbstractEventLoop, value: Any) -> Any:
    return loop.run_until_complete(value) if inspect.isawaitable(value) else value


def _unwrap(exc: BaseException) -> BaseException:
    """The error a worker raised, without Ray's wrapping, when it is a fixable one."""
    cause = getattr(exc, "cause", None)
    seen = 0
    while cause is not None and seen < 5:
        if isinstance(cause, CurateError):
            return cause
        cause, seen = getattr(cause, "cause", None), seen + 1
    return exc


# ------------------------------------------------------------------------------------------------ local
class LocalExecutor:
    """Every shard in this process, in plan order, with one worker (`setup` once)."""

    def run_shards(self, stage: Stage, shards: list[Shard], *, quiet: bool = False) -> list[Any]:
        loop = asyncio.new_event_loop()
        try:
            worker = _run_maybe_async(loop, setup_worker(stage))
            with progress(stage.name, len(shards), quiet=quiet, unit=stage.unit) as bar:
                for shard in shards:
                    if is_async(stage):
                        loop.run_until_complete(execute_shard_async(stage, worker, shard))
                    else:
                        execute_shard(stage, worker, shard)
                    bar.update()
            return [_run_maybe_async(loop, stage.teardown(worker))]
        finally:
            loop.close()

    def map(self, fn: Callable[..., Any], items: Iterable[Any], *args: Any, label: str, num_cpus: float = 1,
            quiet: bool = False) -> list[Any]:
        return [fn(item, *args) for item in items]


# -------------------------------------------------------------------------------------------------- Ray
# Per worker process: what `setup` built, per stage class, for one config at a time (a task worker runs many
# shards; a long-lived worker of a cluster that serves many runs keeps one state per stage, not one per run).
_WORKERS: dict[str, tuple[str, Any]] = {}


def _worker_key(stage: Stage) -> tuple[str, str]:
    return (f"{type(stage).__module__}.{type(stage).__name__}",
            hashlib.sha1(stage.cfg.model_dump_json().encode()).hexdigest())


def _task_shard(stage: Stage, shard: Shard) -> dict[str, Any]:
    kind, config = _worker_key(stage)
    held = _WORKERS.get(kind)
    if held is None or held[0] != config:
        _WORKERS.pop(kind, None)  # the previous run's state goes before the new one is built
        _WORKERS[kind] = (config, setup_worker(stage))
    return execute_shard(stage, _WORKERS[kind][1], shard)


class _ActorWorker:
    """Holds one stage worker. A failing `setup` is kept and raised by `ready()`, so the driver gets the
    stage's own error (e.g. a classifier folder without its model file), not an actor-death traceback."""

    def __init__(self, stage: Stage):
        self.stage, self.worker, self.error = stage, None, None
        try:
            self.worker = setup_worker(stage)
        except Exception as exc:  # noqa: BLE001 - re-raised by ready()
            self.error = exc

    def ready(self) -> bool:
        if self.error is not None:
            raise self.error
        return True

    def run(self, shard: Shard) -> dict[str, Any]:
        return execute_shard(self.stage, self.worker, shard)

    def teardown(self) -> Any:
        return self.stage.teardown(self.worker)


class _AsyncActorWorker(_ActorWorker):
    """For async stages: the actor's shards share one event loop (and the stage's client), so its bound on
    requests in flight holds across shards and there is no idle gap between them."""

    async def ready(self) -> bool:
        return super().ready()

    async def run(self, shard: Shard) -> dict[str, Any]:
        return await execute_shard_async(self.stage, self.worker, shard)

    async def teardown(self) -> Any:
        result = self.stage.teardown(self.worker)
        return await result if inspect.isawaitable(result) else result


# Shards and actors go round the nodes that fit them, rather than filling the driver's node first: every node
# reads, extracts and writes its share from the start.
SPREAD = "SPREAD"


def _runtime_env(env: dict[str, str]) -> dict[str, Any]:
    """A task's or actor's environment: the stage's variables and the run folder's storage settings (set for
    each run: a Ray started by an earlier run in this process has another run's, or none)."""
    env = {**store.worker_env(), **env}
    return {"runtime_env": {"env_vars": env}} if env else {}


class RayExecutor:
    """Shards as Ray tasks or on a Ray actor pool, as the stage's `resources()` say."""

    def __init__(self, cfg: RayConfig):
        self.cfg = cfg

    def _get(self, refs):
        import ray

        try:
            return ray.get(refs)
        except ray.exceptions.RayError as exc:
            cause = _unwrap(exc)
            if cause is exc:
                raise
            raise cause from None

    def map(self, fn: Callable[..., Any], items: Iterable[Any], *args: Any, label: str, num_cpus: float = 1,
            quiet: bool = False) -> list[Any]:
        """`fn(item, *args)` as one Ray task per item, at most `ray.max_in_flight` at a time; results (small:
        the data goes to disk) in completion order."""
        import ray

        ensure_ray(self.cfg)
        # tasks named by their step (`dedup:sign_group`): what the dashboard and the state API show
        remote_fn = ray.remote(num_cpus=num_cpus, max_retries=2, **_runtime_env({}))(fn).options(name=label,
                                                                                     scheduling_strategy=SPREAD)
        shared = [ray.put(arg) for arg in args]
        items = list(items)
        pending: list[Any] = []
        results: list[Any] = []
        with progress(label, len(items), quiet=quiet, unit="task") as bar:
            for item in items:
                if len(pending) >= self.cfg.max_in_flight:
                    done, pending = ray.wait(pending, num_returns=1)
                    results.extend(self._get(done))
                    bar.update(len(done))
                pending.append(remote_fn.remote(item, *shared))
            while pending:
                done, pending = ray.wait(pending, num_returns=1)
                results.extend(self._get(done))
                bar.update(len(done))
        return results

    def run_shards(self, stage: Stage, shards: list[Shard], *, quiet: bool = False) -> list[Any]:
        if stage.resources().kind == "local":
            # one process is the right size for this stage (training, cheap decisions): no Ray at all
            return LocalExecutor().run_shards(stage, shards, quiet=quiet)
        ensure_ray(self.cfg)
        resources = stage.resources()  # after Ray is up: a stage may size its pool by the cluster's CPUs
        if resources.kind == "task":
            import ray

            stage_ref = ray.put(stage)
            options = {"num_cpus": resources.num_cpus, "name": stage.name, "scheduling_strategy": SPREAD,
                       **_runtime_env(resources.env)}
            remote = ray.remote(max_retries=2)(_task_shard).options(**options)
            self._stream(stage, [(remote, stage_ref, shard) for shard in shards], quiet)
            return []
        return self._run_actors(stage, shards, resources, quiet)

    def _stream(self, stage: Stage, calls: list[tuple[Any, Any, Shard]], quiet: bool) -> None:
        import ray

        pending: list[Any] = []
        with progress(stage.name, len(calls), quiet=quiet, unit=stage.unit) as bar:
            for remote, stage_ref, shard in calls:
                if len(pending) >= self.cfg.max_in_flight:
                    done, pending = ray.wait(pending, num_returns=1)
                    self._get(done)
                    bar.update(len(done))
                pending.append(remote.remote(stage_ref, shard))
            while pending:
                done, pending = ray.wait(pending, num_returns=1)
                self._get(done)
                bar.update(len(done))

    def _run_actors(self, stage: Stage, shards: list[Shard], resources, quiet: bool) -> list[Any]:
        import ray

        worker_cls = _AsyncActorWorker if is_async(stage) else _ActorWorker
        options: dict[str, Any] = {"num_cpus": resources.num_cpus, "max_concurrency": resources.per_actor,
                                   "max_restarts": 1, "max_task_retries": 1, "scheduling_strategy": SPREAD}
        if resources.num_gpus:
            options["num_gpus"] = resources.num_gpus
        options.update(_runtime_env(resources.env))
        actor_cls = ray.remote(worker_cls).options(**options)
        # no more actors than shards, nor than the cluster can place at once (they would wait for CPUs)
        fits = int(cluster_cpus() // resources.num_cpus) if resources.num_cpus else resources.num_actors
        actors = [actor_cls.remote(stage) for _ in range(max(1, min(resources.num_actors, len(shards), fits)))]
        try:
            self._get([actor.ready.remote() for actor in actors])
            load = {id(actor): 0 for actor in actors}
            pending: dict[Any, Any] = {}
            with progress(stage.name, len(shards), quiet=quiet, unit=stage.unit) as bar:
                def wait_one() -> None:
                    ready, _ = ray.wait(list(pending), num_returns=1)
                    for ref in ready:
                        load[id(pending.pop(ref))] -= 1
                        self._get(ref)
                        bar.update()

                for shard in shards:
                    while not (free := [a for a in actors if load[id(a)] < resources.per_actor]):
                        wait_one()
                    actor = min(free, key=lambda a: load[id(a)])
                    pending[actor.run.options(name=stage.name).remote(shard)] = actor
                    load[id(actor)] += 1
                while pending:
                    wait_one()
            return self._get([actor.teardown.remote() for actor in actors])
        finally:
            for actor in actors:
                ray.kill(actor)


def default_executor(cfg: RunConfig) -> LocalExecutor | RayExecutor:
    """The executor a run's config asks for: Ray (a local one on loopback, or the cluster), or local."""
    return LocalExecutor() if cfg.ray.executor == "local" else RayExecutor(cfg.ray)
