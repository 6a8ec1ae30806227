"""What a round of a run computes, and in which batches.

``Plan.round(counts)`` reads the store's status once and says, per design
point, which (replicate, method) tasks are pending within ``counts`` (the
replicates each point gets this round); ``Plan.batches`` then yields the
round's batches point by point, sized by ``BatchSizer`` and aligned to
store chunks. The execution loop consumes them; workers set up the streams
(mt19937-jump ones too, by random access: simstudy.mtjump).

Layers: imports ``store, grid, study`` (and numpy).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any

import numpy as np

from simstudy.cube import FAILED, OK, PENDING
from simstudy.grid import Batch, batch_runs, points
from simstudy.study import Level, Study

if TYPE_CHECKING:
    from simstudy.store import Store

__all__ = ["BatchSizer", "Plan", "Round"]


class BatchSizer:
    """Replicates per batch: a small pilot, then sized from measured task times.

    A batch aims at ``TARGET`` seconds of work, so the ~1-5 ms a batch costs
    in shipping and bookkeeping stays under 5% of it; near the end batches
    shrink (at most a quarter of each worker's share of what is left) so no
    worker idles while another finishes a long one. Task times are tracked
    per design point, so cheap and expensive points get their own sizes.
    """

    TARGET = 0.2  # seconds of work per batch
    PILOT = 4  # replicates per batch before any task has been timed

    def __init__(
        self,
        *,
        fixed: int | None,
        workers: int,
        rows: int,
        chunk: int,
        quantum: int = 1,
    ):
        self.fixed = fixed
        self.quantum = quantum  # sizes are multiples of it (a jax block)
        self.workers = workers
        self.rows_left = rows
        self.chunk = chunk
        self.points: dict[int, tuple[float, int]] = {}  # seconds, replicates
        self.total = (0.0, 0)

    def observe(self, batch: Batch, seconds: np.ndarray[Any, Any]) -> None:
        """Account a finished batch and its per-task seconds."""
        reps = batch.stop - batch.start
        spent = float(np.nansum(seconds))
        s, n = self.points.get(batch.point, (0.0, 0))
        self.points[batch.point] = (s + spent, n + reps)
        self.total = (self.total[0] + spent, self.total[1] + reps)

    def issued(self, batch: Batch) -> None:
        self.rows_left -= batch.stop - batch.start

    def size(self, point: int) -> int:
        """Replicates for the next batch of ``point``."""
        if self.fixed is not None:
            return self.fixed
        s, n = self.points.get(point, self.total)
        if n == 0:
            return max(self.PILOT, self.quantum)
        per_replicate = max(s / n, 1e-7)
        tail = math.ceil(self.rows_left / (4 * self.workers))
        size = int(min(self.chunk, max(1, min(self.TARGET / per_replicate, tail))))
        q = self.quantum
        return min(max(self.chunk, q), math.ceil(size / q) * q)


@dataclass(slots=True)
class Round:
    """One round's work: per design point, the pending (replicate x method) mask."""

    counts: list[int]  # replicates each point gets this round
    pending: list[np.ndarray[Any, Any]]
    done: int  # tasks ok within counts
    failed: int  # tasks failed within counts

    @property
    def total(self) -> int:
        return int(sum(int(m.sum()) for m in self.pending))

    @property
    def rows(self) -> int:
        """Replicates with at least one pending task."""
        return int(sum(int(m.any(axis=1).sum()) for m in self.pending))

    def first_pending(self, methods: list[int]) -> tuple[int, int] | None:
        """The first (point, replicate), in task order, where one of these
        methods has a pending task."""
        if not methods:
            return None
        for p, mask in enumerate(self.pending):
            rows = np.flatnonzero(mask[:, methods].any(axis=1))
            if len(rows):
                return p, int(rows[0])
        return None

    def work(self) -> list[tuple[int, tuple[int, ...]]]:
        """(design point, pending methods) of every point with work, in order."""
        return [
            (p, tuple(int(m) for m in np.flatnonzero(mask.any(axis=0))))
            for p, mask in enumerate(self.pending)
            if mask.any()
        ]


class Plan:
    """A study's design points located in its store; rounds and their batches."""

    def __init__(self, study: Study, store: Store) -> None:
        self.study = study
        self.store = store
        self.grid: list[dict[str, Level]] = points(study)
        self.pidx = [store.point_index(p) for p in self.grid]
        self.midx = store.method_index(study.method_names)

    def round(self, counts: list[int], *, retry_failed: bool) -> Round:
        """Read the status within ``counts``: what is done, failed, pending."""
        pending: list[np.ndarray[Any, Any]] = []
        done = failed = 0
        for p in range(len(self.grid)):
            status = self.store.status_of(self.pidx[p], counts[p], self.midx)
            done += int((status == OK).sum())
            failed += int((status == FAILED).sum())
            pending.append(status != OK if retry_failed else status == PENDING)
        return Round(list(counts), pending, done, failed)

    def batches(
        self,
        work: Round,
        sizer: BatchSizer,
        *,
        timeout: float | None,
        warnings: str | None,
        device: str | None,
    ) -> Iterator[Batch]:
        """Yield a round's batches point by point."""
        align = 1 if sizer.fixed else sizer.quantum
        for p, point in enumerate(self.grid):
            levels = tuple(point.items())
            runs = batch_runs(
                work.pending[p],
                size=partial(sizer.size, p),
                chunk=sizer.chunk,
                align=align,
            )
            for start, stop, methods in runs:
                batch = Batch(
                    p,
                    levels,
                    start,
                    stop,
                    methods,
                    timeout=timeout,
                    warnings=warnings,
                    device=device,
                )
                sizer.issued(batch)
                yield batch
