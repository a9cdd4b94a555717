"""The run folder on object storage: `--out s3://bucket/prefix` (any fsspec URL).

The object store holds the run folder; every process works in a local copy of it under the run cache
(`storage.cache_dir`, the same path on every node, like Ray's own temp folder), so every library a stage
uses (pyarrow, fastText, mmap, DuckDB) reads and writes local files at local speed, and a rerun downloads
only what changed. The guarantees of the local folder carry over:

- **Whole or nothing.** A file is written whole to the local copy (`pipeline.io.atomic_path`), then put as
  one object: an object store shows an object whole or not at all, so no rename is needed and no reader
  ever sees half a file. Puts are retried on transient errors (SlowDown, 503, timeouts); a put that still
  fails fails the shard, which the next run redoes.
- **Markers last.** Files are put as they are written, and a shard's marker is written after its files, so
  the marker's object appears after theirs: a shard is complete on the store exactly when its marker is
  there (a `kill -9` between a local write and its put leaves a shard that is simply redone).
- **The store is the truth.** Before a stage, the driver brings its copy up to date (`pull(exact=True)`):
  objects whose version differs are downloaded, and local files the store does not hold (written by a run
  that was killed before their put, or removed by another node) are removed. Workers copy in what their
  shards read (additive). Removals (stale shards, forgotten markers) remove the object and the local file.

The version of each local file (the object's ETag, or size and mtime where a store has no ETag) is kept
beside the copy, under `<cache>/versions/`, never inside the run folder itself.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from pipeline.transient import retry

CACHE_ENV = "CURATE_RUN_CACHE"  # the run cache (local copies of run folders on object storage)
OPTIONS_ENV = "CURATE_STORAGE_OPTIONS"  # JSON: fsspec options per protocol for the run folder
RETRIES_ENV = "CURATE_STORAGE_RETRIES"
DEFAULT_CACHE = "/tmp/curate-runs"
_TRANSFER_THREADS = 8
# What never leaves a node's copy: hidden files and folders (temp files, staging folders renamed into place
# whole, the LLM response cache), the demo's model and LLM server files (one per node), the lock (on object
# storage it is an object of its own, `pipeline.runlock`).
LOCAL_ONLY = ("tiny-llama/", "_state/llm-server.", "_state/_lock.json")


def local_only(rel: str) -> bool:
    return rel.startswith(LOCAL_ONLY) or any(part.startswith(".") for part in rel.split("/"))


def is_remote(out: str | Path) -> bool:
    """Whether a run folder is an object-store URL (`s3://...`, `gs://...`, `memory://...`), not a path."""
    text = str(out)
    return "://" in text and not text.startswith("file://")


def cache_root() -> Path:
    return Path(os.environ.get(CACHE_ENV) or DEFAULT_CACHE)


def configure(cache_dir: str | None, options: dict[str, dict[str, Any]], retries: int) -> dict[str, str]:
    """Set the run folder's storage settings for this process and return them as environment variables, for
    the processes it starts (Ray workers get them through the job's runtime environment)."""
    cache = cache_dir or os.environ.get(CACHE_ENV) or DEFAULT_CACHE
    env = {CACHE_ENV: str(Path(cache).absolute()), OPTIONS_ENV: json.dumps(options, sort_keys=True),
           RETRIES_ENV: str(retries)}
    if any(os.environ.get(key) != value for key, value in env.items()):
        os.environ.update(env)
        _FOLDERS.clear()
    return env


def worker_env() -> dict[str, str]:
    """The storage settings of this process, for the workers it starts (only when it uses a run folder on object
    storage: local runs start their workers as before)."""
    if not _FOLDERS:
        return {}
    return {key: os.environ[key] for key in (CACHE_ENV, OPTIONS_ENV, RETRIES_ENV) if key in os.environ}


def _options(protocol: str) -> dict[str, Any]:
    try:
        options = json.loads(os.environ.get(OPTIONS_ENV) or "{}")
    except ValueError:
        options = {}
    return dict(options.get(protocol, {}))


def _modified(info: dict[str, Any]) -> float | None:
    """When the object was written (seconds), where the store says."""
    value = info.get("LastModified") or info.get("mtime") or info.get("updated")
    if hasattr(value, "timestamp"):
        return value.timestamp()
    return float(value) if isinstance(value, int | float) else None


def _version(info: dict[str, Any]) -> str:
    """What identifies one write of an object: its ETag where the store has one, else size and time."""
    for key in ("ETag", "etag", "generation", "md5Hash"):
        if info.get(key):
            return str(info[key]).strip('"')
    return f"{info.get('size')}:{info.get('LastModified') or info.get('mtime') or info.get('created')}"


class RemoteFolder:
    """One run folder on object storage and its local copy. `root` is the copy: what `RunLayout.root` is."""

    def __init__(self, url: str):
        import fsspec

        self.url = url.rstrip("/")
        self.protocol, rest = self.url.split("://", 1)
        self.fs = fsspec.filesystem(self.protocol, **_options(self.protocol))
        self.remote_root = self.fs._strip_protocol(self.url).rstrip("/")
        # one folder per run folder URL: readable, and unique even for URLs that differ only in odd characters
        slug = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in rest)[-80:]
        name = f"{self.protocol}-{slug}-{hashlib.sha1(self.url.encode()).hexdigest()[:8]}"
        self.root = cache_root() / "runs" / name
        self.versions = cache_root() / "versions" / name
        self.attempts = int(os.environ.get(RETRIES_ENV) or 5)
        # which URL a copy belongs to, for a process that meets a path of the copy before the URL
        # (a task writing scratch files of a stage)
        named = cache_root() / "urls" / name
        if not named.is_file():
            named.parent.mkdir(parents=True, exist_ok=True)
            tmp = named.with_name(f".{name}.{uuid.uuid4().hex[:8]}.tmp")
            tmp.write_text(self.url)
            os.replace(tmp, named)

    # ------------------------------------------------------------------------------------------ naming
    def relative(self, local: str | Path) -> str:
        return Path(local).absolute().relative_to(self.root).as_posix()

    def remote(self, local: str | Path) -> str:
        rel = self.relative(local)
        return self.remote_root if rel == "." else f"{self.remote_root}/{rel}"

    def url_of(self, local: str | Path) -> str:
        rel = self.relative(local)
        return self.url if rel == "." else f"{self.url}/{rel}"

    def _version_path(self, rel: str) -> Path:
        return self.versions / rel

    def _recorded(self, rel: str) -> str | None:
        try:
            return self._version_path(rel).read_text()
        except OSError:
            return None

    def _record(self, rel: str, version: str | None) -> None:
        path = self._version_path(rel)
        if version is None:
            path.unlink(missing_ok=True)
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
        tmp.write_text(version)
        os.replace(tmp, path)

    def _call(self, what: str, call):
        return retry(call, attempts=self.attempts, backoff_s=0.5, what=what)

    # ------------------------------------------------------------------------------------------- writes
    def put(self, local: str | Path) -> None:
        """Put one finished local file as one object (whole or not at all) and record its version."""
        remote = self.remote(local)

        def put() -> dict[str, Any]:
            self.fs.put_file(str(local), remote)
            self.fs.invalidate_cache(remote)
            return self.fs.info(remote)

        info = self._call(f"put {remote}", put)
        self._record(self.relative(local), _version(info))
        _set_mtime(Path(local), info)

    def put_tree(self, folder: str | Path) -> None:
        files = [path for path in sorted(Path(folder).rglob("*"))
                 if path.is_file() and not local_only(self.relative(path))]
        self._parallel(self.put, files)

    def remove(self, local: str | Path) -> None:
        """Remove one object (missing is fine) and its local copy."""
        remote = self.remote(local)

        def remove() -> None:
            try:
                self.fs.rm_file(remote)
            except FileNotFoundError:
                pass
            self.fs.invalidate_cache(remote)

        self._call(f"remove {remote}", remove)
        Path(local).unlink(missing_ok=True)
        self._record(self.relative(local), None)

    def remove_tree(self, folder: str | Path) -> None:
        """Remove every object under a folder, and the local folder."""
        for rel in self._listing(self.relative(folder)):
            self.remove(self.root / rel)
        shutil.rmtree(folder, ignore_errors=True)

    def replace_tree(self, folder: str | Path) -> None:
        """`folder` was replaced locally by a finished one (a rename): put its files, then remove the objects
        under it that the new folder does not have."""
        folder = Path(folder)
        self.put_tree(folder)
        keep = {self.relative(path) for path in folder.rglob("*") if path.is_file()}
        for rel in self._listing(self.relative(folder)):
            if rel not in keep:
                self.remove(self.root / rel)

    # -------------------------------------------------------------------------------------------- reads
    def _listing(self, rel: str) -> dict[str, str]:
        """The objects under a relative folder (or the one object of a relative file): rel -> their info."""
        remote = self.remote_root if rel in ("", ".") else f"{self.remote_root}/{rel}"

        def find() -> dict[str, Any]:
            self.fs.invalidate_cache(remote)
            return self.fs.find(remote, detail=True)

        found = self._call(f"list {remote}", find)
        prefix = self.remote_root + "/"
        return {name.removeprefix(prefix): info for name, info in found.items()
                if info.get("type", "file") != "directory" and name.startswith(prefix)}

    def pull(self, rels: Iterable[str] = ("",), *, exact: bool = False,
             only: Callable[[str], bool] | None = None) -> int:
        """Bring the local copy of the given relative folders or files up to date with the store; returns how
        many objects were downloaded. `exact` also removes local files the store does not hold (the driver's
        copy; workers only add, since other workers of the same node write beside them). `only`: the objects
        to copy, by relative name (one partition of a shuffle step)."""
        wanted: dict[str, dict[str, Any]] = {}
        for rel in rels:
            listing = self._listing(rel)
            wanted.update({name: info for name, info in listing.items()
                           if not local_only(name) and (only is None or only(name))})
            if exact:
                local = self.root / rel if rel else self.root
                for path in list(local.rglob("*")) if local.is_dir() else []:
                    name = self.relative(path)
                    if path.is_file() and name not in listing and not local_only(name):
                        path.unlink(missing_ok=True)
                        self._record(name, None)
        stale = [name for name, info in wanted.items()
                 if self._recorded(name) != _version(info) or not (self.root / name).is_file()]
        self._parallel(lambda name: self._download(name, wanted[name]), stale)
        return len(stale)

    def pull_files(self, paths: Iterable[str | Path]) -> int:
        """Copy in the given local paths of the run folder (a shard's input files) when they are not current."""
        rels = [self.relative(path) for path in paths if inside(Path(path), self.root)]
        return self.pull(rels) if rels else 0

    def _download(self, rel: str, info: dict[str, Any]) -> None:
        local = self.root / rel
        local.parent.mkdir(parents=True, exist_ok=True)
        tmp = local.with_name(f".{local.name}.{uuid.uuid4().hex[:8]}.tmp")
        remote = f"{self.remote_root}/{rel}"
        try:
            self._call(f"get {remote}", lambda: self.fs.get_file(remote, str(tmp)))
            _set_mtime(tmp, info)  # the copy is as old as the object (the runner compares inputs with markers)
            os.replace(tmp, local)
        finally:
            tmp.unlink(missing_ok=True)
        self._record(rel, _version(info))

    def _parallel(self, fn, items: list[Any]) -> None:
        if len(items) <= 1:
            for item in items:
                fn(item)
            return
        with ThreadPoolExecutor(min(_TRANSFER_THREADS, len(items))) as pool:
            list(pool.map(fn, items))


