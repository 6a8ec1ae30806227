"""What the plots of a summary share: the factors they loop over, each
method's values in design-point order and which are off scale, one panel
per level of ``split``, and the title and off-scale note they end with."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import xarray as xr

from simstudy.cube import METHOD
from simstudy.errors import UsageError
from simstudy.plots.common import (
    PlotFigure,
    add_note,
    design_mask,
    reference_value,
    title_fixed,
)
from simstudy.plots.scales import bounded, outliers

__all__ = [
    "draw_panels",
    "finish",
    "loops_of",
    "on_scale",
    "series_of",
    "split_panels",
]


def loops_of(values: xr.DataArray, order: Sequence[str] | None) -> list[str]:
    """The dims to loop over (all but method), outermost first."""
    dims = [str(d) for d in values.dims if d != METHOD]
    if order is None:
        return dims
    chosen = [order] if isinstance(order, str) else list(order)  # one name
    if sorted(chosen) != sorted(dims):
        raise UsageError(
            f"order= must name each factor once: got {chosen}, the factors are {dims}",
            hint=f"write order={dims!r} in the nesting you want (outermost first)",
        )
    return chosen


def series_of(
    summary: xr.Dataset, name: str, method: str, loops: list[str]
) -> np.ndarray:
    """One method's values of ``name`` in design-point order (NaN if absent)."""
    keep = design_mask(summary, loops)  # where=: the design points alone
    if name not in summary.data_vars:
        values = np.full(int(np.prod([summary.sizes[d] for d in loops])), np.nan)
    else:
        cell = summary[name].sel({METHOD: method})
        values = np.asarray(cell.transpose(*loops).values, dtype=float).ravel()
    return values if keep is None else values[keep]


def on_scale(
    summary: xr.Dataset,
    measure: str,
    chosen: list[str],
    loops: list[str],
    auto: bool = True,
) -> tuple[dict[str, np.ndarray], float | None, list[str]]:
    """Each method's values in design-point order, the measure's reference,
    and (``auto``) the methods 1000 times further off, drawn off scale."""
    ref = reference_value(measure, summary.attrs)
    series = {m: series_of(summary, measure, m, loops) for m in chosen}
    share = bounded(measure, summary.attrs)  # always on its 0-1 scale
    off = outliers(series, ref) if auto and not share else []
    return series, ref, off


def finish(
    fig: PlotFigure, summary: xr.Dataset, off: Sequence[str], note: str
) -> PlotFigure:
    """Name the factors fixed to one level; say which methods are off scale
    (``note`` with ``{}`` for their names)."""
    title_fixed(fig, summary)
    if off:
        add_note(fig, note.format(", ".join(off)))
    return fig


def split_panels(
    summary: xr.Dataset, split: str | None
) -> list[tuple[str, xr.Dataset]]:
    """One (title, summary) per level of ``split`` (one untitled without)."""
    if split is None:
        return [("", summary)]
    factors = [str(d) for d in summary.dims if d != METHOD]
    if split not in factors:
        raise UsageError(
            f"split={split!r} is not a factor of this summary; its factors are: "
            f"{', '.join(factors) or 'none'}",
            hint="pass split= with one of those names",
        )
    return [
        (f"{split}={level}", summary.sel({split: level}))
        for level in summary[split].values.tolist()
    ]


def draw_panels(
    fig: PlotFigure,
    panels: list[tuple[str, xr.Dataset]],
    split: str | None,
    draw: Callable[..., list[str]],
    *args: Any,
) -> tuple[list[Any], dict[str, None]]:
    """``draw(subfigure, summary, *args)`` each panel in a subfigure of its
    own (in ``fig`` itself without ``split``), titled with its level; return
    the subfigures and the methods drawn off scale in any panel (in order,
    each once)."""
    targets = fig.subfigures(1, len(panels), squeeze=False)[0] if split else [fig]
    off: dict[str, None] = {}
    for target, (title, part) in zip(targets, panels, strict=True):
        off.update(dict.fromkeys(draw(target, part, *args)))
        if title:
            target.suptitle(title, fontsize="medium")
    return list(targets), off
