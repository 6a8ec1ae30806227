"""Performance measures of a result cube, each with its Monte Carlo SE.

``summarize(cube)`` reduces a cube with dims ``(*factors, replicate, method)``
over ``replicate`` into an ``xr.Dataset`` with dims ``(*factors, method)``
holding the measures of Morris, White & Crowther (2019, Stat Med 38:2074,
Table 6) and ``n_ok, n_failed, n_pending``. Only tasks with status 1 (ok)
count. Measures that cannot be computed are absent and listed, with the
reason, in ``result.attrs["skipped"]``.

The work is split: ``summary`` checks the arguments, plans (which outputs
each method's measures use, the truth) and labels the result; ``blocks``
reads and summarises the cube block by block; ``registry`` declares the
built-in measures and ``measures`` computes them. docs/analysis.md states
every formula.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

import numpy as np
import xarray as xr

from simstudy.analysis.blocks import (
    Group,
    Options,
    block_axes,
    by_blocks,
    planned,
    summarize_block,
)
from simstudy.analysis.ledger import CONVERGED, KINDS, RecordIndex
from simstudy.analysis.measures import NEEDS, Measure, UserFunc, Wald
from simstudy.analysis.registry import BUILTINS, MEASURES
from simstudy.analysis.selection import subset
from simstudy.cube import METHOD
from simstudy.cube import REPLICATE as REP
from simstudy.errors import UsageError

__all__ = [
    "CASES",
    "LEDGER",
    "RESERVED",
    "Measure",
    "failure_ledger",
    "pair",
    "planned",
    "summarize",
    "to_records",
]

Truth = float | Sequence[float] | np.ndarray[Any, Any] | Mapping[str, Any] | None
UserMeasure = Measure | UserFunc
CASES = ("available", "complete", "no_warnings", "fallback")
BLOCK_BYTES = 32 * 2**20  # cube bytes per block; peak memory is ~10x (temporaries)
# the failure ledger (simstudy.analysis.ledger): one rate per kind of non-result,
# plus warning_rate_<category> for each warning category the cube has
LEDGER = tuple(f"failure_rate_{k}" for k in KINDS)
RESERVED = (
    "n_ok",
    "n_failed",
    "n_pending",
    "n_dropped",
    "n_nonfinite",
    "n_fallback",
    "n_winsorized",
)


def pair(value: float, mcse: float | None) -> str:
    """``value (MCSE)``: two significant digits of the MCSE set the decimals."""
    if mcse is None or not math.isfinite(mcse) or mcse <= 0:
        return f"{value:.4g}"
    decimals = min(8, max(0, 1 - math.floor(math.log10(mcse))))
    return f"{value:.{decimals}f} ({mcse:.{decimals}f})"


def to_records(summary: xr.Dataset) -> list[dict[str, Any]]:
    """Flatten a summary: one record per design point x method x measure.

    Each record holds the factor levels (and the index along each extra dim
    of an array output), ``method``, ``n_ok``, ``n_failed``, ``n_pending``
    (and ``n_dropped`` with complete cases, ``n_nonfinite`` when some ok
    estimates are NaN or inf), ``measure``, ``value`` and
    ``mcse`` (NaN -> None). Measures follow ``registry.MEASURES``, then user-defined
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
    # plain Python levels (text levels are no numpy scalars: no .item())
    levels = {d: full[d].values.tolist() if d in full.coords else None for d in order}
    inside = values("in_design") if "in_design" in full.coords else None
    records = []
    for idx in np.ndindex(*(full.sizes[d] for d in order)):
        if inside is not None and not inside[idx]:
            continue  # outside the design: no row, not even an empty one
        where = {
            d: (levels[d][i] if levels[d] is not None else i)  # type: ignore[index]
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
    cases: str | Sequence[str] = "available",
    winsorize: float | None = None,
    measures: Sequence[str] | Mapping[str, UserMeasure] | None = None,
    custom: Mapping[str, UserMeasure] | None = None,
    methods: str | Sequence[str] | None = None,
    points: Mapping[str, Any] | None = None,
    block_bytes: int = BLOCK_BYTES,
) -> xr.Dataset:
    """Return per design point x method performance measures and their MCSEs.

    Parameters
    ----------
    cube
        A result cube, read in blocks of ``block_bytes``; array outputs are
        summarised element by element (the summary keeps their dims).
    estimate, se, ci, p, truth
        Outputs holding the estimate, SE, bounds, p-value (default: each
        method's declaration); truth: a number, an array, ``{output: value}``
        (default: ``study.truth``).
    alpha, level, df, null
        Without a declared p-value, ``power`` is the Wald test of
        ``(estimate - null) / se`` at ``alpha``; without declared bounds,
        intervals are ``estimate +- q * se``, ``q`` the ``1 - (1 - level)/2``
        quantile of N(0, 1), or of t with ``df`` (a number or an output).
    reference
        Compare with this method: ``relprec, bias_diff, mse_ratio, corr``.
    cases
        Which replicates the measures use: ``"available"`` (each method's
        usable ones), ``"complete"`` (only replicates every method has;
        ``n_dropped`` counts the rest), ``"no_warnings"`` (replicates whose
        task emitted no warning), ``"fallback"`` (where a method declaring
        ``@study.method(fallback=...)`` gave no result, its fallback's values
        in the same replicate; ``n_fallback`` counts them). A list of them
        gives a ``cases`` dimension, the strategies side by side.
    winsorize
        ``k``: clip each cell's estimates to ``[Q1 - k IQR, Q3 + k IQR]``
        before every measure (simhelpers' ``winz``); ``n_winsorized``.
    measures, custom
        Names of the measures to keep (default: all); user-defined measures
        ``{name: func or simstudy.analysis.summary.Measure}``. A mapping given as
        ``measures`` is read as ``custom`` with every built-in measure.
    methods, points
        Summarise only these methods (a name or a list) and levels
        (``{"n": [20, 50]}``; a level may be given as text, ``"20"``).

    Returns
    -------
    xr.Dataset
        ``<measure>``, ``<measure>_mcse``, the failure ledger
        (``failure_rate_<kind>``, ``warning_rate_<category>``), ``n_ok,
        n_failed, n_pending`` (+ ``n_dropped``, ``n_fallback``);
        ``attrs["skipped"]``: why a measure is missing;
        ``attrs["intervals"]``, ``["tests"]``: where coverage, power come from.

    Raises
    ------
    UsageError
        Unknown output, method, measure, ``cases``; ``alpha``/``level``
        outside (0, 1).
    """
    cube = subset(cube, methods=methods, points=points)
    options: dict[str, Any] = {
        "estimate": estimate,
        "truth": truth,
        "se": se,
        "ci": ci,
        "p": p,
        "alpha": alpha,
        "level": level,
        "df": df,
        "null": null,
        "reference": reference,
        "winsorize": winsorize,
        "measures": measures,
        "custom": custom,
        "block_bytes": block_bytes,
    }
    if isinstance(cases, str):
        return _summarize(cube, cases=cases, **options)
    names = list(dict.fromkeys(cases))
    if not names:
        raise UsageError(
            "cases is an empty list.", hint='write cases=["available", "complete"]'
        )
    for name in names:
        _check_cases(name)
    parts = [_summarize(cube, cases=name, **options) for name in names]
    return _side_by_side(parts, names)


