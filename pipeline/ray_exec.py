"""Ray adapter: start or join a cluster, and map a stage function over input units with bounded in-flight
tasks (the driver never holds more than `max_in_flight` results or references at once)."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterable
from typing import Any

from pipeline.config import RayConfig
from pipeline.progress import progress


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
    env = {"RAY_USAGE_STATS_ENABLED": "0"}
    if address:
        ray.init(address=address, log_to_driver=True, runtime_env={"env_vars": env})
        return
    env.update(LOOPBACK_ENV)
    ray.init(
        num_cpus=cfg.num_cpus,
        include_dashboard=False,
        _node_ip_address="127.0.0.1",
        log_to_driver=True,
        runtime_env={"env_vars": env},
    )


def ray_map(fn: Callable[..., Any], items: Iterable[Any], *args: Any, cfg: RayConfig, label: str,
            num_cpus: float = 1, quiet: bool = False) -> list[Any]:
    """Run `fn(item, *args)` as one Ray task per item, at most `cfg.max_in_flight` at a time.

    Results come back in completion order; each is small (a stats dict), the data goes to disk.
    """
    import ray

    ensure_ray(cfg)
    remote_fn = ray.remote(num_cpus=num_cpus, max_retries=2)(fn)
    shared_args = [ray.put(arg) for arg in args]
    pending: list[Any] = []
    results: list[Any] = []
    items = list(items)
    with progress(label, len(items), quiet=quiet, unit="task") as bar:
        for item in items:
            if len(pending) >= cfg.max_in_flight:
                done, pending = ray.wait(pending, num_returns=1)
                results.extend(ray.get(done))
                bar.update(len(done))
            pending.append(remote_fn.remote(item, *shared_args))
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            results.extend(ray.get(done))
            bar.update(len(done))
    return results


class ActorQueue:
    """Calls one method of a fixed set of Ray actors, at most `per_actor` calls queued on each (the least
    loaded actor first), so a driver can stream any number of work units while holding only that many
    references. `submit` blocks while every actor is full; `drain` waits for the rest."""

    def __init__(self, actors: list[Any], method: str, per_actor: int, label: str, *, total: int | None = None,
                 quiet: bool = False):
        self.actors, self.method, self.per_actor = actors, method, per_actor
        self.pending: dict[Any, Any] = {}
        self.load = {id(actor): 0 for actor in actors}
        self.submitted = 0
        self.bar = progress(label, total, quiet=quiet)

    def submit(self, *args: Any) -> None:
        while not (free := [a for a in self.actors if self.load[id(a)] < self.per_actor]):
            self._wait_one()
        actor = min(free, key=lambda a: self.load[id(a)])
        self.pending[getattr(actor, self.method).remote(*args)] = actor
        self.load[id(actor)] += 1
        self.submitted += 1

    def _wait_one(self) -> None:
        import ray

        ready, _ = ray.wait(list(self.pending), num_returns=1)
        for ref in ready:
            actor = self.pending.pop(ref)
            self.load[id(actor)] -= 1
            ray.get(ref)  # raises the actor's error here, in the driver
            self.bar.update()

    def drain(self) -> None:
        try:
            while self.pending:
                self._wait_one()
        finally:
            self.bar.close()
