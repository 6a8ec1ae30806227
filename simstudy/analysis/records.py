"""A summary as flat records, and ``value (MCSE)`` as text.

``to_records`` turns a summary into one record per design point x method x
measure (the command line's tables, CSV and JSON, the report's tables);
``pair`` writes a value with as many decimals as its MCSE supports.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import xarray as xr

from simstudy.analysis.registry import MEASURES
from simstudy.cube import METHOD

__all__ = ["RESERVED", "decimals_for", "pair", "to_records", "with_mcse"]

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
    """``value (MCSE)`` as :func:`with_mcse` writes it; a value with no MCSE
    (or a zero one) alone, to 4 significant digits."""
    if mcse is None or not math.isfinite(mcse) or mcse <= 0:
        return f"{value:.4g}"
    return with_mcse(value, mcse)


def decimals_for(mcse: float) -> int:
    """Decimals that show an MCSE to two significant digits (0 to 8)."""
    if not np.isfinite(mcse) or mcse <= 0:
        return 4
    d = 1 - math.floor(math.log10(mcse))
    if round(mcse, d) >= 10.0 ** (2 - d):  # 0.00996 rounds up to 0.010
        d -= 1
    return int(min(8, max(0, d)))


def with_mcse(value: float, mcse: float | None) -> str:
    """``0.934 (0.011)``: the value to the decimals its MCSE supports."""
    if not np.isfinite(value):
        return ""
    if mcse is None or not np.isfinite(mcse):
        return f"{value:.4g}"
    if mcse <= 1e-7 * abs(value) or mcse == 0:
        # every replicate agrees (a share of 0 or 1, a constant SE) but for
        # rounding: no digits to set
        return f"{value:.4g} (0)"
    if max(abs(value), mcse) >= 1e6 or mcse < 5e-9:
        # a method far off, or an MCSE below 8 decimals: powers of ten
        return f"{value:.3g} ({mcse:.2g})"
    d = decimals_for(mcse)
    return f"{value:.{d}f} ({mcse:.{d}f})"


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
