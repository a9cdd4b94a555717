"""The async client and the annotate stage against faults.

A real vLLM server cannot be made to answer 500, 429, a non-JSON body, a malformed answer despite the
schema, or to stall on demand, so these tests use a loopback stub HTTP server that scripts exactly those
faults (a deliberate fake, for faults only). The real server is covered in test_llm_server.py and
test_annotate.py.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from pipeline import schemas
from pipeline.config import ConfigError, LLMConfig, load_config
from pipeline.errors import StageStopped
from pipeline.io import RunLayout, read_dataset, write_parquet
from pipeline.llm.client import EndpointRejected, LLMClient, LLMError, LLMUnavailable, check_server
from stagehelpers import annotate_run

VALID = {"quality": '{"reason":"clear text","score":3}', "topics": '{"topics":["health"]}',
         "labels": '{"reason":"clear text","score":3,"topics":["health"],"format":["tutorial"]}'}


class StubLLM:
    """Loopback OpenAI-style stub. `script(body, attempt)` returns (status, payload, delay_s, headers), where
    attempt counts earlier requests with the same messages; every request body is recorded. GET requests
    (check_server's `/models`) are answered by `get_script(path)` -> (status, payload) when given, else 501."""

    def __init__(self, script, get_script=None):
        self.script = script
        self.bodies: list[dict] = []
        self.attempts: Counter = Counter()
        self.lock = threading.Lock()
        stub = self

        class Handler(BaseHTTPRequestHandler):
            # keep-alive like a real server: with HTTP/1.0 the stub closes every connection after one answer,
            # and a client reusing a pooled connection at that moment sees a spurious connection_error
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                key = json.dumps(body["messages"], sort_keys=True)
                with stub.lock:
                    stub.bodies.append(body)
                    attempt = stub.attempts[key]
                    stub.attempts[key] += 1
                status, payload, delay, headers = stub.script(body, attempt)
                time.sleep(delay)
                data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
                try:
                    self.send_response(status)
                    for name, value in headers.items():
                        self.send_header(name, value)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout)
                    pass

        if get_script is not None:
            def do_GET(handler):
                status, payload = get_script(handler.path)
                data = json.dumps(payload).encode()
                handler.send_response(status)
                handler.send_header("Content-Type", "application/json")
                handler.send_header("Content-Length", str(len(data)))
                handler.end_headers()
                handler.wfile.write(data)

            Handler.do_GET = do_GET

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


def completion(content: str, finish: str = "stop", logprobs: list | None = None) -> dict:
    choice = {"message": {"role": "assistant", "content": content}, "finish_reason": finish}
    if logprobs is not None:
        choice["logprobs"] = {"content": logprobs}
    return {"model": "stub", "choices": [choice], "usage": {"prompt_tokens": 11, "completion_tokens": 7}}


def score_logprobs(content: str, probs: dict[str, float]) -> list[dict]:
    """OpenAI-style logprobs of `content` as three tokens: before the score digit, the digit (with `probs` as
    its top alternatives), after it."""
    import math

    at = content.index('"score":') + len('"score":')
    token = lambda text, lp, top=(): {"token": text, "logprob": lp, "bytes": list(text.encode()),  # noqa: E731
                                      "top_logprobs": [{"token": t, "logprob": lp_t, "bytes": list(t.encode())}
                                                       for t, lp_t in top]}
    top = [(digit, math.log(p)) for digit, p in probs.items()]
    return [token(content[:at], 0.0), token(content[at], math.log(probs[content[at]]), top),
            token(content[at + 1:], 0.0)]


def task_of(body: dict) -> str:
    return body["response_format"]["json_schema"]["name"]


MESSAGES = [{"role": "user", "content": "rate: a page"}]


def chat(client: LLMClient, messages=MESSAGES, **kw):
    async def go():
        async with client:
            return await client.chat(messages, schema={"type": "object"}, schema_name="quality", max_tokens=20, **kw)

    return asyncio.run(go())


