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
from collections.abc import Mapping
from typing import Any

import numpy as np
import xarray as xr

from simstudy.errors import UsageError

__all__ = ["MEASURES", "summarize", "to_records"]

from simstudy.cube import METHOD
from simstudy.cube import REPLICATE as REP

OK, FAILED, PENDING = 1, 2, 0

Truth = float | Mapping[str, float] | None
MEASURES = (
    "mean",
    "bias",
    "relbias",
    "empse",
    "mse",
    "rmse",
    "modelse",
    "relerr_modelse",
    "coverage",
    "becoverage",
    "power",
    "relprec",
    "failure_rate",
    "warning_rate",
)


def to_records(summary: xr.Dataset) -> list[dict[str, Any]]:
    """Flatten a summary: one record per design point x method x measure.

    Each record holds the factor levels, ``method``, ``n_ok``, ``n_failed``,
    ``n_pending``, ``measure``, ``value`` and ``mcse`` (NaN -> None). Measures
    follow ``MEASURES``; a measure that is NaN for a cell is left out.
    """
    factors = [str(d) for d in summary["n_ok"].dims if d != METHOD]
    present = [m for m in MEASURES if m in summary.data_vars]
    records = []
    for idx in np.ndindex(*(summary.sizes[f] for f in factors)):
        point = {
            f: summary[f].values[i].item() for f, i in zip(factors, idx, strict=True)
        }
        for method in summary[METHOD].values:
            cell = summary.sel({METHOD: method, **point})
            counts = {k: int(cell[k]) for k in ("n_ok", "n_failed", "n_pending")}
            for measure in present:
                value = float(cell[measure])
                if np.isnan(value):
                    continue
                mcse = (
                    float(cell[f"{measure}_mcse"])
                    if f"{measure}_mcse" in cell
                    else float("nan")
                )
                records.append(
                    {
                        **point,
                        "method": str(method),
                        **counts,
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
    reference: str | None = None,
) -> xr.Dataset:
    """Return per design point x method performance measures and their MCSEs.

    Which outputs are the estimate, its SE, the interval bounds and the
    p-value comes from the arguments, else from each method's declaration
    (``@study.method(estimate=..., se=..., ci=(lo, hi), p=...)``, stored in
    the cube), else the estimate is ``estimate`` (``value`` for methods that
    return a bare number). Methods declaring the same outputs are summarised
    together; the results are joined along ``method``.
    """
    methods = [str(m) for m in cube[METHOD].values]
    decls = _declarations(cube, methods, estimate=estimate, se=se, ci=ci, p=p)
    groups: dict[str, list[str]] = {}
    for m in methods:
        groups.setdefault(json.dumps(decls[m], sort_keys=True), []).append(m)
    if reference is not None and reference not in methods:
        raise UsageError(
            f"unknown reference method {reference!r}",
            hint=f"choose one of: {', '.join(methods)}",
        )
    parts: list[xr.Dataset] = []
    skipped: dict[str, dict[str, str]] = {}
    used: dict[str, dict[str, Any]] = {}
    for key, names in groups.items():
        d = json.loads(key)
        sub = cube if len(groups) == 1 else cube.sel({METHOD: names})
        ref = reference if reference in names else None
        part = _summarize(
            sub,
            estimate=d["estimate"],
            truth=truth,
            se=d.get("se"),
            ci=tuple(d["ci"]) if d.get("ci") else None,
            p=d.get("p"),
            alpha=alpha,
            level=level,
            reference=ref,
        )
        if reference is not None and ref is None:
            part.attrs["skipped"]["relprec"] = (
                f"reference {reference!r} declares other outputs than {names}"
            )
        for measure, why in part.attrs["skipped"].items():
            skipped.setdefault(measure, {}).update(dict.fromkeys(names, why))
        used.update(dict.fromkeys(names, d))
        parts.append(part)
    measures = {str(v) for part in parts for v in part.data_vars}
    parts = [  # a measure one group cannot compute is NaN for its methods
        part.assign(
            {
                v: xr.full_like(part["n_ok"], np.nan, dtype=np.float64)
                for v in measures - {str(x) for x in part.data_vars}
            }
        )
        for part in parts
    ]
    out = parts[0] if len(parts) == 1 else xr.concat(parts, dim=METHOD)
    out = out.sel({METHOD: methods})
    out.attrs = {
        "alpha": alpha,
        "level": level,
        "reference": reference,
        "outputs": used,  # method -> the outputs summarised
        # measure -> reason, or measure -> {method: reason} when it varies
        "skipped": {
            k: next(iter(v.values()))
            if len(set(v.values())) == 1 and len(v) == len(methods)
            else v
            for k, v in skipped.items()
        },
    }
    return out


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


def _summarize(
    cube: xr.Dataset,
    *,
    estimate: str,
    truth: Truth,
    se: str | None,
    ci: tuple[str, str] | None,
    p: str | None,
    alpha: float,
    level: float,
    reference: str | None,
) -> xr.Dataset:
    """Summarise methods that share one output declaration."""
    for name in (estimate, se, p, *(ci or ())):
        _check_output(cube, name)
    methods = [str(m) for m in cube[METHOD].values]
    if reference is not None and reference not in methods:
        raise UsageError(
            f"unknown reference method {reference!r}",
            hint=f"choose one of: {', '.join(methods)}",
        )
    cube = cube.load()
    factors = [str(d) for d in cube[estimate].dims if d not in (REP, METHOD)]
    ok = cube["status"] == OK
    out: dict[str, xr.DataArray] = _counts(cube["status"], planned(cube))
    skipped: dict[str, str] = {}
    ran = cube["status"] != PENDING  # tasks that finished, ok or failed
    n_ran = ran.sum(REP).astype(np.float64)
    out.update(_share("failure_rate", cube["status"] == FAILED, ran, n_ran))
    if "warnings" in cube.data_vars:
        out.update(_share("warning_rate", cube["warnings"] > 0, ran, n_ran))
    else:
        skipped["warning_rate"] = (
            "the cube has no per-task warning counts (a store made before them)"
        )
    theta = _truth(cube, estimate, truth, factors)
    with np.errstate(divide="ignore", invalid="ignore"):
        x = cube[estimate]
        n = out["n_ok"].astype(np.float64)
        mean, sd = _mean_sd(x, ok, n)
        out["mean"], out["mean_mcse"] = mean, sd / _sqrt(n)
        out["empse"], out["empse_mcse"] = sd, sd / _sqrt(2.0 * (n - 1.0))
        if theta is None:
            why = f"no truth for output {estimate!r} (declare study.truth(...) or pass truth=)"
            for m in ("bias", "relbias", "mse", "rmse", "coverage"):
                skipped[m] = why
        else:
            out.update(_bias_measures(x, ok, n, mean, sd, theta))
        if se is None:
            for m in ("modelse", "relerr_modelse"):
                skipped[m] = "no standard-error output declared (@study.method(se=...))"
        else:
            out.update(_modelse(cube[se], ok, n, sd))
        if ci is None:
            for m in ("coverage", "becoverage"):
                skipped[m] = "no interval outputs declared (@study.method(ci=(lo, hi)))"
        else:
            lo, hi = cube[ci[0]], cube[ci[1]]
            if theta is not None:
                out.update(_share("coverage", (lo <= theta) & (theta <= hi), ok, n))
            out.update(_share("becoverage", (lo <= mean) & (mean <= hi), ok, n))
        if p is None:
            skipped["power"] = "no p-value output declared (@study.method(p=...))"
        else:
            out.update(_share("power", cube[p] < alpha, ok, n))
        if reference is None:
            skipped["relprec"] = "no reference method (--reference / reference=)"
        else:
            out.update(_relprec(x, ok, reference))
    order = [*factors, METHOD]
    data = {k: v.transpose(*order) for k, v in out.items()}
    attrs = {
        "estimate": estimate,
        "alpha": alpha,
        "level": level,
        "reference": reference,
        "skipped": skipped,
    }
    return xr.Dataset(data, attrs=attrs)


def _sqrt(a: xr.DataArray) -> xr.DataArray:
    return a**0.5


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


def _mean_sd(
    x: xr.DataArray, ok: xr.DataArray, n: xr.DataArray
) -> tuple[xr.DataArray, xr.DataArray]:
    """Mean and sample SD (divisor n-1) of ``x`` over ok replicates."""
    mean = x.where(ok, 0.0).sum(REP) / n
    ss = ((x - mean).where(ok, 0.0) ** 2).sum(REP)
    return mean, (ss / (n - 1.0)) ** 0.5


def _truth(
    cube: xr.Dataset, estimate: str, truth: Truth, factors: list[str]
) -> xr.DataArray | None:
    """The true value per design point, or None when none is known."""
    if isinstance(truth, Mapping):
        value = truth.get(estimate)
        return None if value is None else xr.DataArray(float(value))
    if truth is not None:
        return xr.DataArray(float(truth))
    meta = cube.attrs.get("simstudy", {})
    stored = meta.get("truth") if isinstance(meta, Mapping) else None
    if not stored:
        return None
    coords = {f: cube[f] for f in factors}
    shape = tuple(cube.sizes[f] for f in factors)
    values = np.full(shape, np.nan)
    for idx in np.ndindex(*shape):
        point = {f: cube[f].values[i].item() for f, i in zip(factors, idx, strict=True)}
        entry = stored.get(json.dumps(point, sort_keys=True), {})
        if entry.get(estimate) is not None:
            values[idx] = float(entry[estimate])
    if np.isnan(values).all():
        return None
    return xr.DataArray(values, dims=factors, coords=coords)


def _bias_measures(
    x: xr.DataArray,
    ok: xr.DataArray,
    n: xr.DataArray,
    mean: xr.DataArray,
    sd: xr.DataArray,
    theta: xr.DataArray,
) -> dict[str, xr.DataArray]:
    bias, bias_mcse = mean - theta, sd / _sqrt(n)
    sq = (x - theta) ** 2
    mse = sq.where(ok, 0.0).sum(REP) / n
    mse_ss = ((sq - mse).where(ok, 0.0) ** 2).sum(REP)
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
    }


