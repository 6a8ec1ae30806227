"""Performance measures of a result cube, each with its Monte Carlo SE.

``summarize(cube)`` reduces a cube with dims ``(*factors, replicate, method)``
over ``replicate`` into an ``xr.Dataset`` with dims ``(*factors, method)``
holding the measures of Morris, White & Crowther (2019, Stat Med 38:2074,
Table 6) and ``n_ok, n_failed, n_pending``. Only tasks with status 1 (ok)
count. Measures that cannot be computed are absent and listed, with the
reason, in ``result.attrs["skipped"]``.

Layers: imports ``errors`` only (plus numpy and xarray).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import xarray as xr

from simstudy.cube import METHOD
from simstudy.cube import REPLICATE as REP
from simstudy.errors import UsageError
from simstudy.measures import (
    Measure,
    Paired,
    UserFunc,
    Wald,
    bias_measures,
    custom_measures,
    interval_measures,
    mean_sd,
    modelse,
    paired_measures,
    power,
    share,
)

__all__ = ["CASES", "MEASURES", "Measure", "planned", "summarize", "to_records"]

OK, FAILED, PENDING = 1, 2, 0

Truth = float | Sequence[float] | np.ndarray[Any, Any] | Mapping[str, Any] | None
UserMeasure = Measure | UserFunc
CASES = ("available", "complete")
BLOCK_BYTES = 32 * 2**20  # cube bytes per block; peak memory is ~10x (temporaries)
MEASURES = (
    "mean",
    "bias",
    "relbias",
    "empse",
    "mse",
    "rmse",
    "mae",
    "modelse",
    "relerr_modelse",
    "coverage",
    "becoverage",
    "ci_width",
    "power",
    "relprec",
    "bias_diff",
    "mse_ratio",
    "corr",
    "failure_rate",
    "warning_rate",
)
RESERVED = ("n_ok", "n_failed", "n_pending", "n_dropped")


def to_records(summary: xr.Dataset) -> list[dict[str, Any]]:
    """Flatten a summary: one record per design point x method x measure.

    Each record holds the factor levels (and the index along each extra dim
    of an array output), ``method``, ``n_ok``, ``n_failed``, ``n_pending``
    (and ``n_dropped`` with complete cases), ``measure``, ``value`` and
    ``mcse`` (NaN -> None). Measures follow ``MEASURES``, then user-defined
    ones; a measure that is NaN for a cell is left out.
    """
    counts = [c for c in (*RESERVED,) if c in summary.data_vars]
    present = [m for m in MEASURES if m in summary.data_vars]
    present += [
        str(v)
        for v in summary.data_vars
        if str(v) not in present
        and str(v) not in counts
        and not str(v).endswith("_mcse")
        and str(v) not in MEASURES
    ]
    dims = [str(d) for d in summary["n_ok"].dims if d != METHOD]
    extra = [
        str(d)
        for m in present
        for d in summary[m].dims
        if d not in summary["n_ok"].dims
    ]
    extra = list(dict.fromkeys(extra))
    order = [*dims, *extra, METHOD]
    full = summary.transpose(*order, ...)

    def values(name: str) -> np.ndarray[Any, Any]:
        a = full[name]
        for d in order:  # broadcast to every dim the records iterate over
            if d not in a.dims:
                a = a.expand_dims({d: full.sizes[d]})
        return np.asarray(a.transpose(*order).values)

    counted = {c: values(c) for c in counts}
    vals = {m: values(m) for m in present}
    errs = {
        m: values(f"{m}_mcse") if f"{m}_mcse" in full.data_vars else None
        for m in present
    }
    levels = {d: full[d].values if d in full.coords else None for d in order}
    records = []
    for idx in np.ndindex(*(full.sizes[d] for d in order)):
        where = {
            d: (levels[d][i].item() if levels[d] is not None else i)  # type: ignore[index]
            for d, i in zip(order[:-1], idx, strict=False)
        }
        method = str(levels[METHOD][idx[-1]])  # type: ignore[index]
        n = {c: int(counted[c][idx]) for c in counts}
        for measure in present:
            value = float(vals[measure][idx])
            if np.isnan(value):
                continue
            err = errs[measure]
            mcse = float("nan") if err is None else float(err[idx])
            records.append(
                {
                    **where,
                    "method": method,
                    **n,
                    "measure": measure,
                    "value": value,
                    "mcse": None if np.isnan(mcse) else mcse,
                }
            )
    return records


def summarize(
    cube: xr.Dataset,
    *,
    estimate: str | None = None,
    truth: Truth = None,
    se: str | None = None,
    ci: tuple[str, str] | None = None,
    p: str | None = None,
    alpha: float = 0.05,
    level: float = 0.95,
    df: float | str | None = None,
    null: float = 0.0,
    reference: str | None = None,
    cases: str = "available",
    measures: Sequence[str] | Mapping[str, UserMeasure] | None = None,
    custom: Mapping[str, UserMeasure] | None = None,
    block_bytes: int = BLOCK_BYTES,
) -> xr.Dataset:
    """Return per design point x method performance measures and their MCSEs.

    Parameters
    ----------
    cube
        A result cube (``open_results``), dims ``(*factors, replicate,
        method_name, *output dims)``. It is read block by block of design
        points (at most ``block_bytes`` at a time), never whole.
    estimate, se, ci, p
        Which outputs are the estimate, its SE, the interval bounds and the
        p-value: from these arguments, else from each method's declaration
        (``@study.method(estimate=..., se=..., ci=(lo, hi), p=...)``, stored
        in the cube), else the estimate is ``estimate`` (``value`` for
        methods that return a bare number). Methods declaring the same
        outputs are summarised together; the results are joined along
        ``method_name``. An array output is summarised element by element:
        the summary keeps its extra dims.
    truth
        The true value(s): a number, an array shaped like the estimate, or
        ``{output: value}``; default: the truth stored by ``study.truth``.
    alpha, level, df, null
        Without a declared p-value, the rejection rate (``power``) is that of
        the Wald test of ``(estimate - null) / se`` at level ``alpha``;
        without declared interval bounds, coverage uses the Wald interval
        ``estimate +- q * se``, ``q`` the ``1 - (1 - level) / 2`` quantile of
        N(0, 1), or of Student's t with ``df`` degrees of freedom (a number,
        or the name of an output holding them per replicate).
    reference
        A method to compare the others with, on the replicates where both
        were used: ``relprec``, ``bias_diff``, ``mse_ratio``, ``corr``.
    cases
        ``"available"``: each method's own ok replicates; ``"complete"``:
        only replicates where every method is ok (``n_dropped`` counts the
        ok ones left out).
    measures
        Names of the measures to keep (default: all that can be computed);
        a mapping ``{name: function or Measure}`` is shorthand for
        ``custom=`` with every built-in measure.
    custom
        User-defined measures ``{name: func or simstudy.Measure}`` (see
        ``Measure``), each with ``<name>_mcse`` (jackknife by default).

    Returns
    -------
    xr.Dataset
        ``<measure>`` and ``<measure>_mcse`` for each measure computed, plus
        ``n_ok, n_failed, n_pending`` (and ``n_dropped`` with
        ``cases="complete"``). ``attrs["skipped"]`` gives, per measure not
        computed, the reason; ``attrs["intervals"]`` and ``attrs["tests"]``
        say, per method, where coverage and power come from.

    Raises
    ------
    UsageError
        An unknown output, method, measure or ``cases``; ``alpha`` or
        ``level`` outside (0, 1).
    """
    if isinstance(measures, Mapping):
        custom, measures = {**measures, **(custom or {})}, None
    specs = _custom_specs(custom or {})
    _check_args(alpha=alpha, level=level, cases=cases, df=df)
    methods = [str(m) for m in cube[METHOD].values]
    if reference is not None and reference not in methods:
        raise UsageError(
            f"unknown reference method {reference!r}",
            hint=f"choose one of: {', '.join(methods)}",
        )
    keep = _selection(measures, specs)
    decls = _declarations(cube, methods, estimate=estimate, se=se, ci=ci, p=p)
    groups: dict[str, list[str]] = {}
    for m in methods:
        groups.setdefault(json.dumps(decls[m], sort_keys=True), []).append(m)
    wald = Wald(level=level, alpha=alpha, df=df, null=null)
    plans = []
    for key, names in groups.items():
        d = json.loads(key)
        wanted = [d["estimate"], d.get("se"), d.get("p"), *(d.get("ci") or ())]
        wanted += [s.output for s in specs.values()]
        wanted.append(df if isinstance(df, str) else None)
        for name in wanted:
            _check_output(cube, name)
        theta = _truth(cube, d["estimate"], truth)
        plans.append(Group(names, d, theta))
    factors = [str(f) for f in cube["status"].dims if f not in (REP, METHOD)]
    needed = {"status", "warnings", "target_replicates", *_outputs(plans, specs, df)}
    sub = cube[[v for v in needed if v in cube.data_vars]]
    opts = Options(wald=wald, cases=cases, specs=specs, reference=reference)
    out = _by_blocks(
        sub, factors, block_bytes, lambda b, ix: _block(b, ix, plans, opts)
    )
    out = out.sel({METHOD: methods})
    out.attrs.update(
        {
            "alpha": alpha,
            "level": level,
            "df": df,
            "null": null,
            "reference": reference,
            "cases": cases,
            "outputs": {m: decls[m] for m in methods},
        }
    )
    _note_zero_truth(out, plans)
    return _select(out, keep) if keep is not None else out


def _declarations(
    cube: xr.Dataset,
    methods: list[str],
    **given: Any,
) -> dict[str, dict[str, Any]]:
    """Per method: the outputs to summarise (arguments win over declarations)."""
    meta = cube.attrs.get("simstudy", {})
    stored = meta.get("measures", {}) if isinstance(meta, Mapping) else {}
    out = {}
    for m in methods:
        d = {k: v for k, v in dict(stored.get(m, {})).items() if v is not None}
        d.update(
            {
                k: (list(v) if k == "ci" else v)
                for k, v in given.items()
                if v is not None
            }
        )
        if "estimate" not in d:
            d["estimate"] = "estimate" if "estimate" in cube.data_vars else "value"
        out[m] = d
    return out


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


def _check_args(*, alpha: float, level: float, cases: str, df: Any) -> None:
    for name, value in (("alpha", alpha), ("level", level)):
        if not 0 < value < 1:
            raise UsageError(
                f"{name} must be between 0 and 1 (exclusive), got {value!r}.",
                hint=f"write {name}={0.05 if name == 'alpha' else 0.95}",
            )
    if cases not in CASES:
        raise UsageError(
            f"cases must be one of {', '.join(map(repr, CASES))}, got {cases!r}.",
            hint='write cases="complete" to use only replicates every method has',
        )
    if df is not None and not isinstance(df, str) and not float(df) > 0:
        raise UsageError(
            f"df must be a positive number or an output name, got {df!r}.",
            hint="write df=24, or df=None for normal (Wald) intervals",
        )


def _custom_specs(custom: Mapping[str, UserMeasure]) -> dict[str, Measure]:
    out = {}
    for name, spec in custom.items():
        if name in MEASURES or name in RESERVED:
            raise UsageError(
                f"custom measure {name!r} has the name of a built-in measure.",
                hint=f"rename it, e.g. {name}_custom",
            )
        if isinstance(spec, Measure):
            out[name] = spec
        elif callable(spec):
            out[name] = Measure(spec)
        else:
            raise UsageError(
                f"custom measure {name!r} is {spec!r}, not a function or Measure.",
                hint="pass {name: func} with func(x, truth) -> one value per row",
            )
    return out


def _selection(
    measures: Sequence[str] | None, specs: Mapping[str, Measure]
) -> list[str] | None:
    if measures is None:
        return None
    if isinstance(measures, str):
        measures = [m.strip() for m in measures.split(",") if m.strip()]
    valid = [*MEASURES, *specs]
    unknown = [m for m in measures if m not in valid]
    if unknown:
        raise UsageError(
            f"unknown measure {unknown[0]!r}; the measures are: {', '.join(valid)}.",
            hint="choose from that list: measures=['bias', 'coverage'] "
            "(--measures bias,coverage)",
        )
    return list(measures)


def _select(out: xr.Dataset, keep: list[str]) -> xr.Dataset:
    names = [n for n in out.data_vars if str(n).startswith("n_")]
    names += [v for m in keep for v in (m, f"{m}_mcse") if v in out.data_vars]
    res = out[names]
    res.attrs = dict(out.attrs)
    res.attrs["skipped"] = {k: v for k, v in out.attrs["skipped"].items() if k in keep}
    return res


def _outputs(plans: list[Group], specs: Mapping[str, Measure], df: Any) -> set[str]:
    names = {str(df)} if isinstance(df, str) else set()
    for g in plans:
        d = g.decl
        names |= {d["estimate"], *(d.get("ci") or ())}
        names |= {d[k] for k in ("se", "p") if d.get(k)}
    names |= {s.output for s in specs.values() if s.output}
    return names


def _by_blocks(
    cube: xr.Dataset,
    factors: list[str],
    budget: int,
    func: Callable[[xr.Dataset, dict[str, slice]], xr.Dataset],
) -> xr.Dataset:
    """Apply ``func`` to blocks of design points loaded one at a time (each
    at most ``budget`` bytes, or one point) and join the results."""
    sizes = [cube.sizes[f] for f in factors]
    points = max(1, int(np.prod(sizes)))
    per_point = cube.nbytes / points
    depth = next(
        (
            d
            for d in range(len(factors) + 1)
            if np.prod(sizes[d:]) * per_point <= budget
        ),
        len(factors),
    )
    if depth == 0:
        return func(cube.load(), {})
    slab = float(np.prod(sizes[depth:])) * per_point
    step = max(1, int(budget // slab)) if depth <= len(factors) else 1

    def nest(level: int, index: dict[str, slice]) -> Any:
        f = factors[level]
        if level == depth - 1:
            starts = range(0, cube.sizes[f], step)
            return [run({**index, f: slice(i, i + step)}) for i in starts]
        return [
            nest(level + 1, {**index, f: slice(i, i + 1)}) for i in range(cube.sizes[f])
        ]

    def run(index: dict[str, slice]) -> xr.Dataset:
        return func(cube.isel(index).load(), index)

    blocks = nest(0, {})
    combined: xr.Dataset = xr.combine_nested(
        blocks, concat_dim=factors[:depth], combine_attrs="override"
    )
    return combined


def _block(
    cube: xr.Dataset, index: dict[str, slice], plans: list[Group], opts: Options
) -> xr.Dataset:
    """Summarise one in-memory block of design points, every method."""
    status = cube["status"]
    factors = [str(d) for d in status.dims if d not in (REP, METHOD)]
    task_ok = status == OK
    ok = task_ok & task_ok.all(METHOD) if opts.cases == "complete" else task_ok
    out: dict[str, xr.DataArray] = _counts(status, planned(cube))
    if opts.cases == "complete":
        out["n_dropped"] = (task_ok & ~ok).sum(REP).astype(np.int64)
    skipped: dict[str, dict[str, str]] = {}
    ran = status != PENDING  # tasks that finished, ok or failed
    out.update(share("failure_rate", status == FAILED, ran))
    if "warnings" in cube.data_vars:
        out.update(share("warning_rate", cube["warnings"] > 0, ran))
    else:
        why = "the cube has no per-task warning counts (a store made before them)"
        skipped["warning_rate"] = dict.fromkeys(map(str, cube[METHOD].values), why)
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
    est = d["estimate"]
    x = cube[est]
    n, mean, sd = mean_sd(x, ok & np.isfinite(x))
    with np.errstate(divide="ignore", invalid="ignore"):
        out = {"mean": mean, "mean_mcse": sd / n**0.5, "empse": sd}
        out["empse_mcse"] = sd / (2.0 * (n - 1.0)) ** 0.5
    if theta is None:
        why = f"no truth for output {est!r} (declare study.truth(...) or pass truth=)"
        for m in ("bias", "relbias", "mse", "rmse", "mae", "coverage", "mse_ratio"):
            skipped[m] = why
    else:
        out.update(bias_measures(x, ok, theta))
    se = _aligned(cube, d.get("se"), x)
    if se is None:
        for m in ("modelse", "relerr_modelse"):
            skipped[m] = "no standard-error output declared (@study.method(se=...))"
    else:
        out.update(modelse(se, x, ok))
    wald = opts.wald
    if d.get("ci"):
        lo, hi = (_like(cube, name, x) for name in d["ci"])
        out.update(interval_measures(lo, hi, x, ok, theta))
    elif se is not None:
        q = wald.quantile(1.0 - (1.0 - wald.level) / 2.0, cube)
        out.update(interval_measures(x - q * se, x + q * se, x, ok, theta))
    else:
        for m in ("coverage", "becoverage", "ci_width"):
            skipped[m] = "no interval outputs declared (@study.method(ci=(lo, hi)))"
    if d.get("p"):
        pv = _like(cube, d["p"], x)
        out.update(power(pv < wald.alpha, ok, pv))
    elif se is not None:
        stat = (x - wald.null) / se
        q = wald.quantile(1.0 - wald.alpha / 2.0, cube)
        out.update(power(abs(stat) >= q, ok, stat))  # as rsimsum: reject at |z| >= q
    else:
        skipped["power"] = "no p-value output declared (@study.method(p=...))"
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


def _check_output(cube: xr.Dataset, name: str | None) -> None:
    if name is None or name in cube.data_vars:
        return
    outputs = [str(v) for v in cube.data_vars if REP in cube[v].dims]
    raise UsageError(
        f"unknown output {name!r}",
        hint=f"the cube's outputs are: {', '.join(sorted(outputs))}",
    )


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


def _truth(cube: xr.Dataset, estimate: str, truth: Truth) -> xr.DataArray | None:
    """The true value per design point (and output element), or None."""
    x = cube[estimate]
    extra = [str(d) for d in x.dims if d not in cube["status"].dims]
    shape = tuple(x.sizes[d] for d in extra)
    if isinstance(truth, Mapping):
        truth = truth.get(estimate)
        if truth is None:
            return None
    if truth is not None:
        return xr.DataArray(_value(truth, shape, estimate), dims=extra)
    meta = cube.attrs.get("simstudy", {})
    stored = meta.get("truth") if isinstance(meta, Mapping) else None
    if not stored:
        return None
    factors = [str(d) for d in cube["status"].dims if d not in (REP, METHOD)]
    grid = tuple(cube.sizes[f] for f in factors)
    values = np.full(grid + shape, np.nan)
    for idx in np.ndindex(*grid):
        point = {f: cube[f].values[i].item() for f, i in zip(factors, idx, strict=True)}
        entry = stored.get(json.dumps(point, sort_keys=True), {})
        if entry.get(estimate) is not None:
            values[idx] = _value(entry[estimate], shape, estimate)
    if np.isnan(values).all():
        return None
    coords = {f: cube[f] for f in factors}
    return xr.DataArray(values, dims=[*factors, *extra], coords=coords)


def _value(value: Any, shape: tuple[int, ...], estimate: str) -> np.ndarray[Any, Any]:
    """A truth as an array of the estimate's shape (a number is broadcast)."""
    a = np.asarray(value, dtype=np.float64)
    if a.shape not in ((), shape):
        raise UsageError(
            f"the truth of {estimate!r} has shape {a.shape}, but the estimate "
            f"has shape {shape} per task.",
            hint="give one number, or an array of the estimate's shape",
        )
    return np.broadcast_to(a, shape)


def _note_zero_truth(out: xr.Dataset, plans: list[Group]) -> None:
    """Relative bias is undefined where the truth is 0: say where."""
    reasons: dict[str, str] = {}
    for g in plans:
        if g.theta is None or not bool((g.theta == 0).any()):
            continue
        zero = g.theta == 0
        factors = [d for d in zero.dims if d in out.dims and d != METHOD]
        if factors:
            at = zero.any([d for d in zero.dims if d not in factors])
            pts = at.where(at, drop=True).to_dataframe(name="z").index
            shown = [
                ", ".join(
                    f"{f}={v}" for f, v in zip(factors, np.atleast_1d(p), strict=True)
                )
                for p in pts[:3]
            ]
            where = " at " + "; ".join(shown) + (" ..." if len(pts) > 3 else "")
        else:
            where = ""
        why = f"the truth is 0{where}: relative bias is undefined there"
        reasons.update(dict.fromkeys(g.names, why))
    if reasons:
        methods = [str(m) for m in out[METHOD].values]
        one = set(reasons.values())
        out.attrs["skipped"]["relbias"] = (
            one.pop() if len(one) == 1 and len(reasons) == len(methods) else reasons
        )
