"""A file-based shuffle for the dedup steps: every task of a step writes its output split into partitions
(`<step>/<task>/to-<partition>.parquet`), and a task of the next step reads one partition from every writer.
No process ever holds more than its own partition. Each task writes a done marker after its files, so a
rerun skips finished tasks and rewrites unfinished ones under the same names.

These are scratch files under `<out>/_work/dedup/`, deleted when the stage completes; their schemas live
with the step that writes them.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import xxhash

from pipeline import store
from pipeline.accounting import peak_rss_mb
from pipeline.io import write_json, write_parquet


def string_partitions(values: list[str], num_partitions: int) -> np.ndarray:
    """Stable partition of each string (the same in every process, unlike Python's hash())."""
    digest = xxhash.xxh3_64_intdigest
    hashes = np.fromiter((digest(v.encode("utf-8", "surrogatepass")) for v in values), dtype=np.uint64,
                         count=len(values))
    return (hashes % np.uint64(num_partitions)).astype(np.int64)


def digest_partitions(keys: pa.Array, num_partitions: int) -> np.ndarray:
    """Partition of fixed-size binary digests by their first 8 bytes (digests are already uniform)."""
    keys = keys.combine_chunks() if isinstance(keys, pa.ChunkedArray) else keys
    width = keys.type.byte_width
    if len(keys) == 0:
        return np.empty(0, dtype=np.int64)
    raw = np.frombuffer(keys.buffers()[1], dtype=np.uint8)[keys.offset * width:(keys.offset + len(keys)) * width]
    heads = raw.reshape(-1, width)[:, :8].copy().view(np.uint64).ravel()
    return (heads % np.uint64(num_partitions)).astype(np.int64)


class WorkArea:
    """The scratch folder of one dedup run: steps, their partitioned outputs and done markers."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    def task_dir(self, step: str, task: str) -> Path:
        return self.root / step / task

    def done_path(self, step: str, task: str) -> Path:
        return self.root / step / "_done" / f"{task}.json"

    def is_done(self, step: str, task: str) -> bool:
        return self.done_path(step, task).exists()

    def done_info(self, step: str, task: str) -> dict[str, Any]:
        return json.loads(self.done_path(step, task).read_text())

    def mark_done(self, step: str, task: str, info: dict[str, Any]) -> dict[str, Any]:
        info = {**info, "step": step, "task": task, "peak_rss_mb": peak_rss_mb()}
        write_json(info, self.done_path(step, task))
        return info

    def write_partitioned(self, step: str, task: str, table: pa.Table, partitions: np.ndarray,
                          schema: pa.Schema) -> int:
        """Write `table`'s rows to their partitions (only non-empty ones); returns the number of files."""
        folder = self.task_dir(step, task)
        if folder.exists():  # leftovers of a crashed attempt: this attempt rewrites the whole task
            shutil.rmtree(folder)
        if table.num_rows == 0:
            folder.mkdir(parents=True, exist_ok=True)
            return 0
        order = np.argsort(partitions, kind="stable")
        sorted_parts = partitions[order]
        bounds = np.flatnonzero(np.diff(sorted_parts)) + 1
        starts = np.concatenate([[0], bounds])
        ends = np.concatenate([bounds, [len(order)]])
        for start, end in zip(starts, ends):
            part = int(sorted_parts[start])
            write_parquet(table.take(order[start:end]), folder / f"to-{part:05d}.parquet", schema)
        return len(starts)

    def partition_files(self, step: str, partition: int) -> list[Path]:
        remote = store.folder_of(self.root)
        name = f"to-{partition:05d}.parquet"
        if remote is not None:  # a run folder on object storage: the writers of this step ran on any node
            remote.pull([remote.relative(self.root / step)], only=lambda rel: rel.endswith("/" + name))
        return sorted((self.root / step).glob(f"*/{name}"))

    def read_partition(self, step: str, partition: int, schema: pa.Schema,
                       columns: list[str] | None = None) -> pa.Table:
        files = self.partition_files(step, partition)
        if not files:
            table = schema.empty_table()
            return table.select(columns) if columns else table
        return pa.concat_tables([pq.read_table(f, schema=schema, columns=columns) for f in files])

    def remove(self) -> None:
        store.removed_tree(self.root)
