"""One writer per run folder: a lock every writing command takes, with a lease that a live holder renews.

The lock is `<run>/_state/_lock.json`, created with O_CREAT|O_EXCL (atomic on a local disk and on NFS v3+),
holding who took it: pid, host, command, start time. While the command runs, a daemon thread touches it
every `RENEW_S` seconds. Another command that finds it:
- refuses with one message naming the holder (or, with `wait=True`, waits for it to go);
- takes it over, saying whose it was, when the holder is gone: a dead process on this host, or a holder on
  any host that stopped renewing for `LEASE_S` seconds (a killed node, a lost job).
Read-only commands (`report`, `explain`, the notebook) take no lock.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from pathlib import Path
from typing import Any

from pipeline.errors import CurateError

RENEW_S = 10.0
LEASE_S = 60.0


class RunLocked(CurateError):
    """Another command is writing into the run folder."""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class RunLock:
    def __init__(self, root: str | Path, command: str, *, wait: bool = False, poll_s: float = 2.0):
        self.root = Path(root)
        self.path = self.root / "_state" / "_lock.json"
        self.command = command
        self.wait = wait
        self.poll_s = poll_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._created: list[Path] = []
        self.took_over: str | None = None

    # ------------------------------------------------------------------------------------------ the holder
    def holder(self) -> dict[str, Any] | None:
        """Who holds the lock (with `age_s`: seconds since it was last renewed), or None."""
        try:
            info = json.loads(self.path.read_text())
            info["age_s"] = time.time() - self.path.stat().st_mtime
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            info = {"pid": None, "host": None, "command": "(unreadable lock file)"}
            try:
                info["age_s"] = time.time() - self.path.stat().st_mtime
            except FileNotFoundError:
                return None
        return info

    @staticmethod
    def describe(info: dict[str, Any]) -> str:
        return (f"pid {info.get('pid')} on {info.get('host')}, `{info.get('command')}`, started "
                f"{info.get('started', '?')}, renewed {info.get('age_s', 0):.0f}s ago")

    def _stale(self, info: dict[str, Any]) -> bool:
        if info.get("age_s", 0) > LEASE_S:
            return True
        same_host = info.get("host") == socket.gethostname()
        return same_host and isinstance(info.get("pid"), int) and not _alive(info["pid"])

    # ---------------------------------------------------------------------------------------- take, give
    def _try_create(self) -> bool:
        for folder in (self.root, self.root / "_state"):
            if not folder.exists():
                folder.mkdir(parents=True, exist_ok=True)
                self._created.append(folder)
        info = {"pid": os.getpid(), "host": socket.gethostname(), "command": self.command,
                "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w") as handle:
            handle.write(json.dumps(info) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        return True

    def acquire(self) -> RunLock:
        while not self._try_create():
            info = self.holder()
            if info is None:
                continue  # released between our two looks
            if self._stale(info):
                self.took_over = self.describe(info)
                print(f"curate: took over the lock of {self.root} from a writer that is gone "
                      f"({self.took_over})", flush=True)
                self.path.unlink(missing_ok=True)
                continue
            if not self.wait:
                raise RunLocked(f"{self.root} is being written by another command ({self.describe(info)}); "
                                "wait for it to finish, or pass --wait-lock to wait, or use another --out")
            time.sleep(self.poll_s)
        self._thread = threading.Thread(target=self._renew, name="curate-run-lock", daemon=True)
        self._thread.start()
        return self

    def _renew(self) -> None:
        while not self._stop.wait(RENEW_S):
            try:
                os.utime(self.path)
            except OSError:
                return

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        info = self.holder()
        if info is not None and info.get("pid") == os.getpid() and info.get("host") == socket.gethostname():
            self.path.unlink(missing_ok=True)
        for folder in reversed(self._created):  # a command stopped by its checks leaves no folder behind
            try:
                folder.rmdir()
            except OSError:
                break

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()
