"""Shared fixtures: the bundled sample, one local Ray (loopback) for the whole test session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SAMPLE_WARCS = ROOT / "data" / "sample" / "warc"
SHARED_DATA = ROOT.parent / "shared" / "data"

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")


@pytest.fixture(scope="session")
def ray_local():
    """A local Ray bound to 127.0.0.1, shared by every test that runs a stage on Ray."""
    import ray

    from pipeline.config import RayConfig
    from pipeline.ray_exec import ensure_ray

    ensure_ray(RayConfig(num_cpus=2))
    yield ray
    ray.shutdown()


@pytest.fixture
def sample_warcs() -> list[str]:
    return sorted(str(p) for p in SAMPLE_WARCS.iterdir() if p.name.endswith((".warc.gz", ".warc")))
