"""A self-contained HTML report of a store: study, measures, figures, timeline.

One file, no scripts, no network: the figures are ``simstudy.plots``
figures embedded inline (SVG for measures, PNG in ``data:`` URIs for plots
of every replicate), styles are inline. Open it in any browser. The report
stays bounded for any number of design points: one nested-loop plot per
measure, and zip / distribution plots for at most a few design points.
"""

from __future__ import annotations

import base64
import html
import io
import json
import os
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import xarray as xr

from simstudy.analysis.records import RESERVED, to_records
from simstudy.analysis.registry import MEASURES
from simstudy.analysis.summary import summarize
from simstudy.atomic import write_text
from simstudy.cube import METHOD, REPLICATE
from simstudy.declare import deviations
from simstudy.errors import UsageError
from simstudy.store import open_results, read_failures, read_warnings
from simstudy.store.versionlog import notes as version_notes

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["failure_rates", "write_report"]

STYLE = """
body{font:14px/1.45 system-ui,sans-serif;margin:2em auto;max-width:1160px;color:#222;
padding:0 1em}
h1{font-size:1.6em}h2{margin-top:2em;border-bottom:1px solid #ccc}
table{border-collapse:collapse;margin:.5em 0;font-size:13px}
td,th{border:1px solid #ddd;padding:2px 6px;text-align:right}
td[rowspan]{vertical-align:top}
summary{cursor:pointer;color:#445}
table.measures td,table.measures th{white-space:nowrap;padding:1px 5px}
table.measures{font-size:12px}
th{background:#f4f4f4}td.l,th.l{text-align:left}
td{font-variant-numeric:tabular-nums}
.scroll{overflow-x:auto;max-width:100%}
.grid{display:flex;flex-wrap:wrap;gap:12px}.muted{color:#777}
figure{margin:0}figure svg,figure img{max-width:100%;height:auto}
svg.tl text{font:11px system-ui,sans-serif}
"""
# the measures table, split so that no table is wider than the page
TABLES = (
    ("Bias and precision", ("mean", "bias", "relbias", "empse", "mse", "rmse", "mae")),
    (
        "Model SE, intervals and tests",
        ("modelse", "relerr_modelse", "coverage", "becoverage", "ci_width", "power"),
    ),
    ("Against the reference method", ("relprec", "bias_diff", "mse_ratio", "corr")),
    (
        "Robust, and given rejection",
        ("median_bias", "coverage_rejected", "type_s", "exaggeration"),
    ),
)
# in the tables, not drawn as figures of their own (the failure ledger is
# summary.failure_ledger; robust and conditional measures stay in tables)
NOT_DRAWN: tuple[str, ...] = ("failure_rate_", "warning_rate_", "median_bias")
NOT_DRAWN += ("coverage_rejected",)
NOT_DRAWN += ("type_s", "exaggeration")
# shown in their own section (failure_rates), always, not among the measures
RATES = ("failure_rate", "warning_rate")
LONG_TABLE = 60  # rows; a longer table is folded (an HTML <details>, no script)
# measures whose values compare on one scale: their figures share a y range
SHARED = (("coverage", "becoverage"),)
# replicate-level figures show at most this many design points, spread out
MOST_ZIP, MOST_BOXES = 4, 8


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
    from simstudy.plots.common import factors_of, subset

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
            f"<title>simstudy report: {_e(meta['study'])}</title>"
            f"<style>{STYLE}</style></head><body>"
        ),
        f"<h1>Simulation study <i>{_e(meta['study'])}</i></h1>",
        _study_section(cube, meta),
        _solve_section(summary, meta),
        deviations.section_html(meta.get("protocol"), meta),
        _measures_table(records, summary),
        _strategies_section(cube, options, several),
        failure_rates(summary),
        _measure_figures(summary, split),
        _replicate_sections(cube, split, options),
        _timeline(cube, meta),
        _failures_section(failures, cube),
        _warnings_section(_within(read_warnings(store), cube), cube),
        "</body></html>",
    ]
    cube.close()
    # whole or not at all: a full disk leaves a previous report as it was
    path = write_text(output, "\n".join(parts))
    return path