def _modelse(
    se: xr.DataArray, ok: xr.DataArray, n: xr.DataArray, empse: xr.DataArray
) -> dict[str, xr.DataArray]:
    v_mean, v_sd = _mean_sd(se**2, ok, n)
    modelse = _sqrt(v_mean)
    var_v = v_sd**2
    ratio = modelse / empse
    rel_var = var_v / (4.0 * n * modelse**4) + 1.0 / (2.0 * (n - 1.0))
    return {
        "modelse": modelse,
        "modelse_mcse": _sqrt(var_v / (4.0 * n * v_mean)),
        "relerr_modelse": 100.0 * (ratio - 1.0),
        "relerr_modelse_mcse": 100.0 * ratio * _sqrt(rel_var),
    }


def _share(
    name: str, hit: xr.DataArray, ok: xr.DataArray, n: xr.DataArray
) -> dict[str, xr.DataArray]:
    share = hit.where(ok, False).sum(REP) / n
    return {name: share, f"{name}_mcse": _sqrt(share * (1.0 - share) / n)}


def _relprec(
    x: xr.DataArray, ok: xr.DataArray, reference: str
) -> dict[str, xr.DataArray]:
    """Relative % precision vs ``reference`` over replicates where both are ok."""
    both = ok & ok.sel({METHOD: reference}, drop=True)
    n = both.sum(REP).astype(np.float64)
    mean, sd = _mean_sd(x, both, n)
    ref = x.sel({METHOD: reference}, drop=True)
    ref_mean, ref_sd = _mean_sd(ref, both, n)
    cross = ((x - mean) * (ref - ref_mean)).where(both, 0.0).sum(REP)
    rho = cross / (n - 1.0) / (sd * ref_sd)
    ratio2 = (ref_sd / sd) ** 2
    one_minus = (1.0 - rho**2).clip(min=0.0)
    return {
        "relprec": 100.0 * (ratio2 - 1.0),
        "relprec_mcse": 200.0 * ratio2 * _sqrt(one_minus / (n - 1.0)),
    }