def test_5xx_and_429_are_retried_with_backoff_then_succeed(tmp_path):
    def script(body, attempt):
        if attempt == 0:
            return 500, {"error": "boom"}, 0, {}
        if attempt == 1:
            return 429, {"error": "slow down"}, 0, {"Retry-After": "0.2"}
        return 200, completion(VALID["quality"]), 0, {}

    with StubLLM(script) as stub:
        client = LLMClient(stub.url, "m", max_retries=3, retry_backoff_s=0.01)
        started = time.perf_counter()
        result = chat(client, temperature=0, seed=1)
        assert time.perf_counter() - started >= 0.2  # Retry-After was honoured
    assert result.text == VALID["quality"] and not result.cached
    assert client.stats.requests == 3 and client.stats.retries == 2 and client.stats.completions == 1
    assert (client.stats.prompt_tokens, client.stats.completion_tokens) == (11, 7)
    # the request is schema-constrained with response_format json_schema and carries nothing else
    body = stub.bodies[-1]
    assert set(body) == {"model", "messages", "max_tokens", "temperature", "seed", "response_format"}
    assert body["response_format"]["type"] == "json_schema" and body["response_format"]["json_schema"]["strict"]
    assert body["temperature"] == 0 and body["seed"] == 1 and body["max_tokens"] == 20


@pytest.mark.parametrize(
    ("status", "payload", "delay", "kind", "attempts"),
    [
        (500, {"error": "boom"}, 0, "http_500", 3),
        (503, {"error": "overloaded"}, 0, "http_503", 3),
        (200, b"<html>proxy error</html>", 0, "bad_response", 3),
        (200, {"choices": []}, 0, "bad_response", 3),
        (200, completion("x"), 1.0, "timeout", 3),
        (400, {"error": "bad request"}, 0, "http_400", 1),  # the request is wrong: retrying cannot help
        (400, {"error": "This model's maximum context length is 8192 tokens"}, 0, "prompt_too_long", 1),
    ],
)
def test_failures_are_bounded_and_named(status, payload, delay, kind, attempts):
    with StubLLM(lambda body, attempt: (status, payload, delay, {})) as stub:
        client = LLMClient(stub.url, "m", max_retries=2, retry_backoff_s=0.01, timeout_s=0.3)
        with pytest.raises(LLMError) as error:
            chat(client)
    assert error.value.kind == kind and error.value.attempts == attempts
    assert len(stub.bodies) == attempts == client.stats.requests
    assert client.stats.failures == Counter({kind: 1})


def test_connection_refused_is_retried_then_reported():
    from pipeline.llm.server import free_port

    client = LLMClient(f"http://127.0.0.1:{free_port()}/v1", "m", max_retries=2, retry_backoff_s=0.01)
    with pytest.raises(LLMError) as error:
        chat(client)
    assert error.value.kind == "connection_error" and client.stats.requests == 3


def test_cache_answers_a_repeat_without_a_request_and_keys_on_everything(tmp_path):
    with StubLLM(lambda body, attempt: (200, completion(VALID["quality"]), 0, {})) as stub:
        first = chat(LLMClient(stub.url, "m", cache_dir=tmp_path))
        again = LLMClient(stub.url, "m", cache_dir=tmp_path)
        second = chat(again)
        assert len(stub.bodies) == 1 and again.stats.requests == 0 and again.stats.cache_hits == 1
        assert second.cached and not first.cached and second.text == first.text
        # a different page, model or sampling parameter is a different key
        chat(again, messages=[{"role": "user", "content": "rate: another page"}])
        chat(LLMClient(stub.url, "other-model", cache_dir=tmp_path))
        chat(again, temperature=0.7)
        assert len(stub.bodies) == 4


def test_logprobs_keep_only_the_score_tokens_alternatives_and_are_cached(tmp_path):
    from pipeline.llm.parse import labels_schema

    answer = VALID["labels"]
    logprobs = score_logprobs(answer, {"3": 0.5, "4": 0.3, "2": 0.2})
    with StubLLM(lambda body, attempt: (200, completion(answer, logprobs=logprobs), 0, {})) as stub:
        schema = labels_schema(["health"], ["tutorial"])

        def ask(client, **params):
            async def go():
                async with client:
                    return await client.chat(MESSAGES, schema=schema, schema_name="labels", max_tokens=64, **params)
            return asyncio.run(go())

        first = ask(LLMClient(stub.url, "m", cache_dir=tmp_path), logprobs=True, top_logprobs=20)
        again = LLMClient(stub.url, "m", cache_dir=tmp_path)
        second = ask(again, logprobs=True, top_logprobs=20)
        plain = ask(LLMClient(stub.url, "m"))  # not asked for: not kept, even when the server sends them
    assert stub.bodies[0]["logprobs"] is True and stub.bodies[0]["top_logprobs"] == 20
    # only the score field's token: its prefix, the sampled digit, and the alternatives there
    assert set(first.logprobs) == {"score"} and first.logprobs["score"]["token"] == "3"
    assert sorted(t for t, _ in first.logprobs["score"]["top"]) == ["2", "3", "4"]
    assert again.stats.requests == 0 and second.cached and second.logprobs == first.logprobs
    assert plain.logprobs is None and len(stub.bodies) == 2


