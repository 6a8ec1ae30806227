"""Plots of a summary: nested-loop plot, lollipop (forest) plot, heat map.

Each takes the ``xr.Dataset`` that ``simstudy.summarize`` returns and one
measure name, draws every method on one shared scale with the measure's
reference line (0 for bias, the nominal level for coverage, alpha for
rejection), and returns a ``matplotlib.figure.Figure``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import xarray as xr
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.image import AxesImage

from simstudy.cube import METHOD
from simstudy.errors import UsageError
from simstudy.plots.common import (
    COLORS,
    check_measure,
    check_methods,
    design_points,
    label,
    new_figure,
    plain_ticks,
    reference_value,
    select_points,
    with_mcse,
)

__all__ = ["heatmap", "lollipop_plot", "nested_loop_plot"]

Z95 = 1.959963984540054  # bars and bands span the Monte Carlo 95% interval


def loops_of(values: xr.DataArray, order: Sequence[str] | None) -> list[str]:
    """The dims to loop over (all but method), outermost first."""
    dims = [str(d) for d in values.dims if d != METHOD]
    if order is None:
        return dims
    chosen = list(order)
    if sorted(chosen) != sorted(dims):
        raise UsageError(
            f"order= must name each factor once: got {chosen}, the factors are {dims}",
            hint=f"write order={dims!r} in the nesting you want (outermost first)",
        )
    return chosen


def _series(
    summary: xr.Dataset, name: str, method: str, loops: list[str]
) -> np.ndarray:
    """One method's values of ``name`` in design-point order (NaN if absent)."""
    if name not in summary.data_vars:
        return np.full(int(np.prod([summary.sizes[d] for d in loops])), np.nan)
    cell = summary[name].sel({METHOD: method})
    return np.asarray(cell.transpose(*loops).values, dtype=float).ravel()


def nested_loop_plot(
    summary: xr.Dataset,
    measure: str,
    *,
    methods: str | Sequence[str] | None = None,
    order: Sequence[str] | None = None,
    mcse: bool = True,
    ylim: tuple[float, float] | None = None,
    size: tuple[float, float] | None = None,
) -> Figure:
    """Nested-loop plot (Rücker & Schwarzer 2014) of one measure.

    Every design point on one axis, ordered by the factors (the first in
    ``order`` varies slowest), one step line per method with a point per
    design point and a band of ±1.96 MCSE, the measure's reference line,
    and under it one step line per factor showing its level at each point.

    Parameters
    ----------
    summary : xr.Dataset
        What ``simstudy.summarize(cube)`` returns.
    measure : str
        A measure in the summary, e.g. ``"coverage"`` or ``"bias"``.
    methods : str or list of str, optional
        The methods to draw (default: all).
    order : list of str, optional
        The factors, outermost loop first (default: the study's order).
    mcse : bool
        Draw the ±1.96 MCSE band.
    ylim : (float, float), optional
        Fix the measure's axis (to share it between figures).
    size : (float, float), optional
        Figure width and height in inches.

    Returns
    -------
    matplotlib.figure.Figure
        Axes 0 holds the measure (lines with gid ``points:<method>``), axes 1
        the factor levels (lines with gid ``loop:<factor>``).

    Raises
    ------
    UsageError
        An unknown measure, method or factor.

    Examples
    --------
    >>> fig = nested_loop_plot(simstudy.summarize(cube), "coverage")
    >>> fig.savefig("coverage.pdf")
    """
    values = check_measure(summary, measure)
    chosen = check_methods(summary, methods)
    loops = loops_of(values, order)
    points = design_points(values, loops)
    x = np.arange(1, len(points) + 1, dtype=float)
    width = min(12.0, max(5.0, 3.5 + 0.1 * len(points)))
    fig = new_figure(*(size or (width, 3.4 + 0.32 * len(loops))))
    top, bottom = fig.subplots(
        2, 1, sharex=True, height_ratios=[3.0, 0.45 * max(len(loops), 1) + 0.2]
    )
    _draw_measure(top, summary, measure, chosen, loops, mcse=mcse)
    top.set_ylabel(measure)
    if ylim is not None:
        top.set_ylim(*ylim)
    top.legend(  # above the axes: never over the data
        fontsize="small",
        ncols=min(len(chosen), 5),
        loc="lower left",
        bbox_to_anchor=(0.0, 1.0),
        frameon=False,
        borderaxespad=0.2,
    )
    top.grid(axis="y", color="0.92")
    plain_ticks(top)
    _draw_loops(bottom, values, loops, x)
    return fig


