"""What every plot shares: the figure, checks of its arguments, design points.

A figure is a ``matplotlib.figure.Figure`` with the Agg canvas and a
constrained layout (labels are never clipped); no pyplot, so no GUI backend
and no global state. Its texts draw as plain text (a ``$`` in a level is a
dollar sign, never mathtext) unless ``fig.mathtext = True``. Checks raise
``UsageError`` naming what was given and what is available.
"""

from __future__ import annotations

import io
import itertools
import math
import weakref
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import xarray as xr
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.text import Text

from simstudy.analysis.records import RESERVED, decimals_for, with_mcse
from simstudy.analysis.registry import lookup
from simstudy.analysis.selection import check_methods, factors_of, select_points, subset
from simstudy.cube import METHOD, OK, REPLICATE, point_json
from simstudy.errors import UsageError

__all__ = [
    "COLORS",
    "PlotFigure",
    "Point",
    "Points",
    "add_note",
    "check_cube",
    "check_measure",
    "check_methods",
    "choose_points",
    "decimals_for",
    "declared",
    "design_mask",
    "design_points",
    "factors_of",
    "fixed_levels",
    "grid_shape",
    "label",
    "measures_of",
    "method_dim",
    "new_figure",
    "ok_values",
    "output_dims",
    "output_name",
    "outside_legend",
    "plain_ticks",
    "read_points",
    "reference_value",
    "select_points",
    "subset",
    "title_fixed",
    "truth_at",
    "with_mcse",
]

# Okabe-Ito: distinguishable for colour-blind readers and in greyscale print
COLORS = (
    "#0072B2",
    "#D55E00",
    "#009E73",
    "#CC79A7",
    "#E69F00",
    "#56B4E9",
    "#000000",
    "#F0E442",
)

Point = dict[str, Any]
Points = Mapping[str, Any] | Sequence[Mapping[str, Any]] | None


class PlotFigure(Figure):
    """A ``matplotlib.figure.Figure`` that Jupyter shows as a picture, with
    plain-text labels.

    Everything a Figure does works (``.savefig``, ``.axes``); as a cell's
    value it displays inline as a PNG without ``%matplotlib inline``.
    ``notes`` lists what the plot left out and why (e.g. a method without a
    truth in a zip plot); the figure also prints them under its axes.

    Levels, method and output names come from the user's study, and a ``$``
    in them (``price $5``, ``$\\nope{$``) would otherwise be parsed as
    mathtext: drawn as math, or failing the whole figure. Set
    ``fig.mathtext = True`` before drawing or saving to parse ``$...$``
    again (then every text must be valid mathtext).
    """

    notes: list[str]
    xlabel: str = ""
    mathtext = False

    def draw(self, renderer: Any) -> None:
        plain: weakref.WeakSet[Text] = self.__dict__.setdefault(
            "_plain_texts", weakref.WeakSet()
        )
        for text in self.findobj(Text):
            if not self.mathtext and text.get_parse_math():
                text.set_parse_math(False)
                plain.add(text)
            elif self.mathtext and text in plain:
                text.set_parse_math(True)  # what was ours to turn off
                plain.discard(text)
        super().draw(renderer)

    def _repr_png_(self) -> bytes:
        buf = io.BytesIO()
        self.savefig(buf, format="png", dpi=self.dpi)
        return buf.getvalue()


def new_figure(width: float, height: float, dpi: float = 100) -> PlotFigure:
    """A PlotFigure on the Agg canvas with a constrained layout; plain-text
    labels."""
    fig = PlotFigure(figsize=(width, height), dpi=dpi, layout="constrained")
    fig.notes = []
    FigureCanvasAgg(fig)
    return fig


def add_note(fig: PlotFigure, note: str) -> None:
    """Record what the figure leaves out, and print it under its axes."""
    if not fig.notes:  # a shared x label (the zip plot's) stays on top
        fig.xlabel = fig.get_supxlabel()
    fig.notes.append(note)
    fig.supxlabel("\n".join([fig.xlabel, *fig.notes]).strip(), fontsize="small")


