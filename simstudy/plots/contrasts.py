"""The contrast plot: a paired difference (or ratio) per design point, with
its Monte Carlo interval (``simstudy.contrast``)."""

from __future__ import annotations

import numpy as np
import xarray as xr

from simstudy.cube import METHOD
from simstudy.errors import UsageError
from simstudy.plots.common import COLORS, PlotFigure, add_note, new_figure

__all__ = ["contrast_plot"]

Z95 = 1.959963984540054


def _contrast_var(contrast: xr.Dataset) -> str:
    """The ``<measure>_diff`` or ``<measure>_ratio`` variable of a contrast."""
    names = [
        str(v)
        for v in contrast.data_vars
        if str(v).endswith(("_diff", "_ratio")) and f"{v}_mcse" in contrast
    ]
    if len(names) != 1:
        raise UsageError(
            "contrast_plot draws what simstudy.contrast returns (one "
            "<measure>_diff or _ratio with its _mcse); got "
            f"{sorted(map(str, contrast.data_vars))}.",
            hint='pass contrast(cube, "rmse", methods=("a", "b"))',
        )
    return names[0]


def contrast_plot(
    contrast: xr.Dataset, *, size: tuple[float, float] | None = None
) -> PlotFigure:
    """Forest plot of a contrast: one row per design point (and method, for
    a contrast between levels), the value and a bar of ±1.96 MCSE, against
    the line of no difference (0, or 1 for a ratio).

    Parameters
    ----------
    contrast : xr.Dataset
        What ``simstudy.contrast(cube, measure, methods=... | levels=...)``
        returns.
    size : (width, height), optional
        Figure size in inches (default: grows with the rows).

    Returns
    -------
    PlotFigure
        ``fig.notes`` names the rows left out (no value).

    Examples
    --------
    >>> d = simstudy.contrast(cube, "rmse", methods=("median", "mean"))
    >>> plots.contrast_plot(d).savefig("rmse-median-vs-mean.png")
    """
    name = _contrast_var(contrast)
    value, mcse = contrast[name], contrast[f"{name}_mcse"]
    dims = [str(d) for d in value.dims]
    factors = [d for d in dims if d != METHOD]
    order = ([METHOD] if METHOD in dims else []) + factors
    value, mcse = value.transpose(*order), mcse.transpose(*order)
    rows: list[tuple[str, float, float, int]] = []
    skipped: list[str] = []
    for idx in np.ndindex(*value.shape):
        labels = [f"{d}={value[d].values[i]}" for d, i in zip(order, idx, strict=True)]
        text = ", ".join(labels) or name
        v, e = float(value.values[idx]), float(mcse.values[idx])
        if not np.isfinite(v):
            skipped.append(text)
            continue
        rows.append((text, v, e if np.isfinite(e) else 0.0, idx[0] if order else 0))
    height = 1.2 + 0.32 * max(1, len(rows))
    fig = new_figure(*(size or (6.0, height)))
    ax = fig.add_subplot()
    ratio = name.endswith("_ratio")
    ax.axvline(1.0 if ratio else 0.0, color="0.4", lw=1, ls=":", gid="reference")
    y = np.arange(len(rows))[::-1]
    for (_, v, e, group), at in zip(rows, y, strict=True):
        color = COLORS[group % len(COLORS)] if METHOD in dims else COLORS[0]
        ax.errorbar(v, at, xerr=Z95 * e, fmt="o", color=color, capsize=3, ms=5)
    ax.set_yticks(y, [r[0] for r in rows])
    ax.set_xlabel(f"{name} (±1.96 MCSE)")
    ax.set_title(_title(contrast.attrs, name, ratio), fontsize=10)
    ax.grid(axis="x", alpha=0.3)
    if skipped:
        add_note(fig, f"no value, not drawn: {'; '.join(skipped)}")
    return fig


def _title(attrs: dict[str, object], name: str, ratio: bool) -> str:
    """``rmse: median - mean (paired)`` from what ``contrast`` recorded."""
    op = " / " if ratio else " - "
    measure = attrs.get("measure", name)
    methods = attrs.get("methods")
    if isinstance(methods, list | tuple) and len(methods) == 2:
        return f"{measure}: {methods[0]}{op}{methods[1]} (paired by replicate)"
    factor, levels = attrs.get("factor"), attrs.get("levels")
    if factor is not None and isinstance(levels, list | tuple) and len(levels) == 2:
        pair = f"{factor}={levels[0]}{op}{factor}={levels[1]}"
        return f"{measure}: {pair} (independent)"
    return str(measure)
