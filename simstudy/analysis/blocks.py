"""Summarise a cube block by block: where to cut it, and one in-memory block.

``by_blocks`` loads blocks of design points (and of an array output's
elements) one at a time, at most a byte budget each, applies a function and
joins the results; ``summarize_block`` computes every measure of one block
for every method, group by group of methods that declare the same outputs
(formulas in ``measures``). ``summary.summarize`` plans and calls them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import xarray as xr

from simstudy.analysis.ledger import RecordIndex, kind_codes, ledger_rates, usable
from simstudy.analysis.measures import (
    Measure,
    Paired,
    Wald,
    bias_measures,
    conditional_measures,
    custom_measures,
    interval_measures,
    mean_sd,
    median_bias,
    modelse,
    paired_measures,
    power,
    share,
    winsorized,
)
from simstudy.cube import FAILED, FIXED_VARS, METHOD, OK, PENDING
from simstudy.cube import REPLICATE as REP
from simstudy.errors import UsageError

__all__ = [
    "CONDITIONAL",
    "GROUP_MEASURES",
    "Group",
    "Options",
    "block_axes",
    "by_blocks",
    "fallback_block",
    "planned",
    "summarize_block",
]


# the measures one group of methods computes from its outputs
TRUTH_MEASURES = ("bias", "relbias", "mse", "rmse", "mae", "median_bias")
CONDITIONAL = ("coverage_rejected", "type_s", "exaggeration")
GROUP_MEASURES = (
    "mean",
    "empse",
    *TRUTH_MEASURES,
    "modelse",
    "relerr_modelse",
    "coverage",
    "becoverage",
    "ci_width",
    "power",
    *CONDITIONAL,
    "relprec",
    "bias_diff",
    "mse_ratio",
    "corr",
)


@dataclass(frozen=True, slots=True)
class Group:
    """Methods that declare the same outputs, and their truth."""

    names: list[str]
    decl: dict[str, Any]
    theta: xr.DataArray | None


@dataclass(frozen=True, slots=True)
class Options:
    """What every block is summarised with."""

    wald: Wald
    cases: str
    specs: dict[str, Measure]
    reference: str | None
    records: RecordIndex = field(default_factory=RecordIndex)
    categories: tuple[str, ...] = ()  # warning categories of the whole cube
    winsorize: float | None = None


def by_blocks(
    cube: xr.Dataset,
    axes: list[tuple[str, list[str]]],
    budget: int,
    func: Callable[[xr.Dataset, dict[str, slice]], xr.Dataset],
) -> xr.Dataset:
    """Apply ``func`` to blocks of the cube loaded one at a time (each at
    most ``budget`` bytes, or one cell of ``axes``) and join the results.

    ``axes`` are the dims blocks are cut along, outermost first, each as
    (the result's dim, the cube dims sliced alike): the factors, then
    possibly the first element dim of array outputs (an estimate and its
    SE are cut at the same elements)."""
    sizes = [cube.sizes[dims[0]] for _, dims in axes]
    cells = max(1, int(np.prod(sizes)))
    per_cell = cube.nbytes / cells
    depth = next(
        (d for d in range(len(axes) + 1) if np.prod(sizes[d:]) * per_cell <= budget),
        len(axes),
    )
    if depth == 0:
        return func(cube.load(), {})
    step = max(1, int(budget // (float(np.prod(sizes[depth:])) * per_cell)))

    def nest(level: int, index: dict[str, slice]) -> Any:
        dims, size = axes[level][1], sizes[level]
        if level == depth - 1:
            return [
                run({**index, **dict.fromkeys(dims, slice(i, i + step))})
                for i in range(0, size, step)
            ]
        return [
            nest(level + 1, {**index, **dict.fromkeys(dims, slice(i, i + 1))})
            for i in range(size)
        ]

    def run(index: dict[str, slice]) -> xr.Dataset:
        return func(cube.isel(index).load(), index)

    combined: xr.Dataset = xr.combine_nested(
        nest(0, {}),
        concat_dim=[name for name, _ in axes[:depth]],
        data_vars="minimal",  # counts have no element dim: not repeated
        coords="minimal",
        compat="override",
        join="outer",
        combine_attrs="override",
    )
    return combined


def block_axes(
    cube: xr.Dataset, factors: list[str], plans: list[Group]
) -> list[tuple[str, list[str]]]:
    """The dims to cut blocks along: the factors, then the first element
    dim of the outputs when they all have one, of one size, and the
    methods share the estimate's name (the summary's element dim)."""
    axes = [(f, [f]) for f in factors]
    base = set(cube["status"].dims)
    first = {
        str(v): [str(d) for d in cube[v].dims if d not in base][:1]
        for v in cube.data_vars
        if REP in cube[v].dims and str(v) not in FIXED_VARS
    }
    names = {g.decl["estimate"] for g in plans if not g.decl.get("skip")}
    dims = [d[0] for d in first.values() if d]
    if len(names) != 1 or not dims or len(dims) != len(first):
        return axes
    if len({cube.sizes[d] for d in dims}) != 1:
        return axes
    return [*axes, (f"{names.pop()}_dim_0", dims)]


def summarize_block(
    cube: xr.Dataset, index: dict[str, slice], plans: list[Group], opts: Options
) -> xr.Dataset:
    """Summarise one in-memory block of design points, every method."""
    status = cube["status"]
    factors = [str(d) for d in status.dims if d not in (REP, METHOD)]
    out: dict[str, xr.DataArray] = _counts(status, planned(cube))
    skipped: dict[str, dict[str, str]] = {}
    estimates = {
        m: cube[g.decl["estimate"]].sel({METHOD: m}, drop=True)
        for g in plans
        if not g.decl.get("skip")
        for m in g.names
    }
    codes = kind_codes(cube, opts.records, estimates)
    ran = codes >= 0  # tasks that finished, ok or failed
    out.update(share("failure_rate", status == FAILED, ran))
    no_estimate = [m for g in plans if g.decl.get("skip") for m in g.names]
    out.update(ledger_rates(codes, list(opts.categories), opts.records, no_estimate))
    if "warnings" in cube.data_vars:
        out.update(share("warning_rate", cube["warnings"] > 0, ran))
    else:
        why = "the cube has no per-task warning counts (a store made before them)"
        skipped["warning_rate"] = dict.fromkeys(map(str, cube[METHOD].values), why)
    use = usable(cube)
    ok = _cases(cube, use, opts.cases)
    if opts.cases in ("complete", "no_warnings"):
        out["n_dropped"] = (use & ~ok).sum(REP).astype(np.int64)
    if opts.cases == "fallback":
        cube, ok, out["n_fallback"] = fallback_block(cube, ok, codes, plans)
    ref = _paired(cube, index, plans, ok, opts.reference)
    parts = []
    for g in plans:
        sub = cube.sel({METHOD: g.names}) if len(plans) > 1 else cube
        theta = None if g.theta is None else _isel(g.theta, index)
        group_ok = ok.sel({METHOD: g.names})
        data, why_not = _group(sub, g, theta, group_ok, opts, ref)
        for measure, why in why_not.items():
            skipped.setdefault(measure, {}).update(dict.fromkeys(g.names, why))
        parts.append(data)
    names = {k for part in parts for k in part}
    filled = [  # a measure one group cannot compute is NaN for its methods
        xr.Dataset(part).assign(
            {
                k: xr.full_like(out["n_ok"], np.nan, dtype=np.float64).sel(
                    {METHOD: g.names}
                )
                for k in names - set(part)
            }
        )
        for part, g in zip(parts, plans, strict=True)
    ]
    measures = filled[0] if len(filled) == 1 else xr.concat(filled, dim=METHOD)
    res = xr.merge([xr.Dataset(out), measures], join="outer", compat="override")
    order = [*factors, METHOD]
    res = res.transpose(*order, ...)
    n_methods = cube.sizes[METHOD]
    res.attrs = {
        # measure -> reason, or measure -> {method: reason} when it varies
        "skipped": {
            k: next(iter(v.values()))
            if len(set(v.values())) == 1 and len(v) == n_methods
            else v
            for k, v in skipped.items()
        },
        "intervals": {m: _source(g, "ci") for g in plans for m in g.names},
        "tests": {m: _source(g, "p") for g in plans for m in g.names},
    }
    return res


def _paired(
    cube: xr.Dataset,
    index: Mapping[str, slice],
    plans: list[Group],
    ok: xr.DataArray,
    reference: str | None,
) -> Paired | None:
    """The reference method's estimate (its own declared output), if any."""
    if reference is None:
        return None
    g = next(g for g in plans if reference in g.names)
    x = cube[g.decl["estimate"]].sel({METHOD: reference}, drop=True)
    theta = None if g.theta is None else _isel(g.theta, index)
    return Paired(reference, x, ok.sel({METHOD: reference}, drop=True), theta)


