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
import shutil
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline import store
from pipeline.config import ConfigError
from pipeline.transient import (  # noqa: F401 - re-exported: callers import them from here
    TransientError,
    describe_error,
    http_status,
    is_transient,
    retry,
    unreadable_is_transient,
)

T = TypeVar("T")

PARQUET_COMPRESSION = "zstd"


def shard_key(name: str) -> str:
    """Deterministic, filesystem-safe shard name for an input unit (e.g. a WARC path)."""
    stem = Path(name.split("?")[0]).name
    for suffix in (".gz", ".warc", ".parquet"):
        stem = stem.removesuffix(suffix)
    safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in stem)[:60]
    return f"{safe}-{hashlib.sha1(name.encode()).hexdigest()[:10]}"


class DamagedFile(ConfigError):
    """A file of the run folder that cannot be read (cut short, overwritten): the message names it."""


def read_json(path: str | Path) -> Any:
    """A JSON file of the run folder; one that is not valid JSON (a write cut short, an edit) is a DamagedFile
    naming it, not a traceback."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as exc:
        raise DamagedFile(f"{path} is damaged (not valid JSON: {exc}); delete it and run the same command again "
                          "to redo what it records") from None


def read_json_or_empty(path: str | Path) -> dict[str, Any]:
    """A JSON file's content for a reader that can do without it (cards, explain): {} when it is missing or
    damaged (`curate report` is what names damage)."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return {}


def file_record(path: str | Path) -> dict[str, Any]:
    """Size and sha256 of a file, as shard markers record them (read back from the page cache just after the
    write: cheap next to compressing it)."""
    return {"bytes": Path(path).stat().st_size, "sha256": file_digest(path).hexdigest()}


def canonical(value: Any) -> Any:
    """`value` as JSON would give it back (sorted keys, tuples as lists, other objects as strings): the one
    form in which settings, plan identities and fingerprints are compared and recorded."""
    return json.loads(canonical_text(value))


