"""Figures of a study for papers and reports: each function returns a
:class:`PlotFigure`, a ``matplotlib.figure.Figure`` to restyle
(``fig.axes``) and save (``fig.savefig("fig.pdf")``) that Jupyter shows
inline without ``%matplotlib inline``; ``fig.notes`` says what it left out
or drew off scale. Scales hold up when one method explodes
(``plots.scales``); every plot takes a cube or summary with factors
selected down to one level (``cube.sel(n=30)``).

From a cube (``simstudy.open_results(store)``), replicate by replicate:
:func:`zip_plot`, :func:`scatter_plot`, :func:`bland_altman_plot`,
:func:`distribution_plot`. From a summary (``simstudy.summarize(cube)``),
measure by measure: :func:`nested_loop_plot`, :func:`lollipop_plot`,
:func:`heatmap`, :func:`measure_curve` (a power curve). From a paired
contrast (``simstudy.contrast``): :func:`contrast_plot`.

Figures use matplotlib's Agg canvas directly (no pyplot, no GUI backend,
no global state). ``import simstudy`` does not import this package.
"""

from __future__ import annotations

from simstudy.plots.common import PlotFigure
from simstudy.plots.contrasts import contrast_plot
from simstudy.plots.curves import measure_curve
from simstudy.plots.measures import heatmap, lollipop_plot, nested_loop_plot
from simstudy.plots.replicates import (
    bland_altman_plot,
    distribution_plot,
    scatter_plot,
)
from simstudy.plots.zip import zip_plot

__all__ = [
    "PlotFigure",
    "bland_altman_plot",
    "contrast_plot",
    "distribution_plot",
    "heatmap",
    "lollipop_plot",
    "measure_curve",
    "nested_loop_plot",
    "scatter_plot",
    "zip_plot",
]