def _side_by_side(parts: list[xr.Dataset], names: list[str]) -> xr.Dataset:
    """Summaries under several ``cases`` along a ``cases`` dimension."""
    counts = {str(v) for part in parts for v in part.data_vars if str(v) in RESERVED}
    filled = []
    for part in parts:
        missing = {c: xr.zeros_like(part["n_ok"]) for c in counts - set(part.data_vars)}
        filled.append(part.assign(missing))
    out = xr.concat(
        filled,
        dim=xr.DataArray(names, dims="cases", name="cases"),
        data_vars="all",
        coords="minimal",
        compat="override",
        join="outer",
        combine_attrs="override",
    )
    skipped: dict[str, Any] = {}
    for key in dict.fromkeys(k for part in parts for k in part.attrs["skipped"]):
        why = {
            n: q.attrs["skipped"].get(key) for n, q in zip(names, parts, strict=True)
        }
        kinds = {json.dumps(v, sort_keys=True) for v in why.values()}
        # one reason for every strategy, or the reason under each strategy
        skipped[key] = next(iter(why.values())) if len(kinds) == 1 else why
    out.attrs["skipped"] = skipped
    out.attrs["cases"] = names
    return out


def _summarize(
    cube: xr.Dataset,
    *,
    estimate: str | None,
    truth: Truth,
    se: str | None,
    ci: tuple[str, str] | None,
    p: str | None,
    alpha: float,
    level: float,
    df: float | str | None,
    null: float,
    reference: str | None,
    cases: str,
    winsorize: float | None,
    measures: Sequence[str] | Mapping[str, UserMeasure] | None,
    custom: Mapping[str, UserMeasure] | None,
    block_bytes: int,
) -> xr.Dataset:
    """``summarize`` under one ``cases`` strategy."""
    if isinstance(measures, Mapping):
        custom, measures = {**measures, **(custom or {})}, None
    mine = _custom(custom or {})
    _check_args(alpha=alpha, level=level, cases=cases, df=df)
    _check_winsorize(winsorize)
    if cases == "no_warnings" and "warnings" not in cube.data_vars:
        raise UsageError(
            "cases='no_warnings' needs the per-task warning counts; this cube "
            "has none (a store made before them).",
            hint='use cases="available", or run the study again into a new store',
        )
    methods = _methods(cube, reference)
    keep = _selection(measures, mine)
    decls = _declarations(cube, methods, estimate=estimate, se=se, ci=ci, p=p)
    if reference is not None and decls[reference].get("skip"):
        raise UsageError(
            f"the reference method {reference!r} has no estimate to compare "
            f"with: {decls[reference]['skip']}.",
            hint="choose a method with an estimate as --reference",
        )
    plans = _plans(cube, decls, truth, mine, df)
    factors = [str(f) for f in cube["status"].dims if f not in (REP, METHOD)]
    records = RecordIndex.from_cube(cube)
    wald = Wald(level=level, alpha=alpha, df=df, null=null)
    options = Options(
        wald=wald,
        cases=cases,
        measures=(*(m for m in BUILTINS if not m.ledger), *mine),
        reference=reference,
        records=records,
        categories=tuple(records.categories()),
        winsorize=winsorize,
    )
    needed = {"status", "warnings", "target_replicates", CONVERGED}
    needed |= _outputs(plans, mine, df)
    sub = cube[sorted(v for v in needed if v in cube.data_vars)]
    out = by_blocks(
        sub,
        block_axes(sub, factors, plans),
        block_bytes,
        lambda block, index: summarize_block(block, index, plans, options),
    ).sel({METHOD: methods})
    out.attrs.update(alpha=alpha, level=level, df=df, null=null, reference=reference)
    out.attrs.update(cases=cases, outputs={m: decls[m] for m in methods})
    out.attrs.update(winsorize=winsorize)
    if mine:  # how the plots and the report show the user's measures
        out.attrs["custom"] = {m.name: m.shown() for m in mine}
    for variable in out.variables.values():  # not the store's dtypes (int8 status)
        variable.encoding = {}
    for count in RESERVED:  # a method without an estimate counts 0, not NaN
        if count in out:
            out[count] = out[count].fillna(0).astype(np.int64)
    if "in_design" in cube.coords:
        out = _design_only(out, cube["in_design"])
    if "n_nonfinite" in out and not bool(out["n_nonfinite"].any()):
        out = out.drop_vars("n_nonfinite")  # shown only when there are some
    if not bool((out["failure_rate_unknown"] > 0).any()):  # no record missing
        out = out.drop_vars(["failure_rate_unknown", "failure_rate_unknown_mcse"])
    _note_zero_truth(out, plans)
    return _select(out, keep) if keep is not None else out


