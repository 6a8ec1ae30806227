"""A self-contained HTML report of a store: study, measures, figures, timeline.

One file, no scripts, no network: the figures are ``simstudy.plots``
figures embedded inline (SVG for measures, PNG in ``data:`` URIs for plots
of every replicate), styles are inline. Open it in any browser. The report
stays bounded for any number of design points: one nested-loop plot per
measure, and zip / distribution plots for at most a few design points.

The page is assembled here from ``tables`` (the numbers), ``figures``,
``sections`` (study, solved levels, timeline, failures, warnings) and
``markup`` (style, escaping, inline figures).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import xarray as xr

from simstudy.analysis.records import to_records
from simstudy.analysis.summary import summarize
from simstudy.atomic import write_text
from simstudy.cube import METHOD
from simstudy.errors import UsageError
from simstudy.report.figures import measure_figures, replicate_sections
from simstudy.report.markup import STYLE, escape
from simstudy.report.sections import (
    deviations_section,
    failures_section,
    solve_section,
    study_section,
    timeline,
    warnings_section,
)
from simstudy.report.tables import failure_rates, measures_table, strategies_section
from simstudy.store import open_results, read_failures, read_warnings

__all__ = ["failure_rates", "write_report"]


def write_report(
    store: str | os.PathLike[str],
    output: str | os.PathLike[str],
    *,
    split: str | None = None,
    methods: str | Sequence[str] | None = None,
    points: Mapping[str, Any] | None = None,
    **options: Any,
) -> Path:
    """Write the HTML report of ``store`` to ``output``; return its path.

    ``methods`` and ``points`` (``{"n": [20, 50]}``) restrict the report to
    some methods and levels; ``split`` (a factor) draws one panel per level
    in each measure's figure and one section of replicate figures per
    level. Every other keyword (``reference``, ``alpha``, ``level``,
    ``df``, ``null``, ``cases``, ``measures``, ...) is passed to
    ``simstudy.summarize``, so the report shows the numbers the user's
    summary shows (t intervals with ``df=``, for instance).
    """
    from simstudy.analysis.selection import factors_of, subset

    cube = open_results(store)
    meta = cube.attrs["simstudy"]
    cube = subset(cube, methods=methods, points=points)
    if split is not None and split not in factors_of(cube):
        raise UsageError(
            f"--split {split!r} is not a factor of this study; its factors are: "
            f"{', '.join(factors_of(cube)) or 'none'}",
            hint="pass --split with one of those names",
        )
    options = {k: v for k, v in options.items() if v is not None}  # defaults
    cases = options.get("cases", "available")
    several = [cases] if isinstance(cases, str) else list(dict.fromkeys(cases))
    # the figures and tables show the first strategy; a section compares all
    options["cases"] = several[0]
    summary = summarize(cube, **options)
    records = to_records(summary)
    failures = _within(read_failures(store), cube)
    parts = [
        (
            f"<!doctype html><html lang=en><head><meta charset=utf-8>"
            f"<title>simstudy report: {escape(meta['study'])}</title>"
            f"<style>{STYLE}</style></head><body>"
        ),
        f"<h1>Simulation study <i>{escape(meta['study'])}</i></h1>",
        study_section(cube, meta),
        solve_section(summary, meta),
        deviations_section(meta.get("protocol"), meta),
        measures_table(records, summary),
        strategies_section(cube, options, several),
        failure_rates(summary),
        measure_figures(summary, split),
        replicate_sections(cube, split, options),
        timeline(cube, meta),
        failures_section(failures, cube),
        warnings_section(_within(read_warnings(store), cube), cube),
        "</body></html>",
    ]
    cube.close()
    # whole or not at all: a full disk leaves a previous report as it was
    path = write_text(output, "\n".join(parts))
    return path


def _within(records: list[dict[str, Any]], cube: xr.Dataset) -> list[dict[str, Any]]:
    """The failure or warning records of the cube's methods and levels (all
    of them unless --methods or --points cut the cube down)."""
    from simstudy.analysis.selection import factors_of

    keep = {f: set(cube[f].values.tolist()) for f in factors_of(cube)}
    keep[METHOD] = set(cube[METHOD].values.tolist())
    return [
        r
        for r in records
        if str(r["method"]) in keep[METHOD]
        and all(r.get(f) in levels for f, levels in keep.items() if f != METHOD)
    ]
