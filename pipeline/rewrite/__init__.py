"""Rewrite stage: rephrase corpus pages with the served Llama in styles routed by quality -> synthetic/.

- `chunking`: pages split on paragraph boundaries within a token budget.
- `checks`: the pure checks on an answer and on a reassembled rewrite (each failure a snake_case reason).
- `faithfulness`: what a rewrite keeps of its source chunk and what it invents (pure; the score the stage
  decides on beside the classifier's quality probability).
- `stage`: routing, requests, assembly, `RewriteStage` (an LLM stage, pipeline.llm.stage), the dataset card.

See docs/rewrite.md.
"""

from pipeline.rewrite.stage import STAGE, RewriteStage, route

__all__ = ["STAGE", "RewriteStage", "route"]
