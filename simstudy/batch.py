"""Execute one batch on a worker: pure, no I/O, no dask.

Data is generated once per replicate and shared by every pending method
(common random numbers). Failures are captured as records, never raised.

Layers: imports ``study, grid, streams, errors`` (and numpy).
"""

from __future__ import annotations

import math
import numbers
import os
import socket
import threading
import time
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from simstudy import streams
from simstudy.grid import Batch
from simstudy.study import RESERVED, Study

__all__ = ["BatchResult", "install", "run_batch", "run_installed", "worker_name"]

OK, FAILED = 1, 2


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


class _TaskFailure(Exception):
    """An output problem found by the engine (not raised by user code)."""


def worker_name() -> str:
    """Name this process (and thread, when not the main one)."""
    name = f"{socket.gethostname()}:{os.getpid()}"
    thread = threading.current_thread()
    if thread is not threading.main_thread():
        name += f"/{thread.name}"
    return name


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
    specs: dict[str, tuple[int, ...]],
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
        if not isinstance(name, str) or not name.isidentifier():
            raise _TaskFailure(
                f"method {method!r} returned output name {name!r}; "
                "output names must be identifiers."
            )
        if name in RESERVED or name in factors:
            raise _TaskFailure(
                f"method {method!r} output {name!r} clashes with a "
                "factor or reserved name."
            )
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
        expected = specs.get(name)
        if expected is None:
            specs[name] = arr.shape
        elif expected != arr.shape:
            raise _TaskFailure(
                f"method {method!r} output {name!r} has shape {arr.shape}; "
                f"expected {expected} (from the first task)."
            )
        out[name] = arr
    return out


class _Streams:
    """Give the data and method Generators of one batch under its scheme."""

    def __init__(self, study: Study, batch: Batch) -> None:
        self.study = study
        self.batch = batch
        self.pkey = streams.point_key(dict(batch.levels))
        self.mkeys = [streams.key(m.name) for m in study.methods]
        self.nm = len(study.methods)

    def _slot(self, r: int, slot: int) -> Any:
        s = self.study
        if s.scheme == "pcg64-jump":
            k = streams.jump_index(
                self.batch.point, r, slot, replicates=s.replicates, methods=self.nm
            )
            return streams.pcg64_jumped(s.seed, k)
        row = (r - self.batch.start) * (self.nm + 1) + slot
        return streams.mt_generator(self.batch.mt_states[row])

    def data(self, r: int) -> Any:
        if self.study.scheme == "spawn":
            return streams.data_generator(self.study.seed, self.pkey, r)
        return self._slot(r, 0)

    def method(self, r: int, m: int) -> Any:
        if self.study.scheme == "spawn":
            return streams.method_generator(
                self.study.seed, self.pkey, r, self.mkeys[m]
            )
        return self._slot(r, 1 + m)


def run_batch(
    study: Study, batch: Batch, specs: dict[str, tuple[int, ...]] | None = None
) -> BatchResult:
    """Run every task of a batch; failures become records, never exceptions."""
    specs = dict(specs or {})
    b, k = batch.stop - batch.start, len(batch.methods)
    status = np.zeros((b, k), np.int8)
    seconds = np.full((b, k), np.nan, np.float32)
    started = np.full((b, k), np.nan, np.float64)
    rows: dict[str, np.ndarray[Any, Any]] = {}
    failures: list[dict[str, Any]] = []
    levels = dict(batch.levels)
    values = {**levels, **study.fixed_inputs}
    src = _Streams(study, batch)
    data_func: Callable[..., Any] = study.data_func  # type: ignore[assignment]
    for i, r in enumerate(range(batch.start, batch.stop)):
        t0 = time.time()
        c0 = time.perf_counter()
        try:
            data = data_func(**_kwargs(study.data_params, values, src.data(r)))
            data_error: BaseException | None = None
        except Exception as exc:
            data_error = exc
        data_time = time.perf_counter() - c0
        for j, m in enumerate(batch.methods):
            method = study.methods[m]
            started[i, j] = t0 if j == 0 else time.time()
            c1 = time.perf_counter()
            try:
                if data_error is not None:
                    raise data_error
                rng = src.method(r, m) if method.takes_rng else None
                value = method.func(data, **_kwargs(method.params, values, rng))
                outs = _to_outputs(method.name, value, specs, levels)
                status[i, j] = OK
                for name, arr in outs.items():
                    if name not in rows:
                        rows[name] = np.full((b, k, *arr.shape), np.nan)
                    rows[name][i, j] = arr
            except Exception as exc:
                status[i, j] = FAILED
                if isinstance(exc, _TaskFailure):
                    message = str(exc)
                elif exc is data_error:
                    message = f"data function: {exc}"
                else:
                    message = f"method {method.name!r}: {exc}"
                failures.append(
                    {
                        "replicate": r,
                        "method": method.name,
                        "type": type(exc).__name__,
                        "message": message[:2000],
                        "traceback": ""
                        if isinstance(exc, _TaskFailure)
                        else _user_traceback(exc, study.source_file),
                    }
                )
            elapsed = time.perf_counter() - c1 + (data_time if j == 0 else 0.0)
            seconds[i, j] = elapsed if math.isfinite(elapsed) else np.nan
    return BatchResult(batch, status, seconds, started, rows, failures, worker_name())


# ---- worker-side study cache (the study travels once per worker) -----------
_installed: dict[str, Study] = {}
_by_payload: dict[int, tuple[bytes, Study]] = {}


def _load(payload: bytes) -> Study:
    import pickle

    study = pickle.loads(payload)
    if not isinstance(study, Study):
        raise TypeError(f"payload is a {type(study).__name__}, not a Study")
    return study


def install(token: str, payload: bytes) -> None:
    """Unpickle a study once in this process (a pool initializer)."""
    _installed[token] = _load(payload)


def run_installed(
    token: str, batch: Batch, specs: dict[str, tuple[int, ...]]
) -> BatchResult:
    """Run a batch of the study installed under ``token``."""
    return run_batch(_installed[token], batch, specs)


def run_payload(
    payload: bytes, batch: Batch, specs: dict[str, tuple[int, ...]]
) -> BatchResult:
    """Run a batch of a pickled study, unpickling it once per process."""
    hit = _by_payload.get(id(payload))
    if hit is None or hit[0] is not payload:
        _by_payload.clear()
        hit = _by_payload[id(payload)] = (payload, _load(payload))
    return run_batch(hit[1], batch, specs)
