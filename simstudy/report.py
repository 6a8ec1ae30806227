"""A self-contained HTML report of a store: study, measures, plots, timeline.

One file, no scripts, no network: plots are inline SVG drawn here (no
plotting library needed), styles are inline. Open it in any browser.

Layers: imports ``store, summary, errors`` (and numpy, xarray).
"""

from __future__ import annotations

import html
import itertools
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from simstudy.cube import METHOD
from simstudy.store import open_results, read_failures, read_warnings
from simstudy.summary import MEASURES, RESERVED, summarize, to_records

__all__ = ["write_report"]

COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#17becf"]
STYLE = """
body{font:14px/1.45 system-ui,sans-serif;margin:2em auto;max-width:1100px;color:#222}
h1{font-size:1.6em}h2{margin-top:2em;border-bottom:1px solid #ccc}
table{border-collapse:collapse;margin:.5em 0;font-size:13px}
td,th{border:1px solid #ddd;padding:2px 6px;text-align:right}
th{background:#f4f4f4}td.l,th.l{text-align:left}
.grid{display:flex;flex-wrap:wrap;gap:8px}.muted{color:#777}
svg text{font:11px system-ui,sans-serif}
"""


def write_report(store: str | os.PathLike[str], output: str | os.PathLike[str]) -> Path:
    """Write the HTML report of ``store`` to ``output``; return its path."""
    cube = open_results(store)
    meta = cube.attrs["simstudy"]
    summary = summarize(cube)
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
        _plots(summary),
        _timeline(cube, meta),
        _failures_section(failures, cube),
        _warnings_section(read_warnings(store), cube),
        "</body></html>",
    ]
    path = Path(output)
    path.write_text("\n".join(parts), encoding="utf-8")
    cube.close()
    return path


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
    """The measures with at least one value (relbias is NaN when truth is 0)."""
    return [
        m
        for m in MEASURES
        if m in summary.data_vars and bool(np.isfinite(summary[m].values).any())
    ]


def _measures_table(records: list[dict[str, Any]], summary: xr.Dataset) -> str:
    present = _shown(summary)
    fixed = {"method", "measure", "value", "mcse", *RESERVED}
    cells: dict[tuple[str, str], dict[str, str]] = {}
    counts: dict[tuple[str, str], int] = {}
    for r in records:
        point = ", ".join(f"{k}={v}" for k, v in r.items() if k not in fixed)
        key = (point, r["method"])
        mcse = (
            "" if r["mcse"] is None else f" <span class=muted>± {r['mcse']:.3g}</span>"
        )
        cells.setdefault(key, {})[r["measure"]] = f"{r['value']:.4g}{mcse}"
        counts[key] = r["n_ok"]
    head = "".join(f"<th>{_e(m)}</th>" for m in present)
    body = "".join(
        f"<tr><td class=l>{_e(p)}</td><td class=l>{_e(m)}</td><td>{counts[(p, m)]:,}</td>"
        + "".join(f"<td>{cells[(p, m)].get(x, '')}</td>" for x in present)
        + "</tr>"
        for p, m in cells
    )
    skipped = summary.attrs.get("skipped", {})
    notes = "".join(
        f"<li><b>{_e(k)}</b>: {_e(v if isinstance(v, str) else json.dumps(v))}</li>"
        for k, v in skipped.items()
    )
    return (
        "<h2>Performance measures (± Monte Carlo SE)</h2>"
        f"<table><tr><th class=l>design point</th><th class=l>method</th>"
        f"<th>n ok</th>{head}</tr>{body}</table>"
        + (f"<p>Not computed:</p><ul>{notes}</ul>" if notes else "")
    )


