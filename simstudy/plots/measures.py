"""Plots of a summary: nested-loop plot, lollipop (forest) plot, heat map.

Each takes the ``xr.Dataset`` that ``simstudy.summarize`` returns and one
measure name, draws the methods on one shared scale with the measure's
reference line (0 for bias, the nominal level for coverage, alpha for
rejection), a method 1000 times further off drawn off scale and marked
(``plots.scales``), and returns a ``PlotFigure``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import xarray as xr
from matplotlib.axes import Axes
from matplotlib.image import AxesImage

from simstudy.cube import METHOD
from simstudy.plots.common import (
    COLORS,
    PlotFigure,
    check_measure,
    check_methods,
    design_mask,
    design_points,
    label,
    method_dim,
    new_figure,
    outside_legend,
    plain_ticks,
    select_points,
    with_mcse,
)
from simstudy.plots.panels import (
    draw_panels,
    finish,
    loops_of,
    on_scale,
    series_of,
    split_panels,
)
from simstudy.plots.scales import (
    check_scale,
    limits,
    mark_off_scale,
)

__all__ = ["heatmap", "lollipop_plot", "nested_loop_plot"]

Z95 = 1.959963984540054  # bars and bands span the Monte Carlo 95% interval


def nested_loop_plot(
    summary: xr.Dataset,
    measure: str,
    *,
    methods: str | Sequence[str] | None = None,
    order: Sequence[str] | None = None,
    split: str | None = None,
    scale: str = "auto",
    mcse: bool = True,
    ylim: tuple[float, float] | None = None,
    size: tuple[float, float] | None = None,
) -> PlotFigure:
    """Nested-loop plot (Rücker & Schwarzer 2014) of one measure.

    Every design point on one axis, ordered by the factors (the first in
    ``order`` varies slowest), one step line per method with a point per
    design point and a band of ±1.96 MCSE, the measure's reference line,
    and under it one step line per factor showing its level at each point.

    Parameters
    ----------
    summary : xr.Dataset
        What ``simstudy.summarize(cube)`` returns (factors selected down to
        one level, ``summary.sel(n=30)``, are shown in the title).
    measure : str
        A measure in the summary, e.g. ``"coverage"`` or ``"bias"``.
    methods : str or list of str, optional
        The methods to draw (default: all).
    order : list of str, optional
        The factors, outermost loop first (default: the study's order).
    split : str, optional
        A factor: one panel per level, each with its own y scale and
        reference line (e.g. ``split="delta"``: type I error at delta=0
        beside power at delta=0.5).
    scale : {"auto", "linear", "symlog"}
        ``"auto"``: linear, but a method 1000 times further from the
        reference than the others (an exploding model SE) is drawn off
        scale (arrow heads at the edge, labelled with its values) rather
        than flatten them; shares (coverage, power, rates) stay on 0-1.
        ``"symlog"``: every method on a symmetric log axis.
    mcse : bool
        Draw the ±1.96 MCSE band.
    ylim : (float, float), optional
        Fix the measure's axis (to share it between figures); values
        outside are marked at the edge.
    size : (float, float), optional
        Figure width and height in inches.

    Returns
    -------
    PlotFigure
        A ``matplotlib.figure.Figure``. Per panel, an axes of the measure
        (lines with gid ``points:<method>``, ``offscale:<method>`` for
        values off scale) and an axes of the factor levels (gid
        ``loop:<factor>``). ``fig.notes`` says which methods are off scale.

    Raises
    ------
    UsageError
        An unknown measure, method, factor or scale.

    Examples
    --------
    >>> fig = nested_loop_plot(simstudy.summarize(cube), "coverage")
    >>> fig.savefig("coverage.pdf")
    """
    summary = method_dim(summary)
    values = check_measure(summary, measure)
    chosen = check_methods(summary, methods)
    check_scale(scale)
    panels = split_panels(summary, split)
    loops = loops_of(values.isel({split: 0}) if split else values, order)
    style = {"mcse": mcse, "scale": scale, "ylim": ylim}
    return _nested_figure(summary, measure, panels, split, chosen, loops, size, style)


def _nested_figure(
    summary: xr.Dataset,
    measure: str,
    panels: list[tuple[str, xr.Dataset]],
    split: str | None,
    chosen: list[str],
    loops: list[str],
    size: tuple[float, float] | None,
    style: dict[str, Any],
) -> PlotFigure:
    """The nested-loop plot of checked arguments: in each panel the measure
    on top (``style``: mcse, scale, ylim of ``_draw_measure``) and the
    factors' levels underneath."""
    steps = np.arange(1, len(design_points(summary[measure], loops)) + 1.0)
    width = min(12.0, max(5.0, 3.5 + 0.1 * len(steps)))
    fig = new_figure(
        *(size or (min(20.0, width * len(panels)), 3.6 + 0.32 * len(loops)))
    )

    def panel(target: Any, part: xr.Dataset) -> list[str]:
        top, bottom = target.subplots(
            2, 1, sharex=True, height_ratios=[3.0, 0.45 * max(len(loops), 1) + 0.2]
        )
        off = _draw_measure(top, part, measure, chosen, loops, **style)
        top.set_ylabel(measure)
        top.grid(axis="y", color="0.92")
        plain_ticks(top)
        _draw_loops(bottom, part[measure], loops, steps)
        if not loops:  # every factor split or selected: no levels to step
            bottom.set_axis_off()
        return off

    targets, off = draw_panels(fig, panels, split, panel)
    outside_legend(fig, [*targets[0].axes[0].get_lines()], off)
    return finish(
        fig,
        summary,
        list(off),
        "off scale (arrow heads, labelled): {}; scale='symlog' draws every method",
    )


def _draw_measure(
    top: Axes,
    summary: xr.Dataset,
    measure: str,
    chosen: list[str],
    loops: list[str],
    *,
    mcse: bool,
    scale: str,
    ylim: tuple[float, float] | None,
) -> list[str]:
    """Step lines, dots and MCSE bands of each method, and the reference;
    return the methods drawn off scale."""
    x = np.arange(1, len(design_points(summary[measure], loops)) + 1)
    series, ref, off = on_scale(summary, measure, chosen, loops, scale == "auto")
    bands = {
        method: Z95 * series_of(summary, f"{measure}_mcse", method, loops)
        if mcse and f"{measure}_mcse" in summary.data_vars
        else np.zeros(len(x))
        for method in chosen
    }
    for j, method in enumerate(chosen):
        color = COLORS[j % len(COLORS)]
        y = series[method]
        if not np.isfinite(y).any():  # e.g. coverage of a method without intervals
            continue
        half = np.nan_to_num(bands[method])
        if method not in off and len(x) == 1:  # one point: a band would have no width
            side = x + 0.08 * (j - (len(chosen) - 1) / 2)  # side by side
            top.errorbar(
                side, y, yerr=half, fmt="none", ecolor=color, capsize=4, lw=1.5
            )
            top.set_xlim(0.5, 1.5)
        elif method not in off:
            top.fill_between(
                x, y - half, y + half, step="mid", color=color, alpha=0.15, lw=0
            )
        if method not in off:  # an off-scale line would only cross the axes
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
        shown = f"{method} (off scale)" if method in off else method
        at = x if len(x) > 1 else x + 0.08 * (j - (len(chosen) - 1) / 2)
        top.plot(at, y, "o", ms=dot, color=color, label=shown, gid=f"points:{method}")
    if ref is not None:
        top.axhline(ref, color="0.25", ls=":", lw=1.2, gid="reference", zorder=0)
    if scale == "symlog":
        finite = np.abs(np.concatenate(list(series.values())))
        finite = finite[np.isfinite(finite) & (finite > 0)]
        top.set_yscale(
            "symlog", linthresh=float(np.quantile(finite, 0.1)) if finite.size else 1.0
        )
        return []
    kept = [series[m] + s * bands[m] for m in chosen if m not in off for s in (-1, 1)]
    span = ylim or (limits(kept, [] if ref is None else [ref]) if off else None)
    if span is not None:
        top.set_ylim(*span)
        for j, method in enumerate(chosen):
            if (
                mark_off_scale(
                    top,
                    x,
                    series[method],
                    COLORS[j % len(COLORS)],
                    f"offscale:{method}",
                    annotate=len(x) <= 12,
                )
                and method not in off
            ):
                off.append(method)
    return off


def _draw_loops(
    ax: Axes, values: xr.DataArray, loops: list[str], x: np.ndarray
) -> None:
    """One band per factor under the plot: its level at each design point."""
    sizes = [values.sizes[factor] for factor in loops]
    at = np.arange(int(np.prod(sizes)))  # each point's place in the cross
    keep = design_mask(values, loops)
    at = at if keep is None else at[keep]  # where=: the design points alone
    labels = []
    for k, factor in enumerate(loops):
        inner = int(np.prod(sizes[k + 1 :]))
        index = (at // inner) % sizes[k]
        base = -k
        y = base + 0.1 + 0.6 * index / max(sizes[k] - 1, 1)
        ax.step(x, y, where="mid", color="0.2", lw=1.1, gid=f"loop:{factor}")
        levels = [str(v) for v in values[factor].values.tolist()]
        shown = levels if len(levels) <= 6 else [*levels[:2], "…", *levels[-2:]]
        labels.append(f"{factor}: {', '.join(shown)}")
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
    split: str | None = None,
    mcse: bool = True,
    size: tuple[float, float] | None = None,
) -> PlotFigure:
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
    split : str, optional
        A factor: one panel per level, each on its own scale.
    mcse : bool
        Draw the ±1.96 MCSE bars.
    size : (float, float), optional
        Figure width and height in inches.

    Returns
    -------
    PlotFigure
        A ``matplotlib.figure.Figure`` with one axes; each method's values are the line with gid
        ``points:<method>``.

    Raises
    ------
    UsageError
        An unknown measure, method, factor or level.

    Examples
    --------
    >>> fig = lollipop_plot(simstudy.summarize(cube), "bias")
    """
    summary = method_dim(summary)
    check_measure(summary, measure)
    chosen = check_methods(summary, methods)
    loops = [str(d) for d in summary[measure].dims if d != METHOD]
    summary = select_points(summary, points, loops)
    panels = split_panels(summary, split)
    loops = [f for f in loops if f != split]
    rows = len(design_points(panels[0][1][measure], loops)) * len(chosen)
    width = 6.0 if split is None else min(20.0, 4.2 * len(panels))
    fig = new_figure(*(size or (width, min(40.0, 1.4 + 0.22 * rows))))
    targets, off = draw_panels(
        fig, panels, split, _lollipops, measure, chosen, loops, mcse
    )
    outside_legend(fig, targets[0].axes[0].get_lines())
    return finish(fig, summary, list(off), "off scale (arrow heads, labelled): {}")


def _lollipops(
    target: Any,
    summary: xr.Dataset,
    measure: str,
    chosen: list[str],
    loops: list[str],
    mcse: bool,
) -> list[str]:
    """One panel of lollipops; return the methods drawn off scale."""
    ax = target.subplots()
    grid = design_points(summary[measure], loops)
    series, ref, off = on_scale(summary, measure, chosen, loops)
    kept = []
    for j, method in enumerate(chosen):
        color = COLORS[j % len(COLORS)]
        y = series[method]
        half = Z95 * series_of(summary, f"{measure}_mcse", method, loops)
        pos = np.arange(len(grid)) * (len(chosen) + 1) + j
        if not np.isfinite(y).any():  # e.g. coverage of a method without intervals
            continue
        if ref is not None:  # the lollipop's stick: from the reference
            ax.hlines(pos, ref, y, color=color, lw=0.8, alpha=0.5)
        if mcse and method not in off:
            ax.errorbar(y, pos, xerr=half, fmt="none", ecolor=color, capsize=3, lw=1.8)
            kept += [y - np.nan_to_num(half), y + np.nan_to_num(half)]
        shown = f"{method} (off scale)" if method in off else method
        ax.plot(y, pos, "o", color=color, ms=5, label=shown, gid=f"points:{method}")
    if ref is not None:
        ax.axvline(ref, color="0.25", ls=":", lw=1.2, gid="reference")
    if off:  # limits of the kept methods; the others marked at the edge
        span = limits(
            kept or [series[method] for method in chosen if method not in off],
            [] if ref is None else [ref],
        )
        if span is not None:
            ax.set_xlim(*span)
        for j, method in enumerate(chosen):
            pos = np.arange(len(grid)) * (len(chosen) + 1) + j
            mark_off_scale(
                ax,
                pos,
                series[method],
                COLORS[j % len(COLORS)],
                f"offscale:{method}",
                vertical=False,
            )
    centres = np.arange(len(grid)) * (len(chosen) + 1) + (len(chosen) - 1) / 2
    ax.set_yticks(centres, [label(p) for p in grid], fontsize="small")
    ax.set_ylim(centres[-1] + len(chosen) / 2 + 0.5, -1)
    ax.set_xlabel(measure)
    ax.grid(axis="x", color="0.92")
    plain_ticks(ax)
    return off


def heatmap(
    summary: xr.Dataset,
    measure: str,
    *,
    methods: str | Sequence[str] | None = None,
    order: Sequence[str] | None = None,
    split: str | None = None,
    annotate: bool | None = None,
    size: tuple[float, float] | None = None,
) -> PlotFigure:
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
    split : str, optional
        A factor: one map per level, each with its own colour scale.
    annotate : bool, optional
        Write each cell's value (default: when there are at most 400 cells).
    size : (float, float), optional
        Figure width and height in inches.

    Returns
    -------
    PlotFigure
        A ``matplotlib.figure.Figure``: the map, then its colour bar (its
        range is that of the methods on scale: cells of an off-scale method
        saturate, their values written in them).

    Raises
    ------
    UsageError
        An unknown measure or method, or an ``order`` that names a factor
        the summary does not have.

    Examples
    --------
    >>> fig = heatmap(simstudy.summarize(cube), "rmse")
    """
    summary = method_dim(summary)
    values = check_measure(summary, measure)
    chosen = check_methods(summary, methods)
    panels = split_panels(summary, split)
    loops = loops_of(values.isel({split: 0}) if split else values, order)
    rows = len(design_points(panels[0][1][measure], loops))
    width = 2.8 + 1.1 * len(chosen)
    fig = new_figure(
        *(size or (min(20.0, width * len(panels)), min(40.0, 1.6 + 0.28 * rows)))
    )
    _, off = draw_panels(fig, panels, split, _heat, measure, chosen, loops, annotate)
    return finish(fig, summary, list(off), "colours saturate for {} (off scale)")


def _heat(
    target: Any,
    summary: xr.Dataset,
    measure: str,
    chosen: list[str],
    loops: list[str],
    annotate: bool | None,
) -> list[str]:
    """One heat map and its colour bar; return the methods off scale."""
    grid = design_points(summary[measure], loops)
    series, ref, off = on_scale(summary, measure, chosen, loops)
    table = np.column_stack(list(series.values()))
    errors = np.column_stack(
        [series_of(summary, f"{measure}_mcse", method, loops) for method in chosen]
    )
    ax = target.subplots()
    kept = table[:, [j for j, method in enumerate(chosen) if method not in off]]
    image = _paint(ax, table, kept, ref)
    if annotate if annotate is not None else table.size <= 400:
        for (i, j), value in np.ndenumerate(table):
            ax.text(
                j,
                i,
                with_mcse(float(value), float(errors[i, j])),
                ha="center",
                va="center",
                fontsize="x-small",
                bbox={"fc": "white", "alpha": 0.6, "lw": 0, "pad": 1},
            )
    long = max(len(m) for m in chosen) > 8  # long names: slanted, not overlapping
    ax.set_xticks(
        range(len(chosen)),
        chosen,
        rotation=30 if long else 0,
        ha="left" if long else "center",
    )
    ax.xaxis.tick_top()
    ax.set_yticks(range(len(grid)), [label(p) for p in grid], fontsize="small")
    target.colorbar(
        image, ax=ax, label=measure, shrink=0.8, extend="both" if off else "neither"
    )
    return off


def _paint(
    ax: Axes, table: np.ndarray, kept: np.ndarray, ref: float | None
) -> AxesImage:
    """Colour the cells: diverging about the reference when there is one;
    the colour range is that of the ``kept`` (not off-scale) columns."""
    finite = kept[np.isfinite(kept)]
    if ref is not None and finite.size:
        span = float(np.max(np.abs(finite - ref))) or 1.0
        return ax.imshow(
            table, cmap="RdBu_r", vmin=ref - span, vmax=ref + span, aspect="auto"
        )
    if finite.size:
        lo, hi = float(finite.min()), float(finite.max())
        return ax.imshow(table, cmap="viridis", vmin=lo, vmax=hi, aspect="auto")
    return ax.imshow(table, cmap="viridis", aspect="auto")
