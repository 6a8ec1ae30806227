"""Plots of a cube's replicates: method against method, distributions.

Each takes the cube ``simstudy.open_results(store)`` returns, uses the ok
tasks only, and returns a ``matplotlib.figure.Figure``: one panel per
design point (columns) and pair of methods (rows). Restrict the design
points with ``points={"n": 100}`` when there are many.

``output="estimate"`` and ``output="se"`` mean each method's declared
estimate and standard-error outputs; any other name is taken literally.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Literal

import numpy as np
import xarray as xr

from simstudy.errors import UsageError
from simstudy.plots.common import (
    COLORS,
    PlotFigure,
    Point,
    Points,
    add_note,
    check_cube,
    check_methods,
    grid_shape,
    label,
    new_figure,
    ok_values,
    output_name,
    plain_ticks,
    read_points,
    title_fixed,
    truth_at,
)
from simstudy.plots.scales import check_scale, limits, outliers, short

__all__ = ["bland_altman_plot", "distribution_plot", "scatter_plot"]


# ------------------------------------------------------ method vs method


def _pairs(
    cube: xr.Dataset,
    output: str,
    methods: str | Sequence[str] | None,
    reference: str | None,
    points: Points,
) -> tuple[str, list[str], list[Point], xr.Dataset]:
    chosen = check_methods(cube, methods, least=2)
    ref = reference or chosen[0]
    if ref not in chosen:
        check_methods(cube, [ref])
        chosen = [ref, *chosen]
    used = {output_name(cube, output, m) for m in chosen}
    cube, grid = read_points(cube, points, used)
    return ref, [m for m in chosen if m != ref], grid, cube


def _paired(
    cube: xr.Dataset, output: str, point: Point, ref: str, m: str
) -> tuple[np.ndarray, np.ndarray]:
    """Both methods' values where both tasks are ok and finite."""
    a = ok_values(cube, output_name(cube, output, ref), point, ref)
    b = ok_values(cube, output_name(cube, output, m), point, m)
    keep = np.isfinite(a) & np.isfinite(b)
    return a[keep], b[keep]


def scatter_plot(
    cube: xr.Dataset,
    output: str = "estimate",
    *,
    methods: str | Sequence[str] | None = None,
    reference: str | None = None,
    points: Points = None,
) -> PlotFigure:
    """Method against method: each replicate's value of ``output`` under
    ``reference`` (x) and another method (y), with the identity line.

    Parameters
    ----------
    cube : xr.Dataset
        What ``simstudy.open_results(store)`` returns.
    output : str
        ``"estimate"``, ``"se"`` (each method's declared outputs) or a name.
    methods : list of str, optional
        At least two (default: all).
    reference : str, optional
        The method on the x axis (default: the first).
    points : dict or list of dict, optional
        Keep only these levels, e.g. ``{"n": 100}``, or these design points,
        e.g. ``[{"n": 20, "eps": 0.0}, {"n": 500, "eps": 0.1}]``.

    Returns
    -------
    matplotlib.figure.Figure
        One axes per other method (rows) and design point (columns).

    Raises
    ------
    UsageError
        Fewer than two methods; unknown method, output, factor or level.

    Examples
    --------
    >>> fig = scatter_plot(cube, "se", reference="mean")
    """

    def draw(ax: Any, a: np.ndarray, b: np.ndarray, ref: str, m: str) -> None:
        _dots(ax, a, b, m)
        both = np.concatenate([a, b])
        if both.size:
            lo, hi = float(both.min()), float(both.max())
            ax.axline(
                (lo, lo),
                (hi, hi) if hi > lo else (lo + 1, lo + 1),
                color="0.3",
                ls="--",
                lw=1,
                gid="identity",
            )
        ax.set_xlabel(f"{ref}: {output}")
        ax.set_ylabel(f"{m}: {output}")

    return _pair_figure(cube, output, methods, reference, points, draw)


def bland_altman_plot(
    cube: xr.Dataset,
    output: str = "estimate",
    *,
    agreement: float = 1.96,
    methods: str | Sequence[str] | None = None,
    reference: str | None = None,
    points: Points = None,
) -> PlotFigure:
    """Bland-Altman plot: per replicate, the difference of ``output``
    (method - reference) against the two methods' mean, with the mean
    difference, its limits of agreement (mean ± ``agreement`` SD, 1.96 by
    default) and a line at 0.

    The other parameters and the errors are those of :func:`scatter_plot`.

    Returns
    -------
    matplotlib.figure.Figure
        Line gids ``zero``, ``mean-difference``, ``limits``.

    Examples
    --------
    >>> fig = bland_altman_plot(cube, "estimate", reference="mean")
    """

    def draw(ax: Any, a: np.ndarray, b: np.ndarray, ref: str, m: str) -> None:
        diff = b - a
        _dots(ax, (a + b) / 2, diff, m)
        ax.axhline(0.0, color="0.3", lw=1, gid="zero")
        if diff.size > 1:
            mid, sd = float(diff.mean()), float(diff.std(ddof=1))
            ax.axhline(mid, color="black", ls="--", lw=1, gid="mean-difference")
            for v in (mid - agreement * sd, mid + agreement * sd):
                ax.axhline(v, color="0.4", ls=":", lw=1, gid="limits")
        ax.set_xlabel(f"mean of {ref} and {m}: {output}")
        ax.set_ylabel(f"{m} - {ref}")

    return _pair_figure(cube, output, methods, reference, points, draw, "row")


