"""Performance measures of a result cube, each with its Monte Carlo SE.

``summarize(cube)`` reduces a cube with dims ``(*factors, replicate, method)``
over ``replicate`` into an ``xr.Dataset`` with dims ``(*factors, method)``
holding the measures of Morris, White & Crowther (2019, Stat Med 38:2074,
Table 6) and ``n_ok, n_failed, n_pending``. Only tasks with status 1 (ok)
count. Measures that cannot be computed are absent and listed, with the
reason, in ``result.attrs["skipped"]``.

The work is split: ``summary`` checks the arguments and labels the
result; ``plans`` says which outputs each method's measures read, and the
truth; ``blocks`` reads and summarises the cube block by block;
``registry`` declares the built-in measures and ``measures`` computes them;
``records`` flattens a summary. docs/analysis.md states every formula.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

import numpy as np
import xarray as xr

from simstudy.analysis.blocks import Options, block_axes, by_blocks, summarize_block
from simstudy.analysis.ledger import CONVERGED, KINDS, RecordIndex
from simstudy.analysis.measures import NEEDS, Measure, UserFunc, Wald
from simstudy.analysis.plans import (
    Truth,
    declarations,
    note_zero_truth,
    outputs_of,
    plans,
)
from simstudy.analysis.records import RESERVED
from simstudy.analysis.registry import BUILTINS, CASES, MEASURES
from simstudy.analysis.selection import subset
from simstudy.cube import METHOD
from simstudy.cube import REPLICATE as REP
from simstudy.errors import UsageError

__all__ = ["CASES", "LEDGER", "Measure", "failure_ledger", "summarize"]

UserMeasure = Measure | UserFunc
BLOCK_BYTES = 32 * 2**20  # cube bytes per block; peak memory is ~10x (temporaries)
# the failure ledger (simstudy.analysis.ledger): one rate per kind of non-result,
# plus warning_rate_<category> for each warning category the cube has
LEDGER = tuple(f"failure_rate_{k}" for k in KINDS)


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
        usable ones), ``"complete"`` (those every method has), ``"no_warnings"``
        (from tasks without a warning), ``"fallback"`` (a declared fallback's
        values where a method gave none); a list: side by side, dim ``cases``.
    winsorize
        ``k``: clip each cell's estimates to ``[Q1 - k IQR, Q3 + k IQR]``
        before every measure (simhelpers' ``winz``); ``n_winsorized``.
    measures, custom
        Names of the measures to keep (default: all); user-defined measures
        ``{name: func or simstudy.Measure}`` (as ``measures``: with every built-in).
    methods, points
        Summarise only these methods (a name or a list) and levels
        (``{"n": [20, 50]}``; a level may be given as text, ``"20"``).

    Returns
    -------
    xr.Dataset
        ``<measure>``, ``<measure>_mcse``, the failure ledger
        (``failure_rate_<kind>``, ``warning_rate_<category>``), ``n_ok,
        n_failed, n_pending`` (+ ``n_dropped``, ``n_fallback``); ``attrs``:
        ``skipped`` (why a measure is missing), ``intervals``, ``tests``
        (where coverage and power come from).

    Raises
    ------
    UsageError
        Unknown output, method, measure or ``cases``; alpha, level not in (0, 1).
    """
    options = dict(locals())  # every keyword but the cut and the strategies
    for name in ("cube", "cases", "methods", "points"):
        del options[name]
    cube = subset(cube, methods=methods, points=points)
    if isinstance(cases, str):
        return _summarize(cube, cases=cases, **options)
    names = _strategies(cases)
    return _side_by_side([_summarize(cube, cases=c, **options) for c in names], names)


def _strategies(cases: Sequence[str]) -> list[str]:
    """A list of ``cases``: each once, each known, at least one."""
    names = list(dict.fromkeys(cases))
    if not names:
        raise UsageError(
            "cases is an empty list.", hint='write cases=["available", "complete"]'
        )
    for name in names:
        _check_cases(name)
    return names


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
    _check_warnings(cube, cases)
    methods = _methods(cube, reference)
    keep = _selection(measures, mine)
    decls = declarations(cube, methods, estimate=estimate, se=se, ci=ci, p=p)
    if reference is not None and decls[reference].get("skip"):
        raise UsageError(
            f"the reference method {reference!r} has no estimate to compare "
            f"with: {decls[reference]['skip']}.",
            hint="choose a method with an estimate as --reference",
        )
    groups = plans(cube, decls, truth, mine, df)
    factors = [str(f) for f in cube["status"].dims if f not in (REP, METHOD)]
    records = RecordIndex.from_cube(cube)
    options = Options(
        wald=Wald(level=level, alpha=alpha, df=df, null=null),
        cases=cases,
        measures=(*(m for m in BUILTINS if _computed(m, keep)), *mine),
        reference=reference,
        records=records,
        categories=tuple(records.categories()),
        winsorize=winsorize,
    )
    needed = {"status", "warnings", "target_replicates", CONVERGED}
    needed |= outputs_of(groups, mine, df)
    sub = cube[sorted(v for v in needed if v in cube.data_vars)]
    out = by_blocks(
        sub,
        block_axes(sub, factors, groups),
        block_bytes,
        lambda block, index: summarize_block(block, index, groups, options),
    ).sel({METHOD: methods})
    out.attrs.update(alpha=alpha, level=level, df=df, null=null, reference=reference)
    out.attrs.update(cases=cases, outputs={m: decls[m] for m in methods})
    out.attrs.update(winsorize=winsorize)
    if mine:  # how the plots and the report show the user's measures
        out.attrs["custom"] = {m.name: m.shown() for m in mine}
    out = _tidy(out, cube)
    note_zero_truth(out, groups)
    return _select(out, keep) if keep is not None else out


def _check_warnings(cube: xr.Dataset, cases: str) -> None:
    if cases == "no_warnings" and "warnings" not in cube.data_vars:
        raise UsageError(
            "cases='no_warnings' needs the per-task warning counts; this cube "
            "has none (a store made before them).",
            hint='use cases="available", or run the study again into a new store',
        )


def _tidy(out: xr.Dataset, cube: xr.Dataset) -> xr.Dataset:
    """Counts as integers, points outside the design blank, and the counts
    and ledger kinds that are all zero left out."""
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
    return out


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


def _computed(measure: Measure, keep: list[str] | None) -> bool:
    """Whether summarize computes a built-in: not a ledger rate (counted
    apart), and asked for (every one when ``measures`` is not given)."""
    return not measure.ledger and (keep is None or measure.name in keep)


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