def _check_winsorize(given: float | None) -> None:
    k: Any = given  # from the user: any type
    if k is not None and not (isinstance(k, int | float) and k > 0):
        raise UsageError(
            f"winsorize must be a positive number (IQRs beyond the quartiles), "
            f"got {k!r}.",
            hint="write winsorize=3 (simhelpers' winz default), or leave it out",
        )


def _design_only(out: xr.Dataset, in_design: xr.DataArray) -> xr.Dataset:
    """Points outside the design (``where=``) were never tasks: nothing is
    pending there and no measure is shown (``to_records`` skips them)."""
    keep = in_design.values.astype(bool)
    if keep.all():
        return out.assign_coords(in_design=in_design)
    masked = {}
    for name, var in out.data_vars.items():
        if not set(in_design.dims) <= set(var.dims):
            continue
        if str(name).startswith("n_"):
            masked[name] = var.where(in_design, 0).astype(var.dtype)
        elif var.dtype.kind == "f":
            masked[name] = var.where(in_design)
    return out.assign(masked).assign_coords(in_design=in_design)


def _methods(cube: xr.Dataset, reference: str | None) -> list[str]:
    """The cube's methods; ``reference`` must be one of them."""
    methods = [str(m) for m in cube[METHOD].values]
    if reference is not None and reference not in methods:
        raise UsageError(
            f"unknown reference method {reference!r}",
            hint=f"choose one of: {', '.join(methods)}",
        )
    return methods


