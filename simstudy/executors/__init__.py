"""Executors: run batches, yield their results, a bounded window in flight.

Every executor implements :class:`Executor`; each executor module's
``EXECUTORS`` maps the ``--scheduler`` names it serves to factories. No
plugin entry points.

Layers: imports ``batch`` and ``grid``; the dask executors import dask
inside ``simstudy.executors.dask``, the jax executor jax inside
``simstudy.executors.jax``.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable, Iterator
from typing import Any, Protocol

import numpy as np

from simstudy.batch import FAILED, BatchResult, Specs, worker_name
from simstudy.errors import StudyError
from simstudy.grid import Batch
from simstudy.study import Study

__all__ = [
    "MAX_ATTEMPTS",
    "SCHEDULERS",
    "Executor",
    "WorkerDied",
    "batch_runner",
    "failed_result",
    "installed_runner",
    "study_payload",
]

SCHEDULERS = ("processes", "distributed", "threads", "synchronous", "jax")
# the module that serves each scheduler name (imported only when used)
_MODULES = dict.fromkeys(SCHEDULERS[:4], "simstudy.executors.dask")
_MODULES["jax"] = "simstudy.executors.jax"
BatchRunner = Callable[[Study, Batch, Specs | None], BatchResult]


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
        self, batches: Iterator[Batch], specs: Callable[[], Specs]
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


def make_executor(name: str, **options: Any) -> Executor:
    """Build the executor registered under ``name``."""
    import importlib

    module = importlib.import_module(_MODULES[name])
    executor: Executor = module.EXECUTORS[name](**options)
    return executor


def batch_runner(study: Study) -> BatchRunner:
    """Return the function that runs one batch of ``study`` in this process."""
    if study.backend == "jax":
        from simstudy.executors.jax import run_jax_batch

        return run_jax_batch
    from simstudy.batch import run_batch

    return run_batch


def installed_runner(study: Study) -> Callable[[str, Batch, Specs], BatchResult]:
    """Return the function a Dask worker calls to run a batch of ``study``."""
    if study.backend == "jax":
        from simstudy.executors.jax import run_installed

        return run_installed
    from simstudy.batch import run_installed

    return run_installed
