"""Recompute finished tasks and compare them with the store, bit for bit.

One mechanism serves ``replay`` (one task, compared with its stored
outputs), ``verify`` (a sample of replicates, naming the methods that
differ) and the runner's recheck when numpy or jax changed since a store
was made (a few finished replicates; refuse to mix versions if they
differ). ``task_batch`` builds the one-replicate batch of a cell with
exactly its streams; ``differing`` names the outputs that changed.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from simstudy.backends import backend_of
from simstudy.cube import OK
from simstudy.errors import StoreError
from simstudy.grid import Batch
from simstudy.study import Level, Study

if TYPE_CHECKING:
    from simstudy.store import Store

__all__ = ["RECHECK_TASKS", "differing", "recheck_versions", "task_batch"]

RECHECK_TASKS = 3  # finished replicates recomputed when numpy/jax changed


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


def recheck_versions(
    study: Study,
    st: Store,
    changes: dict[str, tuple[str, str]],
    *,
    accept: bool,
) -> str:
    """Recompute a few finished replicates; refuse if they no longer come out
    the same.

    A new numpy (or jax) may change generated numbers or results; mixing
    the two in one cube would be silent. Up to RECHECK_TASKS replicates whose
    every method finished are recomputed here and compared bit for bit.
    Returns the message to show.
    """
    from simstudy.grid import points

    backend = backend_of(study)
    what = ", ".join(f"{k} {a} -> {b}" for k, (a, b) in changes.items())
    nm = len(study.methods)
    midx = st.method_index(study.method_names)
    checked, differ = 0, []
    for p, point in enumerate(points(study)):
        pidx = st.point_index(point)
        status = st.status_of(pidx, study.replicates, midx)
        for r in np.flatnonzero((status == OK).all(axis=1))[: RECHECK_TASKS - checked]:
            r = int(r)
            batch = task_batch(study, p, point, r, tuple(range(nm)))
            result = backend.run_batch(study, batch, st.output_specs())
            stored = st.read_task_outputs(pidx, r)
            new = {n: v[0] for n, v in result.outputs.items()}
            old = {n: v[midx] for n, v in stored.items()}
            differ += [
                f"{point}, replicate {r}, output {name!r}"
                for name in differing(new, old, list(result.outputs))
            ]
            checked += 1
        if checked >= RECHECK_TASKS:
            break
    if differ and not accept:
        raise StoreError(
            f"{what} since this store was made, and finished tasks no longer "
            f"come out the same ({differ[0]}); refusing to mix numbers from both "
            "versions in one cube.",
            hint="run with the old version, or --restart to recompute everything, "
            "or --accept-version-change to go on anyway",
        )
    st.accept_versions()
    if differ:
        return (
            f"{what}: {len(differ)} recomputed result(s) differ from the stored "
            "ones; going on as --accept-version-change asks (the cube now mixes "
            "both versions)."
        )
    return (
        f"{what} since this store was made; {checked} finished task(s) "
        "recomputed bit for bit identical, so the run goes on."
    )
