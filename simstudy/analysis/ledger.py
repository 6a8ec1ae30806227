"""The failure ledger: every kind of non-result, per design point x method.

A task that finished (status ok or failed) either gave a usable result or
one of these non-results, each counted once, in this order of precedence:

- ``data_error``: the data function raised (every method of the replicate);
- ``method_error``: the method raised, or returned outputs the engine
  refused (not numeric, another shape);
- ``timeout``: a call ran past ``--task-timeout``;
- ``worker_died``: the worker process died running the task (or its batch);
- ``not_converged``: the task is ok but the method said it did not converge,
  by returning the output ``converged`` as 0 / False
  (``return {"estimate": b, "converged": fit.converged}``);
- ``nonfinite``: the task is ok and converged, but its estimate is NaN or
  infinite;
- ``unknown``: a failed task without a failure record (an in-memory cube
  not read from a store); present only when there is one.

Each rate is a share of the finished tasks (status ok or failed) with the
binomial MCSE ``sqrt(p (1 - p) / n)``; the kinds add up to the share of
non-results. Warnings are counted by category: the category of the first
warning a task emitted (the store keeps the first one and the count).

The kinds of failed tasks come from the store's failure records, which
``open_results`` attaches to the cube as ``attrs["records"]`` (compact:
point, replicate, method, kind or category); the rest comes from the cube.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import xarray as xr

from simstudy.cube import FAILED, METHOD, OK, PENDING, point_json
from simstudy.cube import REPLICATE as REP

__all__ = [
    "CODED",
    "CONVERGED",
    "FAILED_KINDS",
    "KINDS",
    "RecordIndex",
    "failure_kind",
    "kind_codes",
    "ledger_rates",
    "scalar_levels",
    "usable",
]

CONVERGED = "converged"  # the output a method sets to 0 / False: did not converge
FAILED_KINDS = ("data_error", "method_error", "timeout", "worker_died")
KINDS = (*FAILED_KINDS, "not_converged", "nonfinite")
UNKNOWN = "unknown"
# per-task codes: 0 a usable result, -1 not finished, else 1 + index in CODED
CODED = (*KINDS, UNKNOWN)


def failure_kind(record: Mapping[str, Any]) -> str:
    """The kind of a failure record: its exception type and message say it."""
    kind = str(record.get("type", ""))
    message = str(record.get("message", ""))
    if kind == "TaskTimeout":
        return "timeout"
    if kind in ("WorkerDied", "KilledWorker") or message.startswith(
        "the worker running this batch failed"
    ):
        return "worker_died"
    if message.startswith("data function"):
        return "data_error"
    return "method_error"


@dataclass(frozen=True, slots=True)
class RecordIndex:
    """Failure kinds and warning categories by design point.

    ``failures[point_key][(replicate, method)] = kind`` and likewise
    ``warnings`` with the first warning's category.
    """

    failures: dict[str, dict[tuple[int, str], str]] = field(default_factory=dict)
    warnings: dict[str, dict[tuple[int, str], str]] = field(default_factory=dict)
    known: bool = False  # read from a store (else failed tasks are "unknown")

    @classmethod
    def from_cube(cls, cube: xr.Dataset) -> RecordIndex:
        """Index what ``open_results`` attached (``attrs["records"]``), for
        the cube's design points (a factor selected down to one level, a
        scalar coordinate, keeps only that level's records)."""
        given = cube.attrs.get("records")
        if not isinstance(given, Mapping):
            return cls()
        factors = [str(f) for f in cube["status"].dims if f not in (REP, METHOD)]
        fixed = scalar_levels(cube)
        out = cls(known=True)
        for name, target in (("failures", out.failures), ("warnings", out.warnings)):
            for point, replicate, method, what in given.get(name, ()):
                levels = json.loads(point)
                if any(levels.get(f, v) != v for f, v in fixed.items()):
                    continue
                key = point_json({f: levels[f] for f in factors if f in levels})
                target.setdefault(key, {})[(int(replicate), str(method))] = str(what)
        return out

    def categories(self) -> list[str]:
        """Every warning category, sorted."""
        found = {c for d in self.warnings.values() for c in d.values()}
        return sorted(found)


def scalar_levels(cube: xr.Dataset) -> dict[str, Any]:
    """Factors selected down to one level (scalar coordinates): their level."""
    meta = cube.attrs.get("simstudy", {})
    order = meta.get("factor_order", []) if isinstance(meta, Mapping) else []
    return {
        str(f): cube[f].values.item()
        for f in order
        if f in cube.coords and cube[f].ndim == 0
    }


def compact_records(
    failures: list[dict[str, Any]], warnings: list[dict[str, Any]], factors: list[str]
) -> dict[str, list[list[Any]]]:
    """What ``open_results`` attaches: [point, replicate, method, kind/category]."""

    def row(r: Mapping[str, Any], what: str) -> list[Any]:
        point = point_json({f: r[f] for f in factors if f in r})
        return [point, int(r["replicate"]), str(r["method"]), what]

    return {
        "failures": [row(r, failure_kind(r)) for r in failures],
        "warnings": [row(r, str(r.get("category", "Warning"))) for r in warnings],
    }