def _plans(
    cube: xr.Dataset,
    decls: dict[str, dict[str, Any]],
    truth: Truth,
    custom: Sequence[Measure],
    df: float | str | None,
) -> list[Group]:
    """Group the methods declaring the same outputs; check the outputs exist."""
    groups: dict[str, list[str]] = {}
    for m, d in decls.items():
        groups.setdefault(json.dumps(d, sort_keys=True), []).append(m)
    plans = []
    for key, names in groups.items():
        d = json.loads(key)
        if d.get("skip"):
            plans.append(Group(names, d, None))
            continue
        wanted = [d["estimate"], d.get("se"), d.get("p"), *(d.get("ci") or ())]
        wanted += [m.output for m in custom]
        wanted.append(df if isinstance(df, str) else None)
        for name in wanted:
            _check_output(cube, name)
        plans.append(Group(names, d, _truth(cube, d["estimate"], truth)))
    return plans


def _declarations(
    cube: xr.Dataset,
    methods: list[str],
    **given: Any,
) -> dict[str, dict[str, Any]]:
    """Per method: the outputs to summarise (arguments win over declarations)."""
    meta = cube.attrs.get("simstudy", {})
    stored = meta.get("measures", {}) if isinstance(meta, Mapping) else {}
    outputs = meta.get("outputs", {}) if isinstance(meta, Mapping) else {}
    given = {k: v for k, v in given.items() if v is not None}
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
        declared = "estimate" in d
        if not declared:
            d["estimate"] = "estimate" if "estimate" in cube.data_vars else "value"
        if d.get("fallback") not in methods:  # the fallback is not in this cube
            d.pop("fallback", None)
        known = outputs.get(m)
        for key in ("se", "p", "ci"):  # declared, never returned: not there
            names = (d[key] if key == "ci" else [d[key]]) if key in d else []
            if key not in given and any(
                v not in cube.data_vars or (known is not None and v not in known)
                for v in names
            ):
                d.setdefault("unreturned", {})[key] = d.pop(key)
        if "estimate" not in given:
            why = _no_estimate(cube, m, d["estimate"] if declared else None, known)
            if why:
                d["skip"] = why
        out[m] = d
    return out