def _set_mtime(path: Path, info: dict[str, Any]) -> None:
    modified = _modified(info)
    if modified is not None:
        os.utime(path, (modified, modified))


def inside(path: Path, folder: Path) -> bool:
    path = path.absolute()
    return path == folder or folder in path.parents


# One RemoteFolder per run folder URL per process (its fsspec filesystem and its local copy).
_FOLDERS: dict[str, RemoteFolder] = {}


def folder(url: str) -> RemoteFolder:
    url = url.rstrip("/")
    if url not in _FOLDERS:
        _FOLDERS[url] = RemoteFolder(url)
    return _FOLDERS[url]


def local_folder(location: str | Path) -> Path:
    """A folder given as a URL (a classifier on object storage): its local copy, brought up to date. A path: the
    path itself."""
    if not is_remote(location):
        return Path(location)
    remote = folder(str(location))
    remote.pull([""], exact=True)
    return remote.root


def folder_of(path: str | Path) -> RemoteFolder | None:
    """The run folder on object storage whose local copy holds `path`, if any (a local run folder: None)."""
    path = Path(path).absolute()
    runs = cache_root().absolute() / "runs"
    if runs not in path.parents:
        return None
    for remote in _FOLDERS.values():
        if inside(path, remote.root):
            return remote
    name = path.relative_to(runs).parts[0]
    try:
        return folder((cache_root() / "urls" / name).read_text())
    except OSError:
        return None


def written(path: str | Path) -> None:
    """A file of a run folder was written whole: put it when the run folder is on object storage."""
    remote = folder_of(path)
    if remote is not None and not local_only(remote.relative(path)):
        remote.put(path)


def removed(path: str | Path) -> None:
    """Remove a file of a run folder (and its object when the run folder is on object storage)."""
    remote = folder_of(path)
    if remote is not None:
        remote.remove(path)
    else:
        Path(path).unlink(missing_ok=True)


def removed_tree(path: str | Path) -> None:
    remote = folder_of(path)
    if remote is not None:
        remote.remove_tree(path)
    else:
        shutil.rmtree(path, ignore_errors=True)
