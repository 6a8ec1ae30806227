"""A measure as a curve over one numeric factor: the power curve."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from simstudy.cube import METHOD
from simstudy.errors import UsageError
from simstudy.plots.common import (
    check_measure,
    check_methods,
    factors_of,
    label,
    new_figure,
)

if TYPE_CHECKING:
    import xarray as xr
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["measure_curve"]


def measure_curve(
    summary: xr.Dataset,
    measure: str,
    *,
    factor: str,
    at: Mapping[str, Any] | None = None,
    methods: str | Sequence[str] | None = None,
    target: float | None = None,
    solution: Mapping[str, float] | None = None,
    size: tuple[float, float] | None = None,
) -> Figure:
    """A measure against one numeric factor, with ±1.96 MCSE bands.

    The power curve of a sample size search: every level of ``factor`` the
    summary holds (levels a ``solve`` evaluated included), the other
    factors at ``at``; the target as a horizontal line; a solution as a
    vertical line with its interval shaded.

    Parameters
    ----------
    summary : xr.Dataset
        What ``simstudy.summarize(cube)`` returns.
    measure : str
        A measure in the summary, e.g. ``"power"``.
    factor : str
        The numeric factor on the x axis.
    at : dict, optional
        The level of each other factor (default: its only level).
    methods : str or list of str, optional
        The methods to draw (default: all).
    target : float, optional
        Draw the target as a horizontal line.
    solution : dict, optional
        ``{"estimate": ..., "lower": ..., "upper": ...}`` (a ``Solution``'s
        fields): the root and its interval, drawn as a line and a band.
    size : (float, float), optional
        Figure width and height in inches.

    Returns
    -------
    matplotlib.figure.Figure
        One axes; each method's curve is the line with gid ``curve:<method>``.

    Raises
    ------
    UsageError
        An unknown measure, method or factor; another factor with several
        levels and no ``at``.

    Examples
    --------
    >>> fig = measure_curve(summary, "power", factor="n", target=0.8)  # doctest: +SKIP
    >>> fig.savefig("power.png")  # doctest: +SKIP
    """
    values = check_measure(summary, measure)
    chosen = check_methods(summary, methods)
    factors = factors_of(values)
    if factor not in factors:
        raise UsageError(
            f"measure_curve: {factor!r} is not a factor of the summary "
            f"(factors: {', '.join(factors)}).",
            hint="pass factor= one of those",
        )
    point = _other_levels(summary, factor, factors, at)
    mcse = summary.get(f"{measure}_mcse")
    fig = new_figure(*(size or (6.0, 4.0)))
    ax = fig.add_subplot()
    for method in chosen:
        where = {**point, METHOD: method}
        band = None if mcse is None else mcse.sel(where)
        _draw_curve(ax, values.sel(where), band, factor, method)
    _draw_marks(ax, factor, target, solution)
    ax.set_xlabel(factor)
    ax.set_ylabel(measure)
    if point:
        ax.set_title(label(point), fontsize="medium")
    ax.legend(fontsize="small", frameon=False)
    return fig


def _draw_curve(
    ax: Axes,
    line: xr.DataArray,
    mcse: xr.DataArray | None,
    factor: str,
    method: str,
) -> None:
    """One method's measure over ``factor``, its finite values in the
    factor's order, with a band of ±1.96 MCSE."""
    x = np.asarray(line[factor].values, dtype=float)
    y = np.asarray(line.values, dtype=float)
    keep = np.isfinite(y)
    order = np.argsort(x[keep])
    xs, ys = x[keep][order], y[keep][order]
    (drawn,) = ax.plot(xs, ys, marker="o", ms=3, label=method, gid=f"curve:{method}")
    if mcse is not None:
        se = np.asarray(mcse.values, dtype=float)[keep][order]
        ax.fill_between(
            xs, ys - 1.96 * se, ys + 1.96 * se, color=drawn.get_color(), alpha=0.2
        )


def _draw_marks(
    ax: Axes,
    factor: str,
    target: float | None,
    solution: Mapping[str, float] | None,
) -> None:
    """The target as a horizontal line; the solution as a vertical line in
    its shaded interval."""
    if target is not None:
        ax.axhline(target, color="0.3", ls="--", lw=1, label=f"target {target:g}")
    if solution is not None:
        lo, hi = float(solution["lower"]), float(solution["upper"])
        estimate = float(solution["estimate"])
        ax.axvspan(lo, hi, color="C3", alpha=0.15)
        ax.axvline(estimate, color="C3", lw=1.2, label=f"{factor} = {estimate:.4g}")


def _other_levels(
    summary: xr.Dataset,
    factor: str,
    factors: list[str],
    at: Mapping[str, Any] | None,
) -> dict[str, Any]:
    """The level of every other factor: given, or its only one."""
    point: dict[str, Any] = {}
    for other in factors:
        if other == factor:
            continue
        levels = summary[other].values.tolist()
        if at is not None and other in at:
            if at[other] not in levels:
                raise UsageError(
                    f"measure_curve: at {other}={at[other]!r} is not a level of the "
                    f"summary (levels: {levels}).",
                    hint=f"pass at={{{other!r}: {levels[0]!r}}}",
                )
            point[other] = at[other]
        elif len(levels) == 1:
            point[other] = levels[0]
        else:
            raise UsageError(
                f"measure_curve: factor {other!r} has {len(levels)} levels; say "
                "which one to draw.",
                hint=f"pass at={{{other!r}: {levels[0]!r}}}",
            )
    return point
