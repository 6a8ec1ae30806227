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
    Inputs,
    Measure,
    Paired,
    Wald,
    evaluate,
    share,
    winsorized,
)
from simstudy.analysis.plans import Group
from simstudy.cube import FAILED, FIXED_VARS, METHOD, OK, PENDING
from simstudy.cube import REPLICATE as REP
from simstudy.errors import UsageError

__all__ = [
    "Options",
    "block_axes",
    "by_blocks",
    "fallback_block",
    "planned",
    "summarize_block",
]


@dataclass(frozen=True, slots=True)
class Options:
    """What every block is summarised with: ``measures``, those each group
    of methods computes (the registry's but the ledger's, then the user's)."""

    wald: Wald
    cases: str
    measures: tuple[Measure, ...]
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
    names = {group.decl["estimate"] for group in plans if not group.decl.get("skip")}
    dims = [d[0] for d in first.values() if d]
    if len(names) != 1 or not dims or len(dims) != len(first):
        return axes
    if len({cube.sizes[d] for d in dims}) != 1:
        return axes
    return [*axes, (f"{names.pop()}_dim_0", dims)]


def summarize_block(
    cube: xr.Dataset, index: dict[str, slice], plans: list[Group], options: Options
) -> xr.Dataset:
    """Summarise one in-memory block of design points, every method."""
    status = cube["status"]
    factors = [str(d) for d in status.dims if d not in (REP, METHOD)]
    out: dict[str, xr.DataArray] = _counts(status, planned(cube))
    skipped: dict[str, dict[str, str]] = {}
    estimates = {
        method: cube[group.decl["estimate"]].sel({METHOD: method}, drop=True)
        for group in plans
        if not group.decl.get("skip")
        for method in group.names
    }
    codes = kind_codes(cube, options.records, estimates)
    ran = codes >= 0  # tasks that finished, ok or failed
    out.update(share("failure_rate", status == FAILED, ran))
    no_estimate = [m for group in plans if group.decl.get("skip") for m in group.names]
    categories = list(options.categories)
    out.update(ledger_rates(codes, categories, options.records, no_estimate))
    if "warnings" in cube.data_vars:
        out.update(share("warning_rate", cube["warnings"] > 0, ran))
    else:
        why = "the cube has no per-task warning counts (a store made before them)"
        skipped["warning_rate"] = dict.fromkeys(map(str, cube[METHOD].values), why)
    use = usable(cube)
    ok = _cases(cube, use, options.cases)
    if options.cases in ("complete", "no_warnings"):
        out["n_dropped"] = (use & ~ok).sum(REP).astype(np.int64)
    if options.cases == "fallback":
        cube, ok, out["n_fallback"] = fallback_block(cube, ok, codes, plans)
    reference = _paired(cube, index, plans, ok, options.reference)
    parts = []
    for group in plans:
        sub = cube.sel({METHOD: group.names}) if len(plans) > 1 else cube
        theta = None if group.theta is None else _isel(group.theta, index)
        group_ok = ok.sel({METHOD: group.names})
        data, why_not = _group(sub, group, theta, group_ok, options, reference)
        for measure, why in why_not.items():
            skipped.setdefault(measure, {}).update(dict.fromkeys(group.names, why))
        parts.append(data)
    measures = _joined(parts, plans, out["n_ok"])
    res = xr.merge([xr.Dataset(out), measures], join="outer", compat="override")
    res = res.transpose(*factors, METHOD, ...)
    n_methods = cube.sizes[METHOD]
    res.attrs = {
        # measure -> reason, or measure -> {method: reason} when it varies
        "skipped": {
            k: next(iter(v.values()))
            if len(set(v.values())) == 1 and len(v) == n_methods
            else v
            for k, v in skipped.items()
        },
        "intervals": {m: _source(group, "ci") for group in plans for m in group.names},
        "tests": {m: _source(group, "p") for group in plans for m in group.names},
    }
    return res


def _joined(
    parts: list[dict[str, xr.DataArray]], plans: list[Group], n_ok: xr.DataArray
) -> xr.Dataset:
    """The groups' measures along ``METHOD``; a measure one group cannot
    compute is NaN for its methods."""
    names = {k for part in parts for k in part}
    filled = [
        xr.Dataset(part).assign(
            {
                k: xr.full_like(n_ok, np.nan, dtype=np.float64).sel(
                    {METHOD: group.names}
                )
                for k in names - set(part)
            }
        )
        for part, group in zip(parts, plans, strict=True)
    ]
    return filled[0] if len(filled) == 1 else xr.concat(filled, dim=METHOD)


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
    group = next(group for group in plans if reference in group.names)
    x = cube[group.decl["estimate"]].sel({METHOD: reference}, drop=True)
    theta = None if group.theta is None else _isel(group.theta, index)
    return Paired(reference, x, ok.sel({METHOD: reference}, drop=True), theta)


def _source(group: Group, kind: str) -> str | None:
    if group.decl.get(kind):
        return f"declared: {group.decl[kind]}"
    return None if not group.decl.get("se") else "Wald from se"


def _isel(a: xr.DataArray, index: Mapping[str, slice]) -> xr.DataArray:
    return a.isel({k: v for k, v in index.items() if k in a.dims})


