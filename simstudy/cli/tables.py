"""Summary records as text: the aligned table, CSV, LaTeX and Markdown.

A record is one design point x method x measure (``records.to_records``).
The long layout has one row per design point x method and one column per
measure; ``wide`` has one row per design point x measure and one column per
method. Manuscript formats (LaTeX booktabs, Markdown) show ``value (MCSE)``
with the value rounded where its MCSE's second significant digit falls.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Mapping
from typing import Any

from simstudy.analysis.records import RESERVED, pair

__all__ = [
    "STYLES",
    "csv_text",
    "footnoted_table",
    "skipped_lines",
    "text_table",
    "wide_table",
]

FIXED = {"method", *RESERVED, "measure", "value", "mcse"}


USED = "replicates"  # the long layout's count column: replicates used


def _point(r: dict[str, Any]) -> tuple[Any, ...]:
    return tuple(v for k, v in r.items() if k not in FIXED)


def _keys(records: list[dict[str, Any]]) -> list[str]:
    return [k for k in records[0] if k not in FIXED] if records else []


def _reason(skipped: Mapping[str, Any], measure: str, method: str) -> str:
    """Why ``measure`` has no value for ``method`` (from ``attrs["skipped"]``)."""
    why = skipped.get(measure)
    if isinstance(why, str):
        return why
    if isinstance(why, Mapping) and isinstance(why.get(method), str):
        return str(why[method])
    return "not computed for this design point"


def _footnoted(
    head: list[str],
    body: list[list[str]],
    skipped: Mapping[str, Any],
    text_cols: int,
    mark: Callable[[int], str],
) -> list[str]:
    """Fill the empty cells of a wide table with a footnote mark; return the
    notes ("1: method: reason"), one per distinct reason."""
    notes: dict[str, int] = {}
    for row in body:
        measure = row[text_cols - 1]
        for c in range(text_cols, len(head)):
            if row[c]:
                continue
            text = f"{head[c]}: {_reason(skipped, measure, head[c])}"
            k = notes.setdefault(text, len(notes) + 1)
            row[c] = mark(k)
    return [f"{k}: {text}" for text, k in notes.items()]


def _grid(
    records: list[dict[str, Any]], wide: bool, methods: list[str] | None = None
) -> tuple[list[str], list[list[str]]]:
    """Header and rows of strings in the long or wide layout (``methods``:
    the wide layout's columns, also those without any record)."""
    keys = _keys(records)
    by = "measure" if wide else "method"
    across = "method" if wide else "measure"
    columns = list(dict.fromkeys(r[across] for r in records))
    if wide and methods is not None:
        columns = list(dict.fromkeys([*methods, *columns]))
    rows: dict[tuple[Any, ...], dict[str, str]] = {}
    for r in records:
        key = (*_point(r), r[by])
        row = rows.setdefault(key, {})
        row[r[across]] = pair(r["value"], r["mcse"])
        if not wide:
            used = r["n_ok"] - r.get("n_dropped", 0) + r.get("n_fallback", 0)
            row[USED] = f"{used:,}"
    head = [*keys, by, *([] if wide else [USED]), *columns]
    body = [
        [
            *map(str, key),
            *([] if wide else [row[USED]]),
            *(row.get(c, "") for c in columns),
        ]
        for key, row in rows.items()
    ]
    return head, body


def _noted_grid(
    records: list[dict[str, Any]],
    wide: bool,
    skipped: Mapping[str, Any] | None,
    methods: list[str] | None,
    mark: Callable[[int], str],
) -> tuple[list[str], list[list[str]], int, list[str]]:
    """The table's head and body, how many columns hold text, and in the
    wide layout the footnotes of its empty cells (each cell marked by
    ``mark``)."""
    head, body = _grid(records, wide, methods)
    text_cols = len(_keys(records)) + 1
    notes = _footnoted(head, body, skipped or {}, text_cols, mark) if wide else []
    return head, body, text_cols, notes


def _escape(text: str) -> str:
    for a, b in (("\\", r"\textbackslash{}"), ("_", r"\_"), ("%", r"\%"), ("&", r"\&")):
        text = text.replace(a, b)
    return text.replace("#", r"\#").replace("$", r"\$")


def footnoted_table(
    style: str,
    records: list[dict[str, Any]],
    *,
    wide: bool = False,
    skipped: Mapping[str, Any] | None = None,
    methods: list[str] | None = None,
) -> str:
    """``records`` as a ``"latex"`` or ``"markdown"`` table. In the wide
    layout a measure a method lacks is an empty cell with a footnote (its
    reason, from ``skipped``) under the table."""
    mark, draw = STYLES[style]
    head, body, text_cols, notes = _noted_grid(records, wide, skipped, methods, mark)
    return draw(head, body, text_cols, notes)


def _latex(
    head: list[str], body: list[list[str]], text_cols: int, notes: list[str]
) -> str:
    """A booktabs ``tabular``: \\toprule, \\midrule, \\bottomrule."""
    spec = "l" * text_cols + "r" * (len(head) - text_cols)
    lines = [
        f"\\begin{{tabular}}{{{spec}}}",
        "\\toprule",
        " & ".join(_escape(h) for h in head) + " \\\\",
        "\\midrule",
        *(" & ".join(map(_cell, row)) + " \\\\" for row in body),
        "\\bottomrule",
        "\\end{tabular}",
    ]
    lines += [
        f"\\par\\footnotesize $^{{{n.split(':')[0]}}}${_escape(n.split(':', 1)[1])}"
        for n in notes
    ]
    return "\n".join(lines) + "\n"


def _markdown(
    head: list[str], body: list[list[str]], text_cols: int, notes: list[str]
) -> str:
    """A pipe table (GitHub-flavoured), numbers right-aligned."""
    rule = ["---"] * text_cols + ["---:"] * (len(head) - text_cols)

    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"

    table = [line(head), line(rule), *(line(r) for r in body)]
    foot = [f"[^{n.split(':')[0]}]:{n.split(':', 1)[1]}" for n in notes]
    return "\n".join([*table, *(["", *foot] if foot else [])]) + "\n"


# a style's footnote mark and how it draws the grid
STYLES: dict[str, tuple[Callable[[int], str], Callable[..., str]]] = {
    "latex": (lambda k: f"\\textsuperscript{{{k}}}", _latex),
    "markdown": (lambda k: f"[^{k}]", _markdown),
}


def wide_table(
    records: list[dict[str, Any]], *, methods: list[str] | None = None
) -> str:
    """The wide layout as aligned plain text (a method column for each of
    ``methods``, empty where it has no value: "not computed" says why)."""
    head, body = _grid(records, True, methods)
    widths = [max(len(x) for x in col) for col in zip(head, *body, strict=True)]
    text_cols = len(_keys(records)) + 1

    def line(cells: list[str]) -> str:
        return "  ".join(
            c.ljust(w) if i < text_cols else c.rjust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ).rstrip()

    return "\n".join([line(head), *(line(r) for r in body)]) + "\n"


def csv_text(records: list[dict[str, Any]], *, wide: bool = False) -> str:
    """CSV: one row per record, or (wide) per design point x measure with a
    value and an MCSE column per method."""
    buf = io.StringIO()
    if not records:
        return ""
    if not wide:
        writer = csv.DictWriter(buf, fieldnames=list(records[0]))
        writer.writeheader()
        writer.writerows(records)
        return buf.getvalue()
    keys = _keys(records)
    methods = list(dict.fromkeys(r["method"] for r in records))
    rows: dict[tuple[Any, ...], dict[str, Any]] = {}
    for r in records:
        row = rows.setdefault(
            (*_point(r), r["measure"]),
            {**{k: r[k] for k in keys}, "measure": r["measure"]},
        )
        row[r["method"]] = r["value"]
        row[f"{r['method']}_mcse"] = r["mcse"]
    names = [*keys, "measure", *(x for m in methods for x in (m, f"{m}_mcse"))]
    writer = csv.DictWriter(buf, fieldnames=names)
    writer.writeheader()
    writer.writerows(rows.values())
    return buf.getvalue()


def text_table(records: list[dict[str, Any]], skipped: dict[str, Any]) -> str:
    """Records as an aligned text table, one block per design point."""
    lines: list[str] = []
    last = None
    for r in records:
        point = ", ".join(f"{k}={v}" for k, v in r.items() if k not in FIXED)
        if point != last:
            lines += ["", point or "all"]
            lines.append(
                f"  {'method':<14} {'measure':<26} {'value':>12} {'MCSE':>10}  n_ok"
            )
            last = point
        mcse = "" if r["mcse"] is None else f"{r['mcse']:10.4g}"
        pending = r["n_failed"] + r["n_pending"]
        note = (
            f"  ({r['n_failed']:,} failed, {r['n_pending']:,} pending)"
            if pending
            else ""
        )
        if r.get("n_dropped"):
            note += f"  ({r['n_dropped']:,} dropped: not complete)"
        if r.get("n_nonfinite"):
            note += f"  ({r['n_nonfinite']:,} non-finite left out)"
        lines.append(
            f"  {r['method']:<14} {r['measure']:<26} {r['value']:12.5g} "
            f"{mcse:>10}  {r['n_ok']:,}{note}"
        )
    lines += skipped_lines(skipped)
    return "\n".join(lines).lstrip("\n") + "\n"


def skipped_lines(skipped: dict[str, Any]) -> list[str]:
    """The "not computed:" block, one line per measure with the reason."""
    if not skipped:
        return []
    lines = ["", "not computed:"]
    for measure, why in skipped.items():
        text = (
            why
            if isinstance(why, str)
            else "; ".join(f"{m}: {w}" for m, w in why.items())
        )
        lines.append(f"  {measure}: {text}")
    return lines


def _cell(text: str) -> str:
    """A LaTeX cell: escaped, but a footnote mark kept as it is."""
    return text if text.startswith("\\textsuperscript") else _escape(text)
