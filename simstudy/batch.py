"""Execute one batch on a worker: pure, no I/O, no dask.

Data is generated once per replicate and shared by every pending method
(common random numbers). Failures are captured as records, never raised.

Layers: imports ``study, grid, streams, errors`` (and numpy).
"""

from __future__ import annotations

import numbers
import os
import signal
import socket
import threading
import time
import traceback
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from simstudy import streams
from simstudy.grid import Batch
from simstudy.study import RESERVED, Study

__all__ = [
    "BatchResult",
    "install",
    "install_worker",
    "ready",
    "run_batch",
    "run_installed",
    "worker_name",
]

OK, FAILED = 1, 2
MAX_OUTPUT_VALUES = 1_000_000  # values of one output of one task
# output name -> per-task shape, and "method:<name>" -> that method's output
# names (sorted); learned from the first task, then passed from the store
Specs = dict[str, tuple[Any, ...]]


def keys_spec(method: str) -> str:
    """The specs entry holding a method's output names."""
    return f"method:{method}"


@dataclass(slots=True)
class BatchResult:
    """What a batch produced, laid out (replicate, method, *output shape)."""

    batch: Batch
    status: np.ndarray[Any, Any]
    seconds: np.ndarray[Any, Any]
    started: np.ndarray[Any, Any]
    outputs: dict[str, np.ndarray[Any, Any]]
    failures: list[dict[str, Any]] = field(default_factory=list)
    worker: str = ""
    keys: dict[str, tuple[str, ...]] = field(default_factory=dict)  # per method
    warnings: Any = None  # (replicate, method) int16: warnings each task emitted
    warned: list[dict[str, Any]] = field(default_factory=list)  # first of each


def name_problem(method: str, name: Any, factors: Mapping[str, Any]) -> str | None:
    """Say what is wrong with an output name, or None if it is usable."""
    if not isinstance(name, str) or not name.isidentifier():
        return (
            f"method {method!r} returned output name {name!r}; "
            "output names must be identifiers."
        )
    if name in RESERVED or name in factors:
        return (
            f"method {method!r} output {name!r} clashes with a factor or reserved name."
        )
    return None


def nonfinite_message(method: str, output: str, arr: np.ndarray[Any, Any]) -> str:
    """Say that one task's output holds NaN or inf."""
    got = f"{arr.item()}" if arr.ndim == 0 else "an array with NaN/inf"
    return (
        f"method {method!r} output {output!r} is not finite: got {got}; "
        "expected finite numbers (raise an exception to record a "
        "failure, or leave the output out)."
    )


class _TaskFailure(Exception):
    """An output problem found by the engine (not raised by user code)."""


class TaskTimeout(Exception):
    """A data function or method call ran past ``--task-timeout``."""