def _within(records: list[dict[str, Any]], cube: xr.Dataset) -> list[dict[str, Any]]:
    """The failure or warning records of the cube's methods and levels (all
    of them unless --methods or --points cut the cube down)."""
    from simstudy.plots.common import factors_of

    keep = {f: set(cube[f].values.tolist()) for f in factors_of(cube)}
    keep[METHOD] = set(cube[METHOD].values.tolist())
    return [
        r
        for r in records
        if str(r["method"]) in keep[METHOD]
        and all(r.get(f) in levels for f, levels in keep.items() if f != METHOD)
    ]


def _e(x: Any) -> str:
    return html.escape(str(x))


STRATEGY_MEASURES = ("bias", "empse", "rmse", "coverage", "power")


def _strategies_section(
    cube: xr.Dataset, options: dict[str, Any], several: list[str]
) -> str:
    """With several ``cases``: a table of the main measures under each
    strategy side by side (value and MCSE), per design point and method."""
    if len(several) < 2:
        return ""
    side = summarize(cube, **{**options, "cases": several})
    shown = [m for m in STRATEGY_MEASURES if m in side.data_vars]
    factors = [str(d) for d in side["n_ok"].dims if d not in ("cases", METHOD)]
    head = "".join(f"<th>{_e(m)} ({_e(c)})</th>" for m in shown for c in several)
    rows = []
    for idx in np.ndindex(*(side.sizes[f] for f in factors)):
        at = {f: side[f].values[i] for f, i in zip(factors, idx, strict=True)}
        if "in_design" in side.coords and not bool(side["in_design"].sel(at)):
            continue
        point = ", ".join(f"{f}={v}" for f, v in at.items())
        for method in side[METHOD].values:
            cell = side.sel({**at, METHOD: method})
            values = "".join(
                f"<td>{_value_mcse(cell, m, c)}</td>" for m in shown for c in several
            )
            rows.append(
                f"<tr><td class=l>{_e(point)}</td><td class=l>{_e(str(method))}</td>"
                f"{values}</tr>"
            )
    return (
        "<h2>Handling strategies side by side</h2>"
        f"<p>The same measures with the replicates each strategy uses "
        f"({_e(', '.join(several))}; docs/analysis.md); the figures and the "
        f"tables above use {_e(several[0])}.</p>"
        f"<table><tr><th class=l>design point</th><th class=l>method</th>{head}"
        f"</tr>{''.join(rows)}</table>"
    )


def _value_mcse(cell: xr.Dataset, measure: str, case: str) -> str:
    value = float(cell[measure].sel(cases=case))
    if not np.isfinite(value):
        return ""
    mcse = f"{measure}_mcse"
    err = float(cell[mcse].sel(cases=case)) if mcse in cell else float("nan")
    return f"{value:.4g} ({err:.2g})" if np.isfinite(err) else f"{value:.4g}"


def _study_section(cube: xr.Dataset, meta: dict[str, Any]) -> str:
    fp = meta["fingerprint"]
    status = cube["status"].values
    inside = np.ones(status.shape, bool)
    if "in_design" in cube.coords:  # where=: points outside are never planned
        design = cube["in_design"].broadcast_like(cube["status"])
        inside &= design.transpose(*cube["status"].dims).values
    if "target_replicates" in cube:  # past a point's target stop: not planned
        within = (cube[REPLICATE] < cube["target_replicates"]).broadcast_like(
            cube["status"]
        )
        inside &= within.transpose(*cube["status"].dims).values
    counts = [int(((status == c) & inside).sum()) for c in (1, 2, 0)]
    planned = int(inside.sum())
    rows = [
        (
            "factors",
            "; ".join(f"{f} = {fp['factors'][f]}" for f in meta["factor_order"]),
        ),
        ("replicates", f"{fp['replicates']:,}"),
        ("methods", ", ".join(str(m) for m in cube[METHOD].values)),
        ("seed, streams", f"{fp['seed']}, {fp['scheme']}"),
        (
            "tasks",
            (
                f"{planned:,}: {counts[0]:,} ok, {counts[1]:,} failed, "
                f"{counts[2]:,} pending"
            ),
        ),
        *_target_rows(cube, meta),
        ("created", meta.get("created", "?")),
        (
            "versions",
            ", ".join(f"{k} {v}" for k, v in meta.get("versions", {}).items()),
        ),
        ("workers", f"{len(meta.get('workers', []))} process(es)"),
        *(("version change", note) for note in version_notes(meta)),
    ]
    declared = meta.get("measures", {})
    if declared:
        rows.append(
            (
                "declared outputs",
                "; ".join(f"{m}: {json.dumps(d)}" for m, d in declared.items()),
            )
        )
    body = "".join(
        f"<tr><th class=l>{_e(k)}</th><td class=l>{_e(v)}</td></tr>" for k, v in rows
    )
    return f"<h2>Study and provenance</h2><table>{body}</table>"


