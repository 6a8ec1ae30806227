"""What a round of a run computes, and in which batches.

``Plan.round(counts)`` reads the store's status once and says, per design
point, which (replicate, method) tasks are pending within ``counts`` (the
replicates each point gets this round); ``Plan.batches`` then yields the
round's batches point by point, sized by ``BatchSizer`` and aligned to
store chunks. The execution loop consumes them; workers set up the streams
(mt19937-jump ones too, by random access: simstudy.rng.mtjump).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any

import numpy as np

from simstudy.cube import FAILED, OK, PENDING
from simstudy.declare.grid import Batch, batch_runs, points
from simstudy.declare.study import Level, Study

if TYPE_CHECKING:
    from simstudy.store import Store

__all__ = ["BatchSizer", "Pending", "Plan", "Round"]


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


class Pending:
    """One design point's pending tasks this round, kept per status chunk.

    Nothing here grows with the replicates: a chunk with no status file is
    all pending (stored as nothing), one with nothing pending is a number in
    ``done``, and only chunks partly pending keep a (replicates x methods)
    mask. A 10^8-replicate point costs a few bytes per status chunk.
    """

    __slots__ = ("chunk", "done", "methods", "partial", "rows")

    def __init__(self, rows: int, chunk: int, methods: int) -> None:
        self.rows = rows  # replicates of the point this round
        self.chunk = chunk  # replicates per status chunk
        self.methods = methods
        self.done: set[int] = set()  # chunks with nothing pending
        self.partial: dict[int, np.ndarray[Any, Any]] = {}  # chunk -> mask

    @property
    def n_chunks(self) -> int:
        return -(-self.rows // self.chunk)

    def span(self, c: int) -> tuple[int, int]:
        return c * self.chunk, min((c + 1) * self.chunk, self.rows)

    def set(self, c: int, mask: np.ndarray[Any, Any]) -> None:
        """Record chunk c's pending mask (replicates x methods)."""
        if not mask.any():
            self.done.add(c)
            self.partial.pop(c, None)
        elif mask.all():
            self.done.discard(c)
            self.partial.pop(c, None)
        else:
            self.done.discard(c)
            self.partial[c] = mask

    def mask(self, c: int) -> np.ndarray[Any, Any]:
        """Chunk c's pending mask (replicates x methods)."""
        got = self.partial.get(c)
        if got is not None:
            return got
        start, stop = self.span(c)
        return np.full((stop - start, self.methods), c not in self.done)

    def count(self, c: int) -> int:
        got = self.partial.get(c)
        if got is not None:
            return int(got.sum())
        if c in self.done:
            return 0
        start, stop = self.span(c)
        return (stop - start) * self.methods

    def counts(self) -> dict[int, int]:
        """Pending tasks per status chunk (chunks with some)."""
        out = {}
        for c in range(self.n_chunks):
            n = self.count(c)
            if n:
                out[c] = n
        return out

    def total(self) -> int:
        full = self.n_chunks - len(self.done) - len(self.partial)
        last = self.n_chunks - 1
        tasks = full * self.chunk * self.methods
        if self.rows and last not in self.done and last not in self.partial:
            start, stop = self.span(last)
            tasks -= (self.chunk - (stop - start)) * self.methods
        return tasks + sum(int(m.sum()) for m in self.partial.values())

    def rows_pending(self) -> int:
        """Replicates with at least one pending task."""
        full = self.total_rows_full()
        return full + sum(int(m.any(axis=1).sum()) for m in self.partial.values())

    def total_rows_full(self) -> int:
        rows = 0
        for c in range(self.n_chunks):
            if c not in self.done and c not in self.partial:
                start, stop = self.span(c)
                rows += stop - start
        return rows

    def first(self, methods: list[int]) -> int | None:
        """The first replicate where one of these methods is pending."""
        for c in range(self.n_chunks):
            if c in self.done:
                continue
            got = self.partial.get(c)
            if got is None:
                return self.span(c)[0]
            rows = np.flatnonzero(got[:, methods].any(axis=1))
            if len(rows):
                return self.span(c)[0] + int(rows[0])
        return None

    def methods_pending(self) -> np.ndarray[Any, Any]:
        """Whether each method has a pending task at this point."""
        if self.total_rows_full():
            return np.ones(self.methods, bool)
        out = np.zeros(self.methods, bool)
        for m in self.partial.values():
            out |= m.any(axis=0)
        return out

    def row(self, r: int) -> np.ndarray[Any, Any]:
        """Which methods are pending at replicate r."""
        c = r // self.chunk
        row: np.ndarray[Any, Any] = self.mask(c)[r - c * self.chunk].copy()
        return row

    def take(self, r: int) -> None:
        """Mark replicate r as no longer pending (sent apart, as a probe)."""
        c = r // self.chunk
        mask = self.mask(c).copy()
        mask[r - c * self.chunk] = False
        self.set(c, mask)


@dataclass(slots=True)
class Round:
    """One round's work: per design point, its pending tasks (``Pending``)."""

    counts: list[int]  # replicates each point gets this round
    pending: list[Pending]
    done: int  # tasks ok within counts
    failed: int  # tasks failed within counts

    @property
    def total(self) -> int:
        return sum(p.total() for p in self.pending)

    @property
    def rows(self) -> int:
        """Replicates with at least one pending task."""
        return sum(p.rows_pending() for p in self.pending)

    def first_pending(self, methods: list[int]) -> tuple[int, int] | None:
        """The first (point, replicate), in task order, where one of these
        methods has a pending task."""
        if not methods:
            return None
        for p, pending in enumerate(self.pending):
            r = pending.first(methods)
            if r is not None:
                return p, r
        return None

    def work(self) -> list[tuple[int, tuple[int, ...]]]:
        """(design point, pending methods) of every point with work, in order."""
        out = []
        for p, pending in enumerate(self.pending):
            has = pending.methods_pending()
            if has.any():
                out.append((p, tuple(int(m) for m in np.flatnonzero(has))))
        return out


class Plan:
    """A study's design points located in its store; rounds and their batches."""

    def __init__(self, study: Study, store: Store) -> None:
        self.study = study
        self.store = store
        self.grid: list[dict[str, Level]] = points(study)
        self.pidx = [store.point_index(p) for p in self.grid]
        self.midx = store.method_index(study.method_names)

    def round(self, counts: list[int], *, retry_failed: bool) -> Round:
        """Read the status within ``counts``, status chunk by status chunk:
        what is done, failed, pending. Chunks never written are all pending
        and cost nothing to read."""
        chunk = self.store.group_rows
        methods = len(self.midx)
        pending = [Pending(counts[p], chunk, methods) for p in range(len(self.grid))]
        done = failed = 0
        blocks = self.store.status_chunks(self.pidx, counts, self.midx)
        for p, c, status in blocks:
            done += int((status == OK).sum())
            failed += int((status == FAILED).sum())
            pending[p].set(c, status != OK if retry_failed else status == PENDING)
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
            for start, stop, methods in self._runs(work.pending[p], p, sizer, align):
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

    @staticmethod
    def _runs(
        pending: Pending, p: int, sizer: BatchSizer, align: int
    ) -> Iterator[tuple[int, int, tuple[int, ...]]]:
        """A point's batches, one status chunk at a time (a mask per chunk)."""
        for c in range(pending.n_chunks):
            if c in pending.done:
                continue
            yield from batch_runs(
                pending.mask(c),
                size=partial(sizer.size, p),
                chunk=pending.chunk,
                align=align,
                offset=pending.span(c)[0],
            )
