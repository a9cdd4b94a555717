"""The LLM stage: a shard's pages -> requests -> answers from the served model -> rows. Annotate (labels) and
rewrite (synthetic pages) are two uses of it; each says only what its pages need (`requests`) and what the
answers make (`result`).

Shared here, once: the caller of the configured backend (`llm.backend=server`: the async HTTP client with its
bounded concurrency, retries and on-disk response cache; `engine`: vLLM's in-process engine, for the stages
that support it), the actors it runs on (`resources`), the pre-flight check of the endpoint, the one
transient-error rule (`is_transient`: a shard with such an error is written but not done, and the next run
redoes it, paying only for what failed thanks to the cache), and the `this_run` block of the summary (the
clients' counters: requests, cache hits, retries, failures, tokens, rates).

A request that fails for good is kept as a value (an `LLMError`, recorded on its row or decision). An
endpoint that rejects the first requests (401/403/404: wrong url, model or key) raises `EndpointRejected`
instead: it stops the stage before the shard is marked done, so a rerun with the cause fixed redoes it.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from pipeline.config import ConfigError, RunConfig
from pipeline.io import RunLayout
from pipeline.llm.client import RETRYABLE_STATUS, ClientStats, Completion, LLMClient, LLMError, check_server
from pipeline.runtime.stage import Resources, Shard, ShardResult, Stage

# The in-process engine: loopback, offline, a small CPU KV cache (see pipeline.llm.server.server_env).
ENGINE_ENV = {"VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_HOST_IP": "127.0.0.1", "HF_HUB_OFFLINE": "1",
              "VLLM_NO_USAGE_STATS": "1"}

Answer = Completion | LLMError


def is_transient(error: str | None) -> bool:
    """A request error (`request_<kind>`) worth retrying on a rerun: exactly what the client itself retries
    (its RETRYABLE_STATUS, timeouts, lost connections, unreadable bodies). A 4xx such as a prompt longer than
    the model's context fails the same way every time."""
    if not error or not error.startswith("request_"):
        return False
    kind = error.removeprefix("request_")
    status = kind.removeprefix("http_")
    if status != kind:
        return status.isdigit() and int(status) in RETRYABLE_STATUS
    return kind in ("timeout", "connection_error", "bad_response")


def sampling_params(llm_cfg) -> dict[str, Any]:
    params: dict[str, Any] = {"temperature": llm_cfg.temperature}
    if llm_cfg.seed is not None:
        params["seed"] = llm_cfg.seed
    return params


def cache_dir(cfg: RunConfig) -> str:
    """The response cache: llm.cache_dir, else <out>/.llm_cache."""
    return cfg.llm.cache_dir or str(RunLayout(cfg.out).root / ".llm_cache")


async def ask_client(client: LLMClient, requests: Sequence[Any]) -> list[Answer]:
    """Every request through the shared HTTP client (objects with messages, schema, task, max_tokens, params),
    answers in order; a request that failed for good is its LLMError. EndpointRejected (or a bug) is raised,
    once every request has ended (the client fails the others fast)."""

    async def one(request) -> Answer:
        try:
            return await client.chat(request.messages, schema=request.schema, schema_name=request.task,
                                     max_tokens=request.max_tokens, **request.params)
        except LLMError as exc:
            return exc

    answers = await asyncio.gather(*(one(r) for r in requests), return_exceptions=True)
    for answer in answers:
        if isinstance(answer, BaseException) and not isinstance(answer, LLMError):
            raise answer
    return list(answers)


@dataclass
class LLMWorker:
    """What `setup` builds in each actor: the caller (async `(requests) -> [Completion | LLMError]`), its
    counters, the HTTP client when there is one (closed by `teardown`), and the stage's own per-worker state."""

    call: Callable[[Sequence[Any]], Awaitable[list[Answer]]]
    stats: ClientStats
    client: LLMClient | None = None
    state: Any = None
    first_shard_at: float | None = None  # wall clock: the actor start-up ends here


class Requests(list):
    """A shard's requests, in order, with what the stage planned on the way (`plan`), handed back to `result`."""

    def __init__(self, requests: Sequence[Any] = (), plan: Any = None):
        super().__init__(requests)
        self.plan = plan