def test_api_key_is_sent_but_never_shown(monkeypatch):
    from pipeline.config import LLMConfig

    seen = []

    def script(body, attempt):
        return 200, completion(VALID["quality"]), 0, {}

    monkeypatch.setenv("CURATE_LLM_API_KEY", "sk-secret-123")
    with StubLLM(script) as stub:
        original = stub.server.RequestHandlerClass.do_POST

        def record(handler):
            seen.append(handler.headers.get("Authorization"))
            original(handler)

        stub.server.RequestHandlerClass.do_POST = record
        client = LLMClient.from_config(LLMConfig(url=stub.url, model="m"))
        chat(client)
    assert seen == ["Bearer sk-secret-123"]
    assert "sk-secret" not in repr(client) and "api_key=set" in repr(client)


def test_concurrency_is_bounded():
    in_flight = {"now": 0, "max": 0}
    lock = threading.Lock()

    def script(body, attempt):
        with lock:
            in_flight["now"] += 1
            in_flight["max"] = max(in_flight["max"], in_flight["now"])
        time.sleep(0.05)
        with lock:
            in_flight["now"] -= 1
        return 200, completion(VALID["quality"]), 0, {}

    async def go(client):
        async with client:
            await asyncio.gather(*(client.chat([{"role": "user", "content": f"page {i}"}]) for i in range(20)))

    with StubLLM(script) as stub:
        client = LLMClient(stub.url, "m", max_concurrency=3)
        asyncio.run(go(client))
    assert in_flight["max"] == 3 and client.stats.completions == 20


# ---------------------------------------------------------------- the annotate stage against the stub
def fault_script(body, attempt):
    """Per page, by a marker in its text: the faults a real vLLM server can't be made to produce."""
    text = body["messages"][-1]["content"]
    task = task_of(body)
    if "MODE:malformed" in text:
        return 200, completion('{"reason":"x","score":'), 0, {}
    if "MODE:range" in text:
        answer = {"quality": '{"reason":"x","score":9}', "topics": '{"topics":["cooking"]}',
                  "labels": '{"reason":"x","score":9,"topics":["health"],"format":["faq"]}'}[task]
        return 200, completion(answer), 0, {}
    if "MODE:badlist" in text:  # a valid score with a topic and a format outside the taxonomies
        answer = '{"reason":"x","score":2,"topics":["health","cooking"],"format":["faq","memes"]}'
        return 200, completion(answer, logprobs=score_logprobs(answer, {"2": 0.6, "1": 0.4})), 0, {}
    if "MODE:probs" in text:
        answer = VALID[task]
        return 200, completion(answer, logprobs=score_logprobs(answer, {"3": 0.5, "4": 0.25, "5": 0.25})), 0, {}
    if "MODE:down" in text:
        return 500, {"error": "internal"}, 0, {}
    if "MODE:flaky" in text and attempt == 0:
        return 503, {"error": "busy"}, 0, {}
    if "MODE:slow" in text:
        return 200, completion(VALID[task]), 1.0, {}
    return 200, completion(VALID[task]), 0, {}


def write_docs(folder, texts: dict[str, str]) -> None:
    rows = [{"doc_id": doc_id, "text": text, "language": "en", "rule_failures": []} for doc_id, text in texts.items()]
    write_parquet(schemas.from_rows(rows, schemas.DOCS), folder / "docs" / "part-0.parquet", schemas.DOCS)


