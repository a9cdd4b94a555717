"""Progress bars for long stages: one tqdm bar per step on stderr, silent when `quiet`."""

from __future__ import annotations

import sys
from typing import Any


def progress(label: str, total: int | None, *, quiet: bool = False, unit: str = "shard") -> Any:
    """A tqdm bar named `[label]`; call `.update(n)` per finished unit and `.close()` (or use `with`)."""
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=f"[{label}]", unit=unit, file=sys.stderr, disable=quiet, dynamic_ncols=True,
                mininterval=0.5 if sys.stderr.isatty() else 10.0)
