"""Design points, and batches of consecutive replicates aligned to store chunks."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from simstudy.declare.study import Level, Study

__all__ = ["Batch", "batch_runs", "chunk_replicates", "points"]

CHUNK_REPLICATES = 8192  # replicate chunk of status, timings and scalar outputs
CHUNK_METHODS = 8  # method chunk of every store array
CHUNK_BYTES = 4 * 2**20  # array outputs get fewer replicates per chunk, to fit


def chunk_replicates(shape: tuple[int, ...], itemsize: int = 8) -> int:
    """Return the replicate chunk of an output of per-task ``shape``: the
    largest power of two <= CHUNK_REPLICATES whose chunk fits CHUNK_BYTES
    (powers of two, so output chunks nest inside the status chunk)."""
    per = CHUNK_METHODS * itemsize * int(np.prod(shape, dtype=np.int64))
    rc = CHUNK_REPLICATES
    while rc > 1 and rc * per > CHUNK_BYTES:
        rc //= 2
    return rc


@dataclass(frozen=True, slots=True, eq=False)
class Batch:
    """Consecutive replicates of one design point with the methods to run."""

    point: int  # index in the study's grid order
    levels: tuple[tuple[str, Level], ...]
    start: int  # first replicate
    stop: int  # one past the last replicate
    methods: tuple[int, ...]  # indices into study.methods
    timeout: float | None = None  # seconds allowed per user call (--task-timeout)
    warnings: str | None = None  # "record" or "error" (--warnings-as-errors)
    device: str | None = None  # jax backend: the platform to run on (--device)

    @property
    def size(self) -> int:
        return (self.stop - self.start) * len(self.methods)

    def split(self) -> tuple[Batch, Batch]:
        """Halve a batch: its replicates, or its methods when it has one
        replicate."""
        if self.stop - self.start == 1:
            half = len(self.methods) // 2
            return (
                replace(self, methods=self.methods[:half]),
                replace(self, methods=self.methods[half:]),
            )
        mid = (self.start + self.stop) // 2
        return replace(self, stop=mid), replace(self, start=mid)


def points(study: Study) -> list[dict[str, Level]]:
    """Return the design points in grid order (first factor slowest): the
    full cross of the levels, or the points of it the design keeps
    (``where=``, factors that vary together); no other point is ever a task."""
    names = list(study.factors)
    return [dict(zip(names, row, strict=True)) for row in study.design.points]


def _row_codes(pending: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """Return one integer per row, equal exactly for equal rows."""
    m = pending.shape[1]
    if m <= 62:  # the row's bits as a number (np.unique on rows costs ~70 ms/200k)
        weights = np.left_shift(np.int64(1), np.arange(m, dtype=np.int64))
        return np.asarray(pending.astype(np.int64) @ weights)
    _, code = np.unique(pending, axis=0, return_inverse=True)
    return np.asarray(code).reshape(pending.shape[0])


def batch_runs(
    pending: np.ndarray[Any, Any],
    *,
    size: int | Callable[[], int],
    chunk: int = CHUNK_REPLICATES,
    align: int = 1,
    offset: int = 0,
) -> Iterator[tuple[int, int, tuple[int, ...]]]:
    """Split a point's pending mask (replicates x methods) into batches.

    Yields ``(start, stop, methods)``: runs of consecutive replicates with the
    same pending methods, at most ``size`` replicates long, never crossing a
    chunk boundary. ``size`` may be a callable, asked before each batch (the
    runner sizes batches from the task times measured so far). With
    ``align``, a batch that stops inside a run stops at a multiple of it
    (jax kernels compute whole blocks of ``align`` replicates). ``offset``
    is the replicate of the mask's first row (a mask may be one chunk of
    the point; ``offset`` is then that chunk's start).
    """
    size_now = size if callable(size) else lambda: size
    n = pending.shape[0]
    if n == 0:
        return
    active = np.asarray(pending.any(axis=1))
    code = _row_codes(pending)  # equal rows, equal codes: runs keep one code
    for c0 in range(0, n, chunk):
        c1 = min(c0 + chunk, n)
        idx = np.flatnonzero(active[c0:c1]) + c0
        if len(idx) == 0:
            continue
        cut = (np.diff(idx) != 1) | (np.diff(code[idx]) != 0)
        for run in np.split(idx, np.flatnonzero(cut) + 1):
            run_start, run_end = int(run[0]) + offset, int(run[-1]) + 1 + offset
            methods = tuple(int(i) for i in np.flatnonzero(pending[run_start - offset]))
            start = run_start
            while start < run_end:
                stop = start + max(1, size_now())
                if align > 1 and stop < run_end:
                    stop = max(start + 1, stop - stop % align)
                stop = min(stop, run_end)
                yield start, stop, methods
                start = stop
