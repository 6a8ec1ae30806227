"""Plots of a cube's replicates: zip plot, method-vs-method, distributions.

Each takes the cube ``simstudy.open_results(store)`` returns, uses the ok
tasks only, and returns a ``matplotlib.figure.Figure``: one panel per
design point (columns) and method or pair of methods (rows). Restrict the
design points with ``points={"n": 100}`` when there are many.

``output="estimate"`` and ``output="se"`` mean each method's declared
estimate and standard-error outputs; any other name is taken literally.

Layers: imports ``plots.common, cube, errors`` (plus numpy, xarray,
matplotlib; scipy for t quantiles).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from statistics import NormalDist
from typing import Any, Literal

import numpy as np
import xarray as xr
from matplotlib.axes import Axes
from matplotlib.collections import LineCollection
from matplotlib.figure import Figure

from simstudy.cube import METHOD
from simstudy.errors import UsageError
from simstudy.plots.common import (
    COLORS,
    Point,
    Points,
    check_methods,
    choose_points,
    declared,
    factors_of,
    grid_shape,
    label,
    new_figure,
    ok_values,
    output_dims,
    plain_ticks,
    truth_at,
    with_mcse,
)

__all__ = ["bland_altman_plot", "distribution_plot", "scatter_plot", "zip_plot"]

COVERS, MISSES = "#0072B2", "#D55E00"


def check_cube(cube: Any) -> xr.Dataset:
    """The cube, or a clear error when given something else (a summary, say)."""
    if not isinstance(cube, xr.Dataset) or "status" not in cube.data_vars:
        raise UsageError(
            f"expected a cube (simstudy.open_results(store)), got "
            f"{type(cube).__name__}"
            + (
                " without per-task status (a summary?)"
                if isinstance(cube, xr.Dataset)
                else ""
            ),
            hint="pass simstudy.open_results('study.zarr')",
        )
    return cube


def output_name(cube: xr.Dataset, output: str, method: str) -> str:
    """The cube variable holding ``output`` for ``method``."""
    if output in ("estimate", "se"):
        name = declared(cube, method).get(output)
        returned = cube.attrs.get("simstudy", {}).get("outputs", {}).get(method)
        if name is None and output not in (returned or cube.data_vars):
            raise UsageError(
                f"method {method!r} declares no {output!r} output",
                hint=f"declare it (@study.method({output}=...)) or pass "
                "output= with one of the cube's outputs",
            )
        output = str(name or output)
    if output not in cube.data_vars:
        outputs = [str(v) for v in cube.data_vars if "replicate" in cube[v].dims]
        raise UsageError(
            f"unknown output {output!r}; the cube has: {', '.join(sorted(outputs))}",
            hint="pass output= with one of those names",
        )
    dims = output_dims(cube, output)
    if dims:
        raise UsageError(
            f"output {output!r} is an array (dims {', '.join(dims)}); these plots "
            "draw one number per replicate",
            hint=f"select one element first, e.g. cube.isel({dims[0]}=0)",
        )
    return output


def _points(
    cube: xr.Dataset, points: Points, outputs: set[str]
) -> tuple[xr.Dataset, list[Point]]:
    """The chosen design points, with the outputs needed read into memory
    once (a few variables of the chosen points, not the whole cube)."""
    cube, grid = choose_points(cube, points, factors_of(cube))
    return cube[sorted({"status", *outputs})].load(), grid


# --------------------------------------------------------------- zip plot


@dataclass(frozen=True, slots=True)
class Zip:
    """One method at one design point: its intervals ranked for the zip plot."""

    lo: np.ndarray
    hi: np.ndarray
    rank: np.ndarray  # fractional centile, in (0, 1]
    covers: np.ndarray
    coverage: float
    mcse: float


def zip_intervals(
    est: np.ndarray,
    se: np.ndarray | None,
    bounds: tuple[np.ndarray, np.ndarray] | None,
    truth: float,
    crit: float | np.ndarray,
) -> Zip:
    """Rank one method's intervals by |z| (or, without an SE, by how far the
    truth lies from the estimate relative to the bound on its side)."""
    if bounds is None:
        assert se is not None  # the caller picks a method with ci or se
        lo, hi = est - crit * se, est + crit * se
    else:
        lo, hi = bounds
    if se is not None:
        score = np.abs(est - truth) / se
    else:
        half = np.where(truth < est, est - lo, hi - est)
        with np.errstate(divide="ignore", invalid="ignore"):
            score = np.abs(est - truth) / half
    keep = np.isfinite(lo) & np.isfinite(hi) & np.isfinite(score)
    lo, hi, score = lo[keep], hi[keep], score[keep]
    covers = (lo <= truth) & (truth <= hi)
    n = len(score)
    rank = np.empty(n)
    rank[np.argsort(score, kind="stable")] = np.arange(1, n + 1) / max(n, 1)
    coverage = float(covers.mean()) if n else float("nan")
    mcse = float(np.sqrt(coverage * (1 - coverage) / n)) if n else float("nan")
    return Zip(lo, hi, rank, covers, coverage, mcse)


def _zip_sources(
    cube: xr.Dataset,
    methods: list[str] | None,
    se: str | None,
    ci: tuple[str, str] | None,
) -> dict[str, tuple[str, str | None, tuple[str, str] | None]]:
    """Per method: (estimate, se, ci) outputs; only methods with intervals."""
    known = [str(m) for m in cube[METHOD].values]
    out = {}
    for m in methods or known:
        d = declared(cube, m)
        s = se or d.get("se")
        c = tuple(ci) if ci else (tuple(d["ci"]) if d.get("ci") else None)
        if s is None and c is None:
            if methods is not None:
                raise UsageError(
                    f"method {m!r} has no interval: it declares neither ci= nor se=",
                    hint="declare @study.method(ci=(lo, hi)) or se=..., or pass "
                    "ci=('lo', 'hi') / se='se' to zip_plot",
                )
            continue
        out[m] = (str(d["estimate"]), s, c if c is None else (str(c[0]), str(c[1])))
        for name in (out[m][0], s, *(c or ())):
            if name is not None:
                output_name(cube, str(name), m)  # known, and one number each
    if not out:
        raise UsageError(
            "the zip plot needs intervals, and no method declares ci= or se= "
            f"(methods: {', '.join(known)})",
            hint="declare @study.method(ci=('lo', 'hi')) or se='se' in the study, "
            "or pass ci= / se= to zip_plot",
        )
    return out


def zip_plot(
    cube: xr.Dataset,
    *,
    methods: str | Sequence[str] | None = None,
    points: Points = None,
    se: str | None = None,
    ci: tuple[str, str] | None = None,
    truth: float | None = None,
    level: float = 0.95,
    df: float | str | None = None,
    zoom: float = 1.0,
) -> Figure:
    """Zip plot (Morris, White & Crowther 2019, Fig. 4) of interval methods.

    Per method (rows) and design point (columns): every replicate's
    interval as a horizontal line at its fractional centile of |z| =
    |estimate - truth| / se, blue when it covers the truth, orange when not;
    the truth as a vertical line; the coverage as a horizontal line with
    its Monte Carlo 95% interval (dashed) against the nominal level
    (dotted). Intervals are the declared ``ci=(lo, hi)`` outputs or, for a
    method declaring only ``se=``, Wald intervals ``estimate ± z·se`` (t
    quantiles with ``df``). A method with bounds and no SE is ranked by
    |estimate - truth| over the distance from the estimate to the bound on
    the truth's side, so the non-coverers sit on top.

    Parameters
    ----------
    cube : xr.Dataset
        What ``simstudy.open_results(store)`` returns.
    methods : str or list of str, optional
        Default: every method that declares ``ci=`` or ``se=``.
    points : dict or list of dict, optional
        Keep only these levels, e.g. ``{"n": 100}``, or these design points,
        e.g. ``[{"n": 20, "eps": 0.0}, {"n": 500, "eps": 0.1}]``.
    se, ci : str, (str, str), optional
        Outputs to use instead of the declared ones.
    truth : float, optional
        The true value (default: ``study.truth`` for the estimate).
    level : float
        Nominal level of the Wald intervals and of the reference line.
    df : float or str, optional
        Degrees of freedom: Wald intervals use t quantiles (a number, or
        the name of an output holding each replicate's df), as in
        ``summarize(cube, df=...)``.
    zoom : float
        Show the top ``zoom`` share of centiles (0.2 zooms on the top 20%).

    Returns
    -------
    matplotlib.figure.Figure
        One axes per method and design point; line gids ``coverage``,
        ``coverage-low``, ``coverage-high``, ``level`` and ``truth``.

    Raises
    ------
    UsageError
        No interval output, no truth, unknown method, factor or level.

    Examples
    --------
    >>> fig = zip_plot(simstudy.open_results("intervals.zarr"), points={"n": 20})
    """
    cube = check_cube(cube)
    _check_share(level=level, zoom=zoom)
    chosen = None if methods is None else check_methods(cube, methods)
    sources = _zip_sources(cube, chosen, se, ci)
    used = {x for e, s_, c in sources.values() for x in (e, s_, *(c or ())) if x}
    if isinstance(df, str):
        output_name(cube, df, next(iter(sources)))
        used.add(df)
    cube, grid = _points(cube, points, used)
    rows, cols = len(sources), len(grid)
    fig = new_figure(min(2.6 * cols + 0.8, 20), min(2.3 * rows + 0.9, 30))
    axes = fig.subplots(rows, cols, squeeze=False, sharey=True, sharex="col")
    for j, point in enumerate(grid):
        _zip_column(axes[:, j], cube, sources, point, truth, (level, df))
    for ax in axes[:, 0]:
        ax.set_ylabel("fractional centile of |z|")
    wald = all(c is None for _, _, c in sources.values())
    for ax in axes[-1]:
        kind = "Wald" if df is None else "t"
        ax.set_xlabel(f"{100 * level:g}% {kind} intervals" if wald else "intervals")
    axes[0, 0].set_ylim(1 - zoom, 1.0)
    return fig


def _check_share(**shares: float) -> None:
    """Levels and zooms are shares: in (0, 1) (a zoom of 1 shows all)."""
    for name, v in shares.items():
        if not 0 < v <= (1 if name == "zoom" else 1 - 1e-12):
            raise UsageError(
                f"{name} must be between 0 and 1, got {v!r}",
                hint="write level=0.95 and zoom=1.0 (zoom=0.2: the top 20%)",
            )


def _zip_column(
    axes: np.ndarray,
    cube: xr.Dataset,
    sources: dict[str, tuple[str, str | None, tuple[str, str] | None]],
    point: Point,
    truth: float | None,
    wald: tuple[float, float | str | None],
) -> None:
    """One design point: a zip panel per method, on one x scale that holds
    99% of every method's bounds (a few huge intervals run off the edge
    rather than squash the others)."""
    edges: list[float] = []
    theta = truth
    for ax, (m, (est, s, c)) in zip(axes, sources.items(), strict=True):
        theta = truth if truth is not None else truth_at(cube, est, point)
        if theta is None:
            raise UsageError(
                f"the zip plot needs the truth of {est!r} at {label(point)}",
                hint="declare study.truth(...) in the study or pass truth=",
            )
        level, df = wald
        if isinstance(df, str):
            crit: float | np.ndarray = _critical(level, ok_values(cube, df, point, m))
        else:
            crit = _critical(level, df)
        bounds = None
        if c is not None:
            bounds = (ok_values(cube, c[0], point, m), ok_values(cube, c[1], point, m))
        z = zip_intervals(
            ok_values(cube, est, point, m),
            None if s is None else ok_values(cube, s, point, m),
            bounds,
            theta,
            crit,
        )
        _zip_panel(ax, z, theta, level)
        ax.set_title(
            f"{m} · {label(point)}\ncoverage {with_mcse(z.coverage, z.mcse)}",
            fontsize="small",
        )
        if z.lo.size:
            edges += [float(np.quantile(z.lo, 0.005)), float(np.quantile(z.hi, 0.995))]
    if edges and theta is not None:
        lo, hi = min(*edges, theta), max(*edges, theta)
        pad = 0.04 * (hi - lo or 1.0)
        axes[0].set_xlim(lo - pad, hi + pad)


def _critical(level: float, df: float | np.ndarray | None) -> float | np.ndarray:
    """The two-sided normal or t quantile of ``level`` (per replicate for an
    array of df)."""
    q = 1 - (1 - level) / 2
    if df is None:
        return NormalDist().inv_cdf(q)
    from scipy import stats

    t = stats.t.ppf(q, df)
    return float(t) if np.ndim(t) == 0 else np.asarray(t, dtype=float)


def _zip_panel(ax: Axes, z: Zip, truth: float, level: float) -> None:
    segments = np.stack(
        [np.column_stack([z.lo, z.rank]), np.column_stack([z.hi, z.rank])], axis=1
    )
    colors = np.where(z.covers, COVERS, MISSES)
    ax.add_collection(LineCollection(list(segments), colors=list(colors), lw=0.6))
    ax.autoscale_view()
    ax.axvline(truth, color="0.1", lw=1, gid="truth")
    ax.axhline(level, color="0.4", ls=":", lw=1, gid="level")
    ax.axhline(z.coverage, color="black", lw=1.2, gid="coverage")
    for gid, sign in (("coverage-low", -1), ("coverage-high", 1)):
        ax.axhline(
            z.coverage + sign * 1.96 * z.mcse, color="black", ls="--", lw=0.8, gid=gid
        )
    plain_ticks(ax)


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
    cube, grid = _points(cube, points, used)
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
) -> Figure:
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
    cube = check_cube(cube)
    ref, others, grid, cube = _pairs(cube, output, methods, reference, points)
    fig, axes = _pair_axes(len(others), len(grid))
    for i, m in enumerate(others):
        for j, point in enumerate(grid):
            ax = axes[i, j]
            a, b = _paired(cube, output, point, ref, m)
            ax.plot(
                a,
                b,
                ".",
                ms=2,
                alpha=0.5,
                color=COLORS[(i + 1) % len(COLORS)],
                gid=f"points:{m}",
            )
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
            ax.set_title(label(point), fontsize="small")
            ax.set_xlabel(f"{ref}: {output}")
            ax.set_ylabel(f"{m}: {output}")
            plain_ticks(ax)
    return fig


def bland_altman_plot(
    cube: xr.Dataset,
    output: str = "estimate",
    *,
    methods: str | Sequence[str] | None = None,
    reference: str | None = None,
    points: Points = None,
) -> Figure:
    """Bland-Altman plot: per replicate, the difference of ``output``
    (method - reference) against the two methods' mean, with the mean
    difference and its limits of agreement (± 1.96 SD) and a line at 0.

    Parameters and errors are those of :func:`scatter_plot`.

    Returns
    -------
    matplotlib.figure.Figure
        Line gids ``zero``, ``mean-difference``, ``limits``.

    Examples
    --------
    >>> fig = bland_altman_plot(cube, "estimate", reference="mean")
    """
    cube = check_cube(cube)
    ref, others, grid, cube = _pairs(cube, output, methods, reference, points)
    fig, axes = _pair_axes(len(others), len(grid), "row")
    for i, m in enumerate(others):
        for j, point in enumerate(grid):
            ax = axes[i, j]
            a, b = _paired(cube, output, point, ref, m)
            diff = b - a
            ax.plot(
                (a + b) / 2,
                diff,
                ".",
                ms=2,
                alpha=0.5,
                color=COLORS[(i + 1) % len(COLORS)],
                gid=f"points:{m}",
            )
            ax.axhline(0.0, color="0.3", lw=1, gid="zero")
            if diff.size > 1:
                mid, sd = float(diff.mean()), float(diff.std(ddof=1))
                ax.axhline(mid, color="black", ls="--", lw=1, gid="mean-difference")
                for v in (mid - 1.96 * sd, mid + 1.96 * sd):
                    ax.axhline(v, color="0.4", ls=":", lw=1, gid="limits")
            ax.set_title(label(point), fontsize="small")
            ax.set_xlabel(f"mean of {ref} and {m}: {output}")
            ax.set_ylabel(f"{m} - {ref}")
            plain_ticks(ax)
    return fig


def _pair_axes(
    rows: int, cols: int, share: Literal["row"] | bool = False
) -> tuple[Figure, np.ndarray]:
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
) -> Figure:
    """The distribution of ``output`` over replicates, per method, one panel
    per design point on a shared scale, with the truth for estimates.

    Parameters
    ----------
    cube : xr.Dataset
        What ``simstudy.open_results(store)`` returns.
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
    if kind not in ("box", "violin"):
        raise UsageError(
            f"unknown kind {kind!r}; expected 'box' or 'violin'",
            hint="write kind='box'",
        )
    chosen = check_methods(cube, methods)
    names = {m: output_name(cube, output, m) for m in chosen}
    cube, grid = _points(cube, points, set(names.values()))
    rows, cols = grid_shape(len(grid), columns)
    fig = new_figure(
        min(0.9 + cols * (0.7 + 0.55 * len(chosen)), 20), min(0.6 + 2.4 * rows, 30)
    )
    axes = np.asarray(fig.subplots(rows, cols, squeeze=False, sharey=True)).ravel()
    for ax, point in zip(axes, grid, strict=False):
        data = [ok_values(cube, names[m], point, m) for m in chosen]
        data = [d[np.isfinite(d)] for d in data]
        pos = np.arange(1, len(chosen) + 1)
        if kind == "box":
            ax.boxplot(data, positions=pos, widths=0.6, flierprops={"ms": 2})
        else:
            present = [k for k, d in enumerate(data) if d.size]
            if present:
                ax.violinplot(
                    [data[k] for k in present], positions=pos[present], showmedians=True
                )
        ax.set_xticks(pos, chosen, rotation=30 if len(chosen) > 3 else 0)
        theta = truth_at(cube, names[chosen[0]], point)
        if output == "estimate" and theta is not None:
            ax.axhline(theta, color="0.3", ls=":", lw=1.2, gid="truth")
        ax.set_title(label(point), fontsize="small")
        plain_ticks(ax)
    for ax in axes[len(grid) :]:
        ax.set_visible(False)
    axes[0].set_ylabel(output)
    return fig
