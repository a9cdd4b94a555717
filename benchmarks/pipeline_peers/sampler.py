"""Per-stage peak RSS of a process tree, sampled with psutil (stdlib + psutil only: imported by every runner,
in the project's venv and in NeMo Curator's).

A thread of the driver (the runner process) walks the driver and all its descendants every `interval_s`
(0.2 s) and keeps, per stage label, each process's peak RSS and its command line. "worker" processes are
the ones that do the work: Ray workers (command line `ray::...`, not Ray's dashboard/runtime-env agents) when
Ray runs, else every descendant Python process (datatrove's pool). Ray's own daemons (raylet, gcs_server,
dashboard, log monitor) are reported apart as "ray_system". RSS between two samples, and a process that lives
less than 0.2 s, can be missed; peaks of long-lived processes (drivers, Ray workers, pool workers) are not.
"""

from __future__ import annotations

import argparse
import os
import threading
import time

import psutil

RAY_AGENTS = ("ray::DashboardAgent", "ray::RuntimeEnvAgent", "ray::JobSupervisor")


def _kind(cmdline: str) -> str:
    if cmdline.startswith("ray::") and not cmdline.startswith(RAY_AGENTS):
        return "worker"
    if "default_worker.py" in cmdline:
        return "worker"
    if any(k in cmdline for k in ("raylet", "gcs_server", "dashboard", "log_monitor", "ray/_private", "ray::",
                                  "monitor.py", "runtime_env", "agent")):
        return "ray_system"
    if "python" in cmdline or "multiprocess" in cmdline or "forkserver" in cmdline:
        return "worker"
    return "other"


class TreeSampler:
    def __init__(self, interval_s: float = 0.2):
        self.interval_s = interval_s
        self.stage = "init"
        self.peaks: dict[str, dict[int, tuple[int, str]]] = {}
        self.cpu: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="rss-sampler")
        self._me = psutil.Process()

    def _sample(self) -> None:
        peaks = self.peaks.setdefault(self.stage, {})
        try:
            procs = [self._me, *self._me.children(recursive=True)]
        except psutil.Error:
            return
        for proc in procs:
            try:
                with proc.oneshot():
                    rss = proc.memory_info().rss
                    times = proc.cpu_times()
                    cmd = " ".join(proc.cmdline())[:160] or proc.name()
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                continue
            self.cpu[proc.pid] = times.user + times.system
            if rss > peaks.get(proc.pid, (0, ""))[0]:
                peaks[proc.pid] = (rss, cmd)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._sample()
            self._stop.wait(self.interval_s)

    def start(self) -> TreeSampler:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def set_stage(self, name: str) -> None:
        self._sample()  # close the previous stage with a last sample
        self.stage = name
        self._sample()

    def cpu_total(self) -> float:
        return sum(self.cpu.values())

    def summary(self, stage: str) -> dict:
        mib = 1024 * 1024
        peaks = self.peaks.get(stage, {})
        driver = peaks.get(os.getpid(), (0, ""))[0]
        by_kind: dict[str, tuple[int, str]] = {}
        for pid, (rss, cmd) in peaks.items():
            if pid == os.getpid():
                continue
            kind = _kind(cmd)
            if rss > by_kind.get(kind, (0, ""))[0]:
                by_kind[kind] = (rss, cmd)
        return {"driver_rss_mib": round(driver / mib, 1),
                "worker_rss_mib": round(by_kind.get("worker", (0, ""))[0] / mib, 1),
                "worker_cmd": by_kind.get("worker", (0, ""))[1][:80],
                "ray_system_rss_mib": round(by_kind.get("ray_system", (0, ""))[0] / mib, 1),
                "processes": len(peaks)}


class Timer:
    """`with timer.stage("extract"):` -> wall seconds and the sampler's peaks under that label."""

    def __init__(self, sampler: TreeSampler):
        self.sampler = sampler
        self.results: list[dict] = []

    def run(self, name: str, fn, pages_in=None):
        self.sampler.set_stage(name)
        cpu0 = self._tree_cpu()
        started = time.perf_counter()
        value = fn()
        seconds = time.perf_counter() - started
        cpu1 = self._tree_cpu()
        self.sampler.set_stage(f"after-{name}")
        row = {"stage": name, "seconds": round(seconds, 3), "cpu_s": round(cpu1 - cpu0, 2),
               **self.sampler.summary(name)}
        if pages_in is not None:
            row["pages_in"] = pages_in
        self.results.append(row)
        return value, row

    def _tree_cpu(self) -> float:
        """user+system seconds of the driver and every live descendant (processes that ended in between are
        counted through the sampler's last sample of them)."""
        self.sampler._sample()
        return self.sampler.cpu_total()


def stop_leftovers(sampler: TreeSampler, since: float) -> list[int]:
    """Stop the processes this run started that outlived it: every process the sampler saw under this driver
    (so started by it), still alive, created after `since` (guards against a reused PID). Ray actors of
    cosmos-xenna (NodeResourceMonitor, StageWorker) are left behind, re-parented to init, by ray.shutdown()."""
    me = os.getpid()
    pids = {pid for peaks in sampler.peaks.values() for pid in peaks} - {me}
    stopped = []
    for pid in pids:
        try:
            proc = psutil.Process(pid)
            if proc.create_time() >= since - 1:
                proc.terminate()
                stopped.append(pid)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    _, alive = psutil.wait_procs([psutil.Process(p) for p in stopped if psutil.pid_exists(p)], timeout=5)
    for proc in alive:
        try:
            proc.kill()
        except psutil.NoSuchProcess:
            pass
    return stopped


def peer_arguments() -> argparse.ArgumentParser:
    """The arguments every peer's runner takes from benchmarks/pipeline_scale.py."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--warcs", nargs="+", required=True)
    parser.add_argument("--records", type=int, required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--threshold", type=float, required=True)
    parser.add_argument("--result", required=True)
    parser.add_argument("--workers", type=int, default=2)
    return parser
