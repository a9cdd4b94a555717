"""Start, probe and stop a real vLLM OpenAI-compatible server (the CPU build here, any build elsewhere).

`VLLMServer` is the one place that knows the flags: the CLI (`curate llm serve`), the whole-pipeline job,
the rewrite stage and the test fixtures all start the server through it. The server runs in its own
process group on 127.0.0.1 and is stopped with its whole group (vLLM spawns an engine-core child).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any
from pipeline.errors import CurateError

DEFAULT_SERVED_NAME = "tiny-llama"
# 8192, not the 1024 that suffices for smoke tests: the tiny model's tokenizer needs up to ~5,000 tokens for a
# 1,500-character CJK page plus instructions, and vLLM rejects prompt + max_tokens > max-model-len. The KV
# cache is sized by VLLM_CPU_KVCACHE_SPACE, not by this, so the cost is nil on CPU.
DEFAULT_MAX_MODEL_LEN = 8192


class ServerError(CurateError):
    """The server exited or did not become ready; the message holds the tail of its log."""


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def server_env(kv_cache_gib: int = 1, host: str = "127.0.0.1") -> dict[str, str]:
    env = dict(os.environ)
    env.update({
        "VLLM_CPU_KVCACHE_SPACE": str(int(kv_cache_gib)),  # whole GiB of KV cache (CPU build)
        "VLLM_HOST_IP": host,  # else vLLM's internal sockets bind the host's interface, not loopback
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "VLLM_NO_USAGE_STATS": "1",
        "DO_NOT_TRACK": "1",
    })
    # vLLM's CPU default ("auto") pins the compute threads to the first core of the NUMA node, so several
    # servers on one machine (a test session, a benchmark, other jobs) all share one core while the others
    # idle. Unless the caller chose a binding: no pinning, one compute thread (OpenMP threads spin while
    # waiting, which would starve the clients on a small machine); the OS places it.
    if "VLLM_CPU_OMP_THREADS_BIND" not in env:
        env["VLLM_CPU_OMP_THREADS_BIND"] = "nobind"
        env.setdefault("OMP_NUM_THREADS", "1")
    return env


def server_command(model: str, *, port: int, host: str = "127.0.0.1", served_model_name: str = DEFAULT_SERVED_NAME,
                   max_model_len: int = DEFAULT_MAX_MODEL_LEN, max_num_seqs: int | None = None,
                   extra_args: list[str] | None = None) -> list[str]:
    # The module, not the `vllm` script: the script fails to find its own version under the vllm-cpu name.
    command = [
        sys.executable, "-m", "vllm.entrypoints.openai.api_server",
        "--model", str(model), "--served-model-name", served_model_name,
        "--host", host, "--port", str(port),
        "--dtype", "bfloat16", "--max-model-len", str(max_model_len), "--enforce-eager",
        # Without disable_any_whitespace a random model pads JSON with whitespace and never closes it.
        "--structured-outputs-config", json.dumps({"backend": "xgrammar", "disable_any_whitespace": True}),
        "--enable-prefix-caching",
    ]
    if max_num_seqs is not None:
        command += ["--max-num-seqs", str(max_num_seqs)]
    return command + list(extra_args or [])


class VLLMServer:
    """A vLLM server process: `start()`, `wait_ready()`, `stop()`; also a context manager (start + wait).

    >>> with VLLMServer("models/tiny") as server:
    ...     print(server.url)  # http://127.0.0.1:PORT/v1
    """

    def __init__(self, model: str | Path, *, port: int | None = None, host: str = "127.0.0.1",
                 served_model_name: str = DEFAULT_SERVED_NAME, max_model_len: int = DEFAULT_MAX_MODEL_LEN,
                 max_num_seqs: int | None = None, kv_cache_gib: int = 1, log_path: str | Path | None = None,
                 extra_args: list[str] | None = None, extra_env: dict[str, str] | None = None,
                 ready_timeout_s: float = 300.0):
        if host not in ("127.0.0.1", "localhost", "::1"):
            # The project's servers listen on loopback; a public interface is a deliberate deployment choice
            # made outside this helper.
            raise ValueError(f"VLLMServer binds loopback only, got host={host!r}")
        self.model = str(model)
        self.host = host
        self.port = port or free_port(host)
        self.served_model_name = served_model_name
        self.max_model_len = max_model_len
        self.max_num_seqs = max_num_seqs
        self.kv_cache_gib = kv_cache_gib
        self.extra_args = list(extra_args or [])
        self.extra_env = dict(extra_env or {})
        self.ready_timeout_s = ready_timeout_s
        self.log_path = Path(log_path) if log_path else None
        self.process: subprocess.Popen | None = None
        self._log_file = None

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def url(self) -> str:
        """The OpenAI-compatible API root (what `llm.url` takes)."""
        return f"{self.base_url}/v1"

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def command(self) -> list[str]:
        return server_command(self.model, port=self.port, host=self.host, served_model_name=self.served_model_name,
                              max_model_len=self.max_model_len, max_num_seqs=self.max_num_seqs,
                              extra_args=self.extra_args)

    def start(self) -> VLLMServer:
        if self.process is not None and self.process.poll() is None:
            raise ServerError(f"server already running (pid {self.pid})")
        if not Path(self.model).exists():
            raise ServerError(f"model folder not found: {self.model} (build one with `curate llm tiny-model`)")
        if self.log_path is None:
            import tempfile

            self.log_path = Path(tempfile.mkstemp(prefix="vllm-", suffix=".log")[1])
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log_file = open(self.log_path, "ab")
        self.process = subprocess.Popen(
            self.command(), env={**server_env(self.kv_cache_gib, self.host), **self.extra_env}, stdout=self._log_file,
            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True,  # own process group: stop() signals the server and its engine child
        )
        return self

    def log_tail(self, lines: int = 30) -> str:
        if not self.log_path or not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def is_ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.base_url}/v1/models", timeout=2) as response:
                return response.status == 200
        except (urllib.error.URLError, OSError, TimeoutError):
            return False

    def wait_ready(self, timeout_s: float | None = None) -> float:
        """Block until the server answers /v1/models; returns seconds waited. Raises ServerError if it dies."""
        started = time.monotonic()
        deadline = started + (timeout_s or self.ready_timeout_s)
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise ServerError(f"vLLM server exited with code {self.process.returncode} before it was ready; "
                                  f"log {self.log_path}:\n{self.log_tail()}")
            if self.is_ready():
                return time.monotonic() - started
            time.sleep(0.5)
        self.stop()
        raise ServerError(f"vLLM server not ready after {timeout_s or self.ready_timeout_s:.0f}s; "
                          f"log {self.log_path}:\n{self.log_tail()}")

    def _signal_group(self, sig: int) -> None:
        if self.process is None:
            return
        try:
            os.killpg(self.process.pid, sig)  # the group id is the server's pid (start_new_session)
        except ProcessLookupError:
            pass

    def stop(self, grace_s: float = 20.0) -> None:
        """SIGTERM the process group, then SIGKILL whatever is left after `grace_s`."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self._signal_group(signal.SIGTERM)
            try:
                self.process.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                self._signal_group(signal.SIGKILL)
                self.process.wait()
        # Children (engine core, worker) may outlive the leader: give them a moment to follow it, then kill
        # what is left. The server is stopped only when its whole group is gone.
        if not self._wait_group_gone(5.0):
            self._signal_group(signal.SIGKILL)
            self._wait_group_gone(10.0)
        self._close_log()

    def group_alive(self) -> bool:
        if self.process is None:
            return False
        try:
            os.killpg(self.process.pid, 0)
            return True
        except ProcessLookupError:
            return False

    def _wait_group_gone(self, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while self.group_alive():
            if time.monotonic() > deadline:
                return False
            time.sleep(0.1)
        return True

    def _close_log(self) -> None:
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    def __enter__(self) -> VLLMServer:
        self.start()
        try:
            self.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.stop()


def api_root(url: str) -> str:
    """`http://h:p/v1` -> `http://h:p` (where /metrics and /health live)."""
    url = url.rstrip("/")
    return url[: -len("/v1")] if url.endswith("/v1") else url


def fetch_metrics(url: str, timeout_s: float = 5.0) -> dict[str, float]:
    """The server's Prometheus counters summed over label sets: {"vllm:request_success_total": 12.0, ...}."""
    with urllib.request.urlopen(f"{api_root(url)}/metrics", timeout=timeout_s) as response:
        text = response.read().decode()
    return parse_prometheus(text)


def parse_prometheus(text: str) -> dict[str, float]:
    totals: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        name_part, _, value = line.rpartition(" ")
        name = name_part.split("{", 1)[0].strip()
        try:
            totals[name] = totals.get(name, 0.0) + float(value)
        except ValueError:
            continue
    return totals


def prefix_cache_hit_rate(before: dict[str, float], after: dict[str, float]) -> float | None:
    """Share of prompt tokens served from vLLM's prefix cache between two metric snapshots."""
    queries = after.get("vllm:prefix_cache_queries_total", 0.0) - before.get("vllm:prefix_cache_queries_total", 0.0)
    hits = after.get("vllm:prefix_cache_hits_total", 0.0) - before.get("vllm:prefix_cache_hits_total", 0.0)
    return hits / queries if queries > 0 else None


def reset_prefix_cache(url: str, timeout_s: float = 30.0) -> None:
    """Empty the server's prefix cache (benchmarks: so a pass does not inherit another's cached prompts).
    Needs a server started with VLLM_SERVER_DEV_MODE=1 (`VLLMServer(..., extra_env=...)`)."""
    request = urllib.request.Request(f"{api_root(url)}/reset_prefix_cache", method="POST", data=b"")
    with urllib.request.urlopen(request, timeout=timeout_s) as response:
        if response.status != 200:
            raise ServerError(f"reset_prefix_cache answered HTTP {response.status}")


def requests_served(metrics: dict[str, float]) -> float:
    """Requests the server finished (any finish reason)."""
    return metrics.get("vllm:request_success_total", 0.0)
