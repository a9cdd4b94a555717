"""What the two classify stages share: their names, the reasons a document is dropped, the error, and the
read-ahead helper both use to overlap reading a Parquet file with working on the previous one."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from pipeline.errors import CurateError

STAGE = "classify"
SCORE_STAGE = "classify-score"  # markers of the score stage (the filter stage's ShardStats markers are decide's)
REASON_BELOW = "below_quality"
REASON_NO_TEXT = "no_text"


class ClassifyError(CurateError):
    """The stage cannot run (no input, no usable classifier, no stored scores); the message says what to do."""


def read_ahead(items: Iterator[Any], executor: ThreadPoolExecutor) -> Iterator[Any]:
    """Yield from `items` while the next item is already being produced on `executor`."""
    end = object()
    future = executor.submit(next, items, end)
    while True:
        item = future.result()
        if item is end:
            return
        future = executor.submit(next, items, end)
        yield item