def _target_rows(cube: xr.Dataset, meta: dict[str, Any]) -> list[tuple[str, str]]:
    """The --target-mcse rule and where each design point stopped."""
    if meta.get("solve"):
        return [
            (
                "solve",
                (
                    "levels a `simstudy solve` evaluated have only the replicates "
                    "and the method it needed: their other cells count as pending"
                ),
            )
        ]
    record = meta.get("target_mcse")
    if not record or "target_replicates" not in cube:
        return []
    goals = ", ".join(f"{m} \u2264 {g:g}" for m, g in record["targets"].items())
    points = record["points"]
    met = sum(e["state"] == "met" for e in points)
    rule = (
        f"{goals}, per method, at most {record['max_replicates']:,} replicates "
        f"(rounds of at least {record['step']:,}): met at {met} of "
        f"{len(points)} point(s)"
    )
    where = "; ".join(
        f"{', '.join(f'{k}={v}' for k, v in e['point'].items())}: "
        f"{e['replicates']:,} replicates, "
        f"{'met' if e['state'] == 'met' else 'not met'}"
        for e in points
    )
    return [("target MCSE", rule), ("target_replicates", where)]


def _solve_section(summary: xr.Dataset, meta: dict[str, Any]) -> str:
    """Each ``simstudy solve`` the store holds: the answer with its interval
    and the measure's curve over the solved factor, MCSE bands, the target."""
    from simstudy.plots import measure_curve

    parts = []
    for i, s in enumerate(meta.get("solve", [])):
        where = ", ".join(f"{k} = {v}" for k, v in s["point"].items())
        state = "" if s["met"] else " (budget spent before the tolerance was met)"
        text = (
            f"{s['factor']} = <b>{_e(s['answer'])}</b>"
            f"{' at ' + _e(where) if where else ''}: {_e(s['measure'])} of "
            f"{_e(s['method'])} reaches {s['target']:g} at {s['estimate']:.4g}, "
            f"{s['level']:.0%} CI {s['lower']:.4g} to {s['upper']:.4g} "
            f"({s['tasks']:,} tasks, {s['rounds']} rounds){_e(state)}."
        )
        figure = ""
        if s["measure"] in summary and s["method"] in summary[METHOD].values:
            fig = measure_curve(
                summary,
                s["measure"],
                factor=s["factor"],
                at=s["point"],
                methods=s["method"],
                target=s["target"],
                solution=s,
            )
            figure = _svg(fig, f"solve{i}")
        parts.append(f"<p>{text}</p>{figure}")
    if not parts:
        return ""
    return "<h2>Solved levels</h2>" + "".join(parts)


def _shown(summary: xr.Dataset) -> list[str]:
    """The measures worth showing: some finite value, and for failure and
    warning rates some nonzero one (an all-zero panel says nothing)."""
    known = [m for m in MEASURES if m in summary.data_vars]
    extra = [
        str(v)
        for v in summary.data_vars
        if str(v) not in known
        and not str(v).endswith("_mcse")
        and str(v) not in ("n_ok", "n_failed", "n_pending", "n_dropped")
        and np.issubdtype(summary[v].dtype, np.floating)
    ]
    shown = []
    for m in [*known, *extra]:
        if m.startswith(NOT_DRAWN):
            continue
        values = np.asarray(summary[m].values, dtype=float)
        if not np.isfinite(values).any():
            continue
        if m.endswith("_rate") and not np.nan_to_num(values).any():
            continue
        shown.append(m)
    return shown


