"""One writer per run folder: a lock every writing command takes, with a lease that a live holder renews.

The lock is `<run>/_state/_lock.json`, created with O_CREAT|O_EXCL (atomic on a local disk and on NFS v3+),
holding who took it: pid, host, command, start time. While the command runs, a daemon thread touches it
every `RENEW_S` seconds. Another command that finds it:
- refuses with one message naming the holder (or, with `wait=True`, waits for it to go);
- takes it over, saying whose it was, when the holder is gone: a dead process on this host, or a holder on
  any host that stopped renewing for `LEASE_S` seconds (a killed node, a lost job).
Read-only commands (`report`, `explain`, the notebook) take no lock.

A run folder on object storage keeps the lock as an object of its own, `<url>/_state/_lock.json`, created with
a conditional put (If-None-Match: only when no such object exists: S3's exclusive create) and renewed by
writing it again; its age is the store's own clock (the object's last-modified time) against this host's.
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


class _FileLease:
    """The lock as a file: O_CREAT|O_EXCL to take it, its mtime as the lease."""

    def __init__(self, path: Path):
        self.path = path

    def read(self) -> tuple[str, float] | None:
        """The lock's content and its age in seconds (None: no lock)."""
        try:
            return self.path.read_text(), time.time() - self.path.stat().st_mtime
        except FileNotFoundError:
            return None
        except OSError:
            try:
                return "", time.time() - self.path.stat().st_mtime
            except FileNotFoundError:
                return None

    def create(self, text: str) -> bool:
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        return True

    def renew(self) -> None:
        os.utime(self.path)

    def delete(self) -> None:
        self.path.unlink(missing_ok=True)


class _ObjectLease:
    """The lock as an object: a conditional put to take it, a plain put to renew it."""

    def __init__(self, fs: Any, key: str):
        self.fs, self.key = fs, key

    def read(self) -> tuple[str, float] | None:
        try:
            self.fs.invalidate_cache(self.key)
            info = self.fs.info(self.key)
            text = self.fs.cat_file(self.key).decode("utf-8", "replace")
        except FileNotFoundError:
            return None
        modified = info.get("LastModified")
        return text, time.time() - modified.timestamp() if hasattr(modified, "timestamp") else 0.0

    def create(self, text: str) -> bool:
        try:
            self.fs.pipe_file(self.key, text.encode(), mode="create")
        except FileExistsError:
            return False
        self.text = text
        return True

    def renew(self) -> None:
        self.fs.pipe_file(self.key, self.text.encode())

    def delete(self) -> None:
        try:
            self.fs.rm_file(self.key)
        except FileNotFoundError:
            pass


class RunLock:
    def __init__(self, root: str | Path, command: str, *, wait: bool = False, poll_s: float = 2.0):
        from pipeline.io import RunLayout

        layout = RunLayout(root)
        self.root = layout.root
        self.location = layout.location
        self.path = self.root / "_state" / "_lock.json"
        self.lease = (_ObjectLease(layout.remote.fs, layout.remote.remote(self.path)) if layout.remote
                      else _FileLease(self.path))
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
        found = self.lease.read()
        if found is None:
            return None
        text, age = found
        try:
            info = json.loads(text)
        except ValueError:
            info = None
        if not isinstance(info, dict):
            info = {"pid": None, "host": None, "command": "(unreadable lock file)"}
        info["age_s"] = age
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
        return self.lease.create(json.dumps(info) + "\n")

    def acquire(self) -> RunLock:
        while not self._try_create():
            info = self.holder()
            if info is None:
                continue  # released between our two looks
            if self._stale(info):
                self.took_over = self.describe(info)
                print(f"curate: took over the lock of {self.location} from a writer that is gone "
                      f"({self.took_over})", flush=True)
                self.lease.delete()
                continue
            if not self.wait:
                raise RunLocked(f"{self.location} is being written by another command ({self.describe(info)}); "
                                "wait for it to finish, or pass --wait-lock to wait, or use another --out")
            time.sleep(self.poll_s)
        self._thread = threading.Thread(target=self._renew, name="curate-run-lock", daemon=True)
        self._thread.start()
        return self

    def _renew(self) -> None:
        while not self._stop.wait(RENEW_S):
            try:
                self.lease.renew()
            except Exception:  # noqa: BLE001 - a lease that cannot be renewed lapses; the command goes on
                return

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        info = self.holder()
        if info is not None and info.get("pid") == os.getpid() and info.get("host") == socket.gethostname():
            self.lease.delete()
        for folder in reversed(self._created):  # a command stopped by its checks leaves no folder behind
            try:
                folder.rmdir()
            except OSError:
                break

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()