def _points(status: xr.DataArray) -> list[tuple[tuple[int, ...], str]]:
    """Each design point of a block: its index and key."""
    factors = [str(d) for d in status.dims if d not in (REP, METHOD)]
    levels = {f: status[f].values.tolist() for f in factors}
    out = []
    for idx in np.ndindex(*(status.sizes[f] for f in factors)):
        point = {f: levels[f][i] for f, i in zip(factors, idx, strict=True)}
        out.append((idx, point_json(point)))
    return out


def _lookup(
    status: xr.DataArray, table: dict[str, dict[tuple[int, str], str]], names: list[str]
) -> np.ndarray[Any, Any]:
    """Per task: the index in ``names`` of its entry in ``table``, else -1."""
    s = status.transpose(..., REP, METHOD)
    out = np.full(s.shape, -1, np.int16)
    reps = {int(r): i for i, r in enumerate(s[REP].values.tolist())}
    methods = {str(m): j for j, m in enumerate(s[METHOD].values.tolist())}
    code = {n: i for i, n in enumerate(names)}
    for idx, key in _points(s):
        for (r, m), what in table.get(key, {}).items():
            if r in reps and m in methods and what in code:
                out[(*idx, reps[r], methods[m])] = code[what]
    return out


def kind_codes(
    block: xr.Dataset, records: RecordIndex, estimates: Mapping[str, xr.DataArray]
) -> xr.DataArray:
    """Per task: -1 not finished, 0 usable, else 1 + its kind's index in CODED.

    ``estimates``: method -> its estimate (dims of status); a method absent
    from it has no estimate, so no ``nonfinite`` kind.
    """
    status = block["status"].transpose(..., REP, METHOD)
    codes = np.zeros(status.shape, np.int8)
    failed = status.values == FAILED
    if records.known:
        found = _lookup(status, records.failures, list(CODED))
        codes[failed] = np.where(found[failed] >= 0, found[failed] + 1, 0)
    unknown = failed & (codes == 0)
    codes[unknown] = 1 + CODED.index(UNKNOWN)
    ok = status.values == OK
    stopped = ok & ~_converged(block, status).values
    codes[stopped] = 1 + CODED.index("not_converged")
    methods = [str(m) for m in status[METHOD].values]
    for method, x in estimates.items():
        extra = [d for d in x.dims if d not in status.dims]
        bad = x.isnull() | (abs(x) == np.inf)
        if extra:
            bad = bad.any(extra)
        j = methods.index(method)
        col = codes[..., j]
        hit = ok[..., j] & (col == 0) & bad.transpose(*status.dims[:-1]).values
        col[hit] = 1 + CODED.index("nonfinite")
    codes[status.values == PENDING] = -1
    return status.copy(data=codes)


def _converged(block: xr.Dataset, status: xr.DataArray) -> xr.DataArray:
    """False where an ok task returned ``converged`` as 0 (NaN: not said)."""
    if CONVERGED not in block.data_vars:
        return xr.ones_like(status, dtype=bool)
    flag = block[CONVERGED]
    extra = [d for d in flag.dims if d not in status.dims]
    if extra:  # an array flag: converged only if every element says so
        flag = flag.min(extra)
    said_no = flag == 0
    return ~said_no.transpose(*status.dims)


def usable(block: xr.Dataset) -> xr.DataArray:
    """Tasks whose outputs summaries may use: ok, and not declared unconverged."""
    status = block["status"]
    return (status == OK) & _converged(block, status)


def ledger_rates(
    codes: xr.DataArray,
    categories: list[str],
    records: RecordIndex,
    no_estimate: Sequence[str] = (),
) -> dict[str, xr.DataArray]:
    """``failure_rate_<kind>`` (every kind in ``CODED``) and
    ``warning_rate_<category>``, each with ``_mcse``, over finished tasks.

    ``no_estimate``: methods without an estimate (``nonfinite`` is NaN there).
    """
    codes = codes.transpose(..., REP, METHOD)
    values = codes.values  # numpy: one pass per kind, no xarray overhead
    axis = values.ndim - 2
    n = (values >= 0).sum(axis=axis).astype(np.float64)
    cells = codes.isel({REP: 0}, drop=True)
    cells.encoding = {}  # the store's int8 status encoding is not a rate's
    out: dict[str, xr.DataArray] = {}

    def rate(name: str, hit: np.ndarray[Any, Any]) -> None:
        with np.errstate(divide="ignore", invalid="ignore"):
            p = hit.sum(axis=axis) / n
            out[name] = cells.copy(data=p)
            out[f"{name}_mcse"] = cells.copy(data=np.sqrt(p * (1.0 - p) / n))

    for i, kind in enumerate(CODED):  # "unknown" is dropped by the caller if all 0
        rate(f"failure_rate_{kind}", values == 1 + i)
    if no_estimate:
        gone = codes[METHOD].isin(list(no_estimate))
        for k in ("failure_rate_nonfinite", "failure_rate_nonfinite_mcse"):
            out[k] = out[k].where(~gone)
    if categories:
        found = _lookup(codes, records.warnings, categories)
        for i, category in enumerate(categories):
            rate(f"warning_rate_{category}", (found == i) & (values >= 0))
    return out
