"""The numpy backend: run a batch task by task, in this worker process.

Data is generated once per replicate and shared by every pending method
(common random numbers), each method getting it through a ``guard.Guard``
(arrays read-only, other objects copied) so no method changes another's.
User code is called in a tight loop that keeps the raw return values;
checking and converting them happens afterwards per method, vectorised when
every value has the same form (``outputs.stack``).
Failures are captured as records, never raised. Pure: no I/O, no dask.
"""

from __future__ import annotations

import signal
import time
import warnings
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from simstudy.backends import Cell, Placement, Work
from simstudy.backends.guard import Guard, read_only_advice, read_only_inputs
from simstudy.cube import FAILED, OK
from simstudy.declare.grid import Batch
from simstudy.declare.outputs import OutputError, OutputSpecs, stack, to_outputs
from simstudy.declare.results import BatchResult, Failure, Warned, failure, worker_name
from simstudy.declare.study import Study
from simstudy.errors import UsageError
from simstudy.rng import streams

__all__ = ["BACKEND", "TaskStreams", "TaskTimeout", "kwargs_of", "run_batch"]


class TaskTimeout(Exception):
    """A data function or method call ran past ``--task-timeout``."""


class _Alarm:
    """A deadline for each user call, by SIGALRM.

    Works in the main thread of a POSIX process (the ``processes`` and
    ``synchronous`` schedulers); the run options refuse ``--task-timeout``
    for the others. A call stuck inside C code that never returns to Python
    is not interrupted.
    """

    def __init__(self, seconds: float | None) -> None:
        self.seconds = seconds
        self.saved: Any = None
        if seconds:
            self.saved = signal.signal(signal.SIGALRM, self._fire)

    def _fire(self, signum: int, frame: Any) -> None:
        raise TaskTimeout(f"took longer than --task-timeout {self.seconds:g} s")

    def arm(self) -> None:
        if self.seconds:
            signal.setitimer(signal.ITIMER_REAL, self.seconds)

    def disarm(self) -> None:
        if self.seconds:
            signal.setitimer(signal.ITIMER_REAL, 0)

    def close(self) -> None:
        if self.seconds:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, self.saved)


def kwargs_of(
    params: tuple[str, ...], values: Mapping[str, Any], rng: Any
) -> dict[str, Any]:
    """The keyword arguments of a user function: factors, fixed inputs, rng."""
    out = {p: values[p] for p in params if p in values}
    if "rng" in params:
        out["rng"] = rng
    return out


class TaskStreams:
    """Give the data and method Generators of one batch under its scheme.

    Spawn states for the whole batch are derived up front (vectorised);
    mt19937-jump states are built when asked, by random access from the
    stream asked before. Each stream is then a state reset on a reused bit
    generator. One
    Reseeder serves the data stream and one the method streams, so a
    method's Generator never disturbs the replicate's data Generator.
    """

    def __init__(self, study: Study, batch: Batch) -> None:
        self.study = study
        self.batch = batch
        self.nm = len(study.methods)
        self.data_src = streams.Reseeder()
        self.method_src = streams.Reseeder()
        self.spawn: dict[int, list[tuple[int, int]]] = {}
        if study.scheme == "spawn":
            self.pkey = streams.point_key(dict(batch.levels))
            self.reps = np.arange(batch.start, batch.stop)
            if "rng" in study.data_params:
                self.spawn[-1] = streams.spawn_states(
                    study.seed, (self.pkey,), self.reps
                )
        elif study.scheme == "pcg64-jump":
            self.base = streams.pcg64_base(study.seed)

    def _method_states(self, m: int) -> list[tuple[int, int]]:
        states = self.spawn.get(m)
        if states is None:
            mkey = streams.key(self.study.methods[m].name)
            states = self.spawn[m] = streams.spawn_states(
                self.study.seed, (self.pkey,), self.reps, (mkey,)
            )
        return states

    def _slot(self, src: streams.Reseeder, i: int, slot: int) -> Any:
        s, b = self.study, self.batch
        k = streams.jump_index(
            b.point, b.start + i, slot, replicates=s.replicates, methods=self.nm
        )
        if s.scheme == "pcg64-jump":
            return src.pcg64_jumped(self.base, k)
        # built here on the worker, by random access (~1.5 ms, counted in the
        # task's seconds); asked in increasing k, each from the one before
        return src.mt19937(streams.mt19937_row(s.seed, k))

    def data(self, i: int) -> Any:
        """The data Generator of the batch's ``i``-th replicate."""
        if self.study.scheme == "spawn":
            return self.data_src.pcg64(self.spawn[-1][i])
        return self._slot(self.data_src, i, 0)

    def method(self, i: int, m: int) -> Any:
        """The Generator of method ``m`` in the batch's ``i``-th replicate."""
        if self.study.scheme == "spawn":
            return self.method_src.pcg64(self._method_states(m)[i])
        return self._slot(self.method_src, i, 1 + m)


