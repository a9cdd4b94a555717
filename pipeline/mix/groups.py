"""Groups of the mix: a document's topic, format and quality bucket, alone or crossed (`mix.group_by`).

`topic` is the document's most probable topic (`topics[0]`, the classifier's topic model), `format` its most
probable WebOrganizer format (`format[0]`), `quality_bucket` its `quality_prob` cut at `mix.quality_edges`
into `mix.quality_buckets` (Nemotron-CC's five levels by default). Crossed labels are joined with "/" in
`group_by` order: `history/high`. A document without the label gets "(none)" for it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.mix.allocate import MixError

SEPARATOR = "/"
NONE = "(none)"

# the corpus column each label is read from, and what writes it (named when a corpus lacks it)
LABEL_COLUMNS = {"topic": "topics", "format": "format", "quality_bucket": "quality_prob"}
WRITTEN_BY = {
    "topics": "the classifier's topic model: `curate distil` trains it from the LLM's topic labels (`curate "
              "annotate`), and `curate classify` writes each document's topics into corpus/",
    "format": "the classifier's format model: `curate distil` trains it from the LLM's format labels (`curate "
              "annotate` with the combined labels prompt), and `curate classify` writes each document's formats "
              "into corpus/",
    "quality_prob": "the quality classifier: `curate classify` writes each document's quality_prob into corpus/",
}


def label_columns(group_by: Sequence[str]) -> list[str]:
    return [LABEL_COLUMNS[label] for label in group_by]


def missing_labels(columns: Sequence[str], present: dict[str, int], folder: str) -> MixError | None:
    """The error for a corpus without the labels the grouping needs (`present`: column -> documents holding a
    value, None when the column is absent), or None."""
    for column in columns:
        if present.get(column) is None or present[column] == 0:
            how = "has no column" if present.get(column) is None else "has no document with a value in"
            return MixError(f"mix.group_by needs {column!r}, and {folder} {how} it: {column} comes from "
                            f"{WRITTEN_BY[column]}. Group by labels the corpus has (mix.group_by), or produce them")
    return None


def quality_bucket(probs: np.ndarray, edges: Sequence[float], names: Sequence[str]) -> np.ndarray:
    """Bucket names of quality probabilities (NaN -> "(none)"): below edges[0] is names[0], and so on."""
    probs = np.asarray(probs, dtype=np.float64)
    index = np.searchsorted(np.asarray(edges, dtype=np.float64), probs, side="right")
    labels = np.asarray(list(names) + [NONE], dtype=object)
    return np.where(np.isnan(probs), labels[-1], labels[np.minimum(index, len(names) - 1)])


def _first(column: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """The first element of each list (the most probable topic or format), "(none)" for a null or empty list."""
    values = pc.list_slice(column, 0, 1)  # (list_element fails on an empty list)
    flat = pc.list_flatten(values)
    lengths = pc.fill_null(pc.list_value_length(values), 0).to_numpy(zero_copy_only=False)
    out = np.full(len(lengths), NONE, dtype=object)
    out[lengths > 0] = np.asarray(flat.to_pylist(), dtype=object)
    return out


def group_labels(table: pa.Table, group_by: Sequence[str], edges: Sequence[float],
                 names: Sequence[str]) -> np.ndarray:
    """The group of every row of `table` (which holds the label columns), as an object array of strings."""
    parts = []
    for label in group_by:
        column = table.column(LABEL_COLUMNS[label])
        if label == "quality_bucket":
            probs = pc.fill_null(pc.cast(column, pa.float64()), float("nan")).to_numpy(zero_copy_only=False)
            parts.append(quality_bucket(probs, edges, names))
        else:
            parts.append(_first(column))
    if len(parts) == 1:
        return parts[0]
    joined = parts[0].astype(object)
    for part in parts[1:]:
        joined = np.asarray([f"{a}{SEPARATOR}{b}" for a, b in zip(joined, part)], dtype=object)
    return joined


def group_of(row: dict[str, Any], grouping: dict[str, Any]) -> str:
    """One document's group from its corpus row, with the grouping a mix manifest records (for explain)."""
    table = pa.Table.from_pylist([{LABEL_COLUMNS[label]: row.get(LABEL_COLUMNS[label])
                                   for label in grouping["group_by"]}])
    for label in grouping["group_by"]:  # a lone null infers a null type: give the column its real type
        column = LABEL_COLUMNS[label]
        wanted = pa.float64() if label == "quality_bucket" else pa.list_(pa.string())
        table = table.set_column(table.schema.get_field_index(column), column, table.column(column).cast(wanted))
    return str(group_labels(table, grouping["group_by"], grouping["quality_edges"], grouping["quality_buckets"])[0])
