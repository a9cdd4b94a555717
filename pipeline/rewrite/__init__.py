"""Rewrite stage: rephrase corpus pages with the served Llama in styles routed by quality -> synthetic/.

- `chunking`: pages split on paragraph boundaries within a token budget.
- `checks`: the pure checks on an answer and on a reassembled rewrite (each failure a snake_case reason).
- `stage`: routing, requests, one shard's rewrite on a Ray actor, the driver, the dataset card, the CLI.

See docs/rewrite.md.
"""

from pipeline.rewrite.stage import STAGE, register_cli, route, run

__all__ = ["STAGE", "register_cli", "route", "run"]
