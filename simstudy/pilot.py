"""``simstudy plan``: what a run would do, measured without writing anything.

Counts the tasks (new vs done in the store), sizes the cube, and times a
short pilot of every design point in this process with the study's backend
(its numbers are the real ones, but nothing is stored).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from simstudy.backends import backend_of
from simstudy.cube import METHOD, OK
from simstudy.grid import Batch, points
from simstudy.loader import load_study
from simstudy.recompute import task_batch
from simstudy.study import Study

__all__ = ["Estimate", "estimate"]


@dataclass
class Estimate:
    """What a run of a study would do, measured without writing anything."""

    tasks: int
    done: int  # ok in the store already
    shape: tuple[int, ...]
    values_per_task: int  # output values per task, from the pilot
    bytes: int  # uncompressed size of the cube
    pilot_tasks: int
    pilot_seconds: float
    seconds_per_task: dict[int, float]  # per design point
    estimate: float  # seconds of work, spread over ``workers``
    workers: int


def _done(study: Study, store: str | os.PathLike[str] | None) -> list[int]:
    """Tasks ok in the store per design point (0 without a store)."""
    grid = points(study)
    done_at = [0] * len(grid)
    if store is None or not Path(store).exists():
        return done_at
    from simstudy.store import open_results

    ds = open_results(store)
    names = [m for m in study.method_names if m in ds[METHOD].values]
    for p, point in enumerate(grid):
        try:
            st = ds["status"].sel({**point, METHOD: names}).values
        except KeyError:
            continue
        done_at[p] = int((st[: study.replicates] == OK).sum())
    ds.close()
    return done_at


PILOT_POINTS = 200  # design points the pilot times, spread over the grid


def _sample(n: int) -> list[int]:
    """The design points a pilot times: all of a small grid, else
    ``PILOT_POINTS`` spread evenly over it (the others count at the typical
    time a task), so planning 10^6 design points takes seconds."""
    if n <= PILOT_POINTS:
        return list(range(n))
    return sorted({int(i) for i in np.linspace(0, n - 1, PILOT_POINTS)})


def estimate(
    study: Study | str | os.PathLike[str],
    *,
    store: str | os.PathLike[str] | None = None,
    workers: int | None = None,
    pilot_seconds: float = 2.0,
) -> Estimate:
    """Count tasks (new vs done), size the cube and time a short pilot here.

    The pilot runs a few replicates of every design point (of at most
    ``PILOT_POINTS``, spread over a larger grid) in this process;
    a jax kernel computes a whole block whatever the batch, so a jax study
    pilots one block per point (its time per task excludes the compile).
    """
    if not isinstance(study, Study):
        study = load_study(study)
    backend = backend_of(study)
    grid = points(study)
    nm = len(study.methods)
    done_at = _done(study, store)
    spent = [0.0] * len(grid)
    ran = [0] * len(grid)
    values = 0
    t0 = time.perf_counter()
    width = study.vmap_width or 1
    rounds = 1 if study.vmap_width else min(3, study.replicates)
    r = 0
    while r < rounds and (r == 0 or time.perf_counter() - t0 < pilot_seconds):
        for p in _sample(len(grid)):
            point = grid[p]
            stop = min(width, study.replicates) if width > 1 else r + 1
            one = task_batch(study, p, point, r, tuple(range(nm)))
            batch = Batch(p, one.levels, r, stop, one.methods)
            result = backend.pilot(study, batch)
            spent[p] += float(np.nansum(result.seconds))
            ran[p] += nm * (stop - r)
            values = max(
                values,
                sum(
                    int(np.prod(a.shape[2:], dtype=np.int64))
                    for a in result.outputs.values()
                ),
            )
        r += 1
    per_task = {p: spent[p] / ran[p] for p in range(len(grid)) if ran[p]}
    typical = sum(spent) / max(sum(ran), 1)  # for points the pilot skipped
    n_workers = workers or os.cpu_count() or 1  # processes, or jax threads
    todo = [study.replicates * nm - done_at[p] for p in range(len(grid))]
    work = sum(per_task.get(p, typical) * todo[p] for p in range(len(grid)))
    shape = (*(len(v) for v in study.factors.values()), study.replicates, nm)
    per_task_bytes = 1 + 4 + 8 + 2 + 2 + 8 * max(values, 1)  # fixed vars + outputs
    return Estimate(
        tasks=study.n_tasks,
        done=sum(done_at),
        shape=shape,
        values_per_task=values,
        bytes=study.n_tasks * per_task_bytes,
        pilot_tasks=sum(ran),
        pilot_seconds=time.perf_counter() - t0,
        seconds_per_task=per_task,
        estimate=work / n_workers,
        workers=n_workers,
    )