def canonical_text(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temporary name beside `path` to write the whole file to; on success it is flushed to disk and renamed
    to `path` (readers see the old file or the new one, never half of one); on failure it is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        yield tmp
        with open(tmp, "rb") as written:
            os.fsync(written.fileno())
        os.replace(tmp, path)
        store.written(path)  # on object storage: put as one object (whole or not at all)
    except OSError as exc:
        if exc.filename in (None, str(tmp)):  # a writer library names no file, or the temp one: name the real one
            raise OSError(exc.errno, exc.strerror, str(path)) from exc
        raise
    finally:
        tmp.unlink(missing_ok=True)


def write_bytes(data: bytes, path: str | Path) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text(text: str, path: str | Path) -> Path:
    return write_bytes(text.encode(), path)


def write_parquet(table: pa.Table, path: str | Path, schema: pa.Schema) -> Path:
    """Write `table` cast to `schema`, zstd, atomically."""
    with atomic_path(path) as tmp:
        pq.write_table(table.select(schema.names).cast(schema), tmp, compression=PARQUET_COMPRESSION)
    return Path(path)


def write_json(obj: Any, path: str | Path) -> Path:
    return write_text(json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n", path)


def replace_dir(new: Path, target: Path) -> None:
    """Replace folder `target` with the finished folder `new` by two renames: readers see the old folder or
    the new one, never a half-written one."""
    target.parent.mkdir(parents=True, exist_ok=True)
    old = target.with_name(f".{target.name}.old-{uuid.uuid4().hex[:8]}")
    if target.exists():
        target.rename(old)
    new.rename(target)
    shutil.rmtree(old, ignore_errors=True)
    remote = store.folder_of(target)
    if remote is not None:
        remote.replace_tree(target)


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
    """Paths of one run's output root. A run folder on object storage (`s3://...`) has a local copy under the
    run cache (`pipeline.store`): `root` is that copy, `location` what the user gave."""

    def __init__(self, root: str | Path):
        self.location = str(root)
        self.remote = store.folder(str(root)) if store.is_remote(root) else None
        self.root = self.remote.root if self.remote else Path(root)

    def pull(self) -> int:
        """Bring the local copy of a run folder on object storage up to date (a local folder: nothing to do).
        The driver does this before each stage and each read-only command."""
        if self.remote is None:
            return 0
        return self.remote.pull([""], exact=True)

    def remove(self, path: str | Path) -> None:
        """Remove a file of the run folder (its object too, on object storage)."""
        store.removed(path)

    def show(self, path: str | Path) -> str:
        """How to name a path of the run folder in a message: its URL on object storage."""
        return self.remote.url_of(path) if self.remote and store.inside(Path(path), self.root) else str(path)

    def dataset(self, name: str) -> Path:
        return self.root / name

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
        return (marker.get("transient_errors", 0) == 0 and all(Path(p).is_dir() for p in marker.get("artifacts", []))
                and not self.damaged_files(marker))

    def damaged_files(self, marker: dict[str, Any], *, checksums: bool = False) -> list[str]:
        """The files a shard marker records that are missing or differ from what was written: size always,
        sha256 with `checksums` (each named with what is wrong)."""
        problems = []
        for name, recorded in (marker.get("files") or {}).items():
            path = self.root / name
            if not path.is_file():
                problems.append(f"{path}: missing")
                continue
            size = path.stat().st_size
            if size != recorded["bytes"]:
                problems.append(f"{path}: {size} bytes, {recorded['bytes']} when written")
            elif checksums and file_digest(path).hexdigest() != recorded["sha256"]:
                problems.append(f"{path}: content differs from what was written (sha256)")
        return problems

    def is_stage_done(self, stage: str) -> bool:
        return self.stage_marker(stage).exists()

    def is_stage_intact(self, stage: str) -> bool:
        """Every shard marker of a finished stage reads, and every file it records is there at its size (a
        stat each): a damaged file or marker is found before the stage is skipped as done."""
        folder = self.state(stage)
        for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
            if path.name.startswith(("_", ".")):
                continue
            try:
                marker = json.loads(path.read_text())
            except (OSError, ValueError):
                return False
            if self.damaged_files(marker):
                return False
        return True

    def settings_path(self, stage: str) -> Path:
        return self.root / "_state" / "_settings" / f"{stage}.json"

    def has_outputs(self, stage: str) -> bool:
        """Whether any shard of `stage` has finished in this folder (its settings are then binding)."""
        folder = self.state(stage)
        return folder.is_dir() and any(not p.name.startswith((".", "_")) for p in folder.glob("*.json"))

    def check_settings(self, stage: str, settings: dict[str, Any],
                       defaults: Callable[[], dict[str, Any] | None] | None = None) -> None:
        """Refuse to add to (or skip over) outputs of `stage` that were made with other settings, naming what
        changed. Settings bind only once the stage has outputs: a run that never got that far locks nothing.
        A setting the folder's record does not have (added to the project after the folder was made) is not
        a change when it holds its default (`defaults()`, computed only then): the old outputs were made with
        that behaviour."""
        path = self.settings_path(stage)
        if not path.exists() or not self.has_outputs(stage):
            return
        settings = canonical(settings)
        before = read_json(path)
        changed = [key for key in sorted(set(before) | set(settings)) if before.get(key) != settings.get(key)]
        unrecorded = [key for key in changed if key not in before]
        if unrecorded and defaults is not None:
            default = canonical(defaults() or {})
            changed = [key for key in changed
                       if not (key in unrecorded and key in default and settings.get(key) == default[key])]
        changed = [f"{key}: {before.get(key)!r} -> {settings.get(key)!r}" for key in changed]
        if changed:
            raise SettingsChanged(
                f"{stage}: {self.root} holds {stage} outputs made with other settings ({'; '.join(changed)}). "
                f"Use another --out, or put the settings back; to redo the stage here, delete "
                f"{self.state(stage)}, {path} and the stage's outputs first.")

    def record_settings(self, stage: str, settings: dict[str, Any]) -> None:
        """Record the settings the stage's outputs are about to be made with (before its first shard runs)."""
        write_json(canonical(settings), self.settings_path(stage))

    def shard_stats(self, stage: str) -> list[dict]:
        folder = self.state(stage)
        if not folder.exists():
            return []
        return [read_json(p) for p in sorted(folder.glob("*.json")) if not p.name.startswith("_")]

    @property
    def report_path(self) -> Path:
        return self.root / "report.json"


class SettingsChanged(ConfigError):
    """A run folder's stage outputs were made with other settings than the ones given now."""


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



# ---------------------------------------------------------------------------------- sharded datasets, digests
def file_digest(path: str | Path, digest: Any = None) -> Any:
    """`digest` (a new sha256 when None) updated with the bytes of the file at `path`, read in 4 MiB chunks:
    `file_digest(path).hexdigest()` is the file's sha256."""
    digest = hashlib.sha256() if digest is None else digest
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 22):
            digest.update(chunk)
    return digest


def named_files_digest(files: list[tuple[str, Path]]) -> str:
    """sha256 of one file's bytes (name ""), or of several files: each name, NUL, its bytes, in the given order."""
    digest = hashlib.sha256()
    for name, file in files:
        if name:
            digest.update(name.encode() + b"\x00")
        file_digest(file, digest)
    return digest.hexdigest()


def tree_digest(path: str | Path) -> str:
    """sha256 of a file, or of a folder's files (sorted, by relative name): what a list or an eval set given as a
    path holds, for fingerprints and cards."""
    path = Path(path)
    if not path.is_dir():
        return named_files_digest([("", path)])
    return named_files_digest([(str(f.relative_to(path)), f) for f in sorted(path.rglob("*")) if f.is_file()])


class ShardedParquetWriter:
    """Rows in, `part-00000.parquet`, `part-00001.parquet`, ... out: explicit schema, zstd, a new file once
    the current one reaches `rows_per_file` rows (exact) or `bytes_per_file` bytes on disk (checked after each
    row group, so a file ends up to one row group plus its footer above the target). Each file is written
    under a temporary name and renamed when complete."""

    def __init__(self, folder: Path, schema: pa.Schema, *, rows_per_file: int | None, bytes_per_file: int,
                 row_group_rows: int = 50_000):
        self.folder = folder
        self.schema = schema
        self.rows_per_file = rows_per_file
        self.bytes_per_file = bytes_per_file
        self.row_group_rows = min(row_group_rows, rows_per_file or row_group_rows)
        # Row groups of up to half the target in memory (about a sixth on disk with zstd on text): big enough
        # that the footer (per row group and column) stays small, small enough to overshoot the target little.
        self.row_group_bytes = max(min(bytes_per_file // 2, 64 * 1024 * 1024), 1)
        self.files: list[dict[str, Any]] = []
        self._pending: list[pa.Table] = []
        self._pending_rows = 0
        self._pending_bytes = 0
        self._sink = None
        self._writer = None
        self._tmp: Path | None = None
        self._rows_in_file = 0
        self._row_groups_in_file = 0
        # The footer grows by about this much per row group (column chunk metadata); a first guess, then
        # measured on each finished file. It counts toward the byte target.
        self._footer_per_row_group = 100 * len(schema)

    def write(self, table: pa.Table) -> None:
        table = table.select(self.schema.names).cast(self.schema)
        row_bytes = max(1, table.nbytes // max(table.num_rows, 1))
        while table.num_rows:
            room = self.row_group_rows - self._pending_rows
            room = max(1, min(room, (self.row_group_bytes - self._pending_bytes) // row_bytes))
            if self.rows_per_file:
                room = min(room, self.rows_per_file - self._rows_in_file - self._pending_rows)
            part, table = table.slice(0, room), table.slice(room)
            self._pending.append(part)
            self._pending_rows += part.num_rows
            self._pending_bytes += part.nbytes
            file_full = self.rows_per_file and self._rows_in_file + self._pending_rows >= self.rows_per_file
            if self._pending_rows >= self.row_group_rows or self._pending_bytes >= self.row_group_bytes or file_full:
                self._flush()

    def _flush(self) -> None:
        if not self._pending_rows:
            return
        if self._writer is None:
            self._open_file()
        self._writer.write_table(pa.concat_tables(self._pending))
        self._rows_in_file += self._pending_rows
        self._row_groups_in_file += 1
        self._pending, self._pending_rows, self._pending_bytes = [], 0, 0
        full_rows = self.rows_per_file and self._rows_in_file >= self.rows_per_file
        expected_size = self._sink.tell() + self._row_groups_in_file * self._footer_per_row_group
        if full_rows or expected_size >= self.bytes_per_file:
            self._close_file()

    def _open_file(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        name = f"part-{len(self.files):05d}.parquet"
        self._tmp = self.folder / f".{name}.tmp"
        self._sink = pa.OSFile(str(self._tmp), "wb")
        self._writer = pq.ParquetWriter(self._sink, self.schema, compression=PARQUET_COMPRESSION)
        self._rows_in_file = self._row_groups_in_file = 0

    def _close_file(self) -> None:
        data_bytes = self._sink.tell()
        self._writer.close()
        if self._row_groups_in_file:
            self._footer_per_row_group = (self._sink.tell() - data_bytes) // self._row_groups_in_file
        self._sink.close()
        name = self._tmp.name.removeprefix(".").removesuffix(".tmp")
        final = self.folder / name
        os.replace(self._tmp, final)
        store.written(final)
        self.files.append({"file": name, "rows": self._rows_in_file, "bytes": final.stat().st_size,
                           "sha256": file_digest(final).hexdigest()})
        self._writer = self._sink = self._tmp = None
        self._rows_in_file = self._row_groups_in_file = 0

    def close(self) -> list[dict[str, Any]]:
        if not self.files and not self._pending_rows and self._writer is None:
            # nothing kept: one empty file with the schema, so readers see an empty dataset, not no dataset
            self._open_file()
            self._writer.write_table(self.schema.empty_table())
            self._close_file()
            return self.files
        self._flush()
        if self._writer is not None:
            self._close_file()
        return self.files
