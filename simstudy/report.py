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
import inspect
import io
import json
import os
import re
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import xarray as xr

from simstudy.atomic import write_text
from simstudy.cube import METHOD
from simstudy.errors import UsageError
from simstudy.store import open_results, read_failures, read_warnings
from simstudy.summary import MEASURES, RESERVED, summarize, to_records

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["write_report"]

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
    ("Failures and warnings", ("failure_rate", "warning_rate")),
)
LONG_TABLE = 60  # rows; a longer table is folded (an HTML <details>, no script)
# measures whose values compare on one scale: their figures share a y range
SHARED = (("coverage", "becoverage"),)
# replicate-level figures show at most this many design points, spread out
MOST_ZIP, MOST_BOXES = 4, 8


def write_report(
    store: str | os.PathLike[str],
    output: str | os.PathLike[str],
    *,
    reference: str | None = None,
    alpha: float = 0.05,
    cases: str | None = None,
) -> Path:
    """Write the HTML report of ``store`` to ``output``; return its path.

    ``reference`` (a method: relative precision and paired measures),
    ``alpha`` (rejection level) and ``cases`` (``"available"`` or
    ``"complete"`` replicates) are passed to ``simstudy.summarize``.
    """
    cube = open_results(store)
    meta = cube.attrs["simstudy"]
    summary = summarize(cube, **_summary_options(reference, alpha, cases))
    records = to_records(summary)
    failures = read_failures(store)
    parts = [
        (
            f"<!doctype html><html lang=en><head><meta charset=utf-8>"
            f"<title>simstudy report: {_e(meta['study'])}</title>"
            f"<style>{STYLE}</style></head><body>"
        ),
        f"<h1>Simulation study <i>{_e(meta['study'])}</i></h1>",
        _study_section(cube, meta),
        _measures_table(records, summary),
        _measure_figures(summary),
        _replicate_figures(cube),
        _timeline(cube, meta),
        _failures_section(failures, cube),
        _warnings_section(read_warnings(store), cube),
        "</body></html>",
    ]
    cube.close()
    # whole or not at all: a full disk leaves a previous report as it was
    path = write_text(output, "\n".join(parts))
    return path


def _summary_options(
    reference: str | None, alpha: float, cases: str | None
) -> dict[str, Any]:
    options: dict[str, Any] = {"reference": reference, "alpha": alpha}
    if cases is not None:
        if "cases" not in inspect.signature(summarize).parameters:
            raise UsageError(
                "this version of summarize cannot choose cases",
                hint="leave out --cases",
            )
        options["cases"] = cases
    return options


def _e(x: Any) -> str:
    return html.escape(str(x))


def _study_section(cube: xr.Dataset, meta: dict[str, Any]) -> str:
    fp = meta["fingerprint"]
    status = cube["status"].values
    counts = [int((status == c).sum()) for c in (1, 2, 0)]
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
                f"{status.size:,}: {counts[0]:,} ok, {counts[1]:,} failed, "
                f"{counts[2]:,} pending"
            ),
        ),
        ("created", meta.get("created", "?")),
        (
            "versions",
            ", ".join(f"{k} {v}" for k, v in meta.get("versions", {}).items()),
        ),
        ("workers", f"{len(meta.get('workers', []))} process(es)"),
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
        [m for m in present if not any(m in g for _, g in TABLES)],
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
        if k in ("level", "alpha", "reference", "cases") and v is not None
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


def _measure_figures(summary: xr.Dataset) -> str:
    """One figure per measure, every design point and method in it: a
    nested-loop plot (or a lollipop plot for a single design point)."""
    from simstudy.plots import lollipop_plot, nested_loop_plot

    shown = _shown(summary)
    for implied, by in (("mean", "bias"), ("mse", "rmse")):  # same picture twice
        if implied in shown and by in shown:
            shown.remove(implied)
    limits = _shared_limits(summary, shown)
    figures = []
    for k, measure in enumerate(shown):
        loops = [d for d in summary[measure].dims if d != METHOD]
        if loops:
            fig = nested_loop_plot(
                summary,
                measure,
                ylim=limits.get(measure),
                size=(5.3, 3.3 + 0.25 * len(loops)),
            )
        else:
            fig = lollipop_plot(
                summary, measure, size=(5.3, 1.4 + 0.3 * summary.sizes[METHOD])
            )
        figures.append(f"<figure>{_svg(fig, f'm{k}')}</figure>")
    kind = (
        "nested-loop plots: design points in order, the factors' levels stepping "
        "underneath"
        if any(d != METHOD for d in summary.dims)
        else "one design point"
    )
    return (
        "<h2>Measures against factors</h2>"
        f"<p class=muted>{kind}; bands and bars: ± 1.96 MCSE; dotted: the "
        "reference (0 for bias, the level for coverage, alpha for rejection).</p>"
        f"<div class=grid>{''.join(figures)}</div>"
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


def _replicate_figures(cube: xr.Dataset) -> str:
    """Zip plots of the interval methods and the estimates' distributions,
    for a few design points spread over the grid."""
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
    if interval:
        try:
            fig = zip_plot(cube, methods=interval, points=picked)
        except UsageError as e:  # e.g. no truth: the zip plot needs one
            out.append(f"<h2>Zip plots</h2><p class=muted>Not drawn: {_e(e)}.</p>")
        else:
            out.append(
                f"<h2>Zip plots of the interval methods ({_which(picked, grid)})</h2>"
                "<p class=muted>Each replicate's interval at its centile of "
                "|estimate &minus; truth| / SE; orange: it misses the truth. Solid "
                "line: coverage, dashed: its Monte Carlo 95% interval, dotted: "
                "the nominal level (Morris et al. 2019).</p>"
                f"<figure>{_png(fig, 'zip plots')}</figure>"
            )
    if scalar:
        fig = distribution_plot(cube, methods=scalar, points=boxes)
        out.append(
            f"<h2>Estimates by method ({_which(boxes, grid)})</h2>"
            "<p class=muted>Box: quartiles and median; whiskers: 1.5 IQR; "
            "dotted: the truth.</p>"
            f"<figure>{_png(fig, 'distributions of the estimates')}</figure>"
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
