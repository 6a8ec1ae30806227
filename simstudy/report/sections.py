"""The report's sections about the run rather than the measures: study and
provenance, solved levels, the workers' timeline, failures and warnings."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import xarray as xr

from simstudy.analysis.blocks import planned
from simstudy.cube import METHOD
from simstudy.declare import deviations
from simstudy.report.markup import escape, svg
from simstudy.store.versionlog import notes as version_notes

__all__ = [
    "deviations_section",
    "failures_section",
    "solve_section",
    "study_section",
    "timeline",
    "warnings_section",
]


def study_section(cube: xr.Dataset, meta: dict[str, Any]) -> str:
    fingerprint = meta["fingerprint"]
    status = cube["status"].values
    inside = np.ones(status.shape, bool)
    if "in_design" in cube.coords:  # where=: points outside are never planned
        design = cube["in_design"].broadcast_like(cube["status"])
        inside &= design.transpose(*cube["status"].dims).values
    within = planned(cube).broadcast_like(cube["status"])  # a target's stop
    inside &= within.transpose(*cube["status"].dims).values
    counts = [int(((status == c) & inside).sum()) for c in (1, 2, 0)]
    total = int(inside.sum())
    rows = [
        (
            "factors",
            "; ".join(
                f"{f} = {fingerprint['factors'][f]}" for f in meta["factor_order"]
            ),
        ),
        ("replicates", f"{fingerprint['replicates']:,}"),
        ("methods", ", ".join(str(m) for m in cube[METHOD].values)),
        ("seed, streams", f"{fingerprint['seed']}, {fingerprint['scheme']}"),
        (
            "tasks",
            (
                f"{total:,}: {counts[0]:,} ok, {counts[1]:,} failed, "
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
        f"<tr><th class=l>{escape(k)}</th><td class=l>{escape(v)}</td></tr>"
        for k, v in rows
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
        f"{', '.join(f'{k}={v}' for k, v in stop['point'].items())}: "
        f"{stop['replicates']:,} replicates, "
        f"{'met' if stop['state'] == 'met' else 'not met'}"
        for stop in points
    )
    return [("target MCSE", rule), ("target_replicates", where)]


def deviations_section(
    registration: dict[str, Any] | None, meta: dict[str, Any]
) -> str:
    """The report's "Deviations from the protocol" section ('' without one)."""
    if not registration:
        return ""
    found = deviations.deviations(
        registration["record"], deviations.from_store_meta(meta)
    )
    head = (
        f"<h2>Deviations from the protocol</h2><p class=muted>Registered protocol "
        f"{escape(str(registration.get('file', '')))} (sha256 "
        f"{escape(str(registration.get('sha256', ''))[:16])}…), compared "
        "with the fingerprint of what this store holds.</p>"
    )
    if not found:
        return (
            head + "<p>None: the store holds exactly what the protocol registered.</p>"
        )
    items = "".join(f"<li>{escape(line)}</li>" for line in found)
    return head + f"<ul>{items}</ul>"


def solve_section(summary: xr.Dataset, meta: dict[str, Any]) -> str:
    """Each ``simstudy solve`` the store holds: the answer with its interval
    and the measure's curve over the solved factor, MCSE bands, the target."""
    from simstudy.plots import measure_curve

    parts = []
    for i, solved in enumerate(meta.get("solve", [])):
        where = ", ".join(f"{k} = {v}" for k, v in solved["point"].items())
        state = "" if solved["met"] else " (budget spent before the tolerance was met)"
        text = (
            f"{solved['factor']} = <b>{escape(solved['answer'])}</b>"
            f"{' at ' + escape(where) if where else ''}: "
            f"{escape(solved['measure'])} of {escape(solved['method'])} reaches "
            f"{solved['target']:g} at {solved['estimate']:.4g}, "
            f"{solved['level']:.0%} CI "
            f"{solved['lower']:.4g} to {solved['upper']:.4g} "
            f"({solved['tasks']:,} tasks, {solved['rounds']} rounds){escape(state)}."
        )
        figure = ""
        if solved["measure"] in summary and solved["method"] in summary[METHOD].values:
            fig = measure_curve(
                summary,
                solved["measure"],
                factor=solved["factor"],
                at=solved["point"],
                methods=solved["method"],
                target=solved["target"],
                solution=solved,
            )
            figure = svg(fig, f"solve{i}")
        parts.append(f"<p>{text}</p>{figure}")
    if not parts:
        return ""
    return "<h2>Solved levels</h2>" + "".join(parts)