def test_annotate_against_faults_loses_nothing_and_names_every_error(tmp_path, ray_local):
    texts = {f"ok{i}": f"MODE:ok page {i} about bread" for i in range(3)}
    texts |= {"malformed": "MODE:malformed", "range": "MODE:range", "down": "MODE:down", "flaky": "MODE:flaky",
              "slow": "MODE:slow"}
    write_docs(tmp_path, texts)
    with StubLLM(fault_script) as stub:
        cfg = load_config(None, [f"out={tmp_path}", f"llm.url={stub.url}", "llm.model=stub-model",
                                 "llm.max_retries=2", "llm.retry_backoff_s=0.01", "llm.timeout_s=0.4",
                                 "annotate.sample=100", "annotate.shard_size=3", "annotate.mode=separate",
                                 "annotate.consistency_sample=0"])
        summary = annotate_run(cfg, quiet=True)
        labels = read_dataset(RunLayout(tmp_path).dataset("labels"), schemas.LABELS).to_pylist()
        attempts = Counter()
        for body in stub.bodies:
            attempts[(body["messages"][-1]["content"].split("MODE:")[1].split()[0].split("<")[0].strip(),
                      task_of(body))] += 1

    # nothing lost: every sampled doc has one row per task
    assert Counter((row["doc_id"], row["task"]) for row in labels) == Counter(
        {(doc_id, task): 1 for doc_id in texts for task in ("quality", "topics")})
    by_key = {(row["doc_id"], row["task"]): row for row in labels}
    assert by_key[("malformed", "quality")]["error"] == "invalid_json"
    assert by_key[("malformed", "quality")]["raw_text"] == '{"reason":"x","score":'  # raw text kept
    assert by_key[("malformed", "quality")]["quality_score"] is None  # never a default score
    assert by_key[("range", "quality")]["error"] == "score_out_of_range"
    assert by_key[("range", "topics")]["error"] == "unknown_topic"
    assert by_key[("down", "quality")]["error"] == "request_http_500"
    assert by_key[("slow", "topics")]["error"] == "request_timeout"
    assert by_key[("flaky", "quality")]["error"] is None and by_key[("flaky", "quality")]["quality_score"] == 3
    assert by_key[("ok0", "topics")]["topics"] == ["health"]
    # retries are bounded: 1 + max_retries attempts for a page that always fails, 2 for the flaky one
    assert attempts[("down", "quality")] == 3 and attempts[("slow", "quality")] == 3
    assert attempts[("flaky", "quality")] == 2 and attempts[("ok", "quality")] == 3  # 3 ok pages, once each
    # provenance is filled on every row, error or not
    for row in labels:
        assert row["prompt_id"] in ("quality_v1", "topics_v1") and len(row["prompt_hash"]) == 16
        scored = {"logprobs": True, "top_logprobs": 20} if row["task"] == "quality" else {}
        assert json.loads(row["sampling_params"]) == {"temperature": 0.0, "seed": 0, "max_tokens": 160, **scored}
        assert row["quality_probs"] is None  # the stub sent no logprobs: sampled scores only, not an error
        assert row["model"] in ("stub", "stub-model")
    # counts by kind in the summary and in report.json; failed-by-transient-error shards will be retried
    assert summary["labels"] == 16 and summary["ok"] == 8
    assert summary["errors"] == {"invalid_json": 2, "request_http_500": 2, "request_timeout": 2,
                                 "score_out_of_range": 1, "unknown_topic": 1}
    assert summary["transient_errors"] == 4 and summary["complete"] is False
    report = json.loads(RunLayout(tmp_path).report_path.read_text())
    assert report["annotate"]["errors"] == summary["errors"]
    assert report["side_stages"]["annotate"]["errored"] == summary["errors"]
    assert report["side_stages"]["annotate"]["input"] == 16 and report["side_stages"]["annotate"]["conserved"]
    assert report["annotate"]["this_run"]["retries"] == summary["this_run"]["retries"] > 0