def _source(g: Group, kind: str) -> str | None:
    if g.decl.get(kind):
        return f"declared: {g.decl[kind]}"
    return None if not g.decl.get("se") else "Wald from se"


def _isel(a: xr.DataArray, index: Mapping[str, slice]) -> xr.DataArray:
    return a.isel({k: v for k, v in index.items() if k in a.dims})


def _group(
    cube: xr.Dataset,
    g: Group,
    theta: xr.DataArray | None,
    ok: xr.DataArray,
    opts: Options,
    ref: Paired | None,
) -> tuple[dict[str, xr.DataArray], dict[str, str]]:
    """Measures of the methods sharing one output declaration."""
    d, skipped = g.decl, {}
    if d.get("skip"):
        return {}, dict.fromkeys(GROUP_MEASURES, d["skip"])
    est = d["estimate"]
    x = cube[est]
    extra: dict[str, xr.DataArray] = {}
    if opts.winsorize is not None:
        x, extra["n_winsorized"] = winsorized(x, ok, opts.winsorize)
    n, mean, sd = mean_sd(x, ok & np.isfinite(x))
    with np.errstate(divide="ignore", invalid="ignore"):
        out = {"mean": mean, "mean_mcse": sd / n**0.5, "empse": sd}
        out["empse_mcse"] = sd / (2.0 * (n - 1.0)) ** 0.5
    # ok replicates whose estimate is NaN or inf: left out of the measures
    out["n_nonfinite"] = (ok & ~np.isfinite(x)).sum(REP).astype(np.int64)
    out.update(extra)
    if theta is None:
        why = f"no truth for output {est!r} (declare study.truth(...) or pass truth=)"
        for m in (*TRUTH_MEASURES, "coverage", "mse_ratio", *CONDITIONAL):
            skipped[m] = why
    else:
        out.update(bias_measures(x, ok, theta))
        out.update(median_bias(x, ok, theta))
    se = _aligned(cube, d.get("se"), x)
    if se is None:
        for m in ("modelse", "relerr_modelse"):
            skipped[m] = _undeclared(d, "se", "standard-error output", "se=...")
    else:
        out.update(modelse(se, x, ok))
    wald = opts.wald
    interval: tuple[xr.DataArray, xr.DataArray] | None = None
    if d.get("ci"):
        lo, hi = (_like(cube, name, x) for name in d["ci"])
        interval = (lo, hi)
    elif se is not None:
        q = wald.quantile(1.0 - (1.0 - wald.level) / 2.0, cube)
        interval = (x - q * se, x + q * se)
    else:
        for m in ("coverage", "becoverage", "ci_width", "coverage_rejected"):
            skipped[m] = _undeclared(d, "ci", "interval outputs", "ci=(lo, hi)")
    if interval is not None:
        out.update(interval_measures(*interval, x, ok, theta))
    test: tuple[xr.DataArray, xr.DataArray] | None = None
    if d.get("p"):
        pv = _like(cube, d["p"], x)
        test = (pv < wald.alpha, pv)
    elif se is not None:
        stat = (x - wald.null) / se
        q = wald.quantile(1.0 - wald.alpha / 2.0, cube)
        test = (abs(stat) >= q, stat)  # as rsimsum: reject at |z| >= q
    else:
        for m in ("power", *CONDITIONAL):
            skipped[m] = _undeclared(d, "p", "p-value output", "p=...")
    if test is not None:
        out.update(power(test[0], ok, test[1]))
        if theta is not None:
            used = ok & np.isfinite(test[1])
            out.update(conditional_measures(x, used, test[0], theta, interval))
    if ref is None:
        for m in ("relprec", "bias_diff", "mse_ratio", "corr"):
            skipped[m] = "no reference method (--reference / reference=)"
    else:
        out.update(paired_measures(x, ok, _like_ref(ref, x), theta))
    if opts.specs:
        values = {
            k: _like(cube, s.output, x) if s.output else x
            for k, s in opts.specs.items()
        }
        out.update(custom_measures(opts.specs, values, ok, theta))
    return out, skipped


