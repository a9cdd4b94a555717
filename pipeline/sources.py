"""Where WARC files come from: explicit paths/URLs/globs, or a Common Crawl snapshot's `warc.paths.gz`."""

from __future__ import annotations

import glob
import gzip
import io
import random

from pipeline.config import InputConfig
from pipeline.errors import CurateError
from pipeline.io import open_remote, retry


class InputError(CurateError, ValueError):
    """The input description does not resolve to WARC files; the message names what was wrong."""


def _join(base_url: str, path: str) -> str:
    return base_url.rstrip("/") + "/" + path.lstrip("/")


def listing_url(cfg: InputConfig) -> str:
    return _join(cfg.base_url, f"crawl-data/{cfg.snapshot}/warc.paths.gz")


def read_listing(cfg: InputConfig) -> list[str]:
    """The snapshot's WARC paths (relative, as Common Crawl lists them)."""
    url = listing_url(cfg)

    def fetch() -> bytes:
        with open_remote(url, cfg.storage_options) as handle:
            return handle.read()

    try:
        raw = retry(fetch, attempts=cfg.retries, backoff_s=cfg.retry_backoff_s, what=url)
    except FileNotFoundError:
        raise InputError(f"snapshot listing not found: {url}") from None
    except Exception as exc:  # surfaced with the URL that failed
        raise InputError(f"cannot read snapshot listing {url}: {type(exc).__name__}: {exc}") from exc
    try:
        text = gzip.decompress(raw).decode("utf-8") if raw[:2] == b"\x1f\x8b" else raw.decode("utf-8")
    except (OSError, UnicodeDecodeError, EOFError) as exc:
        raise InputError(f"snapshot listing {url} is not a gzip text file: {exc}") from None
    paths = [line.strip() for line in io.StringIO(text) if line.strip()]
    if not paths:
        raise InputError(f"snapshot listing {url} is empty")
    return paths


def select(paths: list[str], cfg: InputConfig) -> list[str]:
    """A shard range of the sorted listing, or a seeded random sample of `max_warcs`, in sorted order."""
    ordered = sorted(paths)
    if cfg.shard_range is not None:
        start, stop = cfg.shard_range
        if not 0 <= start < stop:
            raise InputError(f"input.shard_range must satisfy 0 <= start < stop, got {cfg.shard_range}")
        ordered = ordered[start:stop]
    if cfg.max_warcs is not None and cfg.max_warcs < len(ordered):
        ordered = sorted(random.Random(cfg.seed).sample(ordered, cfg.max_warcs))
    return ordered


def _expand_local(pattern: str) -> list[str]:
    if any(ch in pattern for ch in "*?["):
        return sorted(glob.glob(pattern))
    return [pattern]


def _expand_remote(pattern: str, cfg: InputConfig) -> list[str]:
    if not any(ch in pattern for ch in "*?["):
        return [pattern]
    import fsspec

    protocol = pattern.split("://", 1)[0]
    fs, _, _ = fsspec.get_fs_token_paths(pattern, storage_options=cfg.storage_options.get(protocol, {}))
    return sorted(fs.unstrip_protocol(p) for p in fs.glob(pattern))


def resolve_warcs(cfg: InputConfig) -> list[str]:
    """Turn the input config into the ordered list of WARC locations to process."""
    if cfg.snapshot and cfg.warcs:
        raise InputError("give either input.snapshot or input.warcs, not both")
    if cfg.snapshot:
        return [_join(cfg.base_url, p) for p in select(read_listing(cfg), cfg)]
    if not cfg.warcs:
        raise InputError("no input: set input.warcs (paths, URLs or globs) or input.snapshot")
    found: list[str] = []
    for pattern in cfg.warcs:
        expanded = _expand_remote(pattern, cfg) if "://" in pattern else _expand_local(pattern)
        if not expanded:
            raise InputError(f"input.warcs pattern matched no files: {pattern}")
        found.extend(expanded)
    # A missing single file is kept in the list: it becomes an errored record naming the file, so a
    # run over many inputs is not lost to one bad path.
    unique = list(dict.fromkeys(found))
    return select(unique, cfg) if (cfg.max_warcs or cfg.shard_range) else unique
