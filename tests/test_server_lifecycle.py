"""Nothing outlives the command that started it: a `curate run` killed with SIGKILL takes its vLLM server
(and the server's engine children) and its local Ray with it; a server left running in a run folder by an
earlier process is stopped by the next `curate run` there; a pid file naming a dead or foreign process is
ignored. Real processes throughout: the demo run, the CPU vLLM server, Ray."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from pipeline.llm.server import SERVER_MODULE, group_members, stop_leftover, write_pid_file

ROOT = Path(__file__).resolve().parents[1]
CURATE = Path(sys.executable).with_name("curate")
PID_FILE = Path("_state") / "llm-server.json"


# --- /proc helpers --------------------------------------------------------------------------------------------


def _stat(pid: int) -> list[str] | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def _processes() -> dict[int, list[str]]:
    return {int(e.name): fields for e in Path("/proc").iterdir() if e.name.isdigit() and (fields := _stat(int(e.name)))}


def _descendants(root: int) -> dict[int, tuple[str, str]]:
    """Every live process under `root` (by parent links, whatever its group or session): {pid: (start time,
    cmdline)}. The start time tells the same process from a later one that reuses the pid."""
    procs = _processes()
    children: dict[int, list[int]] = {}
    for pid, fields in procs.items():
        children.setdefault(int(fields[1]), []).append(pid)
    found, todo = {}, [root]
    while todo:
        pid = todo.pop()
        if pid in procs and procs[pid][0] not in "ZX":
            found[pid] = (procs[pid][19], _cmdline(pid))
        todo += children.get(pid, [])
    return found


def _still_running(snapshot: dict[int, tuple[str, str]]) -> dict[int, str]:
    """The processes of `snapshot` that are still running (same pid and start time, not a zombie)."""
    left = {}
    for pid, (start, cmdline) in snapshot.items():
        fields = _stat(pid)
        if fields and fields[19] == start and fields[0] not in "ZX":
            left[pid] = cmdline
    return left


def _kill_snapshot(snapshot: dict[int, tuple[str, str]]) -> None:
    for pid in _still_running(snapshot):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _kill_group(pgid: int) -> None:
    """SIGKILL a process group that a test started (its id stays reserved while any member lives)."""
    if group_members(pgid):
        try:
            os.killpg(pgid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _answers(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=2) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError, TimeoutError):
        return False


def _wait_for(condition, timeout_s: float, what: str, poll_s: float = 0.5, alive=None):
    deadline = time.monotonic() + timeout_s
    while not (value := condition()):
        if alive is not None:
            alive()
        assert time.monotonic() < deadline, f"timed out after {timeout_s:.0f}s waiting for {what}"
        time.sleep(poll_s)
    return value


class Run:
    """`curate run jobs/configs/demo.yaml --out OUT` as a subprocess in its own process group, output to a file."""

    def __init__(self, out: Path, log: Path):
        self.out, self.log = out, log
        self.process = subprocess.Popen([str(CURATE), "run", "jobs/configs/demo.yaml", "--out", str(out)], cwd=ROOT,
                                        stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True)
        self.started = time.monotonic()

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def check_running(self) -> None:
        assert self.process.poll() is None, (f"curate run exited with {self.process.returncode}:\n"
                                             f"{self.output()[-3000:]}")

    def wait_server(self, timeout_s: float = 400.0) -> dict:
        """The run's pid file once its server answers /v1/models."""
        pid_file = self.out / PID_FILE
        _wait_for(pid_file.exists, timeout_s, "the run's pid file", alive=self.check_running)
        record = json.loads(pid_file.read_text())
        _wait_for(lambda: _answers(record["port"]), timeout_s, "the run's server", alive=self.check_running)
        return record

    def kill(self) -> None:
        try:
            os.killpg(self.process.pid, signal.SIGKILL)  # the run's own group: the driver, Ray's head processes
        except ProcessLookupError:
            pass
        self.process.wait(timeout=30)


