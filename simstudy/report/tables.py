"""The report's tables of numbers: the performance measures (value and MCSE,
split so no table is wider than the page), the handling strategies side by
side, and the failure and warning rates by design point and method."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from typing import Any

import numpy as np
import xarray as xr

from simstudy.analysis.measures import OTHER
from simstudy.analysis.records import RESERVED
from simstudy.analysis.registry import MEASURES, SECTIONS, lookup
from simstudy.analysis.summary import summarize
from simstudy.cube import METHOD
from simstudy.report.markup import escape

__all__ = ["failure_rates", "measures_table", "strategies_section", "worth_showing"]

# the failure ledger's kinds: in their own section (failure_rates), no figures
LEDGER_KINDS = ("failure_rate_", "warning_rate_")
LONG_TABLE = 60  # rows; a longer table is folded (an HTML <details>, no script)


STRATEGY_MEASURES = ("bias", "empse", "rmse", "coverage", "power")


def worth_showing(summary: xr.Dataset, *, figures: bool = False) -> list[str]:
    """The measures worth showing: some finite value, and for failure and
    warning rates some nonzero one (an all-zero panel says nothing). With
    ``figures``, only those drawn as a figure of their own (``drawn``)."""
    known = [m for m in MEASURES if m in summary.data_vars]
    extra = [
        str(v)
        for v in summary.data_vars
        if str(v) not in known
        and not str(v).endswith("_mcse")
        and str(v) not in RESERVED
        and np.issubdtype(summary[v].dtype, np.floating)
    ]
    shown = []
    for measure in [*known, *extra]:
        found = lookup(measure, summary.attrs)
        undrawn = figures and found is not None and not found.drawn
        if measure.startswith(LEDGER_KINDS) or undrawn:
            continue
        values = np.asarray(summary[measure].values, dtype=float)
        if not np.isfinite(values).any():
            continue
        if measure.endswith("_rate") and not np.nan_to_num(values).any():
            continue
        shown.append(measure)
    return shown


def measures_table(records: list[dict[str, Any]], summary: xr.Dataset) -> str:
    """One row per design point and method; each cell ``value (MCSE)`` with
    as many decimals as the MCSE supports."""
    from simstudy.analysis.records import with_mcse

    present = worth_showing(summary)
    fixed = {"method", "measure", "value", "mcse", *RESERVED}
    cells: dict[tuple[str, str], dict[str, str]] = {}
    counts: dict[tuple[str, str], int] = {}
    for record in records:
        point = (
            ", ".join(f"{k}={v}" for k, v in record.items() if k not in fixed) or "all"
        )
        key = (point, record["method"])
        value = with_mcse(record["value"], record["mcse"])
        cells.setdefault(key, {})[record["measure"]] = value
        counts[key] = record["n_ok"]
    tables = "".join(
        _table(title, names, cells, counts)
        for title, names in _by_section(present, summary.attrs).items()
    )
    skipped = summary.attrs.get("skipped", {})
    notes = "".join(
        f"<li><b>{escape(k)}</b>: "
        + escape(
            v if isinstance(v, str) else "; ".join(f"{m}: {w}" for m, w in v.items())
        )
        + "</li>"
        for k, v in skipped.items()
    )
    settings = ", ".join(
        f"{k} = {escape(v)}"
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


def _by_section(present: list[str], attrs: Mapping[str, Any]) -> dict[str, list[str]]:
    """The measures of each table: the registry's sections in order, a
    user's own, then the other measures; the rates have their own section."""
    tables: dict[str, list[str]] = {title: [] for title in SECTIONS}
    for name in present:
        found = lookup(name, attrs)
        section = OTHER if found is None else found.section
        if section is not None:
            tables.setdefault(section, []).append(name)
    tables[OTHER] = tables.pop(OTHER, [])
    return tables


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
    head = "".join(f"<th>{escape(m)}</th>" for m in measures)
    kept = {k: row for k, row in cells.items() if any(x in row for x in measures)}
    spans = Counter(p for p, _ in kept)
    rows = []
    previous = None
    for (point, method), row in kept.items():
        span = spans[point] if point != previous else 0
        previous = point
        values = [row.get(x, "") for x in measures]
        rows.append(_row(point, span, method, counts[(point, method)], values))
    table = (
        "<div class=scroll><table class=measures><tr>"
        f"<th class=l>design point</th><th class=l>method</th><th>n ok</th>{head}"
        f"</tr>{''.join(rows)}</table></div>"
    )
    if len(rows) > LONG_TABLE:  # the figures give the overview; rows on demand
        return (
            f"<h3>{escape(title)}</h3><details><summary>{len(rows):,} rows "
            f"({len(spans):,} design points): show</summary>{table}</details>"
        )
    return f"<h3>{escape(title)}</h3>{table}"


