"""The zip plot (Morris, White & Crowther 2019): every replicate's interval,
ranked, with the coverage and its Monte Carlo interval.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np
import xarray as xr
from matplotlib.axes import Axes
from matplotlib.collections import LineCollection

from simstudy.cube import METHOD
from simstudy.errors import UsageError
from simstudy.plots import common
from simstudy.plots.scales import outliers

__all__ = ["Zip", "zip_intervals", "zip_plot"]

COVERS, MISSES = "#0072B2", "#D55E00"
# one method's (estimate, se, ci) outputs; se or ci may be absent
Source = tuple[str, str | None, tuple[str, str] | None]
Sources = dict[str, Source]


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
) -> Sources:
    """Per method: (estimate, se, ci) outputs; only methods with intervals."""
    known = [str(method) for method in cube[METHOD].values]
    sources = {}
    for method in methods or known:
        outputs = common.declared(cube, method)
        se_name = se or outputs.get("se")
        ci_names = (
            tuple(ci) if ci else (tuple(outputs["ci"]) if outputs.get("ci") else None)
        )
        if se_name is None and ci_names is None:
            if methods is not None:
                raise UsageError(
                    f"method {method!r} has no interval: "
                    "it declares neither ci= nor se=",
                    hint="declare @study.method(ci=(lo, hi)) or se=..., or pass "
                    "ci=('lo', 'hi') / se='se' to zip_plot",
                )
            continue
        sources[method] = (
            str(outputs["estimate"]),
            se_name,
            ci_names if ci_names is None else (str(ci_names[0]), str(ci_names[1])),
        )
        for name in (sources[method][0], se_name, *(ci_names or ())):
            if name is not None:
                common.output_name(
                    cube, str(name), method
                )  # known, and one number each
    if not sources:
        raise UsageError(
            "the zip plot needs intervals, and no method declares ci= or se= "
            f"(methods: {', '.join(known)})",
            hint="declare @study.method(ci=('lo', 'hi')) or se='se' in the study, "
            "or pass ci= / se= to zip_plot",
        )
    return sources


def zip_plot(
    cube: xr.Dataset,
    *,
    methods: str | Sequence[str] | None = None,
    points: common.Points = None,
    se: str | None = None,
    ci: tuple[str, str] | None = None,
    truth: float | None = None,
    level: float = 0.95,
    df: float | str | None = None,
    zoom: float = 1.0,
) -> common.PlotFigure:
    """Zip plot (Morris, White & Crowther 2019, Fig. 4) of interval methods.

    Per method (rows) and design point (columns): each replicate's interval
    at its fractional centile of |z| = |estimate - truth| / se (blue: covers
    the truth, orange: misses), the truth, the coverage with its Monte Carlo
    95% interval (dashed) and the nominal level (dotted). Intervals are the
    declared ``ci=(lo, hi)`` or Wald intervals from ``se=``. Without an SE,
    the rank is |estimate - truth| over the estimate's distance to the bound
    on the truth's side: the non-coverers sit on top.

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
    PlotFigure
        A ``matplotlib.figure.Figure`` with one axes per method and design
        point; line gids ``coverage``, ``coverage-low``, ``coverage-high``,
        ``level`` and ``truth``. Methods share each column's x scale, except
        a method whose intervals reach 1000 times further (an exploding SE):
        it gets its own. A method without a truth is left out, and
        ``fig.notes`` (printed under the panels) says so.

    Raises
    ------
    UsageError
        No interval output, no method with a truth, unknown method, factor
        or level.

    Examples
    --------
    >>> fig = zip_plot(simstudy.open_results("intervals.zarr"), points={"n": 20})
    """
    cube = common.check_cube(cube)
    _check_share(level=level, zoom=zoom)
    chosen = None if methods is None else common.check_methods(cube, methods)
    sources = _zip_sources(cube, chosen, se, ci)
    cube, grid = common.read_points(cube, points, _outputs(cube, sources, df))
    sources, untrue = _with_truth(cube, sources, grid, truth)
    return _zip_figure(cube, sources, grid, untrue, truth, (level, df), zoom)


def _outputs(cube: xr.Dataset, sources: Sources, df: float | str | None) -> set[str]:
    """The outputs the zip plot reads: each method's estimate, se and ci,
    and ``df`` when it names an output."""
    used = {x for e, s_, c in sources.values() for x in (e, s_, *(c or ())) if x}
    if isinstance(df, str):
        common.output_name(cube, df, next(iter(sources)))
        used.add(df)
    return used


def _zip_figure(
    cube: xr.Dataset,
    sources: Sources,
    grid: list[common.Point],
    untrue: dict[str, str],
    truth: float | None,
    wald: tuple[float, float | str | None],
    zoom: float,
) -> common.PlotFigure:
    """The zip plot of checked arguments: a row per method, a column per
    design point; notes for methods on their own scale or left out."""
    level, df = wald
    rows, cols = len(sources), len(grid)
    fig = common.new_figure(min(2.6 * cols + 0.8, 20), min(2.3 * rows + 1.0, 30))
    axes = fig.subplots(rows, cols, squeeze=False, sharey=True)
    own: list[str] = []
    for j, point in enumerate(grid):
        own += _zip_column(axes[:, j], cube, sources, point, truth, wald)
    all_wald = all(c is None for _, _, c in sources.values())
    kind = f"{100 * level:g}% {'Wald' if df is None else 't'} intervals"
    fig.supylabel("fractional centile of |z|", fontsize="medium")
    fig.supxlabel(kind if all_wald else "intervals", fontsize="medium")
    axes[0, 0].set_ylim(1 - zoom, 1.0)
    common.title_fixed(fig, cube)
    if own:
        common.add_note(
            fig,
            f"own x scale (its intervals are 1000x wider): {', '.join(dict.fromkeys(own))}",
        )
    for m, output in untrue.items():
        common.add_note(
            fig,
            f"not drawn: {m} (no truth for its estimate {output!r}; "
            "declare it in study.truth or pass truth=)",
        )
    return fig


def _with_truth(
    cube: xr.Dataset,
    sources: Sources,
    grid: list[common.Point],
    truth: float | None,
) -> tuple[Sources, dict[str, str]]:
    """The methods whose estimate has a truth at every design point, and the
    others (method -> estimate): those are left out with a note."""
    if truth is not None:
        return sources, {}
    kept, left = {}, {}
    for m, source in sources.items():
        if all(common.truth_at(cube, source[0], p) is not None for p in grid):
            kept[m] = source
        else:
            left[m] = source[0]
    if not kept:
        est = next(iter(left.values()))
        raise UsageError(
            f"the zip plot needs the truth of {est!r}"
            + (f" (and of {len(left) - 1} more method(s))" if len(left) > 1 else ""),
            hint="declare study.truth(...) in the study or pass truth=",
        )
    return kept, left


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
    sources: Sources,
    point: common.Point,
    truth: float | None,
    wald: tuple[float, float | str | None],
) -> list[str]:
    """One design point: a zip panel per method, on one x scale that holds
    99% of every method's bounds (a few huge intervals run off the edge
    rather than squash the others). A method whose bounds reach 1000 times
    further from the truth than the others' gets its own x scale; return
    those methods."""
    edges: dict[str, list[float]] = {}
    theta = 0.0
    for ax, (method, source) in zip(axes, sources.items(), strict=True):
        found = truth if truth is not None else common.truth_at(cube, source[0], point)
        assert found is not None  # _with_truth kept methods with a truth
        theta = found
        ranked = _zip_of(cube, point, method, source, theta, wald)
        _zip_panel(ax, ranked, theta, wald[0])
        where = f"{method} · {common.label(point)}"
        if len(where) > 32:  # a long name: one line each, never overlapping
            where = f"{method}\n{common.label(point)}"
        ax.set_title(
            f"{where}\ncoverage {common.with_mcse(ranked.coverage, ranked.mcse)}",
            fontsize="small",
        )
        if ranked.lo.size:
            edges[method] = [
                float(np.quantile(ranked.lo, 0.005)),
                float(np.quantile(ranked.hi, 0.995)),
            ]
    own = outliers({m: np.array(e) for m, e in edges.items()}, theta)
    shared = [x for m, e in edges.items() if m not in own for x in e]
    for ax, method in zip(axes, sources, strict=True):
        span = edges.get(method, []) if method in own else shared
        if span:
            lo, hi = min(*span, theta), max(*span, theta)
            pad = 0.04 * (hi - lo or 1.0)
            ax.set_xlim(lo - pad, hi + pad)
    return own


def _zip_of(
    cube: xr.Dataset,
    point: common.Point,
    method: str,
    source: Source,
    theta: float,
    wald: tuple[float, float | str | None],
) -> Zip:
    """One method's intervals at one design point, ranked."""
    est, se_name, ci_names = source
    level, df = wald
    if isinstance(df, str):
        crit: float | np.ndarray = _critical(
            level, common.ok_values(cube, df, point, method)
        )
    else:
        crit = _critical(level, df)
    bounds = None
    if ci_names is not None:
        bounds = (
            common.ok_values(cube, ci_names[0], point, method),
            common.ok_values(cube, ci_names[1], point, method),
        )
    return zip_intervals(
        common.ok_values(cube, est, point, method),
        None if se_name is None else common.ok_values(cube, se_name, point, method),
        bounds,
        theta,
        crit,
    )


