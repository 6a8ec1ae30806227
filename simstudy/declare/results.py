"""What a batch hands back: its per-task arrays, failures and warnings.

These value objects cross from the workers (``batch``, the jax backend,
executors that record a dead worker) to the driver's store, which adds the
design point's levels when it writes a record to
``<store>/.simstudy/{failures,warnings}/*.json``.
"""

from __future__ import annotations

import os
import socket
import threading
import traceback
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from simstudy.declare.grid import Batch

__all__ = ["BatchResult", "Failure", "Warned", "failure", "user_traceback"]
__all__ += ["worker_name"]

_HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # simstudy/


@dataclass(frozen=True, slots=True)
class Failure:
    """One failed task: its replicate, method, exception type and message."""

    replicate: int
    method: str
    type: str
    message: str
    traceback: str = ""

    def record(self, point: dict[str, Any]) -> dict[str, Any]:
        """The JSON record the store keeps: the point's levels, then the fields."""
        return {**point, **asdict(self)}


@dataclass(frozen=True, slots=True)
class Warned:
    """The first warning a task emitted, and how many it emitted."""

    replicate: int
    method: str
    category: str
    message: str
    count: int

    def record(self, point: dict[str, Any]) -> dict[str, Any]:
        """The JSON record the store keeps: the point's levels, then the fields."""
        return {**point, **asdict(self)}


@dataclass(slots=True)
class BatchResult:
    """What a batch produced, laid out (replicate, method, *output shape).

    ``keys`` holds, per method that returned outputs, their sorted names;
    ``warnings`` the number of warnings each task emitted (None: none).
    """

    batch: Batch
    status: np.ndarray[Any, Any]
    seconds: np.ndarray[Any, Any]
    started: np.ndarray[Any, Any]
    outputs: dict[str, np.ndarray[Any, Any]] = field(default_factory=dict)
    failures: list[Failure] = field(default_factory=list)
    worker: str = ""
    keys: dict[str, tuple[str, ...]] = field(default_factory=dict)
    warnings: np.ndarray[Any, Any] | None = None
    warned: list[Warned] = field(default_factory=list)


def worker_name() -> str:
    """Name this process (and thread, when not the main one)."""
    name = f"{socket.gethostname()}:{os.getpid()}"
    thread = threading.current_thread()
    if thread is not threading.main_thread():
        name += f"/{thread.name}"
    return name


def user_traceback(exc: BaseException, source_file: str | None) -> str:
    """Format a traceback without simstudy's own frames.

    Functions shipped by value report their file as ``<dynamic-code>``; put
    the study file's path back so the user sees file, line and code.
    """
    trace = traceback.TracebackException.from_exception(exc)
    frames = []
    for frame in trace.stack:
        if os.path.abspath(frame.filename).startswith(_HERE):
            continue
        if frame.filename == "<dynamic-code>" and source_file:
            frame = traceback.FrameSummary(source_file, frame.lineno, frame.name)
        frames.append(frame)
    trace.stack = traceback.StackSummary.from_list(frames)
    return "".join(trace.format())[-4000:]


def failure(
    replicate: int,
    method: str,
    exc: BaseException,
    message: str,
    source_file: str | None,
    *,
    engine: bool = False,
) -> Failure:
    """Record a task's exception; ``engine``: found by simstudy, no traceback."""
    return Failure(
        replicate,
        method,
        type(exc).__name__,
        message[:2000],
        "" if engine else user_traceback(exc, source_file),
    )
