"""In-process vLLM engine backend: `vllm.LLM.chat` with structured outputs, for GPU clusters where each Ray
actor owns a GPU and a model copy (no HTTP hop). It takes the same requests as the HTTP client (messages,
schema, max_tokens, sampling params), shares its response cache and counters, and annotate's prompts and
parsers are the same for both backends.

Works with the CPU build too (tested on the tiny model), which is how the tests exercise it.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pipeline.config import LLMConfig
from pipeline.llm.client import ClientStats, Completion, LLMError, ResponseCache, kept_logprobs, request_body


class EngineCaller:
    def __init__(self, model_dir: str, *, model_name: str, max_model_len: int = 8192,
                 cache_dir: str | Path | None = None, engine_kwargs: dict[str, Any] | None = None):
        # Loopback and offline, as for the server (see pipeline.llm.server.server_env).
        for key, value in {"VLLM_HOST_IP": "127.0.0.1", "HF_HUB_OFFLINE": "1", "VLLM_NO_USAGE_STATS": "1"}.items():
            os.environ.setdefault(key, value)
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
        from vllm import LLM

        self.model = model_name
        self.cache = ResponseCache(cache_dir) if cache_dir else None
        self.stats = ClientStats()
        kwargs = dict(dtype="bfloat16", max_model_len=max_model_len, enforce_eager=True, seed=0,
                      structured_outputs_config={"backend": "xgrammar", "disable_any_whitespace": True})
        kwargs.update(engine_kwargs or {})
        self.llm = LLM(model=str(model_dir), **kwargs)

    @classmethod
    def from_config(cls, cfg: LLMConfig, cache_dir: str | Path | None = None) -> EngineCaller:
        return cls(cfg.engine_model, model_name=cfg.model, max_model_len=cfg.engine_max_model_len,
                   cache_dir=cache_dir or cfg.cache_dir)

    @staticmethod
    def sampling_params(max_tokens: int, schema: dict[str, Any] | None, params: dict[str, Any]):
        """vLLM SamplingParams for a request's OpenAI-style params: `logprobs: true, top_logprobs: N` becomes
        vLLM's `logprobs=N` (the sampled token's logprob plus its N best alternatives per generated token)."""
        from vllm import SamplingParams
        from vllm.sampling_params import StructuredOutputsParams

        structured = StructuredOutputsParams(json=schema) if schema is not None else None
        params = dict(params)
        wants_logprobs, top = params.pop("logprobs", False), params.pop("top_logprobs", 0)
        if wants_logprobs:
            params["logprobs"] = int(top or 0)
        return SamplingParams(max_tokens=max_tokens, structured_outputs=structured, **params)

    def choice_logprobs(self, choice) -> dict[str, Any] | None:
        """vLLM's per-token logprobs (one {token_id: Logprob} per generated token) as the OpenAI chat
        `logprobs.content` the HTTP server returns, so both backends keep them through one parser."""
        if not choice.logprobs:
            return None
        tokenizer = self.llm.get_tokenizer()

        def entry(token_id: int, logprob) -> dict[str, Any]:
            text = logprob.decoded_token if logprob.decoded_token is not None else tokenizer.decode([token_id])
            return {"token": text, "logprob": float(logprob.logprob), "bytes": list(text.encode("utf-8"))}

        content = []
        for token_id, alternatives in zip(choice.token_ids, choice.logprobs):
            if token_id not in alternatives:
                return None
            ranked = sorted(alternatives.items(), key=lambda kv: kv[1].rank if kv[1].rank is not None else 0)
            content.append({**entry(token_id, alternatives[token_id]),
                            "top_logprobs": [entry(tid, lp) for tid, lp in ranked]})
        return {"content": content}

    def complete(self, requests: Sequence[Any]) -> list[Completion | LLMError]:
        """Answer label requests (objects with messages, schema, task, max_tokens, params) in one batch."""
        results: list[Completion | LLMError | None] = [None] * len(requests)
        keys: list[str | None] = []
        bodies: list[dict[str, Any]] = []  # the request as the HTTP client would send it: the cache key
        misses: list[int] = []
        for index, request in enumerate(requests):
            body = request_body(self.model, request.messages, schema=request.schema, schema_name=request.task,
                                max_tokens=request.max_tokens, **request.params)
            bodies.append(body)
            key = ResponseCache.key(body) if self.cache else None
            keys.append(key)
            hit = self.cache.get(key) if key else None
            if hit is not None:
                self.stats.cache_hits += 1
                results[index] = Completion(**{**hit, "cached": True})
            else:
                misses.append(index)
        if misses:
            started = time.perf_counter()
            self.stats.requests += len(misses)
            try:
                outputs = self.llm.chat([requests[i].messages for i in misses],
                                        [self.sampling_params(requests[i].max_tokens, requests[i].schema,
                                                              requests[i].params) for i in misses],
                                        use_tqdm=False)
            except Exception as exc:  # noqa: BLE001 - a failed batch is an error on each of its requests
                self.stats.failures["engine_error"] += len(misses)
                for i in misses:
                    results[i] = LLMError("engine_error", f"{type(exc).__name__}: {exc}"[:300], attempts=1)
                return results  # type: ignore[return-value]
            # The batch runs as a whole: each request's latency is the batch's wall time.
            latency = round(time.perf_counter() - started, 4)
            for i, output in zip(misses, outputs):
                choice = output.outputs[0]
                try:
                    logprobs = kept_logprobs(bodies[i], {"logprobs": self.choice_logprobs(choice)}, choice.text)
                except (AttributeError, KeyError, TypeError, ValueError):  # odd logprobs: the sampled score only
                    logprobs = None
                completion = Completion(text=choice.text, finish_reason=choice.finish_reason,
                                        prompt_tokens=len(output.prompt_token_ids or []),
                                        completion_tokens=len(choice.token_ids), latency_s=latency, cached=False,
                                        model=self.model, logprobs=logprobs)
                self.stats.completions += 1
                self.stats.prompt_tokens += completion.prompt_tokens
                self.stats.completion_tokens += completion.completion_tokens
                if keys[i]:
                    self.cache.put(keys[i], {**completion.__dict__})
                results[i] = completion
        return results  # type: ignore[return-value]

    async def complete_async(self, requests: Sequence[Any]) -> list[Completion | LLMError]:
        # The engine call blocks its actor; nothing else shares the actor's loop.
        return self.complete(requests)
