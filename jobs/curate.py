"""Ray job entry point for the whole pipeline.

    ray job submit --working-dir . -- python -m jobs.curate --config jobs/configs/demo.yaml

Connects to the cluster named by RAY_ADDRESS (set by `ray job submit`), or starts a local Ray on 127.0.0.1.
"""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    from pipeline.cli import main as curate_main

    args = list(sys.argv[1:] if argv is None else argv)
    return curate_main(["run", *args])


if __name__ == "__main__":  # Ray and vLLM re-import __main__ in worker processes
    sys.exit(main())