def strategies_section(
    cube: xr.Dataset, options: dict[str, Any], several: list[str]
) -> str:
    """With several ``cases``: a table of the main measures under each
    strategy side by side (value and MCSE), per design point and method."""
    if len(several) < 2:
        return ""
    # only the measures shown here (the first strategy's full summary is
    # the page's; the user's measures= still narrows them)
    side = summarize(
        cube, **{"measures": list(STRATEGY_MEASURES), **options, "cases": several}
    )
    shown = [m for m in STRATEGY_MEASURES if m in side.data_vars]
    factors = [str(d) for d in side["n_ok"].dims if d not in ("cases", METHOD)]
    head = "".join(
        f"<th>{escape(m)} ({escape(c)})</th>" for m in shown for c in several
    )
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
                f"<tr><td class=l>{escape(point)}</td>"
                f"<td class=l>{escape(str(method))}</td>{values}</tr>"
            )
    return (
        "<h2>Handling strategies side by side</h2>"
        f"<p>The same measures with the replicates each strategy uses "
        f"({escape(', '.join(several))}; docs/analysis.md); the figures and the "
        f"tables above use {escape(several[0])}.</p>"
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
        share = summary["n_failed"] / done.where(done > 0)
        summary = summary.assign(
            failure_rate=share, failure_rate_mcse=np.sqrt(share * (1 - share) / done)
        )
    names = [str(v) for v in summary.data_vars if not str(v).endswith("_mcse")]
    rates = [  # each total, then the failure ledger by kind (analysis.ledger)
        v
        for total in ("failure_rate", "warning_rate")
        for v in [total, *(n for n in names if n.startswith(f"{total}_"))]
        if v in names
    ]
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
    head = "".join(f"<th>{escape(v.replace('_', ' '))} (MCSE)</th>" for v in rates)
    factors = [str(d) for d in summary[rates[0]].dims if d != METHOD]
    rows = []
    methods = summary[METHOD].values.tolist()
    for point in design_points(summary[rates[0]], factors):
        for k, method in enumerate(methods):
            cell = summary.sel({**point, METHOD: method})
            failed = int(cell["n_failed"]) if "n_failed" in cell else 0
            span = len(methods) if k == 0 else 0
            values = [_rate(cell, v) for v in rates]
            rows.append(_row(label(point), span, method, failed, values))
    table = (
        "<div class=scroll><table class=measures><tr><th class=l>design point</th>"
        f"<th class=l>method</th><th>failed</th>{head}</tr>{''.join(rows)}</table></div>"
    )
    if len(rows) > LONG_TABLE:
        table = f"<details><summary>{len(rows):,} rows: show</summary>{table}</details>"
    return title + table


def _row(point: str, span: int, method: str, count: int, values: list[str]) -> str:
    """A row of a table by design point and method: the design point ``span``
    rows high on its first method's row (``span`` 0 on the others), the
    method, a count, the values."""
    first = f"<td class=l rowspan={span}>{escape(point)}</td>" if span else ""
    return (
        f"<tr>{first}<td class=l>{escape(method)}</td><td>{count:,}</td>"
        + "".join(f"<td>{escape(value)}</td>" for value in values)
        + "</tr>"
    )


def _rate(cell: xr.Dataset, name: str) -> str:
    """``0.075 (0.019)``: a rate with its MCSE (when the summary has one)."""
    from simstudy.analysis.records import with_mcse

    mcse = float(cell[f"{name}_mcse"]) if f"{name}_mcse" in cell else None
    return with_mcse(float(cell[name]), mcse)
