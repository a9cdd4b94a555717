"""Start, probe and stop a real vLLM OpenAI-compatible server (the CPU build here, any build elsewhere).

`VLLMServer` is the one place that knows the flags: the CLI (`curate llm serve`), the whole-pipeline job,
the rewrite stage and the test fixtures all start the server through it. The server runs in its own
process group on 127.0.0.1 and is stopped with its whole group (vLLM spawns an engine-core child).

Nothing outlives the process that started the server, even when that process is killed with SIGKILL
(no `stop()`, no `finally`, no atexit). The server's group is `[leader, resource tracker, EngineCore,
Worker, guard]`; a SIGKILLed leader alone leaves EngineCore and Worker (~2 GB) running for good, so two
mechanisms, each covering what the other cannot:

1. Parent-death signal on the leader. `Popen` runs a small stdlib-only Python stage (`_GUARD`) that calls
   `prctl(PR_SET_PDEATHSIG, SIGTERM)` (ctypes), checks the starter is still its parent (it may have died
   before the prctl), then `exec`s the vLLM command: the pid, the flags, the env and the cmdline of the
   server are those of before. The kernel delivers SIGTERM the instant the starter dies, and vLLM's own
   SIGTERM handling shuts down its engine child. The prctl is made after `exec`, in a fresh
   single-threaded interpreter, not in a `preexec_fn`: the starter is multi-threaded (Ray, progress bars)
   and `preexec_fn` runs Python between fork and exec in a copy of it (a deadlock hazard CPython documents;
   it also disables vfork). The attribute survives `exec` of the (non-setuid) vLLM interpreter.
   Caveat: Linux sends it when the *thread* that forked exits, not the process. So it is set only when
   `start()` runs on the main thread; started from any other thread, only the guard below applies (a
   server must not die because a short-lived worker thread that started it ended).
2. A guard process in the server's own process group (forked by that stage before the `exec`, so it
   shares the server's session and group, which a process the starter spawned could not join). It polls
   every 0.5 s: when the leader's parent is no longer the starter (the starter died: SIGKILL, OOM, a
   crash, or an exit without `stop()`), it SIGTERMs the whole group, waits up to `guard_grace_s` and then
   SIGKILLs the group, itself included. When the leader exits while the starter lives (a crash), it
   SIGKILLs what is left of the group after 2 s, so orphaned engine processes never linger. `stop()` and
   `kill -TERM -PGID` end it with the rest of the group (default SIGTERM action).

Why both: the pdeathsig is kernel-guaranteed and instant but reaches the leader only (it is not inherited
across fork), so a leader that is SIGKILLed or hangs on SIGTERM strands its engine children; the guard
covers the whole group and escalates to SIGKILL, but it is an ordinary process that can itself be killed,
and then the pdeathsig still stops the leader, whose SIGTERM handling stops its children. A group survives
its starter by at most `guard_grace_s` + 0.5 s unless the guard is killed *and* the leader hangs. For
that, and for servers left by processes from before this scheme, `VLLMServer(..., pid_file=PATH)` records
the server in PATH and `stop_leftover(PATH)` stops it on the next start; `curate run` does so with
`RUN/_state/llm-server.json`.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
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
        # No chunked prefill: the CPU build crashes its engine ("CPU Generator does not use offset") when a
        # seeded request with temperature > 0 (annotate's self-consistency pass, rewrite.temperature) is
        # prefilled in parts. Whole prompts per step need a token budget of a whole context.
        "--no-enable-chunked-prefill", "--max-num-batched-tokens", str(max_model_len),
    ]
    if max_num_seqs is not None:
        command += ["--max-num-seqs", str(max_num_seqs)]
    return command + list(extra_args or [])


# What identifies a server of ours in /proc/<pid>/cmdline (see `server_command`): a recycled pid never matches.
SERVER_MODULE = "vllm.entrypoints.openai.api_server"

# The stage `start()` runs in place of the vLLM command: set the parent-death signal, fork the guard into the
# server's process group, exec vLLM. Standard library only (it must not depend on this package being
# importable from the server's cwd); see the module docstring. argv: starter pid, grace s, pdeathsig, "--", cmd.
_GUARD = r"""
import os, signal, sys, time
starter, grace, pdeathsig = int(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3])
command = sys.argv[5:]
if pdeathsig:
    try:
        import ctypes
        ctypes.CDLL(None, use_errno=True).prctl(1, pdeathsig, 0, 0, 0)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
if os.getppid() != starter:  # the starter died before the prctl: it would never fire
    sys.exit("vLLM guard: the process that started the server (pid %d) is gone" % starter)
