"""Backends: how a study's batches compute, numpy (task by task) or JAX (vmapped).

A study names its backend once (``Study(..., backend=...)``); everything
that differs between the two lives behind :class:`Backend`, chosen by
``backend_of(study)``: running a batch in this process, replaying a cell,
timing a pilot, the schedulers each can use, and what besides the library
versions makes its numbers. No other module branches on the backend name.
The jax backend (``simstudy.backends.jax``, importing jax) is imported only
for jax studies.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from simstudy.declare.grid import Batch
from simstudy.declare.outputs import OutputSpecs
from simstudy.declare.results import BatchResult
from simstudy.declare.study import Level, Study

__all__ = ["Backend", "Cell", "Placement", "Work", "backend_of"]

# (design point levels, method indices) of the batches a run will send, in order
Work = list[tuple[dict[str, Level], tuple[int, ...]]]


@dataclass
class Cell:
    """One task computed in this process, where prints and pdb work."""

    data: Any = None
    outputs: dict[str, np.ndarray[Any, Any]] | None = None
    error: BaseException | None = None
    # jax: the largest difference between the engine's vmapped kernel and the
    # cell computed eagerly, unvectorised (float tolerance, not bits)
    eager_difference: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Placement:
    """Where a run's batches go: the scheduler, the jax device, the timeout."""

    scheduler: str
    device: str | None = None
    task_timeout: float | None = None


class Backend(Protocol):
    """What a backend provides; one instance per backend name."""

    name: str
    default_scheduler: str  # where its batches run unless told otherwise
    local_scheduler: str  # in this process, as verify and replay run

    def check(self, study: Study, where: Placement) -> None:
        """Refuse a scheduler or option this backend cannot use (UsageError)."""
        ...

    def run_batch(
        self, study: Study, batch: Batch, specs: OutputSpecs | None = None
    ) -> BatchResult:
        """Run one batch in this process; failures become records."""
        ...

    def pilot(self, study: Study, batch: Batch) -> BatchResult:
        """Run a batch to time it (a jax kernel is timed on its second call)."""
        ...

    def cell(
        self, study: Study, batch: Batch, specs: OutputSpecs, *, debugger: bool
    ) -> Cell:
        """Compute the one task of ``batch`` here, as the engine would."""
        ...

    def provenance(self, study: Study, where: Placement) -> dict[str, str]:
        """What besides library versions makes this study's numbers."""
        ...

    def prepare(self, study: Study, work: Work, device: str | None) -> None:
        """Hear which (design point, methods) batches will come, in order."""
        ...


_MODULES = {"numpy": "simstudy.backends.numpy", "jax": "simstudy.backends.jax"}


def backend_of(study: Study) -> Backend:
    """Return the backend the study declared."""
    module = importlib.import_module(_MODULES[study.backend])
    backend: Backend = module.BACKEND
    return backend
