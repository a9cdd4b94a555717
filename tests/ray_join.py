"""`ray start --address ...` for a second node on this machine, on loopback.

Ray keeps every socket on 127.0.0.1 only in its single-machine mode (RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0, what
the project and its tests use), and in that mode its command line refuses to join a second node. This runs
the same command line with only that refusal lifted: the node's addresses stay 127.0.0.1 (its processes keep
the single-machine mode), so no traffic leaves loopback. For tests only.
"""

from __future__ import annotations

import sys
import types

import ray._private.ray_constants as constants
from ray.scripts import scripts


class _JoinAllowed(types.ModuleType):
    ENABLE_RAY_CLUSTER = True

    def __getattr__(self, name: str):
        return getattr(constants, name)


scripts.ray_constants = _JoinAllowed("ray_constants")
sys.argv = ["ray", *sys.argv[1:]]
sys.exit(scripts.main())
