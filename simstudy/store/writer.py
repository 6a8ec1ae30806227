"""The store's one writer: finished batches buffered by chunk, status last.

A batch's values go into in-memory chunks; a chunk is written when every
task it covers has arrived (the runner says which ones it expects), when
the buffer is over budget, or ``flush_seconds`` after it was first touched
(a timer), so ``kill -9`` loses at most that much work. Within a flush,
outputs, timings and records are written before status: status is the
commit mark, so on disk a task is never ok before its outputs are there.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import numpy as np

from simstudy.cube import FAILED, FIXED_VARS, OK
from simstudy.declare.outputs import keys_problem, shape_problem
from simstudy.declare.results import BatchResult, Failure
from simstudy.errors import StoreError
from simstudy.store.chunks import ChunkCache, ChunkedArray
from simstudy.store.crash import crash_point
from simstudy.store.layout import Layout
from simstudy.store.records import Group, Records
from simstudy.store.space import writing
from simstudy.system import env_seconds

__all__ = ["FLUSH_SECONDS", "Writer", "flush_seconds"]

# buffered results reach the disk within this time (a kill -9 loses at most
# that much work); the SIMSTUDY_FLUSH_SECONDS environment variable overrides it
FLUSH_SECONDS = 5.0


def flush_seconds() -> float:
    """The flush interval: SIMSTUDY_FLUSH_SECONDS, else FLUSH_SECONDS."""
    return env_seconds("SIMSTUDY_FLUSH_SECONDS", FLUSH_SECONDS)


def _nothing() -> None:
    pass


class Writer:
    """Buffer finished batches and write them out, status last."""

    def __init__(self, layout: Layout, records: Records) -> None:
        self.layout = layout
        self.records = records
        self.cache = ChunkCache()
        # per group (point index, status chunk): tasks still expected this run
        self.expected: dict[Group, int] = {}
        self.timer: threading.Timer | None = None
        self.flush_seconds = flush_seconds()
        self.lock = threading.RLock()
        # called before anything is written (the store's lock check)
        self.guard: Callable[[], None] = _nothing
        self.failed: StoreError | None = None  # a flush on the timer that failed
        # workers met since the metadata was last saved: saved once per flush,
        # before any status, not once per new worker (a cluster of 1,000
        # worker threads rewrote and consolidated the metadata 1,000 times)
        self.new_workers = False

    # ---- taking batches ------------------------------------------------
    def expect(self, point: tuple[int, ...], counts: dict[int, int]) -> None:
        """Note the tasks this run will compute at a point, per status chunk,
        so each status chunk is written once, when its last batch arrives."""
        for c, count in counts.items():
            if count:
                self.expected[(point, c)] = count

    def write(
        self, result: BatchResult, pidx: tuple[int, ...], midx: np.ndarray[Any, Any]
    ) -> BatchResult:
        """Take a finished batch into the buffer (see ``flush`` for the order).

        Outputs are checked once more against what the store knows (a batch
        sent before a method's first result arrived could not be): a task
        whose outputs differ from the store's is recorded failed.
        """
        with self.lock, writing(self.layout.path):
            if self.failed is not None:
                raise self.failed
            return self._write(result, pidx, midx)

    def _write(
        self, result: BatchResult, pidx: tuple[int, ...], midx: np.ndarray[Any, Any]
    ) -> BatchResult:
        batch, layout = result.batch, self.layout
        status = result.status.copy()

        def put(name: str, values: np.ndarray[Any, Any]) -> None:
            """Set the batch's (replicates x methods x ...) block of ``name``
            in the chunk buffer."""
            array = self.chunked(name)
            self.cache.put(array, pidx, batch.start, batch.stop, midx, values)

        names = [layout.methods[i] for i in midx]
        failures = list(result.failures)
        failures += self._check_keys(result, status, names)
        failures += self._check_shapes(result, status, names)
        specs = layout.output_specs().shapes
        for name, values in result.outputs.items():
            shape = values.shape[2:]
            if name not in specs:
                layout.new_var(name, "float64", np.nan, shape)
                crash_point("output:created")
                layout.consolidate()
                specs[name] = shape
                layout.forget_specs()
            if specs[name] != shape:
                continue
            ok = (status == OK).reshape(status.shape + (1,) * len(shape))
            put(name, np.where(ok, values, np.nan))
        if result.worker not in layout.meta.workers:
            layout.meta.workers.append(result.worker)
            self.new_workers = True
        wid = layout.meta.workers.index(result.worker)
        put("seconds", result.seconds)
        put("started", result.started)
        worker = np.full(status.shape, wid, np.int16)
        put("worker", worker)
        if "warnings" not in layout.var_names():  # stores made before warnings
            layout.new_var("warnings", *FIXED_VARS["warnings"], ())
            layout.consolidate()
        counts = result.warnings
        if counts is None:  # a batch whose worker failed emitted none
            counts = np.zeros(status.shape, np.int16)
        put("warnings", counts)
        put("status", status)
        group = (pidx, batch.start // layout.group_rows)
        self.records.add("failures", group, (batch.start, batch.stop, names, failures))
        self.records.add(
            "warnings", group, (batch.start, batch.stop, names, result.warned)
        )
        self._written(group, status.size)
        result.status = status
        result.failures = failures
        return result

    def _check_keys(
        self, result: BatchResult, status: np.ndarray[Any, Any], names: list[str]
    ) -> list[Failure]:
        """Record the first output names of each method; fail ok tasks of a
        method that returned other names than the store knows."""
        outputs, out = self.layout.meta.outputs, []
        for j, method in enumerate(names):
            keys = result.keys.get(method)
            if keys is None:
                continue
            if method not in outputs:
                outputs[method] = list(keys)
                self.layout.forget_specs()
                self.layout.save_meta()
                continue
            problem = keys_problem(method, keys, tuple(outputs[method]), "the store")
            if problem is None:
                continue
            for i in np.flatnonzero(status[:, j] == OK):
                status[i, j] = FAILED
                out.append(
                    Failure(result.batch.start + int(i), method, "OutputError", problem)
                )
        return out

    def _check_shapes(
        self, result: BatchResult, status: np.ndarray[Any, Any], names: list[str]
    ) -> list[Failure]:
        """Fail ok tasks whose output has another shape than the store's."""
        specs, out = self.layout.output_specs().shapes, []
        for name, values in result.outputs.items():
            shape = values.shape[2:]
            if name not in specs or specs[name] == shape:
                continue
            set_any = ~np.isnan(values).all(axis=tuple(range(2, values.ndim)))
            for i, j in np.argwhere((status == OK) & set_any):
                status[i, j] = FAILED
                problem = shape_problem(names[j], name, shape, specs[name], "the store")
                assert problem is not None
                start = result.batch.start
                out.append(Failure(start + int(i), names[j], "OutputError", problem))
        return out

    def _written(self, group: Group, tasks: int) -> None:
        """Flush what is complete or over budget; arm the timer for the rest."""
        left = self.expected.get(group)
        if left is not None:
            left -= tasks
            self.expected[group] = left
            if left <= 0:
                del self.expected[group]
                self.flush({group})
        if self.cache.over_budget:
            self.flush()
        elif self.cache.dirty and self.timer is None:
            self.timer = threading.Timer(self.flush_seconds, self._flush_on_timer)
            self.timer.daemon = True
            self.timer.start()

    def chunked(self, name: str) -> ChunkedArray:
        """The chunk-level view of a data variable."""
        array = self.cache.arrays.get(name)
        if array is None:
            array = ChunkedArray(self.layout.path, name, self.layout.array(name))
            self.cache.arrays[name] = array
        return array

    # ---- writing out ---------------------------------------------------
    def _flush_on_timer(self) -> None:
        with self.lock:
            self.timer = None
            try:
                self.flush()
            except StoreError as exc:  # raised by the next write, in the run
                self.failed = exc

    def flush(self, groups: set[Group] | None = None) -> None:
        """Write buffered chunks: outputs and timings, records, then status."""
        with self.lock, writing(self.layout.path):
            self._flush(groups)

    def _flush(self, groups: set[Group] | None) -> None:
        n = len(self.layout.factor_names)
        rows = self.layout.group_rows
        if self.cache.dirty or any(self.records.updates.values()):
            self.guard()
        keys = [
            k
            for k in self.cache.dirty
            if groups is None
            or (k[1][:n], k[1][n] * self.cache.arrays[k[0]].chunks[n] // rows) in groups
        ]
        if self.new_workers:  # the worker names a status is about to commit
            self.layout.save_meta()
            self.new_workers = False
        self.cache.flush([k for k in keys if k[0] != "status"])
        self.records.flush(groups)
        if keys:
            crash_point("flush:outputs")
        self.cache.flush([k for k in keys if k[0] == "status"])

    def reset(self) -> None:
        """Forget the chunk buffer (after the arrays were resized)."""
        self.cache = ChunkCache()

    def close(self) -> None:
        """Write what is buffered; what cannot be written is dropped.

        If writing fails (disk full), the error is raised once; what was not
        written is simply computed again by the next run.
        """
        try:
            with self.lock:
                if self.timer is not None:
                    self.timer.cancel()
                    self.timer = None
                self.flush()
        finally:
            self.cache.dirty.clear()  # never retried: status stays the commit mark