def test_combined_labels_against_faults_keep_valid_fields_and_errors_apart(tmp_path, ray_local):
    texts = {"ok": "MODE:ok page about bread", "probs": "MODE:probs page", "badlist": "MODE:badlist page",
             "malformed": "MODE:malformed", "range": "MODE:range", "down": "MODE:down"}
    write_docs(tmp_path, texts)
    with StubLLM(fault_script) as stub:
        cfg = load_config(None, [f"out={tmp_path}", f"llm.url={stub.url}", "llm.model=stub-model",
                                 "llm.max_retries=1", "llm.retry_backoff_s=0.01", "annotate.sample=100",
                                 "annotate.shard_size=3", "annotate.consistency_sample=0"])
        summary = annotate_run(cfg, quiet=True)
        labels = {row["doc_id"]: row for row in read_dataset(RunLayout(tmp_path).dataset("labels"),
                                                              schemas.LABELS).to_pylist()}
        tasks = {task_of(body) for body in stub.bodies}
    assert set(labels) == set(texts) and tasks == {"labels"}  # one request and one row per page
    assert all(row["task"] == "labels" and row["prompt_id"] == "labels_v1" for row in labels.values())
    ok = labels["ok"]
    assert (ok["quality_score"], ok["topics"], ok["format"], ok["error"]) == (3, ["health"], ["tutorial"], None)
    assert ok["quality_probs"] is None and ok["quality_expected"] is None  # no logprobs: sampled score only
    probs = labels["probs"]
    assert probs["quality_probs"] == pytest.approx([0, 0, 0, 0.5, 0.25, 0.25])
    assert probs["quality_expected"] == pytest.approx(3.75)
    # a valid score keeps the valid ids and records what was left out; the row is not an error
    bad = labels["badlist"]
    assert bad["error"] is None and bad["quality_score"] == 2
    assert bad["topics"] == ["health"] and bad["format"] == ["faq"]
    assert [e.split(":")[0] for e in bad["field_errors"]] == ["unknown_topic", "unknown_format"]
    assert bad["quality_probs"] == pytest.approx([0, 0.4, 0.6, 0, 0, 0])
    # a malformed or out-of-range answer is an annotation error with the raw text, never a default
    assert labels["malformed"]["error"] == "invalid_json" and labels["malformed"]["raw_text"]
    assert labels["range"]["error"] == "score_out_of_range" and labels["range"]["topics"] is None
    assert labels["down"]["error"] == "request_http_500"
    assert summary["labels"] == 6 and summary["ok"] == 3 and summary["with_probs"] == 2


# ---------------------------------------------------------------- a misconfigured endpoint stops the stage
@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://127.0.0.1:8000", "does not end in /v1 (the OpenAI-compatible API root): use http://127.0.0.1:8000/v1"),
        ("http://127.0.0.1:8000/", "does not end in /v1 (the OpenAI-compatible API root): use http://127.0.0.1:8000/v1"),
        ("http://127.0.0.1:8000/v1/chat/completions", "is an endpoint, not the API root: use http://127.0.0.1:8000/v1"),
        ("http://127.0.0.1:8000/v1/completions", "is an endpoint, not the API root: use http://127.0.0.1:8000/v1"),
        ("http://127.0.0.1:8000/chat/completions", "is an endpoint, not the API root: use http://127.0.0.1:8000/v1"),
        ("https://host/openai/v1/models", "is an endpoint, not the API root: use https://host/openai/v1"),
        ("127.0.0.1:8000/v1", "is not an http(s) URL"),
        ("ftp://host/v1", "is not an http(s) URL"),
    ],
)
def test_config_refuses_a_url_that_is_not_an_api_root(url, message):
    with pytest.raises(ConfigError) as error:
        load_config(None, [f"llm.url={url}"])
    assert f"llm.url: {url} {message}" in str(error.value)


@pytest.mark.parametrize("url", ["http://127.0.0.1:8000/v1", "http://127.0.0.1:8000/v1/", "https://host/openai/v1",
                                 "https://api.example.com:443/v1"])
def test_config_accepts_api_roots(url):
    assert load_config(None, [f"llm.url={url}"]).llm.url == url


def _chat_all(client: LLMClient, n: int):
    """n different requests gathered the way the stages do: an LLMError is the page's result, anything else
    propagates (here collected with return_exceptions to see what each request ended with)."""

    async def one(i):
        try:
            return await client.chat([{"role": "user", "content": f"rate: page {i}"}], max_tokens=4, temperature=0)
        except LLMError as exc:
            return exc

    async def go():
        async with client:
            return await asyncio.gather(*(one(i) for i in range(n)), return_exceptions=True)

    return asyncio.run(go())


def test_real_server_wrong_model_stops_on_the_first_request(vllm_server):
    client = LLMClient(vllm_server.url, "no-such-model", max_retries=2, retry_backoff_s=0.01, stage="annotate")
    with pytest.raises(EndpointRejected) as error:
        chat(client)
    assert not isinstance(error.value, LLMError) and isinstance(error.value, StageStopped)
    message = str(error.value)
    assert message.startswith(f"annotate: {vllm_server.url} answered HTTP 404 to the first requests (")
    assert "does not exist" in message and "llm.model='no-such-model'" in message
    assert message.endswith("nothing was marked done")
    assert client.stats.requests == 1 and not client.stats.failures  # not retried, not recorded as a page error
    # every request of a gather ends with it, none is recorded as the page's LLMError
    results = _chat_all(LLMClient(vllm_server.url, "no-such-model", max_concurrency=3), 8)
    assert all(isinstance(result, EndpointRejected) for result in results), results