def measures_of(summary: xr.Dataset) -> list[str]:
    """The measures a summary holds (not their MCSEs, not the counts)."""
    return [
        str(v)
        for v in summary.data_vars
        if not str(v).endswith("_mcse") and str(v) not in RESERVED
    ]


def check_measure(summary: xr.Dataset, measure: str) -> xr.DataArray:
    """The measure's values; a clear error naming the available ones."""
    given: Any = summary  # callers may pass anything; say what it was
    if (
        not isinstance(given, xr.Dataset)
        or METHOD not in given.dims
        or REPLICATE in given.dims
    ):
        what = "a cube" if REPLICATE in getattr(given, "dims", ()) else "it"
        raise UsageError(
            f"expected a summary (an xarray Dataset with a {METHOD!r} dimension "
            f"and no {REPLICATE!r}), got {type(given).__name__}; {what} is not one",
            hint="pass simstudy.summarize(cube)",
        )
    available = measures_of(summary)
    if measure not in available:
        skipped = summary.attrs.get("skipped", {})
        why = (
            f" ({measure} was skipped: {skipped[measure]})"
            if measure in skipped
            else ""
        )
        raise UsageError(
            f"unknown measure {measure!r}{why}; this summary has: "
            f"{', '.join(available)}",
            hint="pick one of those names, e.g. 'bias' or 'coverage'",
        )
    return summary[measure]


def fixed_levels(data: xr.Dataset | xr.DataArray) -> Point:
    """Factors selected down to one level (``cube.sel(n=30)``): ``{"n": 30}``."""
    order = data.attrs.get("simstudy", {}).get("factor_order") or list(data.coords)
    return {
        str(f): data.coords[f].item()
        for f in order
        if f in data.coords and data.coords[f].ndim == 0 and f != METHOD
    }


def output_dims(cube: xr.Dataset, output: str) -> list[str]:
    """The extra dims of an array output (empty for a number)."""
    factors = set(factors_of(cube))
    return [str(d) for d in cube[output].dims if d not in {REPLICATE, METHOD} | factors]


def choose_points(
    data: xr.Dataset, points: Points, factors: Sequence[str]
) -> tuple[xr.Dataset, list[Point]]:
    """The design points asked for and ``data`` cut down to them.

    ``points`` is None (all), a mapping of levels (``{"n": [20, 100]}``: every
    point with those levels) or a list of design points (each a mapping of
    every factor to a level), kept in the order given.
    """
    if points is None or isinstance(points, Mapping):
        data = select_points(data, points, factors)
        return data, design_points(data, factors)
    chosen = [dict(p) for p in points]
    for p in chosen:
        if sorted(p) != sorted(factors):
            raise UsageError(
                f"a design point in points= must give every factor a level: got "
                f"{p!r}, the factors are: {', '.join(factors)}",
                hint="write points=[{"
                + ", ".join(f"{f!r}: ..." for f in factors)
                + "}]",
            )
    levels = {f: list(dict.fromkeys(p[f] for p in chosen)) for f in factors}
    data = select_points(data, levels, factors)
    return data, [{f: p[f] for f in factors} for p in chosen]


def design_points(
    data: xr.Dataset | xr.DataArray, factors: Sequence[str]
) -> list[Point]:
    """Every design point of ``data`` in grid order (first factor slowest);
    with an ``in_design`` coordinate (``where=``), only the points in it."""
    levels = [list(data[f].values.tolist()) for f in factors]
    grid = [
        dict(zip(factors, combo, strict=True)) for combo in itertools.product(*levels)
    ]
    keep = design_mask(data, factors)
    if keep is None:
        return grid
    return [p for p, k in zip(grid, keep, strict=True) if k]