def _plots(summary: xr.Dataset) -> str:
    """Each measure against each factor, one line per method, ±2 MCSE bars;
    one panel per combination of the other factors' levels. An array
    output's extra dims are drawn like factors."""
    summary = xr.broadcast(summary)[0]
    factors = [str(d) for d in summary["n_ok"].dims if d != METHOD]
    methods = [str(m) for m in summary[METHOD].values]
    legend = " ".join(
        f"<span style='color:{COLORS[i % len(COLORS)]}'>&#9632; {_e(m)}</span>"
        for i, m in enumerate(methods)
    )
    out = [
        (
            f"<h2>Measures against factors</h2><p>{legend} "
            "<span class=muted>(bars: ±2 MCSE)</span></p>"
        )
    ]
    for measure in _shown(summary):
        for f in factors:
            others = [g for g in factors if g != f]
            panels = []
            for combo in itertools.product(*(summary[g].values for g in others)):
                where = dict(zip(others, combo, strict=True))
                sel = summary.sel(where) if where else summary
                title = ", ".join(f"{g}={v}" for g, v in where.items())
                panels.append(_line_panel(sel, measure, f, methods, title))
            out.append(
                f"<h3>{_e(measure)} by {_e(f)}</h3><div class=grid>"
                + "".join(panels)
                + "</div>"
            )
    return "".join(out)


def _line_panel(
    sel: xr.Dataset, measure: str, factor: str, methods: list[str], title: str
) -> str:
    w, h, left, right, top, bottom = 300, 190, 52, 10, 22, 30
    levels = list(sel[factor].values)
    y = sel[measure].transpose(factor, METHOD).values.astype(float)
    mcse_name = f"{measure}_mcse"
    e = (
        sel[mcse_name].transpose(factor, METHOD).values.astype(float)
        if mcse_name in sel
        else np.zeros_like(y)
    )
    e = np.nan_to_num(e)
    if not np.isfinite(y).any():
        return ""
    lo, hi = np.nanmin(y - 2 * e), np.nanmax(y + 2 * e)
    if hi == lo:
        lo, hi = lo - 1, hi + 1
    pad = (hi - lo) * 0.08
    lo, hi = lo - pad, hi + pad
    nx = len(levels)

    def px(i: float) -> float:
        return left + (i + 0.5) * (w - left - right) / nx

    def py(v: float) -> float:
        return float(top + (hi - v) * (h - top - bottom) / (hi - lo))

    parts = [
        (
            f"<svg width={w} height={h} viewBox='0 0 {w} {h}' role=img>"
            f"<rect x={left} y={top} width={w - left - right} height={h - top - bottom} "
            "fill='#fafafa' stroke='#ccc'/>"
        ),
        f"<text x={w / 2} y=14 text-anchor=middle>{_e(title or measure)}</text>",
    ]
    parts += [
        f"<text x={left - 4} y={py(t) + 4:.1f} text-anchor=end>{t:.3g}</text>"
        f"<line x1={left} x2={w - right} y1={py(t):.1f} y2={py(t):.1f} "
        "stroke='#eee'/>"
        for t in np.linspace(lo + pad, hi - pad, 4)
    ]
    for i, lv in enumerate(levels):
        parts.append(
            f"<text x={px(i):.1f} y={h - 12} text-anchor=middle>{_e(lv)}</text>"
        )
    parts.append(
        f"<text x={w / 2} y={h - 1} text-anchor=middle class=muted>{_e(factor)}</text>"
    )
    for j, _m in enumerate(methods):
        color = COLORS[j % len(COLORS)]
        shift = (j - (len(methods) - 1) / 2) * 4  # so bars do not hide each other
        pts = [(px(i) + shift, py(y[i, j])) for i in range(nx) if np.isfinite(y[i, j])]
        if len(pts) > 1:
            d = " ".join(f"{a:.1f},{b:.1f}" for a, b in pts)
            parts.append(
                f"<polyline points='{d}' fill='none' stroke='{color}' stroke-width='1.5'/>"
            )
        for i in range(nx):
            if not np.isfinite(y[i, j]):
                continue
            x0 = px(i) + shift
            parts.append(
                f"<line x1={x0:.1f} x2={x0:.1f} y1={py(y[i, j] - 2 * e[i, j]):.1f} "
                f"y2={py(y[i, j] + 2 * e[i, j]):.1f} stroke='{color}'/>"
                f"<circle cx={x0:.1f} cy={py(y[i, j]):.1f} r=2.5 fill='{color}'/>"
            )
    parts.append("</svg>")
    return "".join(parts)


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
    parts = [f"<svg width={w} height={height} viewBox='0 0 {w} {height}' role=img>"]
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
