"""Training fastText reproducibly: seeded single-thread training on zero-filled allocations (identical labels
give byte-identical models), saving that checks the file loads back (a full disk is said as such), stratified
splits and folds, quantisation. Used by the settings search (`classifiers.selection`) and `classifiers.distil`.
"""

from __future__ import annotations

import ctypes
import os
import platform
import shutil
import threading
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from classifiers.artifact import (
    load_fasttext,
)
from pipeline.config import DistilConfig
from pipeline.errors import CurateError


class DistilError(CurateError, ValueError):
    """Refusal to write a classifier (too few labels, a single class, an unusable output folder)."""



def save_model(model, path: Path):
    """Save a fastText model and load it back (returned). fastText writes through a C++ stream that ignores a
    full disk and leaves the file cut short: loading it back is the check, and a load that fails on a disk
    without room is the disk's fault, said as such (ENOSPC on this path), not a 'wrong file format' later."""
    import errno

    model.save_model(str(path))
    try:
        return load_fasttext(path)
    except ValueError as exc:
        if shutil.disk_usage(path.parent).free < 16 * 1024 * 1024:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path)) from exc
        raise CurateError(f"{path}: the model just written does not load back ({exc})") from exc


def stratified_split(strata: list[Any], fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Indices (rest, part): `fraction` of every stratum, at least one item of any stratum of two or more,
    never a whole stratum. Seeded and independent of the input order within a stratum's key."""
    rng = np.random.default_rng(seed)
    by_stratum: dict[str, list[int]] = {}
    for index, key in enumerate(strata):
        by_stratum.setdefault(str(key), []).append(index)
    rest: list[int] = []
    part: list[int] = []
    for key in sorted(by_stratum):
        members = np.array(by_stratum[key])
        rng.shuffle(members)
        n = len(members)
        n_part = min(max(1, int(round(n * fraction))), n - 1) if n >= 2 else 0
        part.extend(members[:n_part].tolist())
        rest.extend(members[n_part:].tolist())
    return sorted(rest), sorted(part)


_M_PERTURB = -6  # glibc <malloc.h>
_zeroed_lock = threading.Lock()


@contextmanager
def zeroed_allocations():
    """While active, glibc hands out every allocation zero-filled (mallopt M_PERTURB; freed memory is
    filled with 0xff meanwhile). Yields False where that is unavailable (not glibc).

    fastText (fasttext-numpy2-wheel 0.9.2) allocates its input matrix uninitialised (posix_memalign) and
    `DenseMatrix::uniform` randomises it in ten blocks, one per thread index below `thread`: with one
    thread, 90% of the rows would start from whatever the heap last held (an earlier model's weights,
    malloc bookkeeping), so the model would depend on the process's history. Zero-filled, those rows start
    at exactly 0 (the output matrix starts at 0 anyway), which learns as well as a random start."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        yield False
        return
    libc = ctypes.CDLL(None)
    previous = int(os.environ.get("MALLOC_PERTURB_", "0") or 0)
    with _zeroed_lock:
        if not libc.mallopt(_M_PERTURB, 0xFF):
            yield False
            return
        try:
            yield True
        finally:
            libc.mallopt(_M_PERTURB, previous)


def train_fasttext(lines: list[str], cfg: DistilConfig, workdir: Path, name: str, *, loss: str = "softmax",
                   train_file: Path | None = None):
    """Train a supervised fastText model on `__label__x text` lines (already written to `train_file`, when
    given: the lines are then not written again).

    With `cfg.threads` 1 (the default) training is reproducible: one thread, a seeded rng, and the input
    matrix's uninitialised rows zero-filled (see `zeroed_allocations`); the same lines and settings give
    the same model, byte for byte. More threads train faster but hogwild, so not reproducibly.
    fastText can diverge ("Encountered NaN") on tiny sets; the learning rate is then halved (up to three
    times) and the rate actually used is returned with the model.
    """
    import fasttext

    if train_file is None:
        train_file = _write_lines(lines, workdir, name)
    lr = cfg.lr
    for attempt in range(4):
        try:
            with zeroed_allocations() as zeroed:
                model = fasttext.train_supervised(
                    input=str(train_file), lr=lr, dim=cfg.dim, epoch=cfg.epoch, wordNgrams=cfg.word_ngrams,
                    minCount=cfg.min_count, bucket=cfg.bucket, thread=cfg.threads, seed=cfg.seed, loss=loss,
                    verbose=0,
                )
            if not zeroed and cfg.threads < 10:
                warnings.warn(f"fastText's input matrix could not be zero-filled on this platform: with "
                              f"distil.threads={cfg.threads} part of it starts uninitialised, so the {name} model "
                              "is not guaranteed reproducible", RuntimeWarning, stacklevel=2)
            return model, lr, train_file
        except RuntimeError as exc:
            if "NaN" not in str(exc) or attempt == 3:
                raise DistilError(f"fastText training of the {name} model failed: {exc} (last lr={lr})") from None
            lr /= 2
    raise AssertionError("unreachable")


def _write_lines(lines: list[str], workdir: Path, name: str) -> Path:
    path = workdir / f"{name}.train.txt"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


# The fastText settings `distil.tune` searches (DistilConfig field names; fastText calls word_ngrams
# wordNgrams and min_count minCount).
def parameter_count(model, settings: dict[str, Any], bucket: int) -> int:
    """Rows x dim of the input matrix: fastText drops the n-gram buckets when word_ngrams is 1."""
    rows = len(model.get_words()) + (bucket if settings["word_ngrams"] > 1 else 0)
    return rows * settings["dim"]


def stratified_folds(strata: list[Any], k: int, seed: int) -> list[list[int]]:
    """k disjoint folds covering every index: each stratum is shuffled (seeded) and dealt round-robin, the
    next stratum continuing where the last one stopped, so every fold holds about 1/k of each stratum."""
    rng = np.random.default_rng(seed)
    by_stratum: dict[str, list[int]] = {}
    for index, key in enumerate(strata):
        by_stratum.setdefault(str(key), []).append(index)
    folds: list[list[int]] = [[] for _ in range(k)]
    dealt = 0
    for key in sorted(by_stratum):
        members = np.array(by_stratum[key])
        rng.shuffle(members)
        for member in members.tolist():
            folds[dealt % k].append(member)
            dealt += 1
    return [sorted(fold) for fold in folds]


def quantize_model(model, train_file: Path, cfg: DistilConfig) -> None:
    # fastText retrains only when it prunes (more than `cutoff` rows), on a full copy of the kept rows:
    # with one thread that is deterministic too, and product quantisation uses a fixed seed
    model.quantize(input=str(train_file), retrain=True, qnorm=True, cutoff=100_000, thread=cfg.threads)
