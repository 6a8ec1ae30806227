"""Design points, task <-> (point, replicate, method) arithmetic, batches.

Layers: imports ``simstudy.study`` and ``simstudy.errors`` (and numpy).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from simstudy.study import Level, Study

__all__ = ["Batch", "batch_runs", "points", "task_index", "task_of"]

CHUNK_REPLICATES = 1024  # replicate chunk of every store array
CHUNK_METHODS = 8  # method chunk of every store array


@dataclass(frozen=True, slots=True, eq=False)
class Batch:
    """Consecutive replicates of one design point with the methods to run."""

    point: int  # index in the study's grid order
    levels: tuple[tuple[str, Level], ...]
    start: int  # first replicate
    stop: int  # one past the last replicate
    methods: tuple[int, ...]  # indices into study.methods
    mt_states: Any = field(default=None)  # (n, 625) int64 rows, mt19937-jump only

    @property
    def size(self) -> int:
        return (self.stop - self.start) * len(self.methods)


def points(study: Study) -> list[dict[str, Level]]:
    """Return the design points in grid order (first factor slowest)."""
    names = list(study.factors)
    return [
        dict(zip(names, combo, strict=True))
        for combo in itertools.product(*study.factors.values())
    ]


def task_index(p: int, r: int, m: int, *, replicates: int, methods: int) -> int:
    """Return the flat task number, point-major and method-minor."""
    return (p * replicates + r) * methods + m


def task_of(task: int, *, replicates: int, methods: int) -> tuple[int, int, int]:
    """Return (point, replicate, method) of a flat task number."""
    pr, m = divmod(task, methods)
    p, r = divmod(pr, replicates)
    return p, r, m


def batch_runs(
    pending: np.ndarray[Any, Any], *, size: int, chunk: int = CHUNK_REPLICATES
) -> Iterator[tuple[int, int, tuple[int, ...]]]:
    """Split a point's pending mask (replicates x methods) into batches.

    Yields ``(start, stop, methods)``: runs of consecutive replicates with the
    same pending methods, at most ``size`` replicates long, never crossing a
    chunk boundary (so a chunk is written by one batch at a time).
    """
    n = pending.shape[0]
    rows: np.ndarray[Any, Any] = np.asarray(pending.any(axis=1))
    for c0 in range(0, n, chunk):
        c1 = min(c0 + chunk, n)
        r = c0
        while r < c1:
            if not rows[r]:
                r += 1
                continue
            mask = pending[r]
            s = r
            while r < c1 and r - s < size and np.array_equal(pending[r], mask):
                r += 1
            yield s, r, tuple(int(i) for i in np.flatnonzero(mask))