def timeline(cube: xr.Dataset, meta: dict[str, Any]) -> str:
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
    width, row, left = 1000, 18, 150
    height = row * len(ids) + 30
    parts = [
        (
            f"<svg class=tl width={width} height={height} "
            f"viewBox='0 0 {width} {height}' role=img>"
        )
    ]
    gap = span / 2000  # tasks closer than this are drawn as one busy stretch
    for k, wid in enumerate(ids):
        mine = done & (worker == wid)
        order = np.argsort(started[mine])
        starts = started[mine][order] - t0
        ends = starts + seconds[mine][order]
        busy = float(seconds[mine].sum())
        label = names[wid] if wid < len(names) else str(wid)
        top = 5 + k * row
        parts.append(
            f"<text x={left - 6} y={top + 12} text-anchor=end>{escape(label)}</text>"
        )
        stretch_start, stretch_end = starts[0], ends[0]
        for start, end in zip(starts[1:], ends[1:], strict=True):
            if start - stretch_end > gap:
                parts.append(
                    _bar(stretch_start, stretch_end, span, left, width, top, row)
                )
                stretch_start = start
            stretch_end = max(stretch_end, end)
        parts.append(_bar(stretch_start, stretch_end, span, left, width, top, row))
        parts.append(
            f"<text x={width - 4} y={top + 12} text-anchor=end class=muted>"
            f"{100 * busy / span:.0f}% busy</text>"
        )
    parts.append(
        f"<text x={left} y={height - 6}>0 s</text>"
        f"<text x={width - 60} y={height - 6} text-anchor=end>{span:.1f} s</text>"
        "</svg>"
    )
    return (
        "<h2>Workers: tasks over time</h2><p class=muted>One row per worker "
        "process; a dark stretch is time spent in tasks (load balance).</p>"
        + "".join(parts)
    )


def _bar(
    start: float, end: float, span: float, left: int, width: int, y: int, row: int
) -> str:
    """One busy stretch of a worker's row, from ``start`` to ``end`` seconds."""
    scale = (width - left - 80) / span
    length = max((end - start) * scale, 0.5)
    return (
        f"<rect x={left + start * scale:.1f} y={y} width={length:.1f} "
        f"height={row - 4} fill='#4a78b0'/>"
    )


def failures_section(failures: list[dict[str, Any]], cube: xr.Dataset) -> str:
    if not failures:
        return "<h2>Failures</h2><p>No task failed.</p>"
    body = "".join(
        _row(point, method, [len(group)], f"{group[0]['type']}: {group[0]['message']}")
        for (point, method), group in _by_cell(failures, cube).items()
    )
    return (
        f"<h2>Failures ({len(failures):,} tasks)</h2><table><tr>"
        "<th class=l>design point</th><th class=l>method</th><th>failed</th>"
        f"<th class=l>first message</th></tr>{body}</table>"
    )


def warnings_section(warned: list[dict[str, Any]], cube: xr.Dataset) -> str:
    if not warned:
        return "<h2>Warnings</h2><p>No task emitted a warning.</p>"
    body = "".join(
        _row(
            point,
            method,
            [len(group), sum(int(record["count"]) for record in group)],
            f"{group[0]['category']}: {group[0]['message']}",
        )
        for (point, method), group in _by_cell(warned, cube).items()
    )
    return (
        f"<h2>Warnings ({len(warned):,} tasks)</h2><table><tr>"
        "<th class=l>design point</th><th class=l>method</th><th>tasks</th>"
        f"<th>warnings</th><th class=l>first message</th></tr>{body}</table>"
    )


def _by_cell(
    records: list[dict[str, Any]], cube: xr.Dataset
) -> dict[tuple[str, str], list[dict[str, Any]]]:
    """Failure or warning records by design point (``n=20, rho=0.5``) and
    method, sorted by both, each group in the order the store gave."""
    factors = list(cube.attrs["simstudy"]["factor_order"])
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for record in records:
        point = ", ".join(f"{k}={record.get(k)}" for k in factors)
        groups.setdefault((point, record["method"]), []).append(record)
    return {key: groups[key] for key in sorted(groups)}


def _row(point: str, method: str, counts: list[int], message: str) -> str:
    """A table row: design point, method, the counts, the first message."""
    numbers = "".join(f"<td>{count:,}</td>" for count in counts)
    return (
        f"<tr><td class=l>{escape(point)}</td><td class=l>{escape(method)}</td>"
        f"{numbers}<td class=l>{escape(message[:300])}</td></tr>"
    )