class _Warnings:
    """Count the warnings each task emits; keep the first of each."""

    def __init__(self, mode: str | None, shape: tuple[int, int]) -> None:
        self.counts = np.zeros(shape, np.int16)
        self.first: dict[tuple[int, int], tuple[str, str]] = {}
        self.log: list[warnings.WarningMessage] = []
        self.capture = warnings.catch_warnings(record=True) if mode else None
        if self.capture is not None:
            self.log = self.capture.__enter__()  # every warning is appended here
            warnings.simplefilter("error" if mode == "error" else "always")

    def note(self, i: int, j: int, data: tuple[int, int], before: int) -> None:
        """Count for task (i, j) the data function's warnings (``data``: the log
        span of its replicate's data call) and those since ``before``."""
        seen, data_end = data
        if data_end > seen or len(self.log) > before:
            mine = self.log[seen:data_end] + self.log[before:]
            self.counts[i, j] = min(len(mine), 32767)
            w = mine[0]
            self.first[(i, j)] = (w.category.__name__, str(w.message)[:500])

    def close(self) -> None:
        if self.capture is not None:
            self.capture.__exit__(None, None, None)

    def records(self, batch: Batch, names: list[str]) -> list[Warned]:
        return [
            Warned(batch.start + i, names[j], category, message, int(self.counts[i, j]))
            for (i, j), (category, message) in sorted(self.first.items())
        ]


class _BatchRun:
    """The state of one numpy batch: its arrays, raw values and failures."""

    def __init__(self, study: Study, batch: Batch) -> None:
        self.study, self.batch = study, batch
        b, k = batch.stop - batch.start, len(batch.methods)
        self.status = np.zeros((b, k), np.int8)
        self.seconds = np.full((b, k), np.nan, np.float64)
        self.started = np.full((b, k), np.nan, np.float64)
        self.raw: list[list[Any]] = [[None] * b for _ in range(k)]
        self.failures: list[tuple[int, int, Failure]] = []  # (i, j, record)
        self.levels = dict(batch.levels)
        self.methods = [study.methods[m] for m in batch.methods]
        self.warned = _Warnings(batch.warnings, (b, k))

    def loop(self) -> None:
        """Call the data function once per replicate, then each method."""
        study, batch = self.study, self.batch
        values = {**self.levels, **read_only_inputs(study.fixed_inputs)}
        src = TaskStreams(study, batch)
        data_func: Callable[..., Any] = study.data_func  # type: ignore[assignment]
        data_kw = kwargs_of(study.data_params, values, None)
        data_rng = "rng" in study.data_params
        method_kw = [kwargs_of(m.params, values, None) for m in self.methods]
        perf, log = time.perf_counter, self.warned.log
        alarm = _Alarm(batch.timeout)
        timed = bool(batch.timeout)  # checked inline: the loop is the hot path
        wall0, perf0 = time.time(), perf()
        try:
            for i in range(batch.stop - batch.start):
                c0 = perf()
                data_error: BaseException | None = None
                guard: Guard | None = None
                seen = len(log)
                try:
                    if data_rng:
                        data_kw["rng"] = src.data(i)
                    if timed:
                        alarm.arm()
                    data = data_func(**data_kw)
                    if timed:
                        alarm.disarm()
                    guard = Guard(data)  # no method changes another's data
                except Exception as exc:
                    if timed:
                        alarm.disarm()
                    data_error = exc
                span = (seen, len(log))  # data warnings count for every method
                c1 = c0
                for j, method in enumerate(self.methods):
                    before = len(log)
                    try:
                        if data_error is not None:
                            raise data_error
                        assert guard is not None  # set with the data
                        kw = method_kw[j]
                        if method.takes_rng:
                            kw["rng"] = src.method(i, batch.methods[j])
                        if timed:
                            alarm.arm()
                        self.raw[j][i] = method.func(guard.get(), **kw)
                        if timed:
                            alarm.disarm()
                        self.status[i, j] = OK
                    except Exception as exc:
                        if timed:
                            alarm.disarm()
                        self._failed(i, j, exc, exc is data_error)
                    self.warned.note(i, j, span, before)
                    c2 = perf()
                    self.started[i, j] = c1
                    self.seconds[i, j] = c2 - c1  # the first method carries the data
                    c1 = c2
        finally:
            alarm.close()
            self.warned.close()
        self.started += wall0 - perf0

    def _failed(self, i: int, j: int, exc: BaseException, in_data: bool) -> None:
        name = self.methods[j].name
        self.status[i, j] = FAILED
        message = (
            f"data function: {exc}{read_only_advice(exc)}"
            if in_data
            else f"method {name!r}: {exc}{read_only_advice(exc)}"
        )
        record = failure(
            self.batch.start + i, name, exc, message, self.study.source_file
        )
        self.failures.append((i, j, record))

    def collect(self, j: int, specs: OutputSpecs, rows: dict[str, Any]) -> None:
        """Check method ``j``'s return values and place them in ``rows``.

        Fast path: ``outputs.stack``. Anything else goes value by value
        through ``outputs.to_outputs`` (the same rules), which names the task,
        output and problem.
        """
        name = self.methods[j].name
        ok = np.flatnonzero(self.status[:, j] == OK)
        if len(ok) == 0:
            return
        b, k = self.status.shape
        vals = [self.raw[j][i] for i in ok]
        stacked = stack(name, vals, specs, self.levels)
        if stacked is not None:
            for out, arr in stacked.items():
                if out not in rows:
                    rows[out] = np.full((b, k, *arr.shape[1:]), np.nan)
                rows[out][ok, j] = arr
            return
        for i, value in zip(ok, vals, strict=True):
            try:
                outs = to_outputs(name, value, specs, self.levels)
            except OutputError as exc:
                self.status[i, j] = FAILED
                record = failure(
                    self.batch.start + int(i), name, exc, str(exc), None, engine=True
                )
                self.failures.append((int(i), j, record))
                continue
            for out, arr in outs.items():
                if out not in rows:
                    rows[out] = np.full((b, k, *arr.shape), np.nan)
                rows[out][i, j] = arr


