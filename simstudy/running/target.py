"""``--target-mcse``: how many replicates each design point gets next round."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from simstudy.cube import REPLICATE
from simstudy.errors import UsageError
from simstudy.running.options import TargetSpec

if TYPE_CHECKING:
    from simstudy.store import Store

__all__ = ["TargetRule"]


@dataclass(slots=True)
class TargetRule:
    """Run replicates in rounds until every method meets an MCSE target.

    After each round, at each design point still running, the Monte Carlo
    SE of every target measure is computed (``summarize``) for every method
    over the point's first ``counts[p]`` replicates, and only those, so a
    resumed run takes the same decisions. The point stops when every
    method meets every target; else its count grows to the projection
    ``n * (mcse / target)**2`` (MCSE shrinks like 1/sqrt(n)) but at most
    ``2 n`` (an early MCSE is itself noisy, so a far projection is not
    trusted), at least ``n + step``, rounded up to a multiple of ``step``
    (``--round-size``; default a tenth of the first round, so a point just
    short of its target grows by what it still needs, not by a whole first
    round), at most ``max_replicates``.
    """

    spec: TargetSpec
    last: list[dict[str, Any]] = field(default_factory=list)  # the last decisions

    def next_counts(
        self, store: Store, grid: list[dict[str, Any]], counts: list[int]
    ) -> tuple[list[int], bool]:
        """Return the next round's replicates per point, and whether any grew."""
        summary, cube = _summary_within(store, grid, counts)
        for measure in self.spec.targets:
            if f"{measure}_mcse" not in summary:
                why = summary.attrs["skipped"].get(measure, "not computed")
                raise UsageError(
                    f"--target-mcse {measure}: the measure cannot be computed "
                    f"for this study ({why}).",
                    hint="choose a measure `simstudy summarize` shows",
                )
        new, more, entries = list(counts), False, []
        for p, point in enumerate(grid):
            state, mcse, grown = self._decide(summary.sel(point), counts[p])
            new[p] = grown
            more = more or state == "running"
            entries.append(
                {
                    "point": point,
                    "replicates": new[p],
                    "state": state,
                    "mcse": mcse,
                    "at": counts[p],
                }
            )
        cube.close()
        self.last = entries
        spec = self.spec
        store.record_target(
            {
                "targets": dict(spec.targets),
                "max_replicates": spec.max_replicates,
                "step": spec.step,
                "points": entries,
            }
        )
        return new, more

    def _decide(self, cell: Any, n: int) -> tuple[str, dict[str, Any], int]:
        """One point's state (met, max, running), its MCSEs and next count."""
        spec = self.spec
        worst, mcse = 0.0, {}
        for measure, goal in spec.targets.items():
            values = np.asarray(cell[f"{measure}_mcse"].values).ravel()
            finite = values[~np.isnan(values)]
            top = float(finite.max()) if finite.size else math.nan
            mcse[measure] = None if math.isnan(top) else top
            worst = max(worst, top / goal) if not math.isnan(top) else math.inf
        if worst <= 1.0:
            return "met", mcse, n
        if n >= spec.max_replicates:
            return "max", mcse, n
        # the projection, but at most double: an early MCSE is noisy
        need = 2 * n
        if math.isfinite(worst):
            need = min(need, math.ceil(n * worst**2))
        need = max(need, n + spec.step)
        need = math.ceil(need / spec.step) * spec.step
        return "running", mcse, min(spec.max_replicates, need)


def _summary_within(
    store: Store, grid: list[dict[str, Any]], counts: list[int]
) -> tuple[Any, Any]:
    """Summarize each point's first ``counts[p]`` replicates (the others
    masked as pending); return the summary and the open cube."""
    import xarray as xr

    from simstudy.analysis.summary import summarize
    from simstudy.store import open_results

    cube = open_results(store.path)
    factors = list(grid[0]) if grid else []
    shape = tuple(cube.sizes[f] for f in factors)
    limit = np.zeros(shape, np.int64)
    for p, point in enumerate(grid):
        limit[tuple(cube.indexes[f].get_loc(point[f]) for f in factors)] = counts[p]
    cube = cube.isel({REPLICATE: slice(0, max(counts))})
    inside = cube[REPLICATE] < xr.DataArray(
        limit, coords={f: cube[f] for f in factors}, dims=factors
    )
    cube = cube.assign(status=cube["status"].where(inside, 0))
    return summarize(cube), cube