class _Alarm:
    """A deadline for each user call, by SIGALRM.

    Works in the main thread of a POSIX process (the ``processes`` and
    ``synchronous`` schedulers); the runner refuses ``--task-timeout`` for the
    others. A call stuck inside C code that never returns to Python is not
    interrupted.
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


def worker_name() -> str:
    """Name this process (and thread, when not the main one)."""
    name = f"{socket.gethostname()}:{os.getpid()}"
    thread = threading.current_thread()
    if thread is not threading.main_thread():
        name += f"/{thread.name}"
    return name


def ready(_: object = None) -> str:
    """Answer a warm-up call: this worker process is up (study installed)."""
    return worker_name()


def _user_traceback(exc: BaseException, source_file: str | None) -> str:
    """Format a traceback without simstudy's own frames.

    Functions shipped by value report their file as ``<dynamic-code>``; put
    the study file's path back so the user sees file, line and code.
    """
    tb = traceback.TracebackException.from_exception(exc)
    here = os.path.dirname(os.path.abspath(__file__))
    frames = []
    for f in tb.stack:
        if os.path.abspath(f.filename).startswith(here):
            continue
        if f.filename == "<dynamic-code>" and source_file:
            f = traceback.FrameSummary(source_file, f.lineno, f.name)
        frames.append(f)
    tb.stack = traceback.StackSummary.from_list(frames)
    return "".join(tb.format())[-4000:]


def _kwargs(
    params: tuple[str, ...], values: Mapping[str, Any], rng: Any
) -> dict[str, Any]:
    out = {p: values[p] for p in params if p in values}
    if "rng" in params:
        out["rng"] = rng
    return out


def _to_outputs(
    method: str,
    value: Any,
    specs: Specs,
    factors: Mapping[str, Any],
) -> dict[str, np.ndarray[Any, Any]]:
    """Check a method's return value and turn it into float64 arrays."""
    if isinstance(value, numbers.Real | np.ndarray | np.generic) and not isinstance(
        value, Mapping
    ):
        value = {"value": value}
    if not isinstance(value, Mapping):
        raise _TaskFailure(
            f"method {method!r} returned {type(value).__name__}; expected a dict "
            "{output: number or array} or a number."
        )
    out: dict[str, np.ndarray[Any, Any]] = {}
    for name, v in value.items():
        problem = name_problem(method, name, factors)
        if problem is not None:
            raise _TaskFailure(problem)
        try:
            arr = np.asarray(v)
            if arr.dtype.kind not in "biuf":
                raise TypeError(arr.dtype)
            arr = arr.astype(np.float64)
        except (TypeError, ValueError):
            raise _TaskFailure(
                f"method {method!r} output {name!r} is not numeric: "
                f"got {type(v).__name__} {str(v)[:60]!r}."
            ) from None
        if arr.size > MAX_OUTPUT_VALUES:
            raise _TaskFailure(
                f"method {method!r} output {name!r} has {arr.size:,} values; "
                f"expected at most {MAX_OUTPUT_VALUES:,} per task (return a "
                "summary of it, not the data)."
            )
        if not np.isfinite(arr).all():
            raise _TaskFailure(nonfinite_message(method, name, arr))
        expected = specs.get(name)
        if expected is None:
            specs[name] = arr.shape
        elif expected != arr.shape:
            raise _TaskFailure(
                f"method {method!r} output {name!r} has shape {arr.shape}; "
                f"expected {expected} (from the first task)."
            )
        out[name] = arr
    names = tuple(sorted(out))
    known = specs.setdefault(keys_spec(method), names)
    if known != names:
        raise _TaskFailure(
            f"method {method!r} returned outputs {list(names)}; expected "
            f"{list(known)} (from its first task)."
        )
    return out