def _undeclared(decl: dict[str, Any], key: str, what: str, example: str) -> str:
    """Why a method has no ``key`` output: not declared, or never returned."""
    missing = decl.get("unreturned", {}).get(key)
    if missing is not None:
        return f"the method declares {key}={missing!r} but returns no such output"
    return f"no {what} declared (@study.method({example}))"


def _aligned(
    cube: xr.Dataset, name: str | None, like: xr.DataArray
) -> xr.DataArray | None:
    return None if name is None else _like(cube, name, like)


def _like(cube: xr.Dataset, name: str, like: xr.DataArray) -> xr.DataArray:
    """Output ``name`` with its own dims renamed to those of ``like`` (the
    estimate), so an array output pairs element by element with its SE."""
    a = cube[name]
    if a.name == like.name:
        return a
    own = [d for d in a.dims if d not in like.dims]
    extra = [d for d in like.dims if d not in a.dims]
    if not own:
        return a
    shape = [a.sizes[d] for d in own]
    if len(own) != len(extra) or shape != [like.sizes[d] for d in extra]:
        raise UsageError(
            f"output {name!r} has shape {tuple(shape)} per task, but the estimate "
            f"{like.name!r} has {tuple(like.sizes[d] for d in extra)}.",
            hint="an SE, interval bound or p-value has the estimate's shape",
        )
    return a.rename(dict(zip(own, extra, strict=True)))


