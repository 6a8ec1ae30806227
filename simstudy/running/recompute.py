"""Recompute finished tasks and compare them with the store, bit for bit.

One mechanism serves ``replay`` (one task, compared with its stored
outputs), ``verify`` (a sample of replicates, each method alone, naming the
methods that differ) and the runner's recheck when numpy or jax changed
since a store was made (finished tasks at every design point x method,
each alone; refuse to mix versions if they differ, else record the change
in the store's version log). ``task_batch`` builds the one-replicate batch
of a cell with exactly its streams; ``differing`` names the outputs that
changed.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from simstudy.backends import backend_of
from simstudy.cube import OK
from simstudy.declare.grid import Batch
from simstudy.declare.study import Level, Study
from simstudy.errors import StoreError

if TYPE_CHECKING:
    from simstudy.store import Store

__all__ = [
    "RECHECK_PER_CELL",
    "RECHECK_TOTAL",
    "differing",
    "recheck_sample",
    "recheck_versions",
    "task_batch",
]

# when numpy/jax changed, finished tasks recomputed (each alone) per design
# point x method: at least RECHECK_PER_CELL (the first and the last finished
# replicate), more when there are few cells, up to about RECHECK_TOTAL in all
RECHECK_PER_CELL = 2
RECHECK_TOTAL = 200


def task_batch(
    study: Study,
    p: int,
    point: Mapping[str, Level],
    r: int,
    methods: tuple[int, ...],
) -> Batch:
    """The one-replicate batch of (point ``p``, replicate ``r``) for ``methods``,
    with exactly the streams the engine gives it."""
    return Batch(p, tuple(point.items()), r, r + 1, methods)


def differing(
    new: Mapping[str, Any], old: Mapping[str, Any], names: list[str] | None = None
) -> list[str]:
    """The outputs (of ``names``, default: in either) whose values differ,
    bit for bit (NaN equals NaN), or that one side lacks."""
    if names is None:
        names = sorted(set(new) | set(old))
    return [
        n
        for n in names
        if new.get(n) is None
        or old.get(n) is None
        or not np.array_equal(new[n], old[n], equal_nan=True)
    ]


def recheck_sample(
    status: np.ndarray[Any, Any], per_cell: int = RECHECK_PER_CELL
) -> list[tuple[int, int]]:
    """(replicate, method) pairs to recheck at one design point: per method,
    up to ``per_cell`` finished replicates spread evenly over the finished
    ones (the first and the last for 2). ``status``: (replicate, method)."""
    out = []
    for m in range(status.shape[1]):
        done = np.flatnonzero(status[:, m] == OK)
        if len(done):
            at = np.unique(np.linspace(0, len(done) - 1, per_cell).round())
            out += [(int(done[int(i)]), m) for i in at]
    return sorted(out)


def recheck_versions(
    study: Study,
    store: Store,
    changes: dict[str, tuple[str, str]],
    *,
    accept: bool,
) -> str:
    """Recompute finished tasks across the whole store; refuse if they no
    longer come out the same.

    A new numpy (or jax) may change generated numbers or results at some
    design points only; mixing the two in one cube would be silent. At every
    design point, for every method, finished replicates spread evenly over
    the finished ones are recomputed, each task alone (its own one-task
    batch, as ``replay`` does), and compared bit for bit: RECHECK_PER_CELL
    per cell, or more when there are few cells, so that about RECHECK_TOTAL
    tasks are checked in all. A change the run goes on with is recorded in
    the store's version log (``store.versionlog``).
    Returns the message to show.
    """
    from simstudy.declare.grid import points
    from simstudy.store.versionlog import entry

    backend = backend_of(study)
    what = ", ".join(f"{k} {a} -> {b}" for k, (a, b) in changes.items())
    midx = store.method_index(study.method_names)
    specs = store.output_specs()
    grid = points(study)
    per_cell = max(RECHECK_PER_CELL, -(-RECHECK_TOTAL // (len(grid) * len(midx))))
    checked, finished, differ = 0, 0, []
    for p, point in enumerate(grid):
        pidx = store.point_index(point)
        status = store.status_of(pidx, study.replicates, midx)
        finished += int((status == OK).sum())
        stored: dict[int, dict[str, Any]] = {}
        for r, m in recheck_sample(status, per_cell):
            if r not in stored:
                stored[r] = store.read_task_outputs(pidx, r)
            result = backend.run_batch(
                study, task_batch(study, p, point, r, (m,)), specs
            )
            checked += 1
            name = study.methods[m].name
            where = f"{point}, replicate {r}, method {name!r}"
            if result.status[0, 0] != OK:
                differ.append(f"{where} now fails")
                continue
            new = {n: v[0, 0] for n, v in result.outputs.items()}
            old = {n: v[midx[m]] for n, v in stored[r].items()}
            names = differing(new, old, list(result.outputs))
            if names:
                differ.append(f"{where}, output(s) {', '.join(names)}")
    if differ and not accept:
        raise StoreError(
            f"{what} since this store was made or last checked, and finished "
            f"tasks no longer come out the same ({differ[0]}; {len(differ)} of "
            f"{checked} task(s) recomputed differ); refusing to mix numbers from both "
            "versions in one cube.",
            hint="run with the old version, or --restart to recompute everything, "
            "or --accept-version-change to go on anyway",
        )
    log = entry(changes, finished=finished, checked=checked, differ=len(differ))
    store.accept_versions(log)
    if differ:
        return (
            f"{what}: {len(differ)} of {checked} recomputed task(s) differ from "
            f"the stored ones (first: {differ[0]}); going on as "
            "--accept-version-change asks (the cube now mixes both versions; "
            "status and the report say which tasks came from which)."
        )
    return (
        f"{what} since this store was made; {checked} finished task(s) "
        "recomputed bit for bit identical, so the run goes on."
    )