def _pair_figure(
    cube: xr.Dataset,
    output: str,
    methods: str | Sequence[str] | None,
    reference: str | None,
    points: Points,
    draw: Callable[[Any, np.ndarray, np.ndarray, str, str], None],
    share: Literal["row"] | bool = False,
) -> PlotFigure:
    """One axes per other method (rows) and design point (columns), each
    drawn by ``draw(ax, reference values, method values, reference, method)``
    from the replicates where both are finite."""
    cube = check_cube(cube)
    ref, others, grid, cube = _pairs(cube, output, methods, reference, points)
    fig, axes = _pair_axes(len(others), len(grid), share)
    for i, m in enumerate(others):
        for j, point in enumerate(grid):
            ax = axes[i, j]
            a, b = _paired(cube, output, point, ref, m)
            ax.set_prop_cycle(color=[COLORS[(i + 1) % len(COLORS)]])
            draw(ax, a, b, ref, m)
            ax.set_title(label(point), fontsize="small")
            plain_ticks(ax)
    title_fixed(fig, cube)
    return fig


def _dots(ax: Any, x: np.ndarray, y: np.ndarray, m: str) -> None:
    ax.plot(x, y, ".", ms=2, alpha=0.5, gid=f"points:{m}")


def _pair_axes(
    rows: int, cols: int, share: Literal["row"] | bool = False
) -> tuple[PlotFigure, np.ndarray]:
    fig = new_figure(min(2.8 * cols + 0.6, 20), min(2.6 * rows + 0.6, 30))
    return fig, np.asarray(fig.subplots(rows, cols, squeeze=False, sharey=share))


# ----------------------------------------------------------- distributions


def distribution_plot(
    cube: xr.Dataset,
    output: str = "estimate",
    *,
    methods: str | Sequence[str] | None = None,
    points: Points = None,
    kind: str = "box",
    columns: int = 4,
    scale: str = "auto",
) -> PlotFigure:
    """The distribution of ``output`` over replicates, per method, one panel
    per design point on a shared scale, with the truth for estimates.

    Parameters
    ----------
    cube : xr.Dataset
        A cube, as ``simstudy.open_results(store)`` returns it.
    output : str
        ``"estimate"``, ``"se"`` (each method's declared outputs) or a name.
    methods : list of str, optional
        Default: all.
    points : dict or list of dict, optional
        Keep only these levels, e.g. ``{"n": 100}``, or these design points,
        e.g. ``[{"n": 20, "eps": 0.0}, {"n": 500, "eps": 0.1}]``.
    kind : {"box", "violin"}
        Box plots (median, quartiles, 1.5 IQR whiskers) or violins.
    columns : int
        Panels per row.
    scale : {"auto", "linear", "symlog"}
        ``"auto"``: one y range over the panels that holds the boxes and
        whiskers of every method and outliers up to one whisker span
        beyond; values further out (a few estimates of 3e4 beside values
        near 1) are counted at the axis edge, so one method's extremes never
        squeeze the others' boxes flat. ``"linear"``: every value in range.
        ``"symlog"``: a symmetric log axis.

    Returns
    -------
    matplotlib.figure.Figure
        One axes per design point (line gid ``truth`` where known).

    Raises
    ------
    UsageError
        Unknown kind, method, output, factor or level.

    Examples
    --------
    >>> fig = distribution_plot(cube, "estimate", kind="violin")
    """
    cube = check_cube(cube)
    check_scale(scale)
    if kind not in ("box", "violin"):
        raise UsageError(
            f"unknown kind {kind!r}; expected 'box' or 'violin'",
            hint="write kind='box'",
        )
    chosen = check_methods(cube, methods)
    names = {m: output_name(cube, output, m) for m in chosen}
    cube, grid = read_points(cube, points, set(names.values()))
    return _distribution_figure(cube, output, names, grid, kind, columns, scale)


def _distribution_figure(
    cube: xr.Dataset,
    output: str,
    names: dict[str, str],
    grid: list[Point],
    kind: str,
    columns: int,
    scale: str,
) -> PlotFigure:
    """The distribution plot of checked arguments (``names``: each method's
    output), a panel per design point, ``columns`` to a row."""
    chosen = list(names)
    rows, cols = grid_shape(len(grid), columns)
    fig = new_figure(
        min(0.9 + cols * (0.7 + 0.55 * len(chosen)), 20), min(0.6 + 2.4 * rows, 30)
    )
    axes = np.asarray(fig.subplots(rows, cols, squeeze=False, sharey=True)).ravel()
    panels = []
    for ax, point in zip(axes, grid, strict=False):
        panels.append(_distribution_panel(ax, cube, point, output, names, kind))
    if scale == "auto":
        _robust_range(fig, axes[: len(grid)], panels, chosen)
    elif scale == "symlog":
        axes[0].set_yscale("symlog", linthresh=_linthresh(panels))
    for ax in axes[len(grid) :]:
        ax.set_visible(False)
    axes[0].set_ylabel(output)
    title_fixed(fig, cube)
    return fig