def _measures_table(records: list[dict[str, Any]], summary: xr.Dataset) -> str:
    """One row per design point and method; each cell ``value (MCSE)`` with
    as many decimals as the MCSE supports."""
    from simstudy.plots.common import with_mcse

    present = _shown(summary)
    fixed = {"method", "measure", "value", "mcse", *RESERVED}
    cells: dict[tuple[str, str], dict[str, str]] = {}
    counts: dict[tuple[str, str], int] = {}
    for r in records:
        point = ", ".join(f"{k}={v}" for k, v in r.items() if k not in fixed) or "all"
        key = (point, r["method"])
        cells.setdefault(key, {})[r["measure"]] = with_mcse(r["value"], r["mcse"])
        counts[key] = r["n_ok"]
    tables = "".join(
        _table(title, [m for m in present if m in group], cells, counts)
        for title, group in TABLES
    )
    tables += _table(
        "Other measures",
        [m for m in present if not any(m in g for _, g in TABLES) and m not in RATES],
        cells,
        counts,
    )
    skipped = summary.attrs.get("skipped", {})
    notes = "".join(
        f"<li><b>{_e(k)}</b>: "
        + _e(v if isinstance(v, str) else "; ".join(f"{m}: {w}" for m, w in v.items()))
        + "</li>"
        for k, v in skipped.items()
    )
    settings = ", ".join(
        f"{k} = {_e(v)}"
        for k, v in summary.attrs.items()
        if k in ("level", "alpha", "df", "null", "reference", "cases") and v is not None
    )
    if "n_dropped" in summary.data_vars:
        dropped = int(summary["n_dropped"].sum())
        settings += (
            f" (complete cases: {dropped:,} ok tasks left out because another "
            "method failed in their replicate)"
        )
    return (
        "<h2>Performance measures: value (Monte Carlo SE)</h2>"
        f"<p class=muted>Digits follow each MCSE. {settings}.</p>{tables}"
        + (
            f"<details><summary>Not computed: {len(skipped)} measure(s), "
            f"and why</summary><ul>{notes}</ul></details>"
            if notes
            else ""
        )
    )


def _table(
    title: str,
    measures: list[str],
    cells: dict[tuple[str, str], dict[str, str]],
    counts: dict[tuple[str, str], int],
) -> str:
    """One table of some measures: a row per method, design points spanning
    their methods' rows."""
    if not measures:
        return ""
    head = "".join(f"<th>{_e(m)}</th>" for m in measures)
    kept = {k: row for k, row in cells.items() if any(x in row for x in measures)}
    spans = Counter(p for p, _ in kept)
    rows = []
    previous = None
    for (p, m), row in kept.items():
        first = f"<td class=l rowspan={spans[p]}>{_e(p)}</td>" if p != previous else ""
        previous = p
        rows.append(
            f"<tr>{first}<td class=l>{_e(m)}</td><td>{counts[(p, m)]:,}</td>"
            + "".join(f"<td>{_e(row.get(x, ''))}</td>" for x in measures)
            + "</tr>"
        )
    table = (
        "<div class=scroll><table class=measures><tr>"
        f"<th class=l>design point</th><th class=l>method</th><th>n ok</th>{head}"
        f"</tr>{''.join(rows)}</table></div>"
    )
    if len(rows) > LONG_TABLE:  # the figures give the overview; rows on demand
        return (
            f"<h3>{_e(title)}</h3><details><summary>{len(rows):,} rows "
            f"({len(spans):,} design points): show</summary>{table}</details>"
        )
    return f"<h3>{_e(title)}</h3>{table}"