class _Streams:
    """Give the data and method Generators of one batch under its scheme.

    States for the whole batch are derived up front (vectorised for spawn);
    each stream is then a state reset on a reused bit generator. One
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
        if s.scheme == "pcg64-jump":
            k = streams.jump_index(
                b.point, b.start + i, slot, replicates=s.replicates, methods=self.nm
            )
            return src.pcg64_jumped(self.base, k)
        return src.mt19937(b.mt_states[i * (self.nm + 1) + slot])

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


def _failure(
    r: int, method: str, exc: BaseException, message: str, source: str | None
) -> dict[str, Any]:
    return {
        "replicate": r,
        "method": method,
        "type": type(exc).__name__,
        "message": message[:2000],
        "traceback": ""
        if isinstance(exc, _TaskFailure)
        else _user_traceback(exc, source),
    }


def run_batch(study: Study, batch: Batch, specs: Specs | None = None) -> BatchResult:
    """Run every task of a batch; failures become records, never exceptions.

    The loop only calls user code and keeps raw return values; checking and
    converting them happens afterwards per method, vectorised when every
    value has the same form (see ``_collect``).
    """
    specs = dict(specs or {})
    b, k = batch.stop - batch.start, len(batch.methods)
    status = np.zeros((b, k), np.int8)
    seconds = np.full((b, k), np.nan, np.float64)
    started = np.full((b, k), np.nan, np.float64)
    raw: list[list[Any]] = [[None] * b for _ in range(k)]
    failures: list[tuple[int, int, dict[str, Any]]] = []  # (i, j, record)
    levels = dict(batch.levels)
    values = {**levels, **study.fixed_inputs}
    src = _Streams(study, batch)
    data_func: Callable[..., Any] = study.data_func  # type: ignore[assignment]
    data_kw = _kwargs(study.data_params, values, None)
    data_rng = "rng" in study.data_params
    methods = [study.methods[m] for m in batch.methods]
    method_kw = [_kwargs(m.params, values, None) for m in methods]
    perf = time.perf_counter
    alarm = _Alarm(batch.timeout)
    timed = bool(batch.timeout)  # checked inline: the loop is the hot path
    counts = np.zeros((b, k), np.int16)
    first: dict[tuple[int, int], tuple[str, str]] = {}
    log: list[warnings.WarningMessage] = []
    capture = warnings.catch_warnings(record=True) if batch.warnings else None
    if capture is not None:
        log = capture.__enter__()  # the list every warning is appended to
        warnings.simplefilter("error" if batch.warnings == "error" else "always")
    wall0, perf0 = time.time(), perf()
    try:
        for i in range(b):
            c0 = perf()
            data_error: BaseException | None = None
            seen = len(log)
            try:
                if data_rng:
                    data_kw["rng"] = src.data(i)
                if timed:
                    alarm.arm()
                data = data_func(**data_kw)
                if timed:
                    alarm.disarm()
            except Exception as exc:
                if timed:
                    alarm.disarm()
                data_error = exc
            data_end = len(log)  # data warnings count for every task of the replicate
            c1 = c0
            for j, method in enumerate(methods):
                before = len(log)
                try:
                    if data_error is not None:
                        raise data_error
                    kw = method_kw[j]
                    if method.takes_rng:
                        kw["rng"] = src.method(i, batch.methods[j])
                    if timed:
                        alarm.arm()
                    raw[j][i] = method.func(data, **kw)
                    if timed:
                        alarm.disarm()
                    status[i, j] = OK
                except Exception as exc:
                    if timed:
                        alarm.disarm()
                    status[i, j] = FAILED
                    if exc is data_error:
                        message = f"data function: {exc}"
                    else:
                        message = f"method {method.name!r}: {exc}"
                    record = _failure(
                        batch.start + i, method.name, exc, message, study.source_file
                    )
                    failures.append((i, j, record))
                if data_end > seen or len(log) > before:
                    mine = log[seen:data_end] + log[before:]
                    counts[i, j] = min(len(mine), 32767)
                    w = mine[0]
                    first[(i, j)] = (w.category.__name__, str(w.message)[:500])
                c2 = perf()
                started[i, j] = c1
                seconds[i, j] = c2 - c1  # the first method also carries the data time
                c1 = c2
    finally:
        alarm.close()
        if capture is not None:
            capture.__exit__(None, None, None)
    started += wall0 - perf0
    rows: dict[str, np.ndarray[Any, Any]] = {}
    for j, method in enumerate(methods):
        _collect(method.name, j, raw[j], status, rows, specs, levels, failures, batch)
    failures.sort(key=lambda f: (f[0], f[1]))
    return BatchResult(
        batch,
        status,
        seconds.astype(np.float32),
        started,
        rows,
        [f[2] for f in failures],
        worker_name(),
        {
            m.name: specs[keys_spec(m.name)]
            for m in methods
            if keys_spec(m.name) in specs
        },
        counts,
        [
            {
                "replicate": batch.start + i,
                "method": methods[j].name,
                "category": category,
                "message": message,
                "count": int(counts[i, j]),
            }
            for (i, j), (category, message) in sorted(first.items())
        ],
    )


def _collect(
    name: str,
    j: int,
    values: list[Any],
    status: np.ndarray[Any, Any],
    rows: dict[str, np.ndarray[Any, Any]],
    specs: Specs,
    levels: Mapping[str, Any],
    failures: list[tuple[int, int, dict[str, Any]]],
    batch: Batch,
) -> None:
    """Check method ``j``'s return values and place them in ``rows``.

    Fast path: every value is a number, or every value a dict with the same
    keys, and each output stacks into one numeric array of the expected
    shape. Anything else goes value by value through ``_to_outputs`` (the
    same rules), which names the task, output and problem.
    """
    ok = np.flatnonzero(status[:, j] == OK)
    if len(ok) == 0:
        return
    b, k = status.shape
    vals = [values[i] for i in ok]
    stacked = _stack(name, vals, specs, levels)
    if stacked is not None:
        for out, arr in stacked.items():
            if out not in rows:
                rows[out] = np.full((b, k, *arr.shape[1:]), np.nan)
            rows[out][ok, j] = arr
        return
    for i, value in zip(ok, vals, strict=True):
        try:
            outs = _to_outputs(name, value, specs, levels)
        except _TaskFailure as exc:
            status[i, j] = FAILED
            record = _failure(batch.start + int(i), name, exc, str(exc), None)
            failures.append((int(i), j, record))
            continue
        for out, arr in outs.items():
            if out not in rows:
                rows[out] = np.full((b, k, *arr.shape), np.nan)
            rows[out][i, j] = arr


def _stack(
    name: str,
    vals: list[Any],
    specs: Specs,
    levels: Mapping[str, Any],
) -> dict[str, np.ndarray[Any, Any]] | None:
    """Stack uniform return values, or None to take the per-value path."""
    first = vals[0]
    if type(first) is dict:
        keys = tuple(first)
        if not all(type(v) is dict and tuple(v) == keys for v in vals):
            return None
        columns = {out: [v[out] for v in vals] for out in keys}
    elif isinstance(first, float | int | np.floating | np.integer) and not isinstance(
        first, bool
    ):
        columns = {"value": vals}
    else:
        return None
    names = tuple(sorted(columns))
    if specs.get(keys_spec(name), names) != names:
        return None
    new: Specs = {keys_spec(name): names}
    stacked: dict[str, np.ndarray[Any, Any]] = {}
    for out, column in columns.items():
        if name_problem(name, out, levels) is not None:
            return None  # the per-value path says what is wrong
        try:
            arr = np.asarray(column)
        except (TypeError, ValueError):
            return None
        if arr.dtype.kind not in "biuf" or arr.ndim < 1 or len(arr) != len(vals):
            return None
        shape = arr.shape[1:]
        if specs.get(out, shape) != shape:
            return None
        if arr.size > MAX_OUTPUT_VALUES * len(vals) or not np.isfinite(arr).all():
            return None
        new[out] = shape
        stacked[out] = arr.astype(np.float64)
    specs.update(new)
    return stacked


# ---- worker-side study cache (the study travels once per worker) -----------
_installed: dict[str, Study] = {}


def _load(payload: bytes) -> Study:
    import pickle

    study = pickle.loads(payload)
    if not isinstance(study, Study):
        raise TypeError(f"payload is a {type(study).__name__}, not a Study")
    return study


def install(token: str, payload: bytes) -> None:
    """Unpickle a study once in this process (a pool initializer)."""
    _installed[token] = _load(payload)


def install_worker(token: str, payload: bytes, driver: int) -> None:
    """Initialise a pool worker process: exit when the driver (pid
    ``driver``) dies, even by ``kill -9``, instead of waiting forever for work
    that will never come; then install the study.

    The driver's pid comes from the driver: read here, it would already be
    init's when the driver died while this worker was starting.
    """

    def watch() -> None:
        while os.getppid() == driver:
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, name="simstudy-parent-watch", daemon=True).start()
    install(token, payload)


def run_installed(token: str, batch: Batch, specs: Specs) -> BatchResult:
    """Run a batch of the study installed under ``token``."""
    return run_batch(_installed[token], batch, specs)