class LLMStage(Stage):
    """Base of the stages whose shards are answered by the LLM. Subclasses set `name`, `section` (whose
    `num_actors` sizes the pool), `outputs`, and implement `plan`, `requests` and `result`."""

    role = "side"
    needs_llm = True
    supports_engine: ClassVar[bool] = False
    # Shards in flight per server-backend actor: while one shard's rows are built, the next one's requests wait.
    per_actor: ClassVar[int] = 2

    def __init__(self, cfg: RunConfig):
        super().__init__(cfg)
        self._started: float | None = None  # this run's shards began (perf_counter, driver)
        self._started_wall: float | None = None

    # ---- to implement (and `plan`) ----
    def requests(self, worker: LLMWorker, shard: Shard) -> Sequence[Any]:
        """The requests the shard's pages need (objects with messages, schema, task, max_tokens, params)."""
        raise NotImplementedError

    def result(self, worker: LLMWorker, shard: Shard, requests: Sequence[Any], answers: list[Answer]) -> ShardResult:
        """The shard's rows, decisions, counts and transient-error count from its requests' answers."""
        raise NotImplementedError

    def setup_state(self) -> Any:
        """Per-worker state of the stage besides the caller (a tokenizer, a language model)."""
        return None

    # ---- driver ----
    def check(self) -> None:
        llm = self.cfg.llm
        if llm.backend == "engine" and not self.supports_engine:
            raise ConfigError(f"llm.backend: {self.name} supports llm.backend=server only (point llm.url at a "
                              "vLLM server)")
        if llm.backend == "engine" and not llm.engine_model:
            raise ConfigError("llm.engine_model: llm.backend=engine needs llm.engine_model (a model folder)")

    def prepare(self, shards: list[Shard], executor) -> None:
        # The endpoint is checked here, not in `check()`: the runner calls `prepare` only when shards are left
        # to run, so a rerun with nothing to do needs no server. It still comes before any request is sent.
        self._started, self._started_wall = time.perf_counter(), time.time()
        if self.cfg.llm.backend == "server":
            self.check_endpoint()

    def check_endpoint(self) -> None:
        """Nothing answering at llm.url, a refused key, another model served: LLMUnavailable, before any request."""
        check_server(self.cfg.llm, self.name)

    def resources(self) -> Resources:
        num_actors = getattr(self.cfg, self.section).num_actors
        llm = self.cfg.llm
        if llm.backend == "engine":
            # one model copy per actor (on GPU clusters, one per GPU); the engine call blocks its actor
            return Resources(kind="actor", num_cpus=1, per_actor=1, num_actors=num_actors,
                             num_gpus=llm.engine_num_gpus, env=dict(ENGINE_ENV))
        # Waiting on HTTP costs little CPU: a fraction of a core keeps actors schedulable next to other work.
        return Resources(kind="actor", num_cpus=0.1, per_actor=self.per_actor, num_actors=num_actors)

    def finish(self, summary: dict[str, Any], markers: list[dict[str, Any]]) -> dict[str, Any]:
        return {"this_run": self.this_run(summary.get("counters") or [])}

    def this_run(self, counters: list[dict[str, Any] | None]) -> dict[str, Any]:
        """The clients' counters of this run, summed over the actors, with rates over this run's wall time."""
        counters = [c for c in counters if c]
        seconds = time.perf_counter() - self._started if self._started is not None else 0.0
        firsts = [c["first_shard_at"] for c in counters if c.get("first_shard_at")]
        startup = max(0.0, min(firsts) - self._started_wall) if firsts and self._started_wall else 0.0

        def total(key: str) -> int:
            return sum(c.get(key, 0) for c in counters)

        def rate(n: float, over: float, digits: int = 3) -> float:
            return round(n / over, digits) if over > 0 and n else 0.0

        requests, tokens = total("requests"), total("completion_tokens")
        return {
            "seconds": round(seconds, 3),
            "requests": requests,  # HTTP attempts (each retry counts); engine: prompts run
            "completions": total("completions"),
            "cache_hits": total("cache_hits"),
            "retries": total("retries"),
            "failures": dict(sum((Counter(c.get("failures", {})) for c in counters), Counter())),
            "prompt_tokens": total("prompt_tokens"),
            "completion_tokens": tokens,
            "requests_per_s": rate(requests, seconds),
            "answers_per_s": rate(total("completions") + total("cache_hits"), seconds),
            "completion_tokens_per_s": rate(tokens, seconds, 1),
            # actor start-up (worker process, imports; the model load for the engine backend) is a fixed cost
            "startup_s": round(startup, 3),
            "steady_requests_per_s": rate(requests, seconds - startup),
        }

    # ---- worker ----
    def setup(self) -> LLMWorker:
        if self.cfg.llm.backend == "engine":
            from pipeline.llm.engine import EngineCaller

            engine = EngineCaller.from_config(self.cfg.llm, cache_dir=cache_dir(self.cfg))
            worker = LLMWorker(call=engine.complete_async, stats=engine.stats)
        else:
            client = LLMClient.from_config(self.cfg.llm, cache_dir=cache_dir(self.cfg), stage=self.name)

            async def call(requests: Sequence[Any]) -> list[Answer]:
                return await ask_client(client, requests)

            worker = LLMWorker(call=call, stats=client.stats, client=client)
        worker.state = self.setup_state()
        return worker

    async def process(self, worker: LLMWorker, shard: Shard) -> ShardResult:
        if worker.first_shard_at is None:
            worker.first_shard_at = time.time()
        requests = self.requests(worker, shard)
        answers = await worker.call(requests) if requests else []
        return self.result(worker, shard, requests, answers)

    async def teardown(self, worker: LLMWorker) -> dict[str, Any]:
        if worker.client is not None:
            await worker.client.aclose()
        return {**worker.stats.to_json(), "first_shard_at": worker.first_shard_at}