def design_mask(
    data: xr.Dataset | xr.DataArray, factors: Sequence[str]
) -> np.ndarray[Any, Any] | None:
    """Which points of the cross of ``factors`` (first slowest) are in the
    study's design (the ``in_design`` coordinate); None: all of them."""
    if "in_design" not in data.coords:
        return None
    inside = data["in_design"]
    others = [d for d in inside.dims if d not in factors]
    reduced = inside.any(others) if others else inside
    if set(reduced.dims) != set(factors) or bool(reduced.all()):
        return None
    return np.asarray(reduced.transpose(*factors).values).reshape(-1)


def label(point: Mapping[str, Any]) -> str:
    """``n=20, eps=0.1`` (or ``all`` for a study without factors)."""
    return ", ".join(f"{k}={v}" for k, v in point.items()) or "all"


def declared(cube: xr.Dataset, method: str) -> dict[str, Any]:
    """A method's declared outputs: estimate, and se / ci / p when declared."""
    meta = cube.attrs.get("simstudy", {})
    stored = meta.get("measures", {}) if isinstance(meta, Mapping) else {}
    d = {k: v for k, v in dict(stored.get(method, {})).items() if v is not None}
    if "estimate" not in d:
        d["estimate"] = "estimate" if "estimate" in cube.data_vars else "value"
    return d


def truth_at(cube: xr.Dataset, output: str, point: Mapping[str, Any]) -> float | None:
    """The truth stored by ``study.truth`` for ``output`` at ``point``."""
    meta = cube.attrs.get("simstudy", {})
    stored = meta.get("truth") if isinstance(meta, Mapping) else None
    if not stored:
        return None
    full = {**fixed_levels(cube), **point}
    entry = stored.get(point_json(full), {})
    value = entry.get(output) if isinstance(entry, Mapping) else None
    if value is None or isinstance(value, list | dict):
        return None
    return float(value)


def ok_values(cube: xr.Dataset, output: str, point: Point, method: str) -> np.ndarray:
    """The output's values over the replicates where the task is ok."""
    cell = cube.sel({**point, METHOD: method})
    values = np.asarray(cell[output].values, dtype=float)
    ok = np.asarray(cell["status"].values) == OK
    return np.where(ok, values, np.nan)


def reference_value(measure: str, attrs: Mapping[str, Any]) -> float | None:
    """Where a measure's reference line goes (its ``reference`` in the
    registry, or the user's ``Measure``): 0 for bias, the level for
    coverage, alpha for rejection; None when it has none."""
    found = lookup(measure, attrs)
    ref = None if found is None else found.reference
    if isinstance(ref, str):
        value = attrs.get(ref)
        return float(value) if value is not None else (0.95 if ref == "level" else 0.05)
    return ref


def grid_shape(count: int, most_columns: int) -> tuple[int, int]:
    """Rows and columns for ``count`` panels, at most ``most_columns`` wide."""
    cols = max(1, min(count, most_columns))
    return math.ceil(count / cols), cols


def plain_ticks(ax: Axes) -> None:
    """Round tick labels without an offset (``0.95``, never ``+9.5e-1``)."""
    for axis in (ax.xaxis, ax.yaxis):
        formatter = axis.get_major_formatter()
        if hasattr(formatter, "set_useOffset"):
            formatter.set_useOffset(False)


def method_dim(data: Any) -> Any:
    """A cube or summary with one method selected (``.sel(method_name=
    "wald")``) given its method dimension back, of length one."""
    if (
        isinstance(data, xr.Dataset)
        and METHOD in data.coords
        and data.coords[METHOD].ndim == 0
    ):
        return data.expand_dims(METHOD)
    return data


