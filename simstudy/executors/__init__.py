"""Executors: run batches, yield their results, a bounded window in flight.

Every executor implements :class:`Executor`; ``EXECUTORS`` maps the
``--scheduler`` name to its factory. No plugin entry points.

Layers: imports ``batch`` and ``grid``; the dask executors import dask
inside ``simstudy.executors.dask``.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable, Iterator
from typing import Any, Protocol

import numpy as np

from simstudy.batch import FAILED, BatchResult, worker_name
from simstudy.grid import Batch

__all__ = ["MAX_ATTEMPTS", "SCHEDULERS", "Executor", "WorkerDied", "failed_result"]

SCHEDULERS = ("processes", "distributed", "threads", "synchronous")  # default first


MAX_ATTEMPTS = 3  # a task that kills its worker this often is recorded failed


class WorkerDied(Exception):
    """The worker process died while running a task, on every attempt."""

    def __init__(self, cause: BaseException, attempts: int) -> None:
        what = f"{type(cause).__name__}: {cause}"
        super().__init__(
            f"the worker process died while running this task ({attempts} "
            f"attempt(s)); the task may crash the interpreter, run out of "
            f"memory or call os._exit ({what})"
        )


class Executor(Protocol):
    """Runs batches somewhere and yields their results as they finish."""

    description: str

    def results(
        self, batches: Iterator[Batch], specs: Callable[[], dict[str, tuple[int, ...]]]
    ) -> Iterator[BatchResult]:
        """Submit batches (a bounded window at a time), yield finished results."""
        ...

    def wait(self) -> None:
        """Return when workers are up to take batches (others may still start)."""
        ...

    def stop_submitting(self) -> None:
        """Finish the batches in flight but submit no new ones."""
        ...

    def close(self) -> None:
        """Release workers and pools; cancel anything still running."""
        ...


def failed_result(
    batch: Batch, exc: BaseException, method_names: list[str]
) -> BatchResult:
    """Record every task of a batch as failed because its worker failed."""
    b, k = batch.stop - batch.start, len(batch.methods)
    if isinstance(exc, WorkerDied):
        message = str(exc)
    else:
        text = "".join(traceback.format_exception_only(type(exc), exc)).strip()
        message = f"the worker running this batch failed: {text}"
    return BatchResult(
        batch,
        np.full((b, k), FAILED, np.int8),
        np.full((b, k), np.nan, np.float32),
        np.full((b, k), np.nan, np.float64),
        {},
        [
            {
                "replicate": r,
                "method": method_names[m],
                "type": type(exc).__name__,
                "message": message[:2000],
                "traceback": "",
            }
            for r in range(batch.start, batch.stop)
            for m in batch.methods
        ],
        worker_name(),
    )


def make_executor(name: str, **options: Any) -> Executor:
    """Build the executor registered under ``name``."""
    from simstudy.executors import dask as dask_executors

    executor: Executor = dask_executors.EXECUTORS[name](**options)
    return executor