def _draw_measure(
    top: Axes,
    summary: xr.Dataset,
    measure: str,
    chosen: list[str],
    loops: list[str],
    *,
    mcse: bool,
) -> None:
    """Step lines, dots and MCSE bands of each method, and the reference."""
    x = np.arange(1, int(np.prod([summary[measure].sizes[d] for d in loops])) + 1)
    for j, m in enumerate(chosen):
        color = COLORS[j % len(COLORS)]
        y = _series(summary, measure, m, loops)
        if not np.isfinite(y).any():  # e.g. coverage of a method without intervals
            continue
        if mcse and f"{measure}_mcse" in summary.data_vars:
            e = Z95 * _series(summary, f"{measure}_mcse", m, loops)
            top.fill_between(x, y - e, y + e, step="mid", color=color, alpha=0.15, lw=0)
        top.step(
            x,
            y,
            where="mid",
            color=color,
            lw=min(1.2 + 0.6 * (len(chosen) - 1 - j), 2.4),
        )
        # earlier methods get larger dots, so equal values stay visible
        base, step = (3.5, 2.0) if len(x) <= 24 else (2.2, 1.2)  # many points: small
        dot = base + step * (len(chosen) - 1 - j)
        top.plot(x, y, "o", ms=dot, color=color, label=m, gid=f"points:{m}")
    ref = reference_value(measure, summary.attrs)
    if ref is not None:
        top.axhline(ref, color="0.25", ls=":", lw=1.2, gid="reference", zorder=0)


