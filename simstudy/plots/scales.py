"""Scales that hold up on real data: one extreme method never hides the others.

A method whose values are orders of magnitude away from the others' (model
SEs of 1e10 under separation, a few estimates of 3e4) would flatten every
other method to a line at zero on a shared linear axis. Plots ask
:func:`outliers` which methods are that far off and :func:`limits` for a
range that holds everything else; what falls outside is drawn at the edge
of the axes as a marked, labelled arrow head (:func:`mark_off_scale`), never
dropped silently.

The rule: sort the methods by their largest distance from the anchor (the
measure's reference, or 0); where one is more than
``FACTOR`` (1000) times further than the one before it, it and every method
beyond are *off scale*. The kept methods would otherwise fill under 0.1% of
the axis: a flat line. Exploding methods are 1e4 to 1e10 times off; a
biased method 10 or 100 times further from 0 than unbiased ones stays on
the shared scale, as it should: that difference is the finding.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from matplotlib.axes import Axes

from simstudy.analysis.registry import lookup
from simstudy.errors import UsageError

__all__ = [
    "FACTOR",
    "SCALES",
    "check_scale",
    "limits",
    "mark_off_scale",
    "outliers",
    "short",
]

FACTOR = 1000.0
SCALES = ("auto", "linear", "symlog")


def bounded(measure: str, attrs: Mapping[str, Any]) -> bool:
    """A share of replicates (coverage, power, the rates; the registry's
    ``bounded``): always drawn on its natural 0-1 scale."""
    found = lookup(measure, attrs)
    return found is not None and found.bounded


def check_scale(scale: str) -> None:
    """``scale=`` is one of SCALES."""
    if scale not in SCALES:
        raise UsageError(
            f"unknown scale {scale!r}; expected one of: {', '.join(SCALES)}",
            hint="write scale='auto' (or 'symlog' to draw every method)",
        )


def outliers(values: Mapping[str, np.ndarray], anchor: float | None) -> list[str]:
    """The methods (keys) whose values lie ``FACTOR`` times further from the
    anchor (a reference; None: 0) than the others': those that would hide
    the rest on a shared axis."""
    finite = {m: v[np.isfinite(v)] for m, v in values.items()}
    far = {
        m: float(np.max(np.abs(v - (anchor or 0.0))))
        for m, v in finite.items()
        if v.size
    }
    ordered = sorted(far, key=far.__getitem__)
    # cut at the largest jump between consecutive distances, if it is FACTOR
    # (a method exactly at the anchor hides nothing: no jump from 0 counts)
    jumps = [
        far[ordered[k]] / far[ordered[k - 1]] if far[ordered[k - 1]] > 0 else 0.0
        for k in range(1, len(ordered))
    ]
    if not jumps:
        return []
    k = int(np.argmax(jumps))
    return ordered[k + 1 :] if jumps[k] > FACTOR else []


def limits(
    values: list[np.ndarray], extra: list[float] | None = None, pad: float = 0.06
) -> tuple[float, float] | None:
    """A padded range holding ``values`` (and ``extra``, e.g. a reference)."""
    parts = [np.asarray(v, dtype=float).ravel() for v in values]
    parts.append(np.asarray(extra or [], dtype=float))
    every = np.concatenate(parts)
    every = every[np.isfinite(every)]
    if not every.size:
        return None
    lo, hi = float(every.min()), float(every.max())
    margin = pad * (hi - lo) if hi > lo else max(abs(lo) * 0.1, 0.05)
    return lo - margin, hi + margin


def short(value: float) -> str:
    """A compact number for a label: ``3.2e+09``, ``-2.1e+04``, ``0.153``."""
    return (
        f"{value:.2g}" if abs(value) >= 1e4 or 0 < abs(value) < 1e-3 else f"{value:.3g}"
    )


def mark_off_scale(
    ax: Axes,
    x: np.ndarray,
    y: np.ndarray,
    color: str,
    gid: str,
    *,
    vertical: bool = True,
    annotate: bool = True,
) -> int:
    """Draw values outside the axis limits as arrow heads at the edge
    (labelled with the value when few); return how many were off scale."""
    lo, hi = ax.get_ylim() if vertical else ax.get_xlim()
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    count = 0
    for side, sel, edge in (
        ("^" if vertical else ">", y > hi, hi),
        ("v" if vertical else "<", y < lo, lo),
    ):
        if not sel.any():
            continue
        count += int(sel.sum())
        at = np.full(int(sel.sum()), edge)
        px, py = (x[sel], at) if vertical else (at, x[sel])
        ax.plot(px, py, side, color=color, ms=7, clip_on=False, gid=gid, zorder=5)
        if annotate and sel.sum() <= 12:
            middle = float(np.mean(ax.get_xlim() if vertical else ax.get_ylim()))
            for a, b, v in zip(px, py, y[sel], strict=True):
                left = (a if vertical else b) > middle  # label towards the centre
                ax.annotate(
                    short(float(v)),
                    (a, b),
                    xytext=((-5 if left else 5), -9 if edge == hi else 4)
                    if vertical
                    else (0, 6),
                    ha="right" if left and vertical else "left",
                    textcoords="offset points",
                    fontsize="x-small",
                    color=color,
                    annotation_clip=False,
                )
    return count
