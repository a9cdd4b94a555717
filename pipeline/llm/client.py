"""Async client for an OpenAI-compatible chat endpoint (vLLM): bounded concurrency, bounded retries with
back-off, an on-disk response cache, and counters. Task-agnostic: annotate and rewrite both call `chat`.

    async with LLMClient(url, model, cache_dir=...) as client:
        completion = await client.chat(messages, schema=quality_schema(), max_tokens=160, temperature=0)

Retried (with exponential back-off and jitter, honouring Retry-After): HTTP 429 and 5xx, timeouts, lost
connections, and a 200 whose body is not a chat completion. Not retried: other 4xx (the request itself is
wrong). After `max_retries` the call raises `LLMError(kind)`; the caller records it and moves on.

Except at the start: while no request of the client has succeeded, an answer 401, 403 or 404 says the
endpoint, model or key is wrong, not the page, so the call raises `EndpointRejected` (a `StageStopped`, not an
`LLMError`): it propagates out of the stage's `asyncio.gather` and stops the stage before a shard is marked
done, and every other request of the client, in flight or queued, raises it too instead of being recorded.
Once one request has succeeded, a 4xx is that request's `LLMError` again.

The cache key is the hash of everything that determines the answer: model, messages (the prompt's
instructions, hence its hash, plus the page text), schema, max_tokens and sampling parameters. A rerun
after a crash, or with a larger sample, only pays for requests it has not made before. Only complete
HTTP answers are cached (a malformed model answer is cached too: asking again at temperature 0 with the
same seed would give the same text).

Logprobs: a request with `logprobs=True, top_logprobs=N` among its parameters (annotate's score requests)
gets them back from vLLM, also under a json_schema response format. Of those, the completion keeps only
what a score distribution needs: for each integer field of the answer schema, the top alternatives at the
token where its value is generated (`Completion.logprobs`, see `pipeline.llm.parse.value_logprobs`); the
cache stores them with the answer. An answer without them (a server that does not return them) is still
an answer: its `logprobs` is None.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import random
import time
import uuid
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pipeline.config import LLMConfig
from pipeline.errors import CurateError, StageStopped
from pipeline.llm.parse import integer_fields, value_logprobs

RETRYABLE_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504})
# Answers to the first requests that stop the stage (EndpointRejected): wrong URL or model, refused key.
FATAL_FIRST_STATUS = frozenset({401, 403, 404})


@dataclass(frozen=True)
class Completion:
    text: str
    finish_reason: str | None
    prompt_tokens: int
    completion_tokens: int
    latency_s: float
    cached: bool
    model: str
    # {field: {"prefix", "token", "logprob", "top": [[token, logprob], ...]}} at the token where each integer
    # field's value starts; None when logprobs were not requested or not returned
    logprobs: dict[str, Any] | None = None


class LLMUnavailable(CurateError):
    """The configured server does not answer, or does not serve the configured model."""


class EndpointRejected(StageStopped):
    """The server answered 401, 403 or 404 before any request of the client succeeded: llm.url, llm.model
    or the API key is wrong, so the stage stops instead of recording every page as an error."""


def _excerpt(text: str, limit: int = 200) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _says_model_missing(text: str) -> bool:
    """vLLM (and OpenAI) answer an unknown model with 404 "The model `x` does not exist."."""
    lowered = text.lower()
    return "model" in lowered and "does not exist" in lowered


def _key_advice(api_key_env: str | None, key_sent: bool) -> str:
    if not api_key_env:
        return "the API key was refused" if key_sent else "no API key was sent"
    if key_sent:
        return f"the key in ${api_key_env} (llm.api_key_env) was refused: set ${api_key_env} to the server's key"
    return f"no API key was sent: set ${api_key_env} (llm.api_key_env) to the server's key"


def check_server(llm_cfg, stage: str, timeout_s: float = 10.0) -> None:
    """Fail fast, before any request of a stage is sent, when nothing answers at llm.url, `<url>/models`
    is not found (not an API root), the key is refused (401/403), or it serves another model: otherwise every
    request would be retried and recorded as an error."""
    import urllib.error
    import urllib.request

    url = llm_cfg.url.rstrip("/") + "/models"
    api_key = os.environ.get(llm_cfg.api_key_env)
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {api_key}"} if api_key else {})
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            served = [m.get("id") for m in json.loads(response.read()).get("data", [])]
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            raise LLMUnavailable(f"{stage}: {url} answered HTTP 404: llm.url={llm_cfg.url} is not an "
                                 "OpenAI-compatible API root; pass the server's API root, the URL ending in /v1 "
                                 "under which it serves /models and /chat/completions (--llm-url)") from None
        if exc.code in (401, 403):
            raise LLMUnavailable(f"{stage}: {url} answered HTTP {exc.code}: "
                                 f"{_key_advice(llm_cfg.api_key_env, bool(api_key))}") from None
        return  # it answers, but without a usable /models route: let the first requests say what is wrong
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise LLMUnavailable(f"{stage}: no LLM server answering at {llm_cfg.url} ({exc}); start one with "
                             "`curate llm serve --model DIR` or pass --llm-url") from None
    if served and llm_cfg.model not in served:
        raise LLMUnavailable(f"{stage}: {llm_cfg.url} serves {served}, not llm.model={llm_cfg.model!r} "
                             "(pass --llm-model)")


class LLMError(Exception):
    """A request that failed for good; `kind` is snake_case (http_500, timeout, connection_error, ...)."""

    def __init__(self, kind: str, detail: str, attempts: int):
        super().__init__(f"{kind} after {attempts} attempt(s): {detail}")
        self.kind = kind
        self.detail = detail
        self.attempts = attempts


@dataclass
class ClientStats:
    requests: int = 0  # HTTP attempts sent (each retry counts)
    completions: int = 0  # successful fresh answers
    cache_hits: int = 0
    retries: int = 0
    failures: Counter = field(default_factory=Counter)  # final failures by kind
    prompt_tokens: int = 0  # fresh answers only: what the server actually processed
    completion_tokens: int = 0

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["failures"] = dict(self.failures)
        return data


def canonical_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, ensure_ascii=False, separators=(",", ":"))


class ResponseCache:
    """One small JSON file per answer under `folder/<key[:2]>/<key>.json`, written atomically, so several
    processes (Ray actors) can share a cache folder without locks."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)

    @staticmethod
    def key(request: dict[str, Any]) -> str:
        return hashlib.sha256(canonical_json(request).encode()).hexdigest()

    def _path(self, key: str) -> Path:
        return self.folder / key[:2] / f"{key}.json"

    def get(self, key: str) -> dict[str, Any] | None:
        try:
            return json.loads(self._path(key).read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return None

    def put(self, key: str, record: dict[str, Any]) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
        tmp.write_text(canonical_json(record))
        os.replace(tmp, path)


def response_format(schema: dict[str, Any], name: str = "answer") -> dict[str, Any]:
    """The request field that constrains the answer to `schema` (vLLM: structured outputs via xgrammar).
    The older guided-decoding request fields are gone from vLLM: it accepts them and silently returns
    unconstrained text, so only this field is ever sent."""
    return {"type": "json_schema", "json_schema": {"name": name, "schema": schema, "strict": True}}


def request_body(model: str, messages: list[dict[str, str]], *, schema: dict[str, Any] | None = None,
                 schema_name: str = "answer", max_tokens: int = 256, **params: Any) -> dict[str, Any]:
    """The chat-completions request body; also the response cache's key material (the in-process engine
    backend builds the same body, so both backends share cache entries)."""
    body: dict[str, Any] = {"model": model, "messages": messages, "max_tokens": max_tokens, **params}
    if schema is not None:
        body["response_format"] = response_format(schema, schema_name)
    return body


def kept_logprobs(body: dict[str, Any] | None, choice: dict[str, Any], text: str) -> dict[str, Any] | None:
    """What a completion keeps of its logprobs: the alternatives at each integer field's value token, when
    the request asked for logprobs and the answer schema has such fields. Never raises: odd or missing
    logprobs are simply not kept."""
    if not body or not body.get("logprobs"):
        return None
    schema = ((body.get("response_format") or {}).get("json_schema") or {}).get("schema")
    fields = integer_fields(schema)
    content = (choice.get("logprobs") or {}).get("content") if isinstance(choice.get("logprobs"), dict) else None
    if not fields or not isinstance(content, list):
        return None
    try:
        return value_logprobs(text, content, fields)
    except (KeyError, TypeError, ValueError, AttributeError):
        return None


class LLMClient:
    def __init__(self, url: str, model: str, *, api_key: str | None = None, max_concurrency: int = 16,
                 timeout_s: float = 120.0, max_retries: int = 4, retry_backoff_s: float = 0.5,
                 max_backoff_s: float = 30.0, cache_dir: str | Path | None = None,
                 api_key_env: str | None = None, stage: str | None = None):
        self.url = url.rstrip("/")
        self.model = model
        self._api_key = api_key  # sent as a header, never printed (see __repr__)
        self.api_key_env = api_key_env  # named in the EndpointRejected message of a 401/403
        self.stage = stage  # prefixes the EndpointRejected message ("annotate: ...")
        self._succeeded = False  # one request got a chat completion: later 4xx are per-request errors
        self._fatal: str | None = None  # the EndpointRejected message, once the first requests were rejected
        self.max_concurrency = max_concurrency
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self.retry_backoff_s = retry_backoff_s
        self.max_backoff_s = max_backoff_s
        self.cache = ResponseCache(cache_dir) if cache_dir else None
        self.stats = ClientStats()
        self._http = None
        self._loop = None
        self._slots: asyncio.Semaphore | None = None

    @classmethod
    def from_config(cls, cfg: LLMConfig, cache_dir: str | Path | None = None, stage: str | None = None) -> LLMClient:
        """From an LLMConfig; the API key comes from the environment variable it names."""
        return cls(cfg.url, cfg.model, api_key=os.environ.get(cfg.api_key_env) or None,
                   max_concurrency=cfg.max_concurrency, timeout_s=cfg.timeout_s, max_retries=cfg.max_retries,
                   retry_backoff_s=cfg.retry_backoff_s, cache_dir=cache_dir or cfg.cache_dir,
                   api_key_env=cfg.api_key_env, stage=stage)

    def __repr__(self) -> str:
        return (f"LLMClient(url={self.url!r}, model={self.model!r}, api_key={'set' if self._api_key else 'unset'}, "
                f"max_concurrency={self.max_concurrency})")

    def _session(self):
        """The HTTP session and concurrency slots of the running event loop (made on first use)."""
        import httpx

        loop = asyncio.get_running_loop()
        if self._http is None or self._loop is not loop:
            headers = {"Authorization": f"Bearer {self._api_key}"} if self._api_key else {}
            self._http = httpx.AsyncClient(
                headers=headers, timeout=httpx.Timeout(self.timeout_s, connect=min(10.0, self.timeout_s)),
                limits=httpx.Limits(max_connections=self.max_concurrency,
                                    max_keepalive_connections=self.max_concurrency),
            )
            self._slots = asyncio.Semaphore(self.max_concurrency)
            self._loop = loop
        return self._http, self._slots

    async def aclose(self) -> None:
        if self._http is not None:
            await self._http.aclose()
            self._http = None

    async def __aenter__(self) -> LLMClient:
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        await self.aclose()

    async def chat(self, messages: list[dict[str, str]], *, schema: dict[str, Any] | None = None,
                   schema_name: str = "answer", max_tokens: int = 256, **params: Any) -> Completion:
        """One chat completion (cached, retried). `params` are sampling parameters (temperature, seed, ...)."""
        body = request_body(self.model, messages, schema=schema, schema_name=schema_name, max_tokens=max_tokens,
                            **params)
        key = ResponseCache.key(body) if self.cache else None
        if key is not None and (hit := self.cache.get(key)) is not None:
            self.stats.cache_hits += 1
            return Completion(**{**hit, "cached": True})
        http, slots = self._session()
        async with slots:
            self._raise_if_rejected()  # queued behind requests the server rejected: do not send it
            completion = await self._post_with_retries(http, body)
        if key is not None:
            self.cache.put(key, {**asdict(completion), "cached": False})
        return completion

    def _raise_if_rejected(self) -> None:
        if self._fatal is not None:
            raise EndpointRejected(self._fatal)

    def _rejection(self, status: int, text: str) -> str:
        """The EndpointRejected message for a first answer `status` (401, 403, 404) with body `text`."""
        prefix = f"{self.stage}: " if self.stage else ""
        head = f"{prefix}{self.url} answered HTTP {status} to the first requests ({_excerpt(text)})"
        if status in (401, 403):
            advice = _key_advice(self.api_key_env, bool(self._api_key))
        elif _says_model_missing(text):
            advice = f"it does not serve llm.model={self.model!r}: check llm.model (--llm-model)"
        else:
            advice = (f"{self.url}/chat/completions does not exist: check llm.url (the API root, ending in /v1) "
                      "/ llm.model")
        return f"{head}: {advice}; nothing was marked done"

    def _backoff(self, attempt: int, retry_after: str | None) -> float:
        if retry_after:
            try:
                return min(float(retry_after), self.max_backoff_s)
            except ValueError:
                pass
        return min(self.retry_backoff_s * (2**attempt), self.max_backoff_s) * (0.5 + random.random())

    async def _post_with_retries(self, http, body: dict[str, Any]) -> Completion:
        import httpx

        kind, detail = "unknown", ""
        for attempt in range(self.max_retries + 1):
            self._raise_if_rejected()  # another request found the endpoint wrong while this one waited
            retry_after = None
            started = time.perf_counter()
            self.stats.requests += 1
            try:
                response = await http.post(f"{self.url}/chat/completions", json=body)
            except httpx.TimeoutException as exc:
                kind, detail = "timeout", f"no answer within {self.timeout_s}s ({type(exc).__name__})"
            except httpx.TransportError as exc:
                kind, detail = "connection_error", f"{type(exc).__name__}: {exc}"
            else:
                latency = time.perf_counter() - started
                if response.status_code == 200:
                    completion = self._completion(response, latency, body)
                    if isinstance(completion, Completion):
                        self._succeeded = True
                        return completion
                    kind, detail = "bad_response", completion
                elif response.status_code in FATAL_FIRST_STATUS and not self._succeeded:
                    if self._fatal is None:
                        self._fatal = self._rejection(response.status_code, response.text)
                    raise EndpointRejected(self._fatal)
                else:
                    kind, detail = f"http_{response.status_code}", response.text[:300]
                    retry_after = response.headers.get("retry-after")
                    if response.status_code not in RETRYABLE_STATUS:
                        if response.status_code == 400 and "context length" in response.text:
                            kind = "prompt_too_long"
                        break
            if attempt < self.max_retries:
                self.stats.retries += 1
                await asyncio.sleep(self._backoff(attempt, retry_after))
        self._raise_if_rejected()  # not this page's error: the endpoint was rejected meanwhile
        self.stats.failures[kind] += 1
        raise LLMError(kind, detail, attempts=attempt + 1)

    def _completion(self, response, latency: float, body: dict[str, Any] | None = None) -> Completion | str:
        """A Completion from a 200 response, or a description of what was wrong with the body."""
        try:
            data = response.json()
            choice = data["choices"][0]
            text = choice["message"]["content"]
            usage = data.get("usage") or {}
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            return f"not a chat completion ({type(exc).__name__}): {response.text[:200]!r}"
        completion = Completion(text=text or "", finish_reason=choice.get("finish_reason"),
                                prompt_tokens=int(usage.get("prompt_tokens") or 0),
                                completion_tokens=int(usage.get("completion_tokens") or 0),
                                latency_s=round(latency, 4), cached=False, model=data.get("model") or self.model,
                                logprobs=kept_logprobs(body, choice, text or ""))
        self.stats.completions += 1
        self.stats.prompt_tokens += completion.prompt_tokens
        self.stats.completion_tokens += completion.completion_tokens
        return completion