def _no_estimate(
    cube: xr.Dataset, method: str, declared: str | None, known: list[str] | None
) -> str | None:
    """Why a method has no estimate to summarise (None: it has one);
    ``declared``: its declared estimate (None: the default, estimate/value)."""
    names = [declared] if declared else ["estimate", "value"]
    if known is not None and not any(n in known for n in names):
        what = (
            f"returns no output {declared!r}"
            if declared
            else "declares no estimate and returns no output 'estimate' or 'value'"
        )
        return (
            f"method {method!r} {what} (its outputs: {', '.join(known)}); "
            "declare @study.method(estimate=...) to summarise one"
        )
    if not any(n in cube.data_vars for n in names):
        either = " or ".join(map(repr, names))
        return f"no ok task of method {method!r} returned output {either}"
    return None


def _check_args(*, alpha: float, level: float, cases: str, df: Any) -> None:
    for name, value in (("alpha", alpha), ("level", level)):
        if not 0 < value < 1:
            raise UsageError(
                f"{name} must be between 0 and 1 (exclusive), got {value!r}.",
                hint=f"write {name}={0.05 if name == 'alpha' else 0.95}",
            )
    _check_cases(cases)
    if df is not None and not isinstance(df, str) and not float(df) > 0:
        raise UsageError(
            f"df must be a positive number or an output name, got {df!r}.",
            hint="write df=24, or df=None for normal (Wald) intervals",
        )


def _check_cases(cases: str) -> None:
    if cases not in CASES:
        raise UsageError(
            f"cases must be one of {', '.join(map(repr, CASES))}, got {cases!r}.",
            hint='write cases="complete" to use only replicates every method has',
        )


def _custom(custom: Mapping[str, UserMeasure]) -> tuple[Measure, ...]:
    """The user's measures, named by their keys."""
    out = []
    for name, spec in custom.items():
        if name in MEASURES or name in RESERVED:
            raise UsageError(
                f"custom measure {name!r} has the name of a built-in measure.",
                hint=f"rename it, e.g. {name}_custom",
            )
        if isinstance(spec, Measure):
            out.append(_checked(replace(spec, name=name)))
        elif callable(spec):
            out.append(Measure(spec, name=name))
        else:
            raise UsageError(
                f"custom measure {name!r} is {spec!r}, not a function or Measure.",
                hint="pass {name: func} with func(x, truth) -> one value per row",
            )
    return tuple(out)


def _checked(measure: Measure) -> Measure:
    """A user's ``Measure``: a function to compute it, needs simstudy knows."""
    if measure.func is None and measure.kernel is None:
        raise UsageError(
            f"custom measure {measure.name!r} has no function.",
            hint="write Measure(func) with func(x, truth) -> one value per row",
        )
    unknown = [need for need in measure.needs if need not in NEEDS]
    if unknown:
        raise UsageError(
            f"custom measure {measure.name!r} needs {unknown[0]!r}, which is "
            f"none of {', '.join(NEEDS)}.",
            hint='write needs=("truth",) for a measure that needs the truth',
        )
    return measure


def _selection(
    measures: Sequence[str] | None, custom: Sequence[Measure]
) -> list[str] | None:
    if measures is None:
        return None
    if isinstance(measures, str):
        measures = [m.strip() for m in measures.split(",") if m.strip()]
    valid = [*MEASURES, *LEDGER, *(m.name for m in custom)]
    unknown = [
        m for m in measures if m not in valid and not m.startswith("warning_rate_")
    ]
    if unknown:
        raise UsageError(
            f"unknown measure {unknown[0]!r}; the measures are: {', '.join(valid)}.",
            hint="choose from that list: measures=['bias', 'coverage'] "
            "(--measures bias,coverage)",
        )
    return list(measures)