def _svg(fig: Figure, salt: str) -> str:
    """The figure as inline SVG: text kept as text, ids unique per figure."""
    import matplotlib

    buf = io.StringIO()
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": salt}):
        fig.savefig(buf, format="svg", metadata={"Date": None})
    text = buf.getvalue()
    text = text[text.index("<svg") :]
    # inline SVG in HTML needs no namespaces or RDF metadata: drop every URL
    text = re.sub(r"<metadata>.*?</metadata>", "", text, flags=re.DOTALL)
    return re.sub(r'\s+xmlns(:\w+)?="[^"]*"', "", text)


def _png(fig: Figure, alt: str, dpi: int = 96) -> str:
    """The figure as a PNG in a ``data:`` URI (for thousands of marks)."""
    from PIL import Image  # pillow comes with matplotlib

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    buf.seek(0)
    with Image.open(buf) as image:  # a 256-colour palette: a third of the bytes
        small = image.convert("RGB").quantize(colors=256, dither=Image.Dither.NONE)
    out = io.BytesIO()
    small.save(out, format="PNG", optimize=True)
    data = base64.b64encode(out.getvalue()).decode("ascii")
    return f"<img alt='{_e(alt)}' src='data:image/png;base64,{data}'>"


def _shared_limits(
    summary: xr.Dataset, shown: list[str]
) -> dict[str, tuple[float, float]]:
    """One y range for measures that compare (coverage and BE coverage)."""
    from simstudy.plots.common import reference_value

    limits = {}
    for group in SHARED:
        members = [m for m in group if m in shown]
        if len(members) < 2:
            continue
        values = []
        for m in members:
            v = np.asarray(summary[m].values, dtype=float)
            e = np.asarray(summary.get(f"{m}_mcse", 0 * summary[m]).values, dtype=float)
            values += [v - 1.96 * np.nan_to_num(e), v + 1.96 * np.nan_to_num(e)]
            ref = reference_value(m, summary.attrs)
            if ref is not None:
                values.append(np.array([ref]))
        finite = np.concatenate([x.ravel() for x in values])
        finite = finite[np.isfinite(finite)]
        lo, hi = float(finite.min()), float(finite.max())
        pad = 0.05 * (hi - lo or 1.0)
        limits.update(dict.fromkeys(members, (lo - pad, hi + pad)))
    return limits


def _measure_figures(summary: xr.Dataset, split: str | None = None) -> str:
    """One figure per measure, every design point and method in it: a
    nested-loop plot (or a lollipop plot for a single design point); with
    ``split``, one panel per level of that factor."""
    from simstudy.plots import lollipop_plot, nested_loop_plot

    shown = _shown(summary)
    for implied, by in (("mean", "bias"), ("mse", "rmse")):  # same picture twice
        if implied in shown and by in shown:
            shown.remove(implied)
    limits = _shared_limits(summary, shown)
    figures = []
    for k, measure in enumerate(shown):
        loops = [d for d in summary[measure].dims if d != METHOD]
        if split is not None:
            fig = nested_loop_plot(
                summary,
                measure,
                split=split,
                ylim=limits.get(measure),
                size=(min(11.0, 4.0 * summary.sizes[split]), 3.6 + 0.25 * len(loops)),
            )
        elif loops:
            fig = nested_loop_plot(
                summary,
                measure,
                ylim=limits.get(measure),
                size=(5.3, 3.6 + 0.25 * len(loops)),
            )
        else:
            fig = lollipop_plot(
                summary, measure, size=(5.3, 1.4 + 0.3 * summary.sizes[METHOD])
            )
        figures.append(f"<figure>{_svg(fig, f'm{k}')}</figure>")  # notes: in it
    kind = (
        "nested-loop plots: design points in order, the factors' levels stepping "
        "underneath"
        if any(d != METHOD for d in summary.dims)
        else "one design point"
    )
    if split is not None:
        kind += f"; one panel per level of {split}, each on its own scale"
    return (
        "<h2>Measures against factors</h2>"
        f"<p class=muted>{kind}; bands and bars: ± 1.96 MCSE; dotted: the "
        "reference (0 for bias, the level for coverage, alpha for rejection). "
        "A method 1000 times further off than the others is drawn off scale: "
        "arrow heads at the edge, labelled with its values.</p>"
        f"<div class=grid>{''.join(figures)}</div>"
    )