leader = os.getpid()
sys.stdout.flush()
if os.fork() == 0:
    def stat(pid):
        try:
            with open("/proc/%d/stat" % pid) as f:
                return f.read().rsplit(")", 1)[1].split()
        except OSError:
            return None

    def others():
        me, pids = os.getpid(), []
        for name in os.listdir("/proc"):
            if name.isdigit() and int(name) != me:
                fields = stat(int(name))
                if fields and fields[0] not in "ZX" and int(fields[2]) == leader:
                    pids.append(int(name))
        return pids

    def say(message):
        os.write(1, ("[vllm-guard %d] %s\n" % (os.getpid(), message)).encode())

    os.chdir("/")
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    while True:
        time.sleep(0.5)
        fields = stat(leader)
        if fields and int(fields[1]) != starter:
            break  # the leader was reparented: its starter is gone (the leader may be a zombie by now)
        if os.getppid() != leader:
            # the server exited while its starter lives (a crash; stop() ends the guard first): nothing of its
            # group may stay
            time.sleep(2.0)
            if others():
                say("server pid %d exited; killing what is left of its group" % leader)
                os.killpg(leader, signal.SIGKILL)
            os._exit(0)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    say("the process that started the server (pid %d) is gone; stopping server group %d" % (starter, leader))
    os.killpg(leader, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while others() and time.monotonic() < deadline:
        time.sleep(0.2)
    if others():
        say("group %d still running after %.0fs: SIGKILL" % (leader, grace))
    os.killpg(leader, signal.SIGKILL)
    os._exit(0)
os.execv(command[0], command)
"""


def _proc_stat(pid: int) -> list[str] | None:
    """/proc/<pid>/stat fields after the command name: [state, ppid, pgrp, session, ...]; None when gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def _cmdline(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return []


def group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes of process group `pgid`, from /proc."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            fields = _proc_stat(int(entry.name))
            if fields and fields[0] not in "ZX" and int(fields[2]) == pgid:
                pids.append(int(entry.name))
    return pids


def _wait_members_gone(pgid: int, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while group_members(pgid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)
    return True


def write_pid_file(path: str | Path, *, pid: int, port: int, starter_pid: int, **extra: Any) -> Path:
    """Record a server: its pid (= its process-group id), port, the pid of the process that started it and
    the leader's start time (clock ticks after boot, from /proc: tells a recycled pid apart)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fields = _proc_stat(pid)
    record = {"pid": pid, "pgid": pid, "port": port, "starter_pid": starter_pid,
              "start_ticks": int(fields[19]) if fields else None, "written_at": time.time(), **extra}
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(record, indent=2) + "\n")
    tmp.replace(path)
    return path


@dataclass(frozen=True)
class Leftover:
    """What `stop_leftover` did. `action`: "none" (no pid file), "stopped" (a server group of ours was still
    running and is stopped now) or "ignored" (the file named nothing of ours that is alive: a dead or
    recycled pid, an unreadable file; nothing was signalled). The file is gone afterwards in every case."""

    action: str
    detail: str = ""
    pid: int | None = None
    port: int | None = None
    starter_pid: int | None = None

    @property
    def stopped(self) -> bool:
        return self.action == "stopped"


def _why_not_ours(record: dict[str, Any]) -> str | None:
    """None when `record` names a live vLLM server group of ours; else why not."""
    pgid, port = int(record["pgid"]), record.get("port")
    fields = _proc_stat(pgid)
    if fields and fields[0] not in "ZX":
        cmdline = _cmdline(pgid)
        if int(fields[2]) != pgid:
            return f"pid {pgid} is not a process-group leader (a recycled pid)"
        if SERVER_MODULE not in cmdline:
            return f"pid {pgid} is not a vLLM server: {' '.join(cmdline)[:120]!r}"
        if port is not None and str(port) not in cmdline:
            return f"pid {pgid} is a vLLM server on another port than {port}"
        if record.get("start_ticks") is not None and int(fields[19]) != int(record["start_ticks"]):
            return f"pid {pgid} is another vLLM server than the one recorded (start time differs)"
        return None
    # The leader is gone; its engine children may not be (a leader SIGKILLed without a guard). A pgid stays
    # reserved while any member lives, so members still in it (and in its session) are that server's.
    members = [p for p in group_members(pgid) if (_proc_stat(p) or ["", "", "", "-1"])[3] == str(pgid)]
    if members and any(" ".join(_cmdline(p)).startswith("VLLM::") or SERVER_MODULE in _cmdline(p)
                       for p in members):
        return None
    return f"no process of group {pgid} is running"


def stop_leftover(pid_file: str | Path, grace_s: float = 20.0) -> Leftover:
    """Stop the server a pid file (`VLLMServer(..., pid_file=...)`) names, if it is still running: a server
    left by an earlier process that could not stop it. It is stopped only if /proc shows a live process group
    whose leader runs `vllm.entrypoints.openai.api_server` on the recorded port and started when recorded
    (or, its leader gone, vLLM engine processes still in that group), so a recycled pid is never signalled:
    SIGTERM to the group, SIGKILL after `grace_s`. The file is removed in every case."""
    path = Path(pid_file)
    if not path.exists():
        return Leftover("none")
    try:
        record = json.loads(path.read_text())
        pid, port = int(record["pid"]), record.get("port")
        starter = record.get("starter_pid")
        reason = _why_not_ours(record)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        path.unlink(missing_ok=True)
        return Leftover("ignored", f"unreadable pid file {path}: {exc}")
    if reason is not None:
        path.unlink(missing_ok=True)
        return Leftover("ignored", reason, pid=pid, port=port, starter_pid=starter)
    pgid = int(record["pgid"])
    starter_alive = bool(starter) and (_proc_stat(int(starter)) or ["Z"])[0] not in "ZX"
    how = "SIGTERM"
    _signal_pgid(pgid, signal.SIGTERM)
    if not _wait_members_gone(pgid, grace_s):
        how = f"SIGTERM, then SIGKILL after {grace_s:.0f}s"
        _signal_pgid(pgid, signal.SIGKILL)
        if not _wait_members_gone(pgid, 10.0):
            raise ServerError(f"leftover vLLM server group {pgid} survived SIGKILL: {group_members(pgid)}")
    path.unlink(missing_ok=True)
    detail = f"pid {pid}, port {port}, started by pid {starter}" + (" (still running)" if starter_alive else "")
    return Leftover("stopped", f"{detail}; stopped with {how}", pid=pid, port=port, starter_pid=starter)


def _signal_pgid(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass


class VLLMServer:
    """A vLLM server process: `start()`, `wait_ready()`, `stop()`; also a context manager (start + wait).

    >>> with VLLMServer("models/tiny") as server:
    ...     print(server.url)  # http://127.0.0.1:PORT/v1

    The server dies with the process that started it, however that process ends (module docstring). Start
    it from the main thread or from a thread that lives as long as the server: only then is the kernel's
    parent-death signal set (it fires when the starting *thread* ends); from other threads the guard
    process alone stops the server, within `guard_grace_s` of the starter's death. `pid_file`: where to
    record the running server (`write_pid_file`; removed by `stop()`), for `stop_leftover`.
    """

    def __init__(self, model: str | Path, *, port: int | None = None, host: str = "127.0.0.1",
                 served_model_name: str = DEFAULT_SERVED_NAME, max_model_len: int = DEFAULT_MAX_MODEL_LEN,
                 max_num_seqs: int | None = None, kv_cache_gib: int = 1, log_path: str | Path | None = None,
                 extra_args: list[str] | None = None, extra_env: dict[str, str] | None = None,
                 ready_timeout_s: float = 300.0, pid_file: str | Path | None = None, guard_grace_s: float = 10.0):
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
        self.pid_file = Path(pid_file) if pid_file else None
        self.guard_grace_s = guard_grace_s
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
        starter = os.getpid()
        # The parent-death signal fires when the forking thread ends: only the main thread lives as long as
        # the process (module docstring).
        pdeathsig = signal.SIGTERM if threading.current_thread() is threading.main_thread() else 0
        self.process = subprocess.Popen(
            # the guard stage execs self.command() in place: same pid, flags and env as a plain Popen of it
            [sys.executable, "-c", _GUARD, str(starter), str(self.guard_grace_s), str(int(pdeathsig)), "--",
             *self.command()],
            env={**server_env(self.kv_cache_gib, self.host), **self.extra_env}, stdout=self._log_file,
            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True,  # own process group: stop() signals the server and its engine child
        )
        if self.pid_file is not None:
            write_pid_file(self.pid_file, pid=self.process.pid, port=self.port, starter_pid=starter,
                           url=self.url, model=self.model, log=str(self.log_path))
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
        self._remove_pid_file()

    def _remove_pid_file(self) -> None:
        if self.pid_file is None or self.process is None:
            return
        try:
            if json.loads(self.pid_file.read_text()).get("pid") == self.process.pid:  # ours, not a newer server's
                self.pid_file.unlink()
        except (OSError, ValueError, AttributeError):
            pass

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