def _select(out: xr.Dataset, keep: list[str]) -> xr.Dataset:
    names = [n for n in out.data_vars if str(n).startswith("n_")]
    for rate in ("failure_rate", "warning_rate"):  # the ledger details them
        if rate in keep:
            keep = [*keep, *(str(v) for v in out.data_vars if str(v).startswith(rate))]
    keep = list(dict.fromkeys(v.removesuffix("_mcse") for v in keep))
    names += [v for m in keep for v in (m, f"{m}_mcse") if v in out.data_vars]
    res = out[names]
    res.attrs = dict(out.attrs)
    res.attrs["skipped"] = {k: v for k, v in out.attrs["skipped"].items() if k in keep}
    return res


def _outputs(plans: list[Group], custom: Sequence[Measure], df: Any) -> set[str]:
    names = {str(df)} if isinstance(df, str) else set()
    for group in plans:
        decl = group.decl
        if decl.get("skip"):
            continue
        names |= {decl["estimate"], *(decl.get("ci") or ())}
        names |= {decl[k] for k in ("se", "p") if decl.get(k)}
    names |= {m.output for m in custom if m.output}
    return names


def _check_output(cube: xr.Dataset, name: str | None) -> None:
    if name is None or name in cube.data_vars:
        return
    outputs = [str(v) for v in cube.data_vars if REP in cube[v].dims]
    raise UsageError(
        f"unknown output {name!r}",
        hint=f"the cube's outputs are: {', '.join(sorted(outputs))}",
    )


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
    levels = {f: cube[f].values.tolist() for f in factors}  # text levels too
    fixed = {  # factors selected down to one level: cube.sel(n=30)
        str(f): cube.coords[f].item()
        for f in meta.get("factor_order", [])
        if f in cube.coords and cube.coords[f].ndim == 0
    }
    for idx in np.ndindex(*grid):
        point = {
            **fixed,
            **{f: levels[f][i] for f, i in zip(factors, idx, strict=True)},
        }
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


def failure_ledger(cube: xr.Dataset, **options: Any) -> xr.Dataset:
    """Return the failure ledger: per design point x method x ``kind``, the
    rate of each kind of non-result and of each warning category.

    ``kind`` holds ``data_error, method_error, timeout, worker_died,
    not_converged, nonfinite`` (``simstudy.analysis.ledger`` defines each), then
    ``warning:<category>`` for each warning category the cube has. Every
    kind is there even when its rate is 0 everywhere: a ledger says so.

    Parameters
    ----------
    cube
        A result cube (``open_results``; the kinds of failed tasks come from
        the store's failure records it carries).
    options
        Passed to ``summarize`` (e.g. ``estimate=``, which ``nonfinite`` reads).

    Returns
    -------
    xr.Dataset
        ``rate``, ``rate_mcse`` (binomial), ``count`` (tasks), ``n_finished``
        (tasks ok or failed, the denominator); ``attrs["all_zero"]``: no
        non-result and no warning anywhere.
    """
    options.setdefault("measures", ["failure_rate", "warning_rate"])
    full = summarize(cube, **options)
    names = [str(v) for v in full.data_vars if str(v).startswith("failure_rate_")]
    names += [str(v) for v in full.data_vars if str(v).startswith("warning_rate_")]
    names = [v for v in names if not v.endswith("_mcse")]
    kinds = [
        v.removeprefix("failure_rate_")
        if v.startswith("failure_rate_")
        else "warning:" + v.removeprefix("warning_rate_")
        for v in names
    ]
    dim = xr.DataArray(kinds, dims="kind", name="kind")
    rate = xr.concat([full[v] for v in names], dim=dim)
    mcse = xr.concat([full[f"{v}_mcse"] for v in names], dim=dim)
    finished = full["n_ok"] + full["n_failed"]
    out = xr.Dataset(
        {
            "rate": rate,
            "rate_mcse": mcse,
            "count": (rate * finished).round().fillna(0).astype(np.int64),
            "n_finished": finished,
        }
    )
    factors = [str(d) for d in full["n_ok"].dims if d != METHOD]
    out = out.transpose(*factors, METHOD, "kind")
    out.attrs["all_zero"] = not bool((out["count"] > 0).any())
    return out