def _notes(fig: Figure) -> str:
    """What a figure left out, as text under it (also printed in it)."""
    notes = getattr(fig, "notes", [])
    return (
        f"<figcaption class=muted>{'<br>'.join(_e(n) for n in notes)}</figcaption>"
        if notes
        else ""
    )


def _spread(grid: list[dict[str, Any]], most: int) -> list[dict[str, Any]]:
    """At most ``most`` design points, evenly spread over the grid."""
    if len(grid) <= most:
        return grid
    picks = np.unique(np.linspace(0, len(grid) - 1, most).round().astype(int))
    return [grid[int(i)] for i in picks]


def _which(picked: list[dict[str, Any]], grid: list[dict[str, Any]]) -> str:
    if len(picked) == len(grid):
        return "every design point"
    return f"{len(picked)} of {len(grid)} design points"


def _replicate_sections(
    cube: xr.Dataset, split: str | None, options: Mapping[str, Any]
) -> str:
    """The replicate figures, in one section per level of ``split``."""
    wald = {"level": options.get("level", 0.95), "df": options.get("df")}
    if split is None:
        return _replicate_figures(cube, wald)
    return "".join(
        f"<h2 class=split>{_e(split)} = {_e(level)}</h2>"
        + _replicate_figures(cube.sel({split: level}), wald, 3)
        for level in cube[split].values.tolist()
    )


def _replicate_figures(
    cube: xr.Dataset, wald: Mapping[str, Any], depth: int = 2
) -> str:
    """Zip plots of the interval methods and the estimates' distributions,
    for a few design points spread over the grid (zip plots with the
    summary's level and df)."""
    from simstudy.plots import distribution_plot, zip_plot
    from simstudy.plots.common import declared, design_points, factors_of, output_dims

    factors = factors_of(cube)
    grid = design_points(cube, factors)
    picked, boxes = _spread(grid, MOST_ZIP), _spread(grid, MOST_BOXES)
    methods = [str(m) for m in cube[METHOD].values]
    scalar = [
        m
        for m in methods
        if declared(cube, m)["estimate"] in cube.data_vars
        and not output_dims(cube, declared(cube, m)["estimate"])
    ]
    out = []
    interval = [m for m in scalar if {"se", "ci"} & set(declared(cube, m))]
    h = f"h{depth}"
    if interval:
        try:
            fig = zip_plot(
                cube,
                methods=interval,
                points=picked,
                level=wald["level"],
                df=wald["df"],
            )
        except UsageError as e:  # e.g. no truth at all: the zip plot needs one
            out.append(f"<{h}>Zip plots</{h}><p class=muted>Not drawn: {_e(e)}.</p>")
        else:
            out.append(
                f"<{h}>Zip plots of the interval methods ({_which(picked, grid)})"
                f"</{h}><p class=muted>Each replicate's interval at its centile of "
                "|estimate &minus; truth| / SE; orange: it misses the truth. Solid "
                "line: coverage, dashed: its Monte Carlo 95% interval, dotted: "
                "the nominal level (Morris et al. 2019).</p>"
                f"<figure>{_png(fig, 'zip plots')}{_notes(fig)}</figure>"
            )
    if scalar:
        fig = distribution_plot(cube, methods=scalar, points=boxes)
        out.append(
            f"<{h}>Estimates by method ({_which(boxes, grid)})</{h}>"
            "<p class=muted>Box: quartiles and median; whiskers: 1.5 IQR; "
            "dotted: the truth. One scale holds every box and whisker; values "
            "far beyond are counted at the edge (arrow head: how many, the most "
            "extreme).</p>"
            f"<figure>{_png(fig, 'distributions of the estimates')}{_notes(fig)}"
            "</figure>"
        )
    return "".join(out)