def _draw_loops(
    ax: Axes, values: xr.DataArray, loops: list[str], x: np.ndarray
) -> None:
    """One band per factor under the plot: its level at each design point."""
    sizes = [values.sizes[f] for f in loops]
    labels = []
    for k, f in enumerate(loops):
        inner = int(np.prod(sizes[k + 1 :]))
        index = (np.arange(len(x)) // inner) % sizes[k]
        base = -k
        y = base + 0.1 + 0.6 * index / max(sizes[k] - 1, 1)
        ax.step(x, y, where="mid", color="0.2", lw=1.1, gid=f"loop:{f}")
        levels = [str(v) for v in values[f].values.tolist()]
        shown = levels if len(levels) <= 6 else [*levels[:2], "…", *levels[-2:]]
        labels.append(f"{f}: {', '.join(shown)}")
        if k == 0 and len(loops) > 1:  # separate the outermost blocks
            for edge in np.flatnonzero(np.diff(index)) + 1.5:
                ax.axvline(edge, color="0.85", lw=0.8)
    ax.set_yticks([-k + 0.4 for k in range(len(loops))], labels, fontsize="small")
    ax.set_ylim(-len(loops) + 0.95, 0.85)
    ax.tick_params(axis="y", length=0)
    for side in ("top", "right", "left"):
        ax.spines[side].set_visible(False)
    nested = " x ".join(str(s) for s in sizes) if len(sizes) > 1 else ""
    ax.set_xlabel(
        f"{len(x)} design point{'s' if len(x) != 1 else ''}"
        + (f" ({nested}, nested as listed)" if nested else "")
    )
    if len(x) <= 40:
        ax.set_xticks(x, [str(int(i)) for i in x], fontsize="x-small")


def lollipop_plot(
    summary: xr.Dataset,
    measure: str,
    *,
    methods: str | Sequence[str] | None = None,
    points: Mapping[str, Any] | None = None,
    mcse: bool = True,
    size: tuple[float, float] | None = None,
) -> Figure:
    """Lollipop (forest) plot: a measure per design point and method.

    One row per design point and method on one shared axis: a stick from
    the reference line (0 for bias, the level for coverage, alpha for
    rejection) to the value, and a bar of ±1.96 MCSE.

    Parameters
    ----------
    summary : xr.Dataset
        What ``simstudy.summarize(cube)`` returns.
    measure : str
        A measure in the summary.
    methods : str or list of str, optional
        The methods to draw (default: all).
    points : dict, optional
        Keep only these levels, e.g. ``{"n": [20, 100]}``.
    mcse : bool
        Draw the ±1.96 MCSE bars.
    size : (float, float), optional
        Figure width and height in inches.

    Returns
    -------
    matplotlib.figure.Figure
        One axes; each method's values are the line with gid
        ``points:<method>``.

    Raises
    ------
    UsageError
        An unknown measure, method, factor or level.

    Examples
    --------
    >>> fig = lollipop_plot(simstudy.summarize(cube), "bias")
    """
    check_measure(summary, measure)
    chosen = check_methods(summary, methods)
    loops = [str(d) for d in summary[measure].dims if d != METHOD]
    summary = select_points(summary, points, loops)
    grid = design_points(summary[measure], loops)
    rows = len(grid) * len(chosen)
    fig = new_figure(*(size or (6.0, min(40.0, 1.2 + 0.22 * rows))))
    ax = fig.subplots()
    ref = reference_value(measure, summary.attrs)
    for j, m in enumerate(chosen):
        color = COLORS[j % len(COLORS)]
        y = _series(summary, measure, m, loops)
        e = Z95 * _series(summary, f"{measure}_mcse", m, loops)
        pos = np.arange(len(grid)) * (len(chosen) + 1) + j
        if not np.isfinite(y).any():  # e.g. coverage of a method without intervals
            continue
        if ref is not None:  # the lollipop's stick: from the reference
            ax.hlines(pos, ref, y, color=color, lw=0.8, alpha=0.5)
        if mcse:
            ax.errorbar(y, pos, xerr=e, fmt="none", ecolor=color, capsize=3, lw=1.8)
        ax.plot(y, pos, "o", color=color, ms=5, label=m, gid=f"points:{m}")
    if ref is not None:
        ax.axvline(ref, color="0.25", ls=":", lw=1.2, gid="reference")
    centres = np.arange(len(grid)) * (len(chosen) + 1) + (len(chosen) - 1) / 2
    ax.set_yticks(centres, [label(p) for p in grid], fontsize="small")
    ax.set_ylim(centres[-1] + len(chosen) / 2 + 0.5, -1)
    ax.set_xlabel(measure)
    ax.grid(axis="x", color="0.92")
    ax.legend(fontsize="small", loc="best")
    plain_ticks(ax)
    return fig


def heatmap(
    summary: xr.Dataset,
    measure: str,
    *,
    methods: str | Sequence[str] | None = None,
    order: Sequence[str] | None = None,
    annotate: bool | None = None,
    size: tuple[float, float] | None = None,
) -> Figure:
    """Heat map of a measure: design points (rows) by methods (columns).

    Measures with a reference (bias, coverage, rejection, ...) use a
    diverging colour scale centred on it, so the colour shows the distance
    from where the measure should be; others use a sequential scale. Cells
    show the value with its MCSE when they are few enough to read.

    Parameters
    ----------
    summary : xr.Dataset
        What ``simstudy.summarize(cube)`` returns.
    measure : str
        A measure in the summary, drawn as the cells' colour.
    methods : str or list of str, optional
        The methods (columns) to draw (default: all).
    order : list of str, optional
        The factors, outermost first, that order the rows.
    annotate : bool, optional
        Write each cell's value (default: when there are at most 400 cells).
    size : (float, float), optional
        Figure width and height in inches.

    Returns
    -------
    matplotlib.figure.Figure
        The map, then its colour bar.

    Raises
    ------
    UsageError
        An unknown measure or method, or an ``order`` that names a factor
        the summary does not have.

    Examples
    --------
    >>> fig = heatmap(simstudy.summarize(cube), "rmse")
    """
    values = check_measure(summary, measure)
    chosen = check_methods(summary, methods)
    loops = loops_of(values, order)
    grid = design_points(values, loops)
    table = np.column_stack([_series(summary, measure, m, loops) for m in chosen])
    errors = np.column_stack(
        [_series(summary, f"{measure}_mcse", m, loops) for m in chosen]
    )
    fig = new_figure(
        *(size or (2.8 + 1.1 * len(chosen), min(40.0, 1.4 + 0.28 * len(grid))))
    )
    ax = fig.subplots()
    ref = reference_value(measure, summary.attrs)
    image = _paint(ax, table, ref)
    if annotate if annotate is not None else table.size <= 400:
        for (i, j), v in np.ndenumerate(table):
            ax.text(
                j,
                i,
                with_mcse(float(v), float(errors[i, j])),
                ha="center",
                va="center",
                fontsize="x-small",
                bbox={"fc": "white", "alpha": 0.6, "lw": 0, "pad": 1},
            )
    ax.set_xticks(range(len(chosen)), chosen)
    ax.xaxis.tick_top()
    ax.set_yticks(range(len(grid)), [label(p) for p in grid], fontsize="small")
    fig.colorbar(image, ax=ax, label=measure, shrink=0.8)
    return fig


def _paint(ax: Axes, table: np.ndarray, ref: float | None) -> AxesImage:
    """Colour the cells: diverging about the reference when there is one."""
    finite = table[np.isfinite(table)]
    if ref is not None and finite.size:
        span = float(np.max(np.abs(finite - ref))) or 1.0
        return ax.imshow(
            table, cmap="RdBu_r", vmin=ref - span, vmax=ref + span, aspect="auto"
        )
    return ax.imshow(table, cmap="viridis", aspect="auto")
