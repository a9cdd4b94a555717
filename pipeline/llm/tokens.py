"""Token counts in the served model's tokenizer: chunk budgets (rewrite) and kept tokens (the run summary).

Tokens are counted with the served model's own tokenizer when its folder is on this machine
(`tokenizer.json`, read with the `tokenizers` library: fast, no model load), else with a documented
estimate (`estimate_tokens`).
"""

from __future__ import annotations

import math
from pathlib import Path

from pipeline.config import ConfigError, RunConfig
from pipeline.io import RunLayout


def estimate_tokens(text: str) -> int:
    """Token count estimate when no tokenizer is at hand: one token per 3 UTF-8 bytes.

    Llama-3-style BPE tokenizers spend ~4 characters (bytes) per token on English prose and about one
    token per CJK character (3 bytes), so this over-counts English by ~30% and is about right for CJK:
    chunks come out a little smaller than the budget, never larger."""
    return math.ceil(len(text.encode("utf-8")) / 3)


def token_ids(tokenizer, texts: list[str | None]) -> list[list[int]]:
    """Token ids of each text with a `tokenizers.Tokenizer`, no special token added (the fast path without
    offsets when the library has one): the one encoding the run summary, the mix and tokenize use."""
    fast = getattr(tokenizer, "encode_batch_fast", None) or tokenizer.encode_batch
    return [encoding.ids for encoding in fast([text or "" for text in texts], add_special_tokens=False)]


class TokenCounter:
    """`count(text)` and `count_many(texts)` with a local tokenizer, or the estimate.

    `source` is a model or tokenizer folder holding `tokenizer.json` (Hugging Face format); None or a folder
    without one gives the estimate. `name` says which was used (recorded in the dataset card)."""

    def __init__(self, source: str | Path | None = None):
        self._tokenizer = None
        self.name = "estimate_utf8_bytes_div_3"
        path = Path(source) / "tokenizer.json" if source else None
        if path is not None and path.is_file():
            from tokenizers import Tokenizer

            self._tokenizer = Tokenizer.from_file(str(path))
            self.name = f"tokenizer:{Path(source).name}"

    @property
    def exact(self) -> bool:
        return self._tokenizer is not None

    def count(self, text: str) -> int:
        return self.count_many([text])[0]

    def count_many(self, texts: list[str]) -> list[int]:
        if self._tokenizer is None:
            return [estimate_tokens(t) for t in texts]
        return [len(ids) for ids in token_ids(self._tokenizer, texts)]


def resolve_tokenizer(cfg: RunConfig) -> str | None:
    """The first folder holding the served model's tokenizer.json: rewrite.tokenizer, llm.engine_model,
    llm.tiny_model_dir, or the demo's <out>/tiny-llama; None (the estimate) when there is none."""
    candidates = [cfg.rewrite.tokenizer, cfg.llm.engine_model, cfg.llm.tiny_model_dir]
    if cfg.llm.serve_tiny_model:
        candidates.append(str(RunLayout(cfg.out).root / "tiny-llama"))
    if cfg.rewrite.tokenizer and not (Path(cfg.rewrite.tokenizer) / "tokenizer.json").is_file():
        raise ConfigError(f"rewrite.tokenizer: no tokenizer.json in {cfg.rewrite.tokenizer}")
    return next((c for c in candidates if c and (Path(c) / "tokenizer.json").is_file()), None)