def _timeline(cube: xr.Dataset, meta: dict[str, Any]) -> str:
    """Busy intervals per worker process (tasks merged when back to back)."""
    started = cube["started"].values.ravel()
    seconds = cube["seconds"].values.ravel().astype(float)
    worker = cube["worker"].values.ravel()
    done = np.isfinite(started) & np.isfinite(seconds) & (worker >= 0)
    if not done.any():
        return "<h2>Workers</h2><p>No task has run yet.</p>"
    t0 = started[done].min()
    span = max(float((started[done] + seconds[done]).max() - t0), 1e-9)
    names = meta.get("workers", [])
    ids = sorted(int(i) for i in np.unique(worker[done]))
    w, row, left = 1000, 18, 150
    height = row * len(ids) + 30
    parts = [
        f"<svg class=tl width={w} height={height} viewBox='0 0 {w} {height}' role=img>"
    ]
    gap = span / 2000  # tasks closer than this are drawn as one busy stretch
    for k, wid in enumerate(ids):
        m = done & (worker == wid)
        order = np.argsort(started[m])
        a = started[m][order] - t0
        b = a + seconds[m][order]
        busy = float(seconds[m].sum())
        label = names[wid] if wid < len(names) else str(wid)
        yk = 5 + k * row
        parts.append(
            f"<text x={left - 6} y={yk + 12} text-anchor=end>{_e(label)}</text>"
        )
        s0, e0 = a[0], b[0]
        for s, e in zip(a[1:], b[1:], strict=True):
            if s - e0 > gap:
                parts.append(_bar(s0, e0, span, left, w, yk, row))
                s0 = s
            e0 = max(e0, e)
        parts.append(_bar(s0, e0, span, left, w, yk, row))
        parts.append(
            f"<text x={w - 4} y={yk + 12} text-anchor=end class=muted>"
            f"{100 * busy / span:.0f}% busy</text>"
        )
    parts.append(
        f"<text x={left} y={height - 6}>0 s</text>"
        f"<text x={w - 60} y={height - 6} text-anchor=end>{span:.1f} s</text></svg>"
    )
    return (
        "<h2>Workers: tasks over time</h2><p class=muted>One row per worker "
        "process; a dark stretch is time spent in tasks (load balance).</p>"
        + "".join(parts)
    )


def _bar(s: float, e: float, span: float, left: int, w: int, y: int, row: int) -> str:
    scale = (w - left - 80) / span
    return (
        f"<rect x={left + s * scale:.1f} y={y} width={max((e - s) * scale, 0.5):.1f} "
        f"height={row - 4} fill='#4a78b0'/>"
    )


def failure_rates(summary: xr.Dataset) -> str:
    """The section "Failures and warnings by design point and method": the
    rate of failed tasks and of tasks that warned, each with its MCSE, always
    present (saying so when every rate is zero), as current guidance asks
    (report missing results by condition and method, even when none).

    Built from what ``summarize`` gives (n_failed, failure_rate,
    warning_rate); a failure ledger by kind replaces it in one place."""
    from simstudy.plots.common import design_points, label

    if "failure_rate" not in summary.data_vars and "n_failed" in summary.data_vars:
        done = summary["n_ok"] + summary["n_failed"]  # --measures left it out
        p = summary["n_failed"] / done.where(done > 0)
        summary = summary.assign(
            failure_rate=p, failure_rate_mcse=np.sqrt(p * (1 - p) / done)
        )
    rates = [v for v in ("failure_rate", "warning_rate") if v in summary.data_vars]
    ledger = [  # the failure ledger by kind (simstudy.analysis.ledger), beside the totals
        str(v)
        for v in summary.data_vars
        if str(v).startswith(("failure_rate_", "warning_rate_"))
        and not str(v).endswith("_mcse")
    ]
    rates = [r for r in rates if r == "failure_rate"]
    rates += [v for v in ledger if v.startswith("failure_rate_")]
    rates += [v for v in ("warning_rate",) if v in summary.data_vars]
    rates += [v for v in ledger if v.startswith("warning_rate_")]
    title = "<h2>Failures and warnings by design point and method</h2>"
    if not rates:
        return title + "<p>This summary has no failure or warning rates.</p>"
    total = int(
        summary["n_ok"].sum() + summary.get("n_failed", 0 * summary["n_ok"]).sum()
    )
    if not any(np.nan_to_num(summary[v].values).any() for v in rates):
        return (
            title + f"<p>Every rate is zero: none of the {total:,} finished tasks "
            "failed or emitted a warning, at any design point, for any method.</p>"
        )
    head = "".join(f"<th>{_e(v.replace('_', ' '))} (MCSE)</th>" for v in rates)
    factors = [str(d) for d in summary[rates[0]].dims if d != METHOD]
    rows = []
    methods = summary[METHOD].values.tolist()
    for point in design_points(summary[rates[0]], factors):
        for k, m in enumerate(methods):
            cell = summary.sel({**point, METHOD: m})
            failed = int(cell["n_failed"]) if "n_failed" in cell else 0
            first = (
                f"<td class=l rowspan={len(methods)}>{_e(label(point))}</td>"
                if k == 0
                else ""
            )
            rows.append(
                f"<tr>{first}<td class=l>{_e(m)}</td>"
                f"<td>{failed:,}</td>"
                + "".join(f"<td>{_e(_rate(cell, v))}</td>" for v in rates)
                + "</tr>"
            )
    table = (
        "<div class=scroll><table class=measures><tr><th class=l>design point</th>"
        f"<th class=l>method</th><th>failed</th>{head}</tr>{''.join(rows)}</table></div>"
    )
    if len(rows) > LONG_TABLE:
        table = f"<details><summary>{len(rows):,} rows: show</summary>{table}</details>"
    return title + table


