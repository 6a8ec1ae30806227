"""The report's figures: one per measure against the factors (nested-loop or
lollipop plots), and zip and distribution plots of the replicates for a few
design points spread over the grid."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import xarray as xr

from simstudy.cube import METHOD
from simstudy.errors import UsageError
from simstudy.report.markup import caption, escape, png, svg
from simstudy.report.tables import worth_showing

__all__ = ["measure_figures", "replicate_sections"]

# measures whose values compare on one scale: their figures share a y range
SHARED = (("coverage", "becoverage"),)


# replicate-level figures show at most this many design points, spread out
MOST_ZIP, MOST_BOXES = 4, 8


def _shared_limits(
    summary: xr.Dataset, shown: list[str]
) -> dict[str, tuple[float, float]]:
    """One y range for measures that compare (coverage and BE coverage)."""
    from simstudy.plots.common import reference_value

    limits = {}
    for group in SHARED:
        members = [m for m in group if m in shown]
        if len(members) < 2:
            continue
        values = []
        for measure in members:
            value = np.asarray(summary[measure].values, dtype=float)
            mcse = summary.get(f"{measure}_mcse", 0 * summary[measure])
            half = 1.96 * np.nan_to_num(np.asarray(mcse.values, dtype=float))
            values += [value - half, value + half]
            ref = reference_value(measure, summary.attrs)
            if ref is not None:
                values.append(np.array([ref]))
        finite = np.concatenate([x.ravel() for x in values])
        finite = finite[np.isfinite(finite)]
        lo, hi = float(finite.min()), float(finite.max())
        pad = 0.05 * (hi - lo or 1.0)
        limits.update(dict.fromkeys(members, (lo - pad, hi + pad)))
    return limits


def measure_figures(summary: xr.Dataset, split: str | None = None) -> str:
    """One figure per measure, every design point and method in it: a
    nested-loop plot (or a lollipop plot for a single design point); with
    ``split``, one panel per level of that factor."""
    from simstudy.plots import lollipop_plot, nested_loop_plot

    shown = worth_showing(summary, figures=True)
    for implied, by in (("mean", "bias"), ("mse", "rmse")):  # same picture twice
        if implied in shown and by in shown:
            shown.remove(implied)
    limits = _shared_limits(summary, shown)
    figures = []
    for k, measure in enumerate(shown):
        loops = [d for d in summary[measure].dims if d != METHOD]
        if split is not None:
            fig = nested_loop_plot(
                summary,
                measure,
                split=split,
                ylim=limits.get(measure),
                size=(min(11.0, 4.0 * summary.sizes[split]), 3.6 + 0.25 * len(loops)),
            )
        elif loops:
            fig = nested_loop_plot(
                summary,
                measure,
                ylim=limits.get(measure),
                size=(5.3, 3.6 + 0.25 * len(loops)),
            )
        else:
            fig = lollipop_plot(
                summary, measure, size=(5.3, 1.4 + 0.3 * summary.sizes[METHOD])
            )
        figures.append(f"<figure>{svg(fig, f'm{k}')}</figure>")  # notes: in it
    kind = (
        "nested-loop plots: design points in order, the factors' levels stepping "
        "underneath"
        if any(d != METHOD for d in summary.dims)
        else "one design point"
    )
    if split is not None:
        kind += f"; one panel per level of {split}, each on its own scale"
    return (
        "<h2>Measures against factors</h2>"
        f"<p class=muted>{kind}; bands and bars: ± 1.96 MCSE; dotted: the "
        "reference (0 for bias, the level for coverage, alpha for rejection). "
        "A method 1000 times further off than the others is drawn off scale: "
        "arrow heads at the edge, labelled with its values.</p>"
        f"<div class=grid>{''.join(figures)}</div>"
    )


def _spread(grid: list[dict[str, Any]], most: int) -> list[dict[str, Any]]:
    """At most ``most`` design points, evenly spread over the grid."""
    if len(grid) <= most:
        return grid
    picks = np.unique(np.linspace(0, len(grid) - 1, most).round().astype(int))
    return [grid[int(i)] for i in picks]


def _which(picked: list[dict[str, Any]], grid: list[dict[str, Any]]) -> str:
    if len(picked) == len(grid):
        return "every design point"
    return f"{len(picked)} of {len(grid)} design points"


def replicate_sections(
    cube: xr.Dataset, split: str | None, options: Mapping[str, Any]
) -> str:
    """The replicate figures, in one section per level of ``split``."""
    wald = {"level": options.get("level", 0.95), "df": options.get("df")}
    if split is None:
        return _replicate_figures(cube, wald)
    return "".join(
        f"<h2 class=split>{escape(split)} = {escape(level)}</h2>"
        + _replicate_figures(cube.sel({split: level}), wald, 3)
        for level in cube[split].values.tolist()
    )


def _replicate_figures(
    cube: xr.Dataset, wald: Mapping[str, Any], depth: int = 2
) -> str:
    """Zip plots of the interval methods and the estimates' distributions,
    for a few design points spread over the grid (zip plots with the
    summary's level and df)."""
    from simstudy.plots import distribution_plot, zip_plot
    from simstudy.plots.common import declared, design_points, factors_of, output_dims

    factors = factors_of(cube)
    grid = design_points(cube, factors)
    picked, boxes = _spread(grid, MOST_ZIP), _spread(grid, MOST_BOXES)
    methods = [str(m) for m in cube[METHOD].values]
    scalar = [
        m
        for m in methods
        if declared(cube, m)["estimate"] in cube.data_vars
        and not output_dims(cube, declared(cube, m)["estimate"])
    ]
    out = []
    interval = [m for m in scalar if {"se", "ci"} & set(declared(cube, m))]
    heading = f"h{depth}"
    if interval:
        try:
            fig = zip_plot(
                cube,
                methods=interval,
                points=picked,
                level=wald["level"],
                df=wald["df"],
            )
        except UsageError as error:  # e.g. no truth at all: the zip plot needs one
            out.append(
                f"<{heading}>Zip plots</{heading}>"
                f"<p class=muted>Not drawn: {escape(error)}.</p>"
            )
        else:
            out.append(
                f"<{heading}>Zip plots of the interval methods "
                f"({_which(picked, grid)})</{heading}>"
                "<p class=muted>Each replicate's interval at its centile of "
                "|estimate &minus; truth| / SE; orange: it misses the truth. Solid "
                "line: coverage, dashed: its Monte Carlo 95% interval, dotted: "
                "the nominal level (Morris et al. 2019).</p>"
                f"<figure>{png(fig, 'zip plots')}{caption(fig)}</figure>"
            )
    if scalar:
        fig = distribution_plot(cube, methods=scalar, points=boxes)
        out.append(
            f"<{heading}>Estimates by method ({_which(boxes, grid)})</{heading}>"
            "<p class=muted>Box: quartiles and median; whiskers: 1.5 IQR; "
            "dotted: the truth. One scale holds every box and whisker; values "
            "far beyond are counted at the edge (arrow head: how many, the most "
            "extreme).</p>"
            f"<figure>{png(fig, 'distributions of the estimates')}{caption(fig)}"
            "</figure>"
        )
    return "".join(out)
