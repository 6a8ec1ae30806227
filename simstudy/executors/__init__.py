"""Executors: run batches, yield their results, a bounded window in flight.

Every executor implements :class:`Executor`; ``SCHEDULERS`` maps each
``--scheduler`` name to a :class:`Scheduler`: the module that serves it and
what it can do (interrupt a hung call, count warnings, join a cluster).
Option checks read these traits instead of comparing names. No plugin entry
points.

Layers: imports ``results, outputs, grid, study, cube, errors``; the dask
executors import dask inside ``simstudy.executors.dask``, the jax executor
jax inside ``simstudy.executors.jax``.
"""

from __future__ import annotations

import importlib
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from simstudy.cube import FAILED
from simstudy.errors import StudyError
from simstudy.grid import Batch
from simstudy.outputs import OutputSpecs
from simstudy.results import BatchResult, Failure, worker_name
from simstudy.study import Study

__all__ = [
    "MAX_ATTEMPTS",
    "SCHEDULERS",
    "Executor",
    "Scheduler",
    "WorkerDied",
    "failed_result",
    "make_executor",
    "prestart",
    "study_payload",
]


@dataclass(frozen=True, slots=True)
class Scheduler:
    """A ``--scheduler`` name: where it runs batches and what it can do."""

    name: str
    module: str  # serves it: ``EXECUTORS[name]`` there builds the executor
    timeout: bool = False  # can interrupt a hung user call (SIGALRM, main thread)
    warnings: bool = True  # can count warnings per task (filters are per process)
    remote: bool = False  # takes --address / --cluster
    early: bool = False  # worth starting before the store is opened
    elsewhere: bool = False  # tasks run in other processes than the driver


_DASK, _JAX = "simstudy.executors.dask", "simstudy.executors.jax"
SCHEDULERS: dict[str, Scheduler] = {
    s.name: s
    for s in (
        Scheduler("processes", _DASK, timeout=True, early=True, elsewhere=True),
        Scheduler("distributed", _DASK, remote=True, elsewhere=True),
        Scheduler("threads", _DASK, warnings=False),
        Scheduler("synchronous", _DASK, timeout=True),
        Scheduler("jax", _JAX, warnings=False),
    )
}

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
        self, batches: Iterator[Batch], specs: Callable[[], OutputSpecs]
    ) -> Iterator[BatchResult]:
        """Submit batches (a bounded window at a time), yield finished results."""
        ...

    def wait(self) -> None:
        """Return when workers are up to take batches (others may still start)."""
        ...

    def prepare(self, work: list[tuple[int, tuple[int, ...]]]) -> None:
        """Hear which (design point, methods) batches will come, in order
        (the jax executor compiles their kernels ahead)."""
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
            Failure(r, method_names[m], type(exc).__name__, message[:2000])
            for r in range(batch.start, batch.stop)
            for m in batch.methods
        ],
        worker_name(),
    )


def study_payload(study: Study) -> bytes:
    """Pickle the study for the workers, or say which part cannot travel.

    Called before anything is written or scheduled, so an unpicklable fixed
    input or function is a clear error, not a failure in a worker.
    """
    import cloudpickle

    try:
        return bytes(cloudpickle.dumps(study))
    except Exception as exc:
        error = exc
    where = f"{study.source_file}: " if study.source_file else ""
    parts: list[tuple[str, Any]] = [
        (f"fixed input {name!r}", value) for name, value in study.fixed_inputs.items()
    ]
    parts += [(f"method {m.name!r}", m.func) for m in study.methods]
    parts += [("the data function", study.data_func)]
    for what, obj in parts:
        try:
            cloudpickle.dumps(obj)
        except Exception as exc:
            raise StudyError(
                f"{where}{what} cannot be sent to the worker processes: "
                f"{type(exc).__name__}: {exc}",
                hint="workers get the study by pickling; use data (arrays, numbers, "
                "tables) there, and open files, locks or connections inside the "
                "data function or method instead",
            ) from None
    raise StudyError(
        f"{where}the study cannot be sent to the worker processes: "
        f"{type(error).__name__}: {error}",
        hint="check fixed inputs and functions for open files, locks or connections",
    ) from None


def prestart(scheduler: str | None, modules: list[str]) -> None:
    """Start what the scheduler's workers come from now, before the study is
    loaded (the ``processes`` pool's forkserver imports ``modules`` meanwhile).
    ``None`` is the default scheduler; one not started early does nothing."""
    traits = SCHEDULERS.get(scheduler or "processes")
    if traits is not None and traits.early:
        start = getattr(importlib.import_module(traits.module), "prestart", None)
        if start is not None:
            start(modules)


def make_executor(name: str, **options: Any) -> Executor:
    """Build the executor registered under ``name``."""
    module = importlib.import_module(SCHEDULERS[name].module)
    executor: Executor = module.EXECUTORS[name](**options)
    return executor
