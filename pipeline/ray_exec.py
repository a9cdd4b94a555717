"""Ray adapter: start or join a cluster, and map a stage function over input units with bounded in-flight
tasks (the driver never holds more than `max_in_flight` results or references at once)."""

from __future__ import annotations

import os
import sys
import time
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