def _rate(cell: xr.Dataset, name: str) -> str:
    """``0.075 (0.019)``: a rate with its MCSE (when the summary has one)."""
    from simstudy.plots.common import with_mcse

    mcse = float(cell[f"{name}_mcse"]) if f"{name}_mcse" in cell else None
    return with_mcse(float(cell[name]), mcse)


def _failures_section(failures: list[dict[str, Any]], cube: xr.Dataset) -> str:
    if not failures:
        return "<h2>Failures</h2><p>No task failed.</p>"
    factors = list(cube.attrs["simstudy"]["factor_order"])
    counts: dict[tuple[str, str], int] = {}
    first: dict[tuple[str, str], str] = {}
    for f in failures:
        point = ", ".join(f"{k}={f.get(k)}" for k in factors)
        key = (point, f["method"])
        counts[key] = counts.get(key, 0) + 1
        first.setdefault(key, f"{f['type']}: {f['message']}")
    body = "".join(
        f"<tr><td class=l>{_e(p)}</td><td class=l>{_e(m)}</td><td>{n:,}</td>"
        f"<td class=l>{_e(first[(p, m)][:300])}</td></tr>"
        for (p, m), n in sorted(counts.items())
    )
    return (
        f"<h2>Failures ({len(failures):,} tasks)</h2><table><tr>"
        "<th class=l>design point</th><th class=l>method</th><th>failed</th>"
        f"<th class=l>first message</th></tr>{body}</table>"
    )


def _warnings_section(warned: list[dict[str, Any]], cube: xr.Dataset) -> str:
    if not warned:
        return "<h2>Warnings</h2><p>No task emitted a warning.</p>"
    factors = list(cube.attrs["simstudy"]["factor_order"])
    tasks: dict[tuple[str, str], int] = {}
    total: dict[tuple[str, str], int] = {}
    first: dict[tuple[str, str], str] = {}
    for w in warned:
        key = (", ".join(f"{k}={w.get(k)}" for k in factors), w["method"])
        tasks[key] = tasks.get(key, 0) + 1
        total[key] = total.get(key, 0) + int(w["count"])
        first.setdefault(key, f"{w['category']}: {w['message']}")
    body = "".join(
        f"<tr><td class=l>{_e(p)}</td><td class=l>{_e(m)}</td><td>{tasks[(p, m)]:,}"
        f"</td><td>{total[(p, m)]:,}</td><td class=l>{_e(first[(p, m)][:300])}</td></tr>"
        for p, m in sorted(tasks)
    )
    return (
        f"<h2>Warnings ({len(warned):,} tasks)</h2><table><tr>"
        "<th class=l>design point</th><th class=l>method</th><th>tasks</th>"
        f"<th>warnings</th><th class=l>first message</th></tr>{body}</table>"
    )