def _group(
    cube: xr.Dataset,
    group: Group,
    theta: xr.DataArray | None,
    ok: xr.DataArray,
    options: Options,
    reference: Paired | None,
) -> tuple[dict[str, xr.DataArray], dict[str, str]]:
    """Measures of the methods sharing one output declaration, and why
    those it cannot compute are missing (the need it does not meet)."""
    decl = group.decl
    if decl.get("skip"):
        return {}, {m.name: decl["skip"] for m in options.measures}
    x = cube[decl["estimate"]]
    out: dict[str, xr.DataArray] = {}
    if options.winsorize is not None:
        x, out["n_winsorized"] = winsorized(x, ok, options.winsorize)
    # ok replicates whose estimate is NaN or inf: left out of the measures
    out["n_nonfinite"] = (ok & ~np.isfinite(x)).sum(REP).astype(np.int64)
    given = _inputs(cube, decl, x, ok, theta, reference, options)
    skipped: dict[str, str] = {}
    for need, why in _unmet(decl, given).items():  # the last unmet need wins
        skipped.update({m.name: why for m in options.measures if need in m.needs})
    out.update(evaluate([m for m in options.measures if m.name not in skipped], given))
    return out, skipped


def _inputs(
    cube: xr.Dataset,
    decl: dict[str, Any],
    x: xr.DataArray,
    ok: xr.DataArray,
    theta: xr.DataArray | None,
    reference: Paired | None,
    options: Options,
) -> Inputs:
    """What the group's declaration gives its measures: the SE, the
    interval and the test as declared, else Wald ones from the SE."""
    se = _aligned(cube, decl.get("se"), x)
    wald = options.wald
    interval: tuple[xr.DataArray, xr.DataArray] | None = None
    if decl.get("ci"):
        lo, hi = (_like(cube, name, x) for name in decl["ci"])
        interval = (lo, hi)
    elif se is not None:
        q = wald.quantile(1.0 - (1.0 - wald.level) / 2.0, cube)
        interval = (x - q * se, x + q * se)
    test: tuple[xr.DataArray, xr.DataArray] | None = None
    if decl.get("p"):
        pv = _like(cube, decl["p"], x)
        test = (pv < wald.alpha, pv)
    elif se is not None:
        stat = (x - wald.null) / se
        q = wald.quantile(1.0 - wald.alpha / 2.0, cube)
        test = (abs(stat) >= q, stat)  # as rsimsum: reject at |z| >= q
    outputs = {m.output: _like(cube, m.output, x) for m in options.measures if m.output}
    if reference is not None:
        reference = _like_ref(reference, x)
    return Inputs(x, ok, theta, se, interval, test, reference, outputs)


def _unmet(decl: dict[str, Any], given: Inputs) -> dict[str, str]:
    """Why the group lacks each need it does not meet (``NEEDS`` order)."""
    reasons = {
        "truth": f"no truth for output {decl['estimate']!r} "
        "(declare study.truth(...) or pass truth=)",
        "se": _undeclared(decl, "se", "standard-error output", "se=..."),
        "ci": _undeclared(decl, "ci", "interval outputs", "ci=(lo, hi)"),
        "p": _undeclared(decl, "p", "p-value output", "p=..."),
        "reference": "no reference method (--reference / reference=)",
    }
    return {need: reasons[need] for need in given.missing()}


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
    output = cube[name]
    if output.name == like.name:
        return output
    own = [d for d in output.dims if d not in like.dims]
    extra = [d for d in like.dims if d not in output.dims]
    if not own:
        return output
    shape = [output.sizes[d] for d in own]
    if len(own) != len(extra) or shape != [like.sizes[d] for d in extra]:
        raise UsageError(
            f"output {name!r} has shape {tuple(shape)} per task, but the estimate "
            f"{like.name!r} has {tuple(like.sizes[d] for d in extra)}.",
            hint="an SE, interval bound or p-value has the estimate's shape",
        )
    return output.rename(dict(zip(own, extra, strict=True)))


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
    by_method = {method: group for group in plans for method in group.names}
    filled = xr.zeros_like(ok.isel({REP: 0}, drop=True), dtype=np.int64)
    cube = cube.copy()
    ok = ok.copy()
    for method, group in by_method.items():
        fallback = group.decl.get("fallback")
        if not fallback or group.decl.get("skip"):
            continue
        spare = by_method[fallback].decl
        if spare.get("skip"):
            continue
        take = (codes.sel({METHOD: method}) > 0) & (codes.sel({METHOD: fallback}) == 0)
        pairs: list[tuple[str, str]] = [
            (str(group.decl[k]), str(spare[k]))
            for k in ("estimate", "se", "p")
            if group.decl.get(k) and spare.get(k)
        ]
        pairs += list(
            zip(group.decl.get("ci") or (), spare.get("ci") or (), strict=False)
        )
        for own, other in pairs:
            target = cube[own].copy(deep=True)
            source = _like(cube, other, target).sel({METHOD: fallback}, drop=True)
            mine = target.sel({METHOD: method}, drop=True)
            target.loc[{METHOD: method}] = mine.where(~take, source).transpose(
                *mine.dims
            )
            cube[own] = target
        ok.loc[{METHOD: method}] = ok.sel({METHOD: method}) | take
        filled.loc[{METHOD: method}] = take.sum(REP)
    return cube, ok, filled
