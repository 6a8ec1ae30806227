"""What each method's measures read: its outputs, its truth, its group.

``declarations`` says per method which outputs hold the estimate, SE,
bounds and p-value (arguments win over the study's declarations), or why
the method has no estimate; ``plans`` groups the methods declaring the same
outputs with their truth (``truth_of``: a number, an array, per design
point from ``study.truth``); ``outputs_of`` lists the outputs to read.
``summary`` and ``contrasts`` use them; ``blocks`` summarises each group.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import xarray as xr

from simstudy.analysis.measures import Measure
from simstudy.cube import METHOD, point_json
from simstudy.cube import REPLICATE as REP
from simstudy.errors import UsageError

__all__ = [
    "Group",
    "Truth",
    "declarations",
    "note_zero_truth",
    "outputs_of",
    "plans",
    "truth_of",
]

Truth = float | Sequence[float] | np.ndarray[Any, Any] | Mapping[str, Any] | None


@dataclass(frozen=True, slots=True)
class Group:
    """Methods that declare the same outputs, and their truth."""

    names: list[str]
    decl: dict[str, Any]
    theta: xr.DataArray | None


def plans(
    cube: xr.Dataset,
    decls: dict[str, dict[str, Any]],
    truth: Truth,
    custom: Sequence[Measure],
    df: float | str | None,
) -> list[Group]:
    """Group the methods declaring the same outputs; check the outputs exist."""
    groups: dict[str, list[str]] = {}
    for method, decl in decls.items():
        groups.setdefault(json.dumps(decl, sort_keys=True), []).append(method)
    out = []
    for key, names in groups.items():
        decl = json.loads(key)
        if decl.get("skip"):
            out.append(Group(names, decl, None))
            continue
        wanted = [decl["estimate"], decl.get("se"), decl.get("p")]
        wanted += [*(decl.get("ci") or ()), *(m.output for m in custom)]
        wanted.append(df if isinstance(df, str) else None)
        for name in wanted:
            _check_output(cube, name)
        out.append(Group(names, decl, truth_of(cube, decl["estimate"], truth)))
    return out


def declarations(
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
    for method in methods:
        decl = {k: v for k, v in dict(stored.get(method, {})).items() if v is not None}
        decl.update({k: (list(v) if k == "ci" else v) for k, v in given.items()})
        declared = "estimate" in decl
        if not declared:
            decl["estimate"] = "estimate" if "estimate" in cube.data_vars else "value"
        if decl.get("fallback") not in methods:  # the fallback is not in this cube
            decl.pop("fallback", None)
        known = outputs.get(method)
        for key in ("se", "p", "ci"):  # declared, never returned: not there
            names = (decl[key] if key == "ci" else [decl[key]]) if key in decl else []
            if key not in given and any(
                v not in cube.data_vars or (known is not None and v not in known)
                for v in names
            ):
                decl.setdefault("unreturned", {})[key] = decl.pop(key)
        if "estimate" not in given:
            estimate = decl["estimate"] if declared else None
            why = _no_estimate(cube, method, estimate, known)
            if why:
                decl["skip"] = why
        out[method] = decl
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


def outputs_of(plans: list[Group], custom: Sequence[Measure], df: Any) -> set[str]:
    """Every output the measures read (the rest of the cube stays unread)."""
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


def truth_of(cube: xr.Dataset, estimate: str, truth: Truth) -> xr.DataArray | None:
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
        entry = stored.get(point_json(point), {})
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


def note_zero_truth(out: xr.Dataset, plans: list[Group]) -> None:
    """Relative bias is undefined where the truth is 0: say where."""
    reasons: dict[str, str] = {}
    for group in plans:
        if group.theta is None or not bool((group.theta == 0).any()):
            continue
        zero = group.theta == 0
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
        reasons.update(dict.fromkeys(group.names, why))
    if reasons:
        methods = [str(m) for m in out[METHOD].values]
        one = set(reasons.values())
        out.attrs["skipped"]["relbias"] = (
            one.pop() if len(one) == 1 and len(reasons) == len(methods) else reasons
        )