def _critical(level: float, df: float | np.ndarray | None) -> float | np.ndarray:
    """The two-sided normal or t quantile of ``level`` (per replicate for an
    array of df)."""
    q = 1 - (1 - level) / 2
    if df is None:
        return NormalDist().inv_cdf(q)
    from scipy import stats

    t = stats.t.ppf(q, df)
    return float(t) if np.ndim(t) == 0 else np.asarray(t, dtype=float)


def _zip_panel(ax: Axes, ranked: Zip, truth: float, level: float) -> None:
    segments = np.stack(
        [
            np.column_stack([ranked.lo, ranked.rank]),
            np.column_stack([ranked.hi, ranked.rank]),
        ],
        axis=1,
    )
    colors = np.where(ranked.covers, COVERS, MISSES)
    ax.add_collection(LineCollection(list(segments), colors=list(colors), lw=0.6))
    ax.autoscale_view()
    ax.axvline(truth, color="0.1", lw=1, gid="truth")
    ax.axhline(level, color="0.4", ls=":", lw=1, gid="level")
    ax.axhline(ranked.coverage, color="black", lw=1.2, gid="coverage")
    for gid, sign in (("coverage-low", -1), ("coverage-high", 1)):
        ax.axhline(
            ranked.coverage + sign * 1.96 * ranked.mcse,
            color="black",
            ls="--",
            lw=0.8,
            gid=gid,
        )
    common.plain_ticks(ax)
