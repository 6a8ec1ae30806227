"""Executors: run batches, yield their results, a bounded window in flight.

Every executor subclasses :class:`Executor` and says in class attributes
what its scheduler can do (interrupt a hung call, count warnings, join a
cluster); ``REGISTRY`` names the class serving each ``--scheduler`` name and
``SCHEDULERS`` imports it on first use. Option checks read the traits
instead of comparing names. Executors that keep a window of batches in
flight and bisect a batch whose worker died subclass
:class:`simstudy.executors.windowed.WindowedExecutor`. No plugin entry points.
"""

from __future__ import annotations

import importlib
import traceback
from collections.abc import Callable, Iterator, Mapping
from typing import Any, ClassVar, Protocol

import numpy as np

from simstudy.cube import FAILED
from simstudy.declare.grid import Batch
from simstudy.declare.outputs import OutputSpecs
from simstudy.declare.results import BatchResult, Failure, worker_name
from simstudy.declare.study import Study
from simstudy.errors import StudyError

__all__ = [
    "MAX_ATTEMPTS",
    "REGISTRY",
    "SCHEDULERS",
    "Executor",
    "ExecutorOptions",
    "WorkerDied",
    "failed_result",
    "make_executor",
    "prestart",
    "study_payload",
]


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


class ExecutorOptions(Protocol):
    """What an executor reads of a run's options (``RunOptions`` has it all)."""

    @property
    def scheduler(self) -> str: ...
    @property
    def workers(self) -> int: ...
    @property
    def address(self) -> str | None: ...
    @property
    def insecure(self) -> bool: ...
    @property
    def tls(self) -> Mapping[str, str] | None: ...
    @property
    def cluster(self) -> str | None: ...
    @property
    def cluster_config(self) -> str | None: ...
    @property
    def device(self) -> str | None: ...


class Executor:
    """Runs batches somewhere and yields their results as they finish.

    A subclass serves one ``--scheduler`` name (a line in ``REGISTRY``) and
    says what it can do in the class attributes below; option checks read
    them instead of comparing names. It is built from the study and the
    run's typed options (``RunOptions``), plus the pickled study if the
    caller has it already.
    """

    timeout: ClassVar[bool] = False  # can interrupt a hung user call (SIGALRM)
    warnings: ClassVar[bool] = True  # can count warnings per task (per process)
    remote: ClassVar[bool] = False  # takes --address / --cluster
    early: ClassVar[bool] = False  # worth starting before the store is opened
    elsewhere: ClassVar[bool] = False  # tasks run in other processes than the driver

    description: str = ""

    def __init__(
        self, study: Study, opts: ExecutorOptions, *, payload: bytes | None = None
    ) -> None:
        self.study = study
        self.stopping = False

    @classmethod
    def prestart(cls, modules: list[str]) -> None:
        """Start what the workers come from, before the study is loaded
        (``early`` executors only; the default does nothing)."""

    def results(
        self, batches: Iterator[Batch], specs: Callable[[], OutputSpecs]
    ) -> Iterator[BatchResult]:
        """Submit batches (a bounded window at a time), yield finished results."""
        raise NotImplementedError

    def wait(self) -> None:
        """Return when workers are up to take batches (others may still start)."""

    def prepare(self, work: list[tuple[int, tuple[int, ...]]]) -> None:
        """Hear which (design point, methods) batches will come, in order
        (the jax executor compiles their kernels ahead)."""

    def stop_submitting(self) -> None:
        """Finish the batches in flight but submit no new ones."""
        self.stopping = True

    def close(self) -> None:
        """Release workers and pools; cancel anything still running."""


# one line per --scheduler name: "module:class" (imported when first used)
REGISTRY: dict[str, str] = {
    "processes": "simstudy.executors.pool:PoolExecutor",
    "distributed": "simstudy.executors.dask:DistributedExecutor",
    "threads": "simstudy.executors.dask:ThreadsExecutor",
    "synchronous": "simstudy.executors.dask:SynchronousExecutor",
    "jax": "simstudy.executors.jax:JaxExecutor",
}


class _Schedulers(Mapping[str, type[Executor]]):
    """``--scheduler`` name -> executor class, imported on first use (the
    names alone, e.g. for the CLI's choices, import nothing)."""

    def __getitem__(self, name: str) -> type[Executor]:
        module, _, attr = REGISTRY[name].partition(":")
        executor: type[Executor] = getattr(importlib.import_module(module), attr)
        return executor

    def __iter__(self) -> Iterator[str]:
        return iter(REGISTRY)

    def __len__(self) -> int:
        return len(REGISTRY)


SCHEDULERS: Mapping[str, type[Executor]] = _Schedulers()


def failed_result(
    batch: Batch, exc: BaseException, method_names: list[str]
) -> BatchResult:
    """Record every task of a batch as failed because its worker failed."""
    rows, columns = batch.stop - batch.start, len(batch.methods)
    if isinstance(exc, WorkerDied):
        message = str(exc)
    else:
        text = "".join(traceback.format_exception_only(type(exc), exc)).strip()
        message = f"the worker running this batch failed: {text}"
    return BatchResult(
        batch,
        np.full((rows, columns), FAILED, np.int8),
        np.full((rows, columns), np.nan, np.float32),
        np.full((rows, columns), np.nan, np.float64),
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
    name = scheduler or "processes"
    if name in REGISTRY and SCHEDULERS[name].early:
        SCHEDULERS[name].prestart(modules)


def make_executor(
    study: Study, opts: ExecutorOptions, *, payload: bytes | None = None
) -> Executor:
    """Build the executor registered under ``opts.scheduler``."""
    return SCHEDULERS[opts.scheduler](study, opts, payload=payload)
