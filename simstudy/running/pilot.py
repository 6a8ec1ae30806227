"""``simstudy plan``: what a run would do, measured without writing anything.

Counts the tasks (new vs done in the store), sizes the cube, and times a
short pilot of every design point in this process with the study's backend
(its numbers are the real ones, but nothing is stored).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from simstudy.backends import backend_of
from simstudy.cube import FAILED, METHOD, OK
from simstudy.declare.grid import Batch, points
from simstudy.declare.loader import load_study
from simstudy.declare.results import BatchResult
from simstudy.declare.study import Study
from simstudy.running.recompute import task_batch

__all__ = ["Estimate", "Finding", "estimate"]

MESSAGE = 300  # characters of a message that group alike failures


@dataclass
class Finding:
    """Pilot tasks of one method that failed (or warned) alike: how many,
    the exception (or warning) type and its first message."""

    method: str
    type: str
    message: str
    count: int


@dataclass
class Estimate:
    """What a run of a study would do, measured without writing anything."""

    tasks: int
    done: int  # ok in the store already
    failed: int  # failed in the store: a plain run leaves them, --retry-failed not
    to_run: int  # what a run computes (what `run` will count)
    shape: tuple[int, ...]
    values_per_task: int  # output values per task, from the pilot
    bytes: int  # uncompressed size of the cube
    pilot_tasks: int
    pilot_seconds: float
    seconds_per_task: dict[int, float]  # per design point
    estimate: float  # seconds of work, spread over ``workers``
    workers: int
    pilot_per_method: dict[str, int] = field(default_factory=dict)  # tasks run
    failures: list[Finding] = field(default_factory=list)  # grouped, per method
    warnings: list[Finding] = field(default_factory=list)  # each distinct once


class _Findings:
    """Pilot failures and warnings grouped by method, type and message."""

    def __init__(self) -> None:
        self.failed: dict[tuple[str, str, str], int] = {}
        self.warned: dict[tuple[str, str, str], int] = {}

    def add(self, result: BatchResult) -> None:
        for f in result.failures:
            key = (f.method, f.type, f.message[:MESSAGE])
            self.failed[key] = self.failed.get(key, 0) + 1
        for w in result.warned:
            key = (w.method, w.category, w.message[:MESSAGE])
            self.warned[key] = self.warned.get(key, 0) + w.count

    @staticmethod
    def listed(found: dict[tuple[str, str, str], int]) -> list[Finding]:
        return [Finding(*key, n) for key, n in found.items()]


def _done(
    study: Study, store: str | os.PathLike[str] | None
) -> tuple[list[int], list[int]]:
    """Tasks ok and failed in the store per design point (0 without one)."""
    grid = points(study)
    done_at, failed_at = [0] * len(grid), [0] * len(grid)
    if store is None or not Path(store).exists():
        return done_at, failed_at
    from simstudy.store import open_results

    ds = open_results(store)
    names = [m for m in study.method_names if m in ds[METHOD].values]
    for p, point in enumerate(grid):
        try:
            codes = ds["status"].sel({**point, METHOD: names}).values
        except KeyError:
            continue
        done_at[p] = int((codes[: study.replicates] == OK).sum())
        failed_at[p] = int((codes[: study.replicates] == FAILED).sum())
    ds.close()
    return done_at, failed_at


PILOT_POINTS = 200  # design points the pilot times, spread over the grid


def _sample(n: int) -> list[int]:
    """The design points a pilot times: all of a small grid, else
    ``PILOT_POINTS`` spread evenly over it (the others count at the typical
    time a task), so planning 10^6 design points takes seconds."""
    if n <= PILOT_POINTS:
        return list(range(n))
    return sorted({int(i) for i in np.linspace(0, n - 1, PILOT_POINTS)})


def _values_per_task(result: BatchResult) -> int:
    """The numbers one task of ``result`` returns, over all its outputs."""
    return sum(
        int(np.prod(array.shape[2:], dtype=np.int64))
        for array in result.outputs.values()
    )


def estimate(
    study: Study | str | os.PathLike[str],
    *,
    store: str | os.PathLike[str] | None = None,
    workers: int | None = None,
    pilot_seconds: float = 2.0,
    retry_failed: bool = False,
) -> Estimate:
    """Count tasks (new vs done), size the cube and time a short pilot here.

    The pilot runs a few replicates of every design point (of at most
    ``PILOT_POINTS``, spread over a larger grid) in this process;
    a jax kernel computes a whole block whatever the batch, so a jax study
    pilots one block per point (its time per task excludes the compile).
    Its failed tasks are grouped per method and message, its warnings
    counted once each (``Estimate.failures``, ``Estimate.warnings``).
    ``to_run`` counts what ``run`` would compute: failed tasks only with
    ``retry_failed``.
    """
    if not isinstance(study, Study):
        study = load_study(study)
    backend = backend_of(study)
    grid = points(study)
    n_methods = len(study.methods)
    done_at, failed_at = _done(study, store)
    found = _Findings()
    per_method: dict[str, int] = {}
    spent = [0.0] * len(grid)
    ran = [0] * len(grid)
    values = 0
    started = time.perf_counter()
    width = study.vmap_width or 1
    rounds = 1 if study.vmap_width else min(3, study.replicates)
    r = 0
    while r < rounds and (r == 0 or time.perf_counter() - started < pilot_seconds):
        for p in _sample(len(grid)):
            point = grid[p]
            stop = min(width, study.replicates) if width > 1 else r + 1
            one = task_batch(study, p, point, r, tuple(range(n_methods)))
            batch = Batch(p, one.levels, r, stop, one.methods, warnings="record")
            result = backend.pilot(study, batch)
            found.add(result)
            for m in study.method_names:
                per_method[m] = per_method.get(m, 0) + stop - r
            spent[p] += float(np.nansum(result.seconds))
            ran[p] += n_methods * (stop - r)
            values = max(values, _values_per_task(result))
        r += 1
    per_task = {p: spent[p] / ran[p] for p in range(len(grid)) if ran[p]}
    typical = sum(spent) / max(sum(ran), 1)  # for points the pilot skipped
    n_workers = workers or os.cpu_count() or 1  # processes, or jax threads
    left = failed_at if not retry_failed else [0] * len(grid)
    todo = [
        study.replicates * n_methods - done_at[p] - left[p] for p in range(len(grid))
    ]
    work = sum(per_task.get(p, typical) * todo[p] for p in range(len(grid)))
    shape = (*(len(v) for v in study.factors.values()), study.replicates, n_methods)
    per_task_bytes = 1 + 4 + 8 + 2 + 2 + 8 * max(values, 1)  # fixed vars + outputs
    return Estimate(
        tasks=study.n_tasks,
        done=sum(done_at),
        failed=sum(failed_at),
        to_run=sum(todo),
        shape=shape,
        values_per_task=values,
        bytes=study.n_tasks * per_task_bytes,
        pilot_tasks=sum(ran),
        pilot_seconds=time.perf_counter() - started,
        seconds_per_task=per_task,
        estimate=work / n_workers,
        workers=n_workers,
        pilot_per_method=per_method,
        failures=found.listed(found.failed),
        warnings=found.listed(found.warned),
    )