def run_batch(
    study: Study, batch: Batch, specs: OutputSpecs | None = None
) -> BatchResult:
    """Run every task of a batch; failures become records, never exceptions.

    ``specs`` says what is known of the outputs (from the store); what the
    batch learns is reported in ``BatchResult.keys``.
    """
    specs = OutputSpecs() if specs is None else specs.copy()
    run = _BatchRun(study, batch)
    run.loop()
    rows: dict[str, np.ndarray[Any, Any]] = {}
    for j in range(len(run.methods)):
        run.collect(j, specs, rows)
    run.failures.sort(key=lambda f: (f[0], f[1]))
    names = [m.name for m in run.methods]
    return BatchResult(
        batch,
        run.status,
        run.seconds.astype(np.float32),
        run.started,
        rows,
        [f[2] for f in run.failures],
        worker_name(),
        {m: specs.names[m] for m in names if m in specs.names},
        run.warned.counts,
        run.warned.records(batch, names),
    )


class NumpyBackend:
    """Study functions take ``rng`` (a numpy Generator) and run task by task."""

    name = "numpy"
    default_scheduler = "processes"
    local_scheduler = "synchronous"

    def check(self, study: Study, where: Placement) -> None:
        if where.scheduler == "jax":
            raise UsageError(
                f"--scheduler jax runs studies declared with backend='jax'; "
                f"study {study.name!r} uses numpy.",
                hint='declare Study(..., backend="jax") with jax.numpy functions, '
                "or drop --scheduler jax",
            )
        if where.device is not None:
            raise UsageError(
                f"--device {where.device} applies to backend='jax' studies; study "
                f"{study.name!r} uses numpy.",
                hint="drop --device",
            )

    def run_batch(
        self, study: Study, batch: Batch, specs: OutputSpecs | None = None
    ) -> BatchResult:
        return run_batch(study, batch, specs)

    def pilot(self, study: Study, batch: Batch) -> BatchResult:
        return run_batch(study, batch, None)

    def cell(
        self, study: Study, batch: Batch, specs: OutputSpecs, *, debugger: bool
    ) -> Cell:
        """Call the data function and the method of a one-task batch here."""
        m = batch.methods[0]
        method = study.methods[m]
        levels = dict(batch.levels)
        values = {**levels, **read_only_inputs(study.fixed_inputs)}
        src = TaskStreams(study, batch)
        out = Cell()
        data_func: Callable[..., Any] = study.data_func  # type: ignore[assignment]
        try:
            data_rng = src.data(0) if "rng" in study.data_params else None
            out.data = data_func(**kwargs_of(study.data_params, values, data_rng))
            rng = src.method(0, m) if method.takes_rng else None
            given = Guard(out.data).get()  # read-only, as the engine gives it
            value = method.func(given, **kwargs_of(method.params, values, rng))
            out.outputs = to_outputs(method.name, value, specs.copy(), levels)
        except Exception as exc:
            out.error = exc
            if debugger:
                import pdb  # noqa: T100  (--pdb asks for the debugger)

                pdb.post_mortem(exc.__traceback__)
        return out

    def provenance(self, study: Study, where: Placement) -> dict[str, str]:
        return {}

    def prepare(self, study: Study, work: Work, device: str | None) -> None:
        pass


BACKEND = NumpyBackend()