@pytest.fixture
def cleanup():
    """Registers what a test starts; on teardown (also after a failed assertion) SIGKILLs every run group,
    server group and recorded process that is still there."""
    runs: list[Run] = []
    groups: list[int] = []
    snapshots: list[dict] = []
    yield runs, groups, snapshots
    for run in runs:
        if run.process.poll() is None:
            run.kill()
    for snapshot in snapshots:
        _kill_snapshot(snapshot)
    for pgid in groups:
        _kill_group(pgid)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """One run folder for the module: the second test reuses the first one's extract and dedup outputs."""
    return tmp_path_factory.mktemp("lifecycle") / "run"


@pytest.fixture(scope="module")
def legacy_server(tiny_model_dir, tmp_path_factory):
    """A vLLM server such as an earlier process left behind: started the way servers were started before they
    were tied to their starter (plain Popen of `server_command`, own session, no guard), by a short-lived
    process that wrote the pid file and exited, so nothing is left that would stop it. Requested by the first
    end-to-end test too, so that its ~60 s start overlaps that test's run. Yields (pid file, record, log)."""
    work = tmp_path_factory.mktemp("legacy")
    pid_file, log = work / "llm-server.json", work / "server.log"
    starter = subprocess.run([sys.executable, "-c", f"""
import os, subprocess, sys
from pipeline.llm.server import free_port, server_command, server_env, write_pid_file
port = free_port()
server = subprocess.Popen(server_command({str(tiny_model_dir)!r}, port=port), env=server_env(), start_new_session=True,
                          stdout=open({str(log)!r}, "ab"), stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
write_pid_file({str(pid_file)!r}, pid=server.pid, port=port, starter_pid=os.getpid())
"""], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert starter.returncode == 0, starter.stderr
    record = json.loads(pid_file.read_text())
    try:
        yield pid_file, record, log
    finally:
        _kill_group(record["pgid"])


@pytest.mark.slow
def test_sigkill_of_curate_run_leaves_no_server_and_no_ray(run_dir, legacy_server, tmp_path, cleanup):
    runs, groups, snapshots = cleanup
    run = Run(run_dir, tmp_path / "run.log")
    runs.append(run)
    record = run.wait_server()
    pgid, port = record["pgid"], record["port"]
    groups.append(pgid)
    assert record["pid"] == pgid and record["starter_pid"] == run.process.pid
    assert SERVER_MODULE in _cmdline(pgid).split()
    server_group = set(group_members(pgid))
    assert len(server_group) >= 4  # leader, engine core, worker, guard (+ multiprocessing's resource tracker)

    tree = _descendants(run.process.pid)  # taken last, just before the kill: every process the run started
    snapshots.append(tree)
    assert server_group <= set(tree)
    names = " ".join(cmdline for _, cmdline in tree.values())
    assert "gcs_server" in names and "raylet" in names  # the run's local Ray is in the snapshot
    session = next(arg.split("=", 1)[1] for pid, (_, cmdline) in tree.items() if "gcs_server" in cmdline
                   for arg in cmdline.split() if arg.startswith("--session_dir=") or arg.startswith("--log_dir="))
    session = session.split("/logs")[0]

    run.kill()
    killed = time.monotonic()
    _wait_for(lambda: not group_members(pgid), 30, f"the server's group {pgid} to be gone")
    server_gone_s = time.monotonic() - killed
    assert not _answers(port)
    _wait_for(lambda: not _still_running(tree), 60, "every process of the killed run to be gone", poll_s=1)
    all_gone_s = time.monotonic() - killed
    # nothing of the run's Ray session either, including a worker Ray forked after the snapshot was taken
    _wait_for(lambda: not [pid for pid in _processes() if session in _cmdline(pid)], 30,
              "every process of the run's Ray session to be gone", poll_s=1)
    # Both mechanisms fire: the kernel's parent-death SIGTERM makes vLLM shut down its engine, and the guard
    # stops the group (it logs when it sees the starter gone before the leader has exited).
    guard_acted = "is gone; stopping server group" in Path(record["log"]).read_text(errors="replace")
    print(f"server group gone {server_gone_s:.1f}s and every process of the run {all_gone_s:.1f}s after the "
          f"SIGKILL; {len(tree)} processes ({len(server_group)} in the server's group); guard logged: {guard_acted}")


@pytest.mark.slow
def test_next_run_in_the_folder_stops_a_leftover_server(run_dir, legacy_server, tmp_path, cleanup):
    runs, groups, snapshots = cleanup
    legacy_file, legacy, legacy_log = legacy_server
    pgid, port = legacy["pgid"], legacy["port"]
    groups.append(pgid)
    assert int(_stat(pgid)[1]) != legacy["starter_pid"]  # the process that started it is gone: a leftover
    _wait_for(lambda: _answers(port), 400, "the leftover server to serve",
              alive=lambda: group_members(pgid) or pytest.fail(Path(legacy_log).read_text()[-3000:]))
    (run_dir / PID_FILE).parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(legacy_file, run_dir / PID_FILE)  # as if an earlier run of this folder had started it

    run = Run(run_dir, tmp_path / "run.log")
    runs.append(run)
    line = _wait_for(lambda: next((line for line in run.output().splitlines() if "left running" in line), None),
                     300, "the run to stop the leftover server", alive=run.check_running)
    assert line.startswith("[run] stopped a vLLM server left running by an earlier run of this folder")
    assert f"pid {pgid}, port {port}" in line
    assert not group_members(pgid) and not _answers(port)  # stopped, children included, before going on

    # The run starts its own server. SIGKILL its leader first, then the run: no graceful vLLM shutdown, so the
    # engine core and worker are orphaned and only the guard in their group is left to stop them.
    pid_file = run_dir / PID_FILE
    record = _wait_for(lambda: pid_file.exists() and json.loads(pid_file.read_text()), 300,
                       "the run's own pid file", alive=run.check_running)
    new = record["pgid"]
    groups.append(new)
    assert new != pgid
    _wait_for(lambda: any(_cmdline(p).startswith("VLLM::EngineCore") for p in group_members(new)), 300,
              "the run's server to start its engine core", alive=run.check_running)
    tree = _descendants(run.process.pid)
    snapshots.append(tree)
    os.kill(new, signal.SIGKILL)
    run.kill()
    killed = time.monotonic()
    _wait_for(lambda: not group_members(new), 30, "the orphaned engine processes of the run's server to be gone")
    server_gone_s = time.monotonic() - killed
    _wait_for(lambda: not _still_running(tree), 60, "every process of the second run to be gone", poll_s=1)
    guard = [line for line in Path(record["log"]).read_text(errors="replace").splitlines() if "[vllm-guard" in line]
    print(f"leader SIGKILLed: its orphaned group gone {server_gone_s:.1f}s and every process of the run "
          f"{time.monotonic() - killed:.1f}s after; guard: {guard}")


def test_a_pid_file_naming_a_dead_or_foreign_process_is_ignored(tmp_path):
    pid_file = tmp_path / "llm-server.json"
    assert stop_leftover(pid_file).action == "none"

    dead = subprocess.Popen(["true"])
    dead.wait()
    write_pid_file(pid_file, pid=dead.pid, port=8000, starter_pid=dead.pid)
    result = stop_leftover(pid_file)
    assert result.action == "ignored" and not result.stopped and "no process" in result.detail
    assert not pid_file.exists()

    # a live process under the recorded pid that is not a vLLM server (what a recycled pid looks like)
    foreign = subprocess.Popen(["sleep", "60"], start_new_session=True)
    try:
        write_pid_file(pid_file, pid=foreign.pid, port=8000, starter_pid=os.getpid())
        result = stop_leftover(pid_file, grace_s=1)
        assert result.action == "ignored" and "not a vLLM server" in result.detail
        assert not pid_file.exists()
        time.sleep(0.2)
        assert foreign.poll() is None  # nothing was signalled
        # the same with a vLLM-looking command line but not a group leader (a pid recycled inside another group)
        lookalike = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "-m", SERVER_MODULE,
                                      "--port", "8000"])
        try:
            write_pid_file(pid_file, pid=lookalike.pid, port=8000, starter_pid=os.getpid())
            result = stop_leftover(pid_file, grace_s=1)
            assert result.action == "ignored" and "not a process-group leader" in result.detail
            time.sleep(0.2)
            assert lookalike.poll() is None and not pid_file.exists()
        finally:
            lookalike.kill()
            lookalike.wait()
    finally:
        foreign.kill()
        foreign.wait()

    pid_file.write_text("{not json")
    assert stop_leftover(pid_file).action == "ignored" and not pid_file.exists()