def _distribution_panel(
    ax: Any,
    cube: xr.Dataset,
    point: Point,
    output: str,
    names: dict[str, str],
    kind: str,
) -> list[np.ndarray]:
    """One design point: a box or violin per method, the truth of an
    estimate; return each method's finite values."""
    chosen = list(names)
    positions = np.arange(1, len(chosen) + 1)
    data = [ok_values(cube, names[m], point, m) for m in chosen]
    data = [values[np.isfinite(values)] for values in data]
    if kind == "box":
        ax.boxplot(data, positions=positions, widths=0.6, flierprops={"ms": 2})
    else:
        present = [k for k, values in enumerate(data) if values.size]
        if present:
            ax.violinplot(
                [data[k] for k in present],
                positions=positions[present],
                showmedians=True,
            )
    ax.set_xticks(positions, chosen, rotation=30 if len(chosen) > 3 else 0)
    theta = truth_at(cube, names[chosen[0]], point)
    if output == "estimate" and theta is not None:
        ax.axhline(theta, color="0.3", ls=":", lw=1.2, gid="truth")
    ax.set_title(label(point), fontsize="small")
    plain_ticks(ax)
    return data


def _whiskers(values: np.ndarray) -> tuple[float, float]:
    """The ends of a box plot's whiskers: the data within 1.5 IQR."""
    if not values.size:
        return float("nan"), float("nan")
    q1, q3 = np.quantile(values, [0.25, 0.75])
    inside = values[(values >= q1 - 1.5 * (q3 - q1)) & (values <= q3 + 1.5 * (q3 - q1))]
    return float(inside.min()), float(inside.max())


def _robust_range(
    fig: PlotFigure, axes: np.ndarray, panels: list[list[np.ndarray]], chosen: list[str]
) -> None:
    """One y range for every panel that holds each kept method's whiskers and
    the outliers up to one whisker span further; values beyond are counted
    at the edge (arrow head, count and extreme value) instead of squeezing
    the boxes. A method whose whiskers are 1000 times wider is off scale."""
    ends = {
        m: np.array([_whiskers(panel[k]) for panel in panels]).ravel()
        for k, m in enumerate(chosen)
    }
    every = np.concatenate(list(ends.values()))
    every = every[np.isfinite(every)]
    off = outliers(ends, float(np.median(every)) if every.size else None)
    kept = [k for k, m in enumerate(chosen) if m not in off]
    span = limits([ends[chosen[k]] for k in kept], pad=0.0)
    if span is None:
        return
    width = span[1] - span[0] or 1.0
    near = np.concatenate(
        [
            panel[k][(panel[k] >= span[0] - width) & (panel[k] <= span[1] + width)]
            for panel in panels
            for k in kept
        ]
        + [np.asarray(span)]
    )
    lo, hi = limits([near], [y for ax in axes for y in _truths(ax)]) or span
    axes[0].set_ylim(lo, hi)
    clipped = 0
    for ax, data in zip(axes, panels, strict=True):
        for k, values in enumerate(data):
            clipped += _count_off(ax, k + 1, values, lo, hi)
    if off:
        add_note(fig, f"off scale: {', '.join(off)} (its whiskers are 1000x wider)")
    elif clipped:
        add_note(
            fig,
            f"{clipped:,} extreme value(s) beyond the axis: counted at its edge "
            "(arrow head: how many, and the most extreme)",
        )


def _truths(ax: Any) -> list[float]:
    return [
        float(line.get_ydata()[0]) for line in ax.lines if line.get_gid() == "truth"
    ]


def _count_off(ax: Any, x: float, values: np.ndarray, lo: float, hi: float) -> int:
    """Mark the values of one box beyond the axis: an arrow head at the edge
    with how many and the most extreme."""
    count = 0
    for sel, edge, marker, far, dy in (
        (values > hi, hi, "^", np.max, -9),
        (values < lo, lo, "v", np.min, 3),
    ):
        k = int(sel.sum())
        if not k:
            continue
        count += k
        ax.plot(
            [x], [edge], marker, color="#D55E00", ms=6, clip_on=False, gid="offscale"
        )
        ax.annotate(
            f"{k}: {short(float(far(values[sel])))}",
            (x, edge),
            xytext=(4, dy),
            textcoords="offset points",
            fontsize="x-small",
            color="#D55E00",
            annotation_clip=False,
        )
    return count


def _linthresh(panels: list[list[np.ndarray]]) -> float:
    """symlog's linear range: the typical magnitude of the values."""
    every = np.abs(np.concatenate([d for p in panels for d in p] + [np.zeros(0)]))
    every = every[every > 0]
    return float(np.quantile(every, 0.25)) if every.size else 1.0
