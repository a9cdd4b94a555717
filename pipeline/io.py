"""Run layout on disk, atomic Parquet writes, shard markers, and remote file access with retries.

A run's output root holds one folder per dataset (`docs/`, `unique/`, ...), `decisions/<stage>/`, and
`_state/<stage>/<shard>.json` markers. A shard's marker is written last, after its data files, so a
shard is complete exactly when its marker exists: a rerun skips complete shards and rewrites the others
under the same deterministic names (no duplicate rows).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.config import ConfigError

T = TypeVar("T")

PARQUET_COMPRESSION = "zstd"


def shard_key(name: str) -> str:
    """Deterministic, filesystem-safe shard name for an input unit (e.g. a WARC path)."""
    stem = Path(name.split("?")[0]).name
    for suffix in (".gz", ".warc", ".parquet"):
        stem = stem.removesuffix(suffix)
    safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in stem)[:60]
    return f"{safe}-{hashlib.sha1(name.encode()).hexdigest()[:10]}"


def _atomic_target(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    return path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")


def write_parquet(table: pa.Table, path: str | Path, schema: pa.Schema) -> Path:
    """Write `table` cast to `schema`, zstd, atomically (temp name in the same folder, then rename)."""
    path = Path(path)
    tmp = _atomic_target(path)
    try:
        pq.write_table(table.select(schema.names).cast(schema), tmp, compression=PARQUET_COMPRESSION)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def write_json(obj: Any, path: str | Path) -> Path:
    path = Path(path)
    tmp = _atomic_target(path)
    try:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def read_dataset(folder: str | Path, schema: pa.Schema, columns: list[str] | None = None) -> pa.Table:
    """Read every `*.parquet` in a folder (sorted by name, so row order is deterministic) with `schema`."""
    files = sorted(Path(folder).glob("*.parquet"))
    if not files:
        table = schema.empty_table()
        return table.select(columns) if columns else table
    tables = [pq.read_table(f, columns=columns, schema=schema) for f in files]
    return pa.concat_tables(tables)


def parquet_files(folder: str | Path) -> list[Path]:
    return sorted(Path(folder).glob("*.parquet"))


class RunLayout:
    """Paths of one run's output root."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    def dataset(self, name: str) -> Path:
        return self.root / name

    def documents(self) -> Path:
        """The run's documents for the stages after dedup: unique/ when dedup ran, else docs/."""
        unique = self.dataset("unique")
        return unique if unique.is_dir() and any(unique.glob("*.parquet")) else self.dataset("docs")

    def decisions(self, stage: str) -> Path:
        return self.root / "decisions" / stage

    def state(self, stage: str) -> Path:
        return self.root / "_state" / stage

    def marker(self, stage: str, key: str) -> Path:
        return self.state(stage) / f"{key}.json"

    def stage_marker(self, stage: str) -> Path:
        return self.state(stage) / "_STAGE_COMPLETE.json"

    def is_shard_done(self, stage: str, key: str) -> bool:
        """The one resume rule: a shard is done iff its marker exists, it recorded no transient error (a source
        that could not be read, a request that timed out: the next run tries those again), and the artifact
        folders it installed (a trained classifier) are still there."""
        path = self.marker(stage, key)
        if not path.exists():
            return False
        try:
            marker = json.loads(path.read_text())
        except (OSError, ValueError):
            return False  # a marker cut short by a crash: redo the shard
        return marker.get("transient_errors", 0) == 0 and all(Path(p).is_dir() for p in marker.get("artifacts", []))

    def is_stage_done(self, stage: str) -> bool:
        return self.stage_marker(stage).exists()

    def settings_path(self, stage: str) -> Path:
        return self.root / "_state" / "_settings" / f"{stage}.json"

    def has_outputs(self, stage: str) -> bool:
        """Whether any shard of `stage` has finished in this folder (its settings are then binding)."""
        folder = self.state(stage)
        return folder.is_dir() and any(not p.name.startswith((".", "_")) for p in folder.glob("*.json"))

    def check_settings(self, stage: str, settings: dict[str, Any]) -> None:
        """Refuse to add to (or skip over) outputs of `stage` that were made with other settings, naming what
        changed. Settings bind only once the stage has outputs: a run that never got that far locks nothing."""
        path = self.settings_path(stage)
        if not path.exists() or not self.has_outputs(stage):
            return
        settings = json.loads(json.dumps(settings, sort_keys=True, default=str))
        before = json.loads(path.read_text())
        changed = [f"{key}: {before.get(key)!r} -> {settings.get(key)!r}"
                   for key in sorted(set(before) | set(settings)) if before.get(key) != settings.get(key)]
        if changed:
            raise SettingsChanged(
                f"{stage}: {self.root} holds {stage} outputs made with other settings ({'; '.join(changed)}). "
                f"Use another --out, or put the settings back; to redo the stage here, delete "
                f"{self.state(stage)}, {path} and the stage's outputs first.")

    def record_settings(self, stage: str, settings: dict[str, Any]) -> None:
        """Record the settings the stage's outputs are about to be made with (before its first shard runs)."""
        write_json(json.loads(json.dumps(settings, sort_keys=True, default=str)), self.settings_path(stage))

    def shard_stats(self, stage: str) -> list[dict]:
        folder = self.state(stage)
        if not folder.exists():
            return []
        return [json.loads(p.read_text()) for p in sorted(folder.glob("*.json")) if not p.name.startswith("_")]

    @property
    def report_path(self) -> Path:
        return self.root / "report.json"


class SettingsChanged(ConfigError):
    """A run folder's stage outputs were made with other settings than the ones given now."""


