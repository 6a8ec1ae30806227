"""The performance measures and their Monte Carlo SEs, on in-memory blocks.

``Measure`` is what a measure is, built-in or the user's: how it is
computed, what it needs, how a summary's readers show it
(``simstudy.analysis.registry`` declares the built-ins). A built-in is
computed by a kernel that takes the ``Inputs`` of one group of methods
(xarray, dims ``(*factors, replicate, method, *output dims)``, and the mask
of the replicates it may use) and returns ``{name: DataArray}`` reduced
over ``replicate``, for its whole family at once (bias, MSE, RMSE share
their sums). A user's measure is a function of rows of replicate values;
``evaluate`` runs both, with a jackknife MCSE vectorised over design
points x methods when the user gives none. Formulas follow Morris, White
& Crowther (2019, Stat Med 38:2074, Table 6); docs/analysis.md states each.
xarray is imported where it is called: the registry naming these kernels
stays light for the run's options and the command line.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import KW_ONLY, dataclass, field
from statistics import NormalDist
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

import numpy as np

from simstudy.cube import METHOD
from simstudy.cube import REPLICATE as REP
from simstudy.errors import UsageError

if TYPE_CHECKING:
    import xarray as xr

__all__ = [
    "NEEDS",
    "OTHER",
    "SHOWN",
    "Formula",
    "Inputs",
    "Measure",
    "Paired",
    "Wald",
    "bias_measures",
    "conditional_measures",
    "evaluate",
    "interval_measures",
    "mean_sd",
    "median_bias",
    "modelse",
    "paired_measures",
    "power",
    "share",
    "spread",
    "winsorized",
]

Arrays = dict[str, "xr.DataArray"]
UserFunc = Callable[..., Any]  # func(x, truth) -> one value per row
Need = Literal["truth", "se", "ci", "p", "reference"]
# what a measure may need of a group of methods; when several are missing,
# the last one in this order is the reason a summary gives
NEEDS: tuple[Need, ...] = ("truth", "se", "ci", "p", "reference")
OTHER = "Other measures"  # the report's table for measures without a section
SHOWN = ("reference", "section", "drawn", "bounded")  # how readers show a measure
Kernel = Callable[["Inputs"], Arrays]


class Formula(NamedTuple):
    """A measure as text: what it is, its estimate and its MCSE."""

    what: str
    estimate: str
    mcse: str


@dataclass(frozen=True, slots=True)
class Measure:
    """A performance measure: a user's ``func(x, truth)``, or a built-in.

    ``x`` holds one row per cell (design point x method x output element)
    and one column per replicate, NaN where the replicate is not used
    (failed, pending, non-finite, or dropped by ``cases="complete"``);
    ``truth`` holds one true value per row (NaN when none is known). The
    function returns one value per row, so write it NaN-aware and along
    the last axis (``np.nanquantile(x, 0.9, axis=-1)``). With
    ``vectorized=False`` it is called once per cell with the used values
    only (1-D) and the cell's truth (a float). ``mcse`` is a function of
    the same form, or ``"jackknife"`` (the default: leave-one-replicate-out,
    vectorised over cells), or None for no MCSE. ``output`` names the
    output to summarise (default: the method's estimate).

    The keywords say what the measure needs (``needs=("truth",)``: without
    a truth it is skipped, with the reason) and how readers of a summary
    show it: ``reference``, where the plots draw its reference line (a
    number, or ``"level"`` / ``"alpha"``: the summary's); ``section``, its
    table in the report; ``drawn``, a figure of its own there; ``bounded``,
    a share drawn on 0-1 (and solved on the probit scale). A built-in also
    has its ``name``, the ``kernel`` computing its family on a block (or
    ``ledger``: a rate of the failure ledger), ``target`` (a run may aim at
    its MCSE, ``--target-mcse``) and its ``formula`` as text.
    """

    func: UserFunc | None = None
    mcse: UserFunc | Literal["jackknife"] | None = "jackknife"
    output: str | None = None
    vectorized: bool = True
    _: KW_ONLY
    name: str = ""
    needs: tuple[Need, ...] = ()
    reference: float | str | None = None
    section: str | None = OTHER
    drawn: bool = True
    bounded: bool = False
    target: bool = False
    kernel: Kernel | None = None
    ledger: bool = False
    formula: Formula | None = None

    def shown(self) -> dict[str, Any]:
        """How a summary's readers show it (``SHOWN``), as plain values."""
        return {key: getattr(self, key) for key in SHOWN}


@dataclass(frozen=True, slots=True)
class Paired:
    """The reference method's estimates, used replicates and truth."""

    name: str
    x: xr.DataArray
    ok: xr.DataArray
    theta: xr.DataArray | None


@dataclass(frozen=True, slots=True)
class Inputs:
    """What one group of methods gives its measures on one block: the
    estimates ``x``, the replicates used, and what it declares (None: not
    there): truth, SE, interval bounds, test (reject, p-value or statistic),
    the reference method; ``outputs``: other outputs a measure reads."""

    x: xr.DataArray
    ok: xr.DataArray
    theta: xr.DataArray | None = None
    se: xr.DataArray | None = None
    interval: tuple[xr.DataArray, xr.DataArray] | None = None
    test: tuple[xr.DataArray, xr.DataArray] | None = None
    reference: Paired | None = None
    outputs: Mapping[str, xr.DataArray] = field(default_factory=dict)

    def missing(self) -> list[Need]:
        """The needs (``NEEDS``, in order) this group does not meet."""
        given = {
            "truth": self.theta,
            "se": self.se,
            "ci": self.interval,
            "p": self.test,
            "reference": self.reference,
        }
        return [need for need in NEEDS if given[need] is None]


@dataclass(frozen=True, slots=True)
class Wald:
    """How to build Wald intervals and tests from a standard error."""

    level: float
    alpha: float
    df: float | str | None
    null: float

    def quantile(self, prob: float, cube: xr.Dataset) -> float | xr.DataArray:
        """The ``prob`` quantile of N(0,1), or of t with ``df`` (a number or an output)."""
        if self.df is None:
            return NormalDist().inv_cdf(prob)
        from scipy import stats

        if isinstance(self.df, str):
            import xarray as xr

            q: xr.DataArray = xr.apply_ufunc(stats.t.ppf, prob, cube[self.df])
            return q
        return float(stats.t.ppf(prob, self.df))

    def describe(self) -> str:
        if self.df is None:
            return "Wald, normal"
        return f"Wald, t with df={self.df!r}"


def _sqrt(a: xr.DataArray) -> xr.DataArray:
    return a**0.5


def mean_sd(
    x: xr.DataArray, mask: xr.DataArray
) -> tuple[xr.DataArray, xr.DataArray, xr.DataArray]:
    """Count, mean and sample SD (divisor n-1) of ``x`` over ``mask``."""
    n = mask.sum(REP, skipna=False).astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        mean = x.where(mask, 0.0).sum(REP, skipna=False) / n
        ss = ((x - mean).where(mask, 0.0) ** 2).sum(REP, skipna=False)
        return n, mean, (ss / (n - 1.0)) ** 0.5


def _finite(*arrays: xr.DataArray) -> xr.DataArray:
    out = abs(arrays[0]) < np.inf  # False for NaN and inf
    for a in arrays[1:]:
        out = out & (abs(a) < np.inf)
    return out


def _average(name: str, values: xr.DataArray, ok: xr.DataArray) -> Arrays:
    """A mean over replicates, its MCSE sd/sqrt(n)."""
    n, mean, sd = mean_sd(values, ok & _finite(values))
    with np.errstate(divide="ignore", invalid="ignore"):
        return {name: mean, f"{name}_mcse": sd / _sqrt(n)}


def share(name: str, hit: xr.DataArray, mask: xr.DataArray) -> Arrays:
    """A proportion over ``mask``, its MCSE sqrt(p(1-p)/n)."""
    n = mask.sum(REP, skipna=False).astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        p = hit.where(mask, False).sum(REP, skipna=False) / n
        return {name: p, f"{name}_mcse": _sqrt(p * (1.0 - p) / n)}


def spread(given: Inputs) -> Arrays:
    """Mean of the estimates and their SD, the empirical SE."""
    n, mean, sd = mean_sd(given.x, given.ok & np.isfinite(given.x))
    with np.errstate(divide="ignore", invalid="ignore"):
        return {
            "mean": mean,
            "mean_mcse": sd / n**0.5,
            "empse": sd,
            "empse_mcse": sd / (2.0 * (n - 1.0)) ** 0.5,
        }


def bias_measures(given: Inputs) -> Arrays:
    """Bias, relative bias, MSE, RMSE and MAE against the truth."""
    x, theta = given.x, given.theta
    if theta is None:
        return {}
    mask = given.ok & _finite(x)
    n, mean, sd = mean_sd(x, mask)
    with np.errstate(divide="ignore", invalid="ignore"):
        bias, bias_mcse = mean - theta, sd / _sqrt(n)
        sq = (x - theta) ** 2
        mse = sq.where(mask, 0.0).sum(REP, skipna=False) / n
        mse_ss = ((sq - mse).where(mask, 0.0) ** 2).sum(REP, skipna=False)
        mse_mcse = _sqrt(mse_ss / (n * (n - 1.0)))
        rmse = _sqrt(mse)
        zero = theta == 0
        return {
            "bias": bias,
            "bias_mcse": bias_mcse,
            "relbias": (bias / theta).where(~zero),
            "relbias_mcse": (bias_mcse / abs(theta)).where(~zero),
            "mse": mse,
            "mse_mcse": mse_mcse,
            "rmse": rmse,
            "rmse_mcse": mse_mcse / (2.0 * rmse),
            **_average("mae", abs(x - theta), mask),
        }


def modelse(given: Inputs) -> Arrays:
    """Model SE sqrt(mean se^2) and its relative error against the empirical SE."""
    if given.se is None:
        return {}
    x, se = given.x, given.se
    mask = given.ok & _finite(x)
    _, _, empse = mean_sd(x, mask)
    n, v_mean, v_sd = mean_sd(se**2, mask & _finite(se))
    with np.errstate(divide="ignore", invalid="ignore"):
        model = _sqrt(v_mean)
        var_v = v_sd**2
        ratio = model / empse
        rel_var = var_v / (4.0 * n * model**4) + 1.0 / (2.0 * (n - 1.0))
        return {
            "modelse": model,
            "modelse_mcse": _sqrt(var_v / (4.0 * n * v_mean)),
            "relerr_modelse": 100.0 * (ratio - 1.0),
            "relerr_modelse_mcse": 100.0 * ratio * _sqrt(rel_var),
        }


def interval_measures(given: Inputs) -> Arrays:
    """Coverage (needs the truth), bias-eliminated coverage and CI width."""
    if given.interval is None:
        return {}
    (lo, hi), x, ok, theta = given.interval, given.x, given.ok, given.theta
    mask = ok & _finite(lo, hi)
    _, mean, _ = mean_sd(x, ok & _finite(x))
    out: Arrays = {}
    if theta is not None:
        out.update(share("coverage", (lo <= theta) & (theta <= hi), mask))
    out.update(share("becoverage", (lo <= mean) & (mean <= hi), mask))
    out.update(_average("ci_width", hi - lo, mask))
    return out


def power(given: Inputs) -> Arrays:
    """Rejection rate: the share of used replicates where the test rejects."""
    if given.test is None:
        return {}
    reject, inputs = given.test
    return share("power", reject, given.ok & _finite(inputs))


def paired_measures(given: Inputs) -> Arrays:
    """Comparisons with the reference method over replicates where both are
    used: relative precision, bias difference, MSE ratio (needs both
    truths) and the correlation of the estimates, each MCSE using the
    pairs' correlation. The reference itself gets 0, 0, 1, 1 exactly."""
    x, ref, theta = given.x, given.reference, given.theta
    if ref is None:
        return {}
    both = given.ok & ref.ok & _finite(x) & _finite(ref.x)
    n, mean, sd = mean_sd(x, both)
    _, ref_mean, ref_sd = mean_sd(ref.x, both)
    with np.errstate(divide="ignore", invalid="ignore"):
        cross = (
            ((x - mean) * (ref.x - ref_mean)).where(both, 0.0).sum(REP, skipna=False)
        )
        rho = cross / (n - 1.0) / (sd * ref_sd)
        ratio2 = (ref_sd / sd) ** 2
        one_minus = (1.0 - rho**2).clip(min=0.0)
        out = {
            "relprec": 100.0 * (ratio2 - 1.0),
            "relprec_mcse": 200.0 * ratio2 * _sqrt(one_minus / (n - 1.0)),
            "corr": rho,
            "corr_mcse": one_minus / _sqrt(n - 3.0),
        }
        _, diff, diff_sd = mean_sd(x - ref.x, both)
        out["bias_diff"], out["bias_diff_mcse"] = diff, diff_sd / _sqrt(n)
        if theta is not None and ref.theta is not None:
            sq, ref_sq = (x - theta) ** 2, (ref.x - ref.theta) ** 2
            out.update(_mse_ratio(sq, ref_sq, both, n))
    exact = {"relprec": 0.0, "bias_diff": 0.0, "mse_ratio": 1.0, "corr": 1.0}
    if ref.name in x[METHOD].values:
        itself = x[METHOD] == ref.name
        for k, v in exact.items():
            if k in out:
                out[k] = out[k].where(~itself, v).where(n > 0)
                out[f"{k}_mcse"] = out[f"{k}_mcse"].where(~itself, 0.0).where(n > 0)
    return out


def _mse_ratio(
    a: xr.DataArray, b: xr.DataArray, both: xr.DataArray, n: xr.DataArray
) -> Arrays:
    """MSE_m / MSE_ref from paired squared errors; delta-method MCSE with
    their covariance."""
    _, ma, sa = mean_sd(a, both)
    _, mb, sb = mean_sd(b, both)
    cov = ((a - ma) * (b - mb)).where(both, 0.0).sum(REP, skipna=False) / (n - 1.0)
    ratio = ma / mb
    rel = sa**2 / ma**2 + sb**2 / mb**2 - 2.0 * cov / (ma * mb)
    return {
        "mse_ratio": ratio,
        "mse_ratio_mcse": abs(ratio) * _sqrt(rel.clip(min=0.0) / n),
    }


def evaluate(measures: Sequence[Measure], given: Inputs) -> Arrays:
    """Each measure's values and MCSEs: a kernel once for its whole family,
    a user's function on rows of replicate values."""
    out: Arrays = {}
    ran: set[Kernel] = set()
    for measure in measures:
        if measure.kernel is None:
            out.update(_by_rows(measure, given))
        elif measure.kernel not in ran:
            ran.add(measure.kernel)
            out.update(measure.kernel(given))
    return out


def _by_rows(measure: Measure, given: Inputs) -> Arrays:
    """A measure's function on every cell at once: one row of replicate
    values (of its output, default the estimate) per cell."""
    name, func = measure.name, measure.func
    if func is None:
        raise UsageError(
            f"measure {name!r} has no function to compute it.",
            hint="give one: Measure(func) with func(x, truth) -> one value per row",
        )
    x = given.outputs[measure.output] if measure.output else given.x
    used = given.ok & _finite(x)
    y = x.where(used)
    # cells first, replicates last: the layout Measure documents
    y = y.transpose(..., REP)
    cells = y.isel({REP: 0}, drop=True)
    rows = y.values.reshape(-1, y.sizes[REP])
    truth = np.full(rows.shape[0], np.nan)
    if given.theta is not None:
        import xarray as xr

        truth = xr.broadcast(given.theta, cells)[0].transpose(*cells.dims).values
        truth = np.asarray(truth, dtype=np.float64).reshape(-1)
    value = _call(func, rows, truth, measure)
    out = {name: cells.copy(data=value.reshape(cells.shape))}
    if measure.mcse is None:
        return out
    if measure.mcse == "jackknife":
        err = _jackknife(measure, func, rows, truth)
    else:
        err = _call(measure.mcse, rows, truth, measure)
    out[f"{name}_mcse"] = cells.copy(data=err.reshape(cells.shape))
    return out


def _call(
    func: UserFunc, rows: np.ndarray[Any, Any], truth: np.ndarray[Any, Any], of: Measure
) -> np.ndarray[Any, Any]:
    """Run a function (``of`` a measure: its value or MCSE) on every row with
    a used value; one float per row (NaN for rows without any, which the
    function never sees)."""
    alive = np.isfinite(rows).any(axis=1)
    out = np.full(rows.shape[0], np.nan)
    if not alive.any():
        return out
    live, truth = rows[alive], truth[alive]
    if of.vectorized:
        got = np.asarray(func(live, truth), dtype=np.float64)
    else:
        got = np.array(
            [
                float(func(r[np.isfinite(r)], float(t)))
                for r, t in zip(live, truth, strict=True)
            ]
        )
    if got.shape != (live.shape[0],):
        raise UsageError(
            f"measure {of.name!r} returned shape {got.shape}, expected "
            f"({live.shape[0]},): one value per row of x.",
            hint="reduce along the last axis, e.g. np.nanmean(x, axis=-1)",
        )
    out[alive] = got
    return out


def _jackknife(
    measure: Measure,
    func: UserFunc,
    rows: np.ndarray[Any, Any],
    truth: np.ndarray[Any, Any],
) -> np.ndarray[Any, Any]:
    """Leave-one-replicate-out SE, all cells at once: one call per replicate."""
    used = np.isfinite(rows)
    n = used.sum(axis=1).astype(np.float64)
    leave = np.full(rows.shape, np.nan)
    for j in range(rows.shape[1]):
        if not used[:, j].any():
            continue
        held = rows[:, j].copy()
        rows[:, j] = np.nan
        leave[:, j] = _call(func, rows, truth, measure)
        rows[:, j] = held
    leave[~used] = np.nan
    with np.errstate(divide="ignore", invalid="ignore"):
        centre = np.where(used, leave, 0.0).sum(axis=1) / n
        dev = np.where(used, (leave - centre[:, None]) ** 2, 0.0).sum(axis=1)
        return np.asarray(np.sqrt((n - 1.0) / n * dev))


Z975 = 1.959963984540054  # the 0.975 quantile of N(0, 1)


def median_bias(given: Inputs) -> Arrays:
    """Median of the estimates minus the truth; MCSE from the order
    statistics that bound a distribution-free 95% interval of the median:
    ``(x_(k2) - x_(k1)) / (2 * 1.96)``, ``k1 = floor(n/2 - 1.96 sqrt(n)/2)``,
    ``k2 = ceil(n/2 + 1.96 sqrt(n)/2)`` (1-based, clipped to 1..n)."""
    x, theta = given.x, given.theta
    if theta is None:
        return {}
    mask = given.ok & _finite(x)
    y = x.where(mask).transpose(..., REP)
    rows = np.sort(y.values, axis=-1)  # NaN last
    n = np.isfinite(rows).sum(axis=-1)
    cells = y.isel({REP: 0}, drop=True)
    with np.errstate(invalid="ignore", divide="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN cells: NaN
        med = (
            np.nanmedian(rows, axis=-1) if rows.shape[-1] else np.full(n.shape, np.nan)
        )
        half = Z975 * np.sqrt(n) / 2.0
        k1 = np.clip(np.floor(n / 2.0 - half), 1, np.maximum(n, 1)).astype(np.int64)
        k2 = np.clip(np.ceil(n / 2.0 + half), 1, np.maximum(n, 1)).astype(np.int64)
        lo = np.take_along_axis(rows, (k1 - 1)[..., None], axis=-1)[..., 0]
        hi = np.take_along_axis(rows, (k2 - 1)[..., None], axis=-1)[..., 0]
        err = np.where(n > 1, (hi - lo) / (2.0 * Z975), np.nan)
    median = cells.copy(data=np.where(n > 0, med, np.nan))
    return {
        "median_bias": median - theta,
        "median_bias_mcse": cells.copy(data=err) + 0.0 * theta,
    }


def winsorized(
    x: xr.DataArray, ok: xr.DataArray, k: float
) -> tuple[xr.DataArray, xr.DataArray]:
    """Estimates clipped to ``[Q1 - k IQR, Q3 + k IQR]`` of each cell's used
    values (quartiles as numpy's and R's default, type 7), as simhelpers'
    ``winz``; and the count of values clipped per cell."""
    mask = ok & _finite(x)
    y = x.where(mask)
    q = y.quantile([0.25, 0.75], dim=REP, skipna=True)
    q1, q3 = q.sel(quantile=0.25, drop=True), q.sel(quantile=0.75, drop=True)
    lower, upper = q1 - k * (q3 - q1), q3 + k * (q3 - q1)
    clipped = (mask & ((x < lower) | (x > upper))).sum(REP).astype(np.int64)
    return x.clip(min=lower, max=upper).where(mask, x), clipped


def conditional_measures(given: Inputs) -> Arrays:
    """Measures among the replicates whose test rejects (used, with a
    finite test input, and rejecting):
    coverage given rejection, the type-S rate (the estimate's sign is not
    the truth's) and the exaggeration ratio mean(|estimate| / |truth|)
    (Gelman & Carlin 2014); MCSEs condition on the number of rejections.
    Type S and exaggeration are undefined (NaN) where the truth is 0."""
    x, theta = given.x, given.theta
    if theta is None or given.test is None:
        return {}
    reject, inputs = given.test
    used = given.ok & np.isfinite(inputs)
    bounds = [] if given.interval is None else list(given.interval)
    import xarray as xr

    arrays = [
        a.transpose(..., REP) for a in xr.broadcast(x, used & reject, theta, *bounds)
    ]
    cells = arrays[0].isel({REP: 0}, drop=True)
    xv, hit, tv = (a.values for a in arrays[:3])  # numpy from here: fewer passes
    rejected = hit.astype(bool) & np.isfinite(xv)
    zero = tv[..., 0] == 0
    out: Arrays = {}

    def rate(
        name: str, event: np.ndarray[Any, Any], mask: np.ndarray[Any, Any]
    ) -> None:
        n = mask.sum(axis=-1)
        p = (event & mask).sum(axis=-1) / n
        out[name] = cells.copy(data=p)
        out[f"{name}_mcse"] = cells.copy(data=np.sqrt(p * (1.0 - p) / n))

    with np.errstate(divide="ignore", invalid="ignore"):
        rate("type_s", np.sign(xv) != np.sign(tv), rejected)
        ratio = np.abs(xv) / np.abs(tv)
        n = rejected.sum(axis=-1)
        mean = np.where(rejected, ratio, 0.0).sum(axis=-1) / n
        dev = np.where(rejected, (ratio - mean[..., None]) ** 2, 0.0).sum(axis=-1)
        out["exaggeration"] = cells.copy(data=mean)
        out["exaggeration_mcse"] = cells.copy(data=np.sqrt(dev / (n - 1.0) / n))
        for k in ("type_s", "type_s_mcse", "exaggeration", "exaggeration_mcse"):
            out[k] = out[k].where(~zero)
        if bounds:
            lo, hi = (a.values for a in arrays[3:])
            cover = (lo <= tv) & (tv <= hi)
            live = rejected & np.isfinite(lo) & np.isfinite(hi)
            rate("coverage_rejected", cover, live)
    return out
