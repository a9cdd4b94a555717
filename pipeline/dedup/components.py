"""Distributed connected components by alternating large-star and small-star steps (Kiveris et al., 2014,
"Connected Components in MapReduce and Beyond").

The graph is a set of undirected edges stored in both orientations, partitioned by their first endpoint, so
one partition holds every edge of its nodes. Each step is a pure function of one partition's edges that emits
new undirected edges; the component stays the same and the edges converge to stars around the smallest node
of each component (O(log^2 n) rounds in the worst case, usually 1-3). Node ids are strings ordered so that
the smallest is the component's survivor. No process holds more than one partition.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from pipeline.dedup.shuffle import WorkArea, string_partitions

EDGES = pa.schema([pa.field("node", pa.string(), nullable=False), pa.field("nbr", pa.string(), nullable=False)])
# Output of the last step: every node of a non-trivial component, its component's smallest node, and (on the
# smallest node's row) the component size.
LABELS = pa.schema([pa.field("node", pa.string(), nullable=False), pa.field("root", pa.string(), nullable=False),
                    pa.field("size", pa.int64())])


def _distinct(edges: pa.Table) -> pa.Table:
    return edges.group_by(["node", "nbr"]).aggregate([])


def _neighbourhood(edges: pa.Table) -> pa.Table:
    """Each edge row with its node's smallest neighbour and degree."""
    stats = edges.group_by("node").aggregate([("nbr", "min"), ("nbr", "count")])
    return edges.join(stats, keys="node")


def _smaller(a: pa.Array, b: pa.Array) -> pa.Array:
    return pc.if_else(pc.less(a, b), a, b)


def is_star_forest(edges: pa.Table) -> bool:
    """True when every node that has a smaller neighbour has exactly that one neighbour: then each component
    is a star around its smallest node and the labels can be read off."""
    if edges.num_rows == 0:
        return True
    rows = _neighbourhood(_distinct(edges))
    has_smaller = pc.less(rows["nbr_min"], rows["node"])
    return not pc.any(pc.and_(has_smaller, pc.greater(rows["nbr_count"], 1))).as_py()


def large_star(edges: pa.Table) -> tuple[pa.Array, pa.Array]:
    """Connect every strictly larger neighbour of a node to the smallest node of its neighbourhood."""
    if edges.num_rows == 0:
        return pa.array([], pa.string()), pa.array([], pa.string())
    rows = _neighbourhood(_distinct(edges))
    smallest = _smaller(rows["node"], rows["nbr_min"])
    larger = pc.greater(rows["nbr"], rows["node"])
    return rows["nbr"].filter(larger), smallest.filter(larger)


def small_star(edges: pa.Table) -> tuple[pa.Array, pa.Array]:
    """Connect a node and all its smaller neighbours to the smallest of them."""
    edges = _distinct(edges)
    smaller_edges = edges.filter(pc.less(edges["nbr"], edges["node"]))
    if smaller_edges.num_rows == 0:
        return pa.array([], pa.string()), pa.array([], pa.string())
    rows = _neighbourhood(smaller_edges)
    others = pc.not_equal(rows["nbr"], rows["nbr_min"])
    per_node = smaller_edges.group_by("node").aggregate([("nbr", "min")])
    left = pa.concat_arrays([rows["nbr"].filter(others).combine_chunks(), per_node["node"].combine_chunks()])
    right = pa.concat_arrays([rows["nbr_min"].filter(others).combine_chunks(), per_node["nbr_min"].combine_chunks()])
    return left, right


def star_labels(edges: pa.Table) -> pa.Table:
    """Labels from a star forest: a node with a smaller neighbour belongs to it; a centre counts its leaves."""
    if edges.num_rows == 0:
        return LABELS.empty_table()
    rows = _distinct(edges).group_by("node").aggregate([("nbr", "min"), ("nbr", "count")])
    is_leaf = pc.less(rows["nbr_min"], rows["node"])
    root = pc.if_else(is_leaf, rows["nbr_min"], rows["node"])
    size = pc.if_else(is_leaf, pa.scalar(None, pa.int64()), pc.add(rows["nbr_count"], 1))
    return pa.table({"node": rows["node"], "root": root, "size": size}, schema=LABELS)


def write_undirected(work: WorkArea, step: str, task: str, left: pa.Array, right: pa.Array,
                     num_partitions: int) -> int:
    """Store edges in both orientations, each partitioned by its first endpoint."""
    left = left.combine_chunks() if isinstance(left, pa.ChunkedArray) else left
    right = right.combine_chunks() if isinstance(right, pa.ChunkedArray) else right
    keep = pc.not_equal(left, right)  # no self loops
    left, right = left.filter(keep), right.filter(keep)
    node = pa.concat_arrays([left, right])
    nbr = pa.concat_arrays([right, left])
    table = pa.table({"node": node, "nbr": nbr}, schema=EDGES)
    return work.write_partitioned(step, task, table, string_partitions(node.to_pylist(), num_partitions), EDGES)


def cc_step(partition: int, kind: str, source: str, target: str, work_root: str, num_partitions: int) -> dict[str, Any]:
    """One partition of one step: `large` (also reports whether its input is already a star forest) or `small`."""
    work = WorkArea(work_root)
    task = f"{partition:05d}"
    if work.is_done(target, task):
        return work.done_info(target, task)
    edges = work.read_partition(source, partition, EDGES)
    info: dict[str, Any] = {"edges_in": edges.num_rows}
    if kind == "large":
        info["star"] = is_star_forest(edges)
        left, right = large_star(edges)
    else:
        left, right = small_star(edges)
    write_undirected(work, target, task, left, right, num_partitions)
    return work.mark_done(target, task, info)


def connected_components(work: WorkArea, edges_step: str, num_partitions: int, run_tasks, *,
                         max_rounds: int = 64) -> tuple[str, int]:
    """Alternate large-star and small-star over the partitioned edges of `edges_step` until the edges form a
    star forest. `run_tasks(fn, items, *args)` runs the tasks (on Ray). Returns the final step and the
    number of rounds."""
    source = edges_step
    partitions = list(range(num_partitions))
    for round_index in range(max_rounds):
        large = f"cc{round_index:03d}-large"
        infos = run_tasks(cc_step, partitions, "large", source, large, str(work.root), num_partitions)
        if all(info["star"] for info in infos):
            return source, round_index
        small = f"cc{round_index:03d}-small"
        run_tasks(cc_step, partitions, "small", large, small, str(work.root), num_partitions)
        source = small
    raise RuntimeError(f"dedup: connected components did not converge in {max_rounds} rounds ({Path(work.root)})")