@pytest.mark.parametrize("suffix", ["", "/v1/chat/completions"])
def test_real_server_url_that_is_not_the_api_root_stops_the_stage(vllm_server, suffix):
    url = vllm_server.base_url + suffix  # the config refuses these shapes; the client is given them directly
    client = LLMClient(url, "tiny-llama", max_retries=2, retry_backoff_s=0.01)
    with pytest.raises(EndpointRejected) as error:
        chat(client)
    assert f"{url} answered HTTP 404 to the first requests" in str(error.value)
    assert "check llm.url" in str(error.value) and client.stats.requests == 1
    # check_server, before the first request, says so too (LLMConfig.model_construct: no URL validation)
    with pytest.raises(LLMUnavailable) as unavailable:
        check_server(LLMConfig.model_construct(url=url, model="tiny-llama"), "annotate")
    message = str(unavailable.value)
    assert "answered HTTP 404" in message and "not an OpenAI-compatible API root" in message


def test_real_server_check_server_passes_the_right_root(vllm_server):
    check_server(LLMConfig(url=vllm_server.url, model="tiny-llama"), "annotate")
    with pytest.raises(LLMUnavailable, match="not llm.model='other'"):
        check_server(LLMConfig(url=vllm_server.url, model="other"), "annotate")


# A real vLLM answers 401 when started with --api-key, but a second real server (~3.3 GB, 20-30 s to start)
# for this one answer costs too much on a shared CPU machine: this stub stands in for it (a deliberate fake).
@pytest.mark.parametrize("key", [None, "sk-wrong"])
def test_401_on_the_first_request_names_the_api_key_env(monkeypatch, key):
    if key:
        monkeypatch.setenv("MY_LLM_KEY", key)
    else:
        monkeypatch.delenv("MY_LLM_KEY", raising=False)
    unauthorized = {"error": {"message": "Unauthorized", "type": "invalid_request_error", "code": 401}}
    with StubLLM(lambda body, attempt: (401, unauthorized, 0, {}), get_script=lambda path: (401, unauthorized)) as stub:
        cfg = LLMConfig(url=stub.url, model="m", api_key_env="MY_LLM_KEY", max_retries=2, retry_backoff_s=0.01)
        with pytest.raises(LLMUnavailable) as unavailable:
            check_server(cfg, "rewrite")
        client = LLMClient.from_config(cfg, stage="rewrite")
        with pytest.raises(EndpointRejected) as error:
            chat(client)
    assert "$MY_LLM_KEY" in str(unavailable.value) and "$MY_LLM_KEY" in str(error.value)
    assert str(error.value).startswith(f"rewrite: {stub.url} answered HTTP 401 to the first requests (")
    assert ("was refused" if key else "no API key was sent") in str(error.value)
    assert len(stub.bodies) == 1 and (key is None or key not in str(error.value))


def test_requests_queued_behind_a_rejected_one_are_not_sent():
    # a real server answers its 404 at once; the stub holds it 0.2 s to have requests in flight and queued
    with StubLLM(lambda body, attempt: (404, {"detail": "Not Found"}, 0.2, {})) as stub:
        results = _chat_all(LLMClient(stub.url, "m", max_concurrency=3), 9)
    assert all(isinstance(result, EndpointRejected) for result in results), results
    assert len(stub.bodies) == 3  # the 3 in flight; the 6 waiting for a slot were never sent


def test_after_one_success_a_404_is_that_pages_error():
    # a real server cannot be made to 404 one page and answer the next: a scripted stub
    def script(body, attempt):
        if "missing" in body["messages"][-1]["content"]:
            return 404, {"detail": "Not Found"}, 0, {}
        return 200, completion(VALID["quality"]), 0, {}

    with StubLLM(script) as stub:
        client = LLMClient(stub.url, "m", max_retries=2, retry_backoff_s=0.01)

        async def go():
            async with client:
                first = await client.chat([{"role": "user", "content": "rate: a page"}])
                try:
                    await client.chat([{"role": "user", "content": "rate: a missing page"}])
                except LLMError as exc:
                    return first, exc
                raise AssertionError("no error")

        first, error = asyncio.run(go())
    assert first.text == VALID["quality"]
    assert error.kind == "http_404" and error.attempts == 1 and client.stats.failures == Counter({"http_404": 1})
