"""Paired contrasts: a measure of one method against another, with an MCSE
that uses the pairing.

Every method sees the same data in a replicate (common random numbers), so
two methods' measures are correlated and the MCSE of their difference is
usually far smaller than ``sqrt(mcse_a**2 + mcse_b**2)``. ``contrast``
computes, per design point, the measure of each method over the replicates
where *both* are usable, their difference (or ratio), and a jackknife MCSE
over those replicate pairs (leave one replicate out of both at once). For a
measure that is a mean of per-replicate values (bias, MSE, coverage, ...)
the difference's jackknife MCSE equals ``sd(d) / sqrt(n)``, with ``d`` the
per-replicate differences, exactly.

Levels of a factor are not paired (each design point has its own streams):
``contrast(..., levels={"n": (100, 50)})`` takes the two summaries' values
and ``sqrt(mcse_1**2 + mcse_2**2)``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import xarray as xr

from simstudy.analysis.ledger import usable
from simstudy.analysis.measures import Wald
from simstudy.analysis.plans import declarations, truth_of
from simstudy.analysis.summary import summarize
from simstudy.cube import METHOD
from simstudy.cube import REPLICATE as REP
from simstudy.errors import UsageError

__all__ = ["PAIRED", "contrast"]

# measure -> (what each replicate contributes, how the mean becomes the measure)
PAIRED = (
    "mean",
    "bias",
    "relbias",
    "mse",
    "rmse",
    "mae",
    "empse",
    "modelse",
    "coverage",
    "ci_width",
    "power",
)
Array = np.ndarray[Any, Any]


def contrast(
    cube: xr.Dataset,
    measure: str,
    *,
    methods: tuple[str, str] | None = None,
    levels: Mapping[str, tuple[Any, Any]] | None = None,
    ratio: bool = False,
    truth: Any = None,
    alpha: float = 0.05,
    level: float = 0.95,
    df: float | None = None,
    null: float = 0.0,
    **options: Any,
) -> xr.Dataset:
    """Return the difference (or ratio) of ``measure`` between two methods
    (paired by replicate) or two levels of a factor, with its MCSE.

    Parameters
    ----------
    cube
        A result cube (``open_results``).
    measure
        With ``methods``: one of ``PAIRED`` (mean, bias, relbias, mse, rmse,
        mae, empse, modelse, coverage, ci_width, power). With ``levels``: any
        measure ``summarize`` computes.
    methods
        ``(a, b)``: ``a`` minus (or over) ``b``, per design point, over the
        replicates where both are usable (ok, converged, finite).
    levels
        ``{factor: (l1, l2)}``: ``l1`` minus (or over) ``l2``, per method and
        level of the other factors (independent streams: MCSEs add in
        quadrature).
    ratio
        The ratio instead of the difference (MCSE: jackknife, or the delta
        method for levels).
    truth, alpha, level, df, null, options
        As in ``summarize`` (``options`` reach it for ``levels``).

    Returns
    -------
    xr.Dataset
        ``<measure>_diff`` (or ``_ratio``), its ``_mcse``, and ``n_pairs``
        (methods) or the two ``n_ok`` (levels); ``attrs`` say what was
        compared.

    Raises
    ------
    UsageError
        Neither or both of ``methods`` and ``levels``; unknown method, factor,
        level or measure.
    """
    if (methods is None) == (levels is None):
        raise UsageError(
            "contrast needs either methods=(a, b) or levels={factor: (l1, l2)}.",
            hint='write contrast(cube, "rmse", methods=("ols", "robust"))',
        )
    name = f"{measure}_{'ratio' if ratio else 'diff'}"
    wald = Wald(level=level, alpha=alpha, df=df, null=null)
    if methods is not None:
        return _paired(cube, measure, tuple(methods), ratio, truth, wald, name)
    assert levels is not None
    summary = summarize(
        cube, truth=truth, alpha=alpha, level=level, df=df, null=null, **options
    )
    return _between_levels(summary, measure, levels, ratio, name)


def _between_levels(
    summary: xr.Dataset,
    measure: str,
    levels: Mapping[str, tuple[Any, Any]],
    ratio: bool,
    name: str,
) -> xr.Dataset:
    if len(levels) != 1:
        raise UsageError(
            f"levels= names one factor, got {list(levels)!r}.",
            hint='write levels={"n": (100, 50)}',
        )
    factor, pair = next(iter(levels.items()))
    if factor not in summary.dims or factor == METHOD:
        factors = [str(d) for d in summary.dims if d != METHOD]
        raise UsageError(
            f"unknown factor {factor!r}; the factors are: {', '.join(factors)}.",
            hint="name one of those factors in levels=",
        )
    if measure not in summary.data_vars:
        raise UsageError(
            f"measure {measure!r} is not in the summary of this cube.",
            hint="choose a measure summarize computes here (see its 'skipped')",
        )
    known = summary[factor].values.tolist()
    for value in pair:
        if value not in known:
            raise UsageError(
                f"factor {factor!r} has no level {value!r}; levels: {known}.",
                hint="choose two of those levels",
            )
    one, two = (summary.sel({factor: v}, drop=True) for v in pair)
    a, b = one[measure], two[measure]
    ea = one.get(f"{measure}_mcse", xr.full_like(a, np.nan))
    eb = two.get(f"{measure}_mcse", xr.full_like(b, np.nan))
    with np.errstate(divide="ignore", invalid="ignore"):
        if ratio:
            value = a / b
            err = abs(value) * ((ea / a) ** 2 + (eb / b) ** 2) ** 0.5
        else:
            value = a - b
            err = (ea**2 + eb**2) ** 0.5
    out = xr.Dataset(
        {name: value, f"{name}_mcse": err, "n_ok_1": one["n_ok"], "n_ok_2": two["n_ok"]}
    )
    out.attrs.update(measure=measure, factor=factor, levels=list(pair), paired=False)
    return out


def _paired(
    cube: xr.Dataset,
    measure: str,
    methods: tuple[str, ...],
    ratio: bool,
    truth: Any,
    wald: Wald,
    name: str,
) -> xr.Dataset:
    if measure not in PAIRED:
        raise UsageError(
            f"measure {measure!r} has no paired contrast; the measures are: "
            f"{', '.join(PAIRED)}.",
            hint="choose one of those, or compare levels= with any measure",
        )
    names = [str(m) for m in cube[METHOD].values]
    if len(methods) != 2 or any(m not in names for m in methods):
        raise UsageError(
            f"methods= must name two of the cube's methods, got {methods!r}.",
            hint=f"choose two of: {', '.join(names)}",
        )
    decls = declarations(cube, list(methods))
    values, used = [], []
    for m in methods:
        v, ok = _contribution(cube, measure, m, decls[m], truth, wald)
        values.append(v)
        used.append(ok)
    both = used[0] & used[1]
    a, b = (v.where(both).transpose(..., REP) for v in values)
    transform = _TRANSFORMS[measure]
    value, err, n = _jackknife(a.values, b.values, transform, ratio)
    cells = a.isel({REP: 0}, drop=True)
    cells.encoding = {}
    out = xr.Dataset(
        {
            name: cells.copy(data=value),
            f"{name}_mcse": cells.copy(data=err),
            "n_pairs": cells.copy(data=n.astype(np.int64)),
        }
    )
    out.attrs.update(measure=measure, methods=list(methods), paired=True)
    return out


def _contribution(
    cube: xr.Dataset,
    measure: str,
    method: str,
    decl: dict[str, Any],
    truth: Any,
    wald: Wald,
) -> tuple[xr.DataArray, xr.DataArray]:
    """What each replicate contributes to ``measure``, and where it is usable."""
    if decl.get("skip"):
        raise UsageError(
            f"method {method!r} has no estimate to compare: {decl['skip']}.",
            hint="compare methods that return an estimate",
        )
    block = cube.sel({METHOD: method}, drop=True)
    x = block[decl["estimate"]].astype(np.float64)
    theta = truth_of(cube, decl["estimate"], truth)
    se = block[decl["se"]] if decl.get("se") else None
    needs_truth = measure in ("bias", "relbias", "mse", "rmse", "mae", "coverage")
    if needs_truth and theta is None:
        raise UsageError(
            f"measure {measure!r} needs the truth of {decl['estimate']!r}.",
            hint="declare study.truth(...) or pass truth=",
        )
    v: xr.DataArray
    if measure in ("mean", "empse"):
        v = x
    elif measure == "bias":
        v = x - theta
    elif measure == "relbias":
        v = (x - theta) / theta
    elif measure in ("mse", "rmse"):
        v = (x - theta) ** 2
    elif measure == "mae":
        v = abs(x - theta)
    elif measure == "modelse":
        v = _need(se, method, "an SE output (se=)") ** 2
    elif measure in ("coverage", "ci_width"):
        lo, hi = _interval(block, decl, x, se, wald, method)
        if measure == "coverage":
            assert theta is not None  # checked above
            v = ((lo <= theta) & (theta <= hi)).astype(float)
        else:
            v = hi - lo
        v = v.where(np.isfinite(lo) & np.isfinite(hi))
    else:  # power
        if decl.get("p"):
            pv = block[decl["p"]]
            v = (pv < wald.alpha).astype(float).where(np.isfinite(pv))
        else:
            stat = (x - wald.null) / _need(se, method, "a p-value or SE output")
            q = wald.quantile(1.0 - wald.alpha / 2.0, cube)
            v = (abs(stat) >= q).astype(float).where(np.isfinite(stat))
    ok = usable(block) & np.isfinite(x) & np.isfinite(v)
    return v, ok


def _need(se: xr.DataArray | None, method: str, what: str) -> xr.DataArray:
    if se is None:
        raise UsageError(
            f"method {method!r} declares no {what}.",
            hint='declare it, e.g. @study.method(se="se")',
        )
    return se


def _interval(
    block: xr.Dataset,
    decl: dict[str, Any],
    x: xr.DataArray,
    se: xr.DataArray | None,
    wald: Wald,
    method: str,
) -> tuple[xr.DataArray, xr.DataArray]:
    if decl.get("ci"):
        return block[decl["ci"][0]], block[decl["ci"][1]]
    q = wald.quantile(1.0 - (1.0 - wald.level) / 2.0, block)
    half = q * _need(se, method, "interval or SE output")
    return x - half, x + half


def _loo(v: Array) -> tuple[Array, Array, Array]:
    """Per row: the measure's inputs with each used replicate left out —
    the leave-one-out mean and variance (NaN at unused replicates)."""
    used = np.isfinite(v)
    n = used.sum(axis=-1, keepdims=True).astype(np.float64)
    centre = np.where(used, v, 0.0).sum(axis=-1, keepdims=True) / n
    c = np.where(used, v - centre, 0.0)
    s1 = c.sum(axis=-1, keepdims=True)
    s2 = (c**2).sum(axis=-1, keepdims=True)
    m1 = n - 1.0
    loo_mean = (s1 - c) / m1
    loo_var = (s2 - c**2 - m1 * loo_mean**2) / (m1 - 1.0)
    full_var = (s2 - n * (s1 / n) ** 2) / (n - 1.0)
    return (
        np.where(used, loo_mean + centre, np.nan),
        np.where(used, loo_var, np.nan),
        np.concatenate([(s1 / n + centre), full_var], axis=-1),
    )


def _identity(mean: Array, var: Array) -> Array:
    return mean


def _sqrt_mean(mean: Array, var: Array) -> Array:
    return np.asarray(np.sqrt(mean))


def _sd(mean: Array, var: Array) -> Array:
    return np.asarray(np.sqrt(var))


_TRANSFORMS: dict[str, Callable[[Array, Array], Array]] = {
    **dict.fromkeys(PAIRED, _identity),
    "rmse": _sqrt_mean,
    "modelse": _sqrt_mean,
    "empse": _sd,
}


def _jackknife(
    a: Array, b: Array, g: Callable[[Array, Array], Array], ratio: bool
) -> tuple[Array, Array, Array]:
    """The contrast of ``g`` over paired rows, and its jackknife SE."""
    with np.errstate(divide="ignore", invalid="ignore"):
        n = np.isfinite(a).sum(axis=-1).astype(np.float64)
        la_mean, la_var, fa = _loo(a)
        lb_mean, lb_var, fb = _loo(b)
        ga, gb = g(fa[..., 0], fa[..., 1]), g(fb[..., 0], fb[..., 1])
        value = ga / gb if ratio else ga - gb
        loo_a, loo_b = g(la_mean, la_var), g(lb_mean, lb_var)
        loo = loo_a / loo_b if ratio else loo_a - loo_b
        live = np.isfinite(loo)
        centre = np.where(live, loo, 0.0).sum(axis=-1, keepdims=True) / n[..., None]
        dev = np.where(live, (loo - centre) ** 2, 0.0).sum(axis=-1)
        err = np.sqrt((n - 1.0) / n * dev)
    value = np.where(n > 0, value, np.nan)
    err = np.where(n > 1, err, np.nan)
    return value, err, n