class TransientError(Exception):
    """An error worth retrying (HTTP 429/5xx, S3 SlowDown, a dropped connection)."""


# HTTP answers worth retrying, and the S3 error codes that mean the same
TRANSIENT_HTTP_STATUS = frozenset({408, 429, 500, 502, 503, 504})
TRANSIENT_S3_CODES = frozenset({"SlowDown", "Throttling", "ThrottlingException", "RequestTimeout",
                                "ServiceUnavailable", "InternalError", "RequestLimitExceeded"})
_TRANSIENT_MARKERS = ("SlowDown", "Service Unavailable", "Too Many Requests", "Connection reset",
                      "ServerDisconnected", "ClientConnectorError", "ClientOSError", "ClientPayloadError",
                      "Timeout", "timed out", "RemoteProtocolError", "ConnectError")
_URL = re.compile(r"\S+://\S+")


def _causes(exc: BaseException):
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def is_transient(exc: BaseException) -> bool:
    """Whether an error is worth retrying: HTTP 408/429/5xx, S3 SlowDown and friends, a dropped or
    refused connection, a timeout. The chain of causes is searched because fsspec's HTTP filesystem
    reports any failed status, 503 included, as FileNotFoundError(url) raised from the HTTP error.
    An HTTP status found in the chain decides; message text is only a fallback, with URLs removed
    (a port or path may hold "503")."""
    for error in _causes(exc):
        if isinstance(error, TransientError | ConnectionError | TimeoutError):
            return True
        status = getattr(error, "status", None)
        if isinstance(status, int) and 100 <= status < 600:
            return status in TRANSIENT_HTTP_STATUS
        response = getattr(error, "response", None)
        if isinstance(response, dict):  # botocore ClientError
            code = str(response.get("Error", {}).get("Code", ""))
            status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if code or status:
                return code in TRANSIENT_S3_CODES or status in TRANSIENT_HTTP_STATUS
        text = _URL.sub("", f"{type(error).__name__}: {error}")
        if any(marker in text for marker in _TRANSIENT_MARKERS):
            return True
    return False


def http_status(exc: BaseException) -> int | None:
    """The HTTP status somewhere in an error's chain of causes (aiohttp, botocore), if any."""
    for error in _causes(exc):
        status = getattr(error, "status", None)
        if isinstance(status, int) and 100 <= status < 600:
            return status
        response = getattr(error, "response", None)
        if isinstance(response, dict):
            status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if isinstance(status, int):
                return status
    return None


def describe_error(exc: BaseException) -> str:
    """What went wrong, for a decision's detail: the HTTP status when there was one (fsspec reports a 503 as
    FileNotFoundError(url)), else the error's type and message."""
    status = http_status(exc)
    if status is not None:
        from http import HTTPStatus

        try:
            phrase = HTTPStatus(status).phrase
        except ValueError:
            phrase = ""
        return f"HTTP {status} {phrase.lower()}".rstrip() + f" ({type(exc).__name__})"
    if isinstance(exc, FileNotFoundError):
        return f"file not found ({exc})"
    return f"{type(exc).__name__}: {exc}"


def unreadable_is_transient(exc: BaseException) -> bool:
    """Whether a source that could not be read at all is worth another try on the next run: an HTTP status
    decides when there is one (429/5xx yes, 404/403 no); else a timeout, a reset connection, a local file not
    there (yet) or not readable, a full disk while downloading."""
    import errno

    status = http_status(exc)
    if status is not None:
        return status in TRANSIENT_HTTP_STATUS
    if is_transient(exc) or isinstance(exc, FileNotFoundError | PermissionError):
        return True
    return getattr(exc, "errno", None) in (errno.ENOSPC, errno.EDQUOT)


def retry(call: Callable[[], T], *, attempts: int, backoff_s: float, what: str,
          sleep: Callable[[float], None] = time.sleep) -> T:
    """Call `call`, retrying transient errors with exponential back-off and jitter."""
    for attempt in range(attempts + 1):
        try:
            return call()
        except Exception as exc:  # noqa: BLE001 - classified below
            if attempt >= attempts or not is_transient(exc):
                raise
            sleep(backoff_s * (2**attempt) * (0.5 + random.random()))
    raise AssertionError("unreachable")


def open_remote(url: str, storage_options: dict[str, dict[str, Any]] | None = None):
    """Open a local path or any fsspec URL (s3://, https://) for binary reading."""
    import fsspec

    protocol = url.split("://", 1)[0] if "://" in url else "file"
    options = dict((storage_options or {}).get(protocol, {}))
    return fsspec.open(url, "rb", **options).open()


@contextmanager
def local_copy(url: str, storage_options: dict[str, dict[str, Any]] | None, *, attempts: int,
               backoff_s: float, tmp_dir: str | None = None) -> Iterator[Path]:
    """Yield a local path for `url`: the file itself when local, else a streamed download (retried whole on
    transient errors) that is deleted afterwards. Memory stays bounded by the copy buffer."""
    if "://" not in url or url.startswith("file://"):
        yield Path(url.removeprefix("file://"))
        return
    import tempfile

    fd, name = tempfile.mkstemp(prefix="curate-", suffix=".warc.gz", dir=tmp_dir)
    os.close(fd)
    tmp = Path(name)

    def download() -> None:
        with open_remote(url, storage_options) as src, open(tmp, "wb") as dst:
            while chunk := src.read(4 * 1024 * 1024):
                dst.write(chunk)

    try:
        retry(download, attempts=attempts, backoff_s=backoff_s, what=url)
        yield tmp
    finally:
        tmp.unlink(missing_ok=True)