def _like_ref(ref: Paired, like: xr.DataArray) -> Paired:
    """The reference's estimate with ``like``'s dim names (same shape)."""
    own = [d for d in ref.x.dims if d not in like.dims]
    extra = [d for d in like.dims if d not in ref.x.dims and d != METHOD]
    if not own:
        return ref
    if [ref.x.sizes[d] for d in own] != [like.sizes[d] for d in extra]:
        raise UsageError(
            f"the reference method {ref.name!r} returns an estimate of another "
            f"shape than {like.name!r}.",
            hint="compare methods whose estimates have the same shape",
        )
    names = dict(zip(own, extra, strict=True))
    theta = ref.theta
    if theta is not None:
        theta = theta.rename({k: v for k, v in names.items() if k in theta.dims})
    return Paired(ref.name, ref.x.rename(names), ref.ok, theta)


def _counts(status: xr.DataArray, planned: xr.DataArray) -> dict[str, xr.DataArray]:
    """Tasks ok, failed, and pending among the ``planned`` ones."""
    return {
        "n_ok": (status == OK).sum(REP).astype(np.int64),
        "n_failed": (status == FAILED).sum(REP).astype(np.int64),
        "n_pending": ((status == PENDING) & planned).sum(REP).astype(np.int64),
    }


def planned(cube: xr.Dataset) -> xr.DataArray:
    """The replicates a design point is meant to have: all of them, except
    after a --target-mcse run, which stops each point at its own count
    (``target_replicates``); replicates past it are not pending work."""
    reps = cube[REP]
    if "target_replicates" not in cube.data_vars:
        return xr.ones_like(reps, dtype=bool)
    target = cube["target_replicates"]
    return (reps < target) | (target == 0)


def _cases(cube: xr.Dataset, use: xr.DataArray, cases: str) -> xr.DataArray:
    """The replicates each method's measures use under a ``cases`` strategy."""
    if cases == "complete":
        return use & use.all(METHOD)
    if cases == "no_warnings":
        return use & (cube["warnings"] == 0)
    return use  # available; fallback starts here and adds the fallback's values


def fallback_block(
    cube: xr.Dataset, ok: xr.DataArray, codes: xr.DataArray, plans: list[Group]
) -> tuple[xr.Dataset, xr.DataArray, xr.DataArray]:
    """Where a method with a declared fallback gave no result (any kind of
    the ledger) and its fallback gave a usable one in the same replicate,
    take the fallback's estimate, SE, bounds and p-value there.

    Returns the block with those values in place, the replicates each
    method now uses, and per method the count of replicates filled in.
    """
    by_method = {m: g for g in plans for m in g.names}
    filled = xr.zeros_like(ok.isel({REP: 0}, drop=True), dtype=np.int64)
    cube = cube.copy()
    ok = ok.copy()
    for m, g in by_method.items():
        f = g.decl.get("fallback")
        if not f or g.decl.get("skip") or by_method[f].decl.get("skip"):
            continue
        fg = by_method[f]
        take = (codes.sel({METHOD: m}) > 0) & (codes.sel({METHOD: f}) == 0)
        pairs: list[tuple[str, str]] = [
            (str(g.decl[k]), str(fg.decl[k]))
            for k in ("estimate", "se", "p")
            if g.decl.get(k) and fg.decl.get(k)
        ]
        pairs += list(
            zip(g.decl.get("ci") or (), fg.decl.get("ci") or (), strict=False)
        )
        for own, other in pairs:
            target = cube[own].copy(deep=True)
            source = _like(cube, other, target).sel({METHOD: f}, drop=True)
            mine = target.sel({METHOD: m}, drop=True)
            target.loc[{METHOD: m}] = mine.where(~take, source).transpose(*mine.dims)
            cube[own] = target
        ok.loc[{METHOD: m}] = ok.sel({METHOD: m}) | take
        filled.loc[{METHOD: m}] = take.sum(REP)
    return cube, ok, filled