def check_cube(cube: Any) -> xr.Dataset:
    """The cube, or a clear error when given something else (a summary, say).

    A cube made by hand (dims ``replicate`` and ``method_name``, no
    ``status``) counts every task as ok.
    """
    cube = method_dim(cube)
    if (
        isinstance(cube, xr.Dataset)
        and "status" not in cube.data_vars
        and {REPLICATE, METHOD} <= {str(d) for d in cube.dims}
    ):
        tasks = [v for v in cube.data_vars if {REPLICATE, METHOD} <= set(cube[v].dims)]
        if tasks:
            common = set.intersection(*(set(cube[v].dims) for v in tasks))
            first = cube[tasks[0]]
            extra = {d: 0 for d in first.dims if d not in common}
            ok = xr.full_like(first.isel(extra, drop=True), OK, dtype=np.int8)
            return cube.assign(status=ok)
    if not isinstance(cube, xr.Dataset) or "status" not in cube.data_vars:
        raise UsageError(
            f"expected a cube (simstudy.open_results(store)), got "
            f"{type(cube).__name__}"
            + (
                " without per-task status (a summary?)"
                if isinstance(cube, xr.Dataset)
                else ""
            ),
            hint="pass simstudy.open_results('study.zarr')",
        )
    return cube


def output_name(cube: xr.Dataset, output: str, method: str) -> str:
    """The cube variable holding ``output`` for ``method``."""
    if output in ("estimate", "se"):
        name = declared(cube, method).get(output)
        returned = cube.attrs.get("simstudy", {}).get("outputs", {}).get(method)
        if name is None and output not in (returned or cube.data_vars):
            raise UsageError(
                f"method {method!r} declares no {output!r} output",
                hint=f"declare it (@study.method({output}=...)) or pass "
                "output= with one of the cube's outputs",
            )
        output = str(name or output)
    if output not in cube.data_vars:
        outputs = [str(v) for v in cube.data_vars if "replicate" in cube[v].dims]
        raise UsageError(
            f"unknown output {output!r}; the cube has: {', '.join(sorted(outputs))}",
            hint="pass output= with one of those names",
        )
    dims = output_dims(cube, output)
    if dims:
        raise UsageError(
            f"output {output!r} is an array (dims {', '.join(dims)}); these plots "
            "draw one number per replicate",
            hint=f"select one element first, e.g. cube.isel({dims[0]}=0)",
        )
    return output


def read_points(
    cube: xr.Dataset, points: Points, outputs: set[str]
) -> tuple[xr.Dataset, list[Point]]:
    """The chosen design points, with the outputs needed read into memory
    once (a few variables of the chosen points, not the whole cube)."""
    cube, grid = choose_points(cube, points, factors_of(cube))
    return cube[sorted({"status", *outputs})].load(), grid


def outside_legend(fig: Figure, lines: Sequence[Any], off: Any = ()) -> None:
    """The methods' legend above every axes, in as many columns as fit the
    figure's width (rows otherwise): no entry is ever cut off."""
    marked = [x for x in lines if str(x.get_gid() or "").startswith("points:")]
    if not marked:
        return
    labels = [str(x.get_label()) for x in marked]
    entry = 0.45 + 0.068 * max(len(t) for t in labels)  # inches, small font
    columns = max(1, min(len(labels), int(fig.get_figwidth() // entry)))
    rows = math.ceil(len(labels) / columns)
    # matplotlib fills a legend column by column: reorder to read in rows
    order = [
        r * columns + j
        for j in range(columns)
        for r in range(rows)
        if r * columns + j < len(labels)
    ]
    fig.legend(
        [marked[i] for i in order],
        [labels[i] for i in order],
        loc="outside upper center",
        ncols=columns,
        fontsize="small",
        frameon=False,
    )


def title_fixed(fig: Figure, data: xr.Dataset | xr.DataArray) -> None:
    """Name the factors selected down to one level (``n=30``) on top."""
    fixed = fixed_levels(data)
    if fixed and fig.legends:  # a suptitle would sit on the figure's legend
        fig.legends[0].set_title(label(fixed))
    elif fixed:
        fig.suptitle(label(fixed), fontsize="medium")
