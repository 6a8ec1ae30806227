"""What a method may return, and the one check of it.

A method returns ``{output: number or fixed-shape array}`` (a bare number
is output ``value``); NaN and inf are values like any other (the task is
ok; summaries leave them out measure by measure). Every output is stored
as float64: an integer it would round (beyond 2**53) is refused, a task
failure, never silently rounded. ``OutputSpecs`` holds what is known so far: each
output's per-task shape (one store array per output, shared by the methods
that return it) and each method's output names. The numpy batch loop, the
jax kernels and the store all judge outputs with the functions here, so a
rule and its message exist once.
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from simstudy.declare.factors import RESERVED

__all__ = [
    "MAX_OUTPUT_VALUES",
    "OutputError",
    "OutputSpecs",
    "keys_problem",
    "name_problem",
    "shape_problem",
    "stack",
    "to_outputs",
]

MAX_OUTPUT_VALUES = 1_000_000  # values of one output of one task
EXACT = 2**53  # float64, every output's store dtype, holds integers up to this


@dataclass(slots=True)
class OutputSpecs:
    """Output name -> per-task shape, and method -> its sorted output names."""

    shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)
    names: dict[str, tuple[str, ...]] = field(default_factory=dict)

    def copy(self) -> OutputSpecs:
        return OutputSpecs(dict(self.shapes), dict(self.names))


class OutputError(Exception):
    """A method's return value breaks an output rule (found by the engine)."""


def name_problem(method: str, name: Any, factors: Mapping[str, Any]) -> str | None:
    """Say what is wrong with an output name, or None if it is usable."""
    if not isinstance(name, str) or not name.isidentifier():
        return (
            f"method {method!r} returned output name {name!r}; "
            "output names must be identifiers."
        )
    if name in RESERVED or name in factors:
        return (
            f"method {method!r} output {name!r} clashes with a factor or reserved name."
        )
    return None


def keys_problem(
    method: str, names: tuple[str, ...], known: tuple[str, ...] | None, source: str
) -> str | None:
    """Say that a method returned other output names than ``known`` (from
    ``source``), naming the missing and the extra ones."""
    problem = _mismatch(method, "returned outputs", list(names), known, list, source)
    if problem is None or known is None:
        return problem
    missing = [n for n in known if n not in names]
    extra = [n for n in names if n not in known]
    parts = [f"missing {', '.join(map(repr, missing))}"] if missing else []
    parts += [f"extra {', '.join(map(repr, extra))}"] if extra else []
    return f"{problem[:-1]}; {'; '.join(parts)}."


def shape_problem(
    method: str,
    output: str,
    shape: tuple[int, ...],
    known: tuple[int, ...] | None,
    source: str,
) -> str | None:
    """Say that an output has another per-task shape than ``known``."""
    what = f"output {output!r} has shape"
    return _mismatch(method, what, shape, known, tuple, source)


def _mismatch(
    method: str, what: str, got: Any, known: Any, form: Any, source: str
) -> str | None:
    if known is None or form(known) == got:
        return None
    return f"method {method!r} {what} {got}; expected {form(known)} (from {source})."


def _as_array(method: str, name: str, v: Any) -> np.ndarray[Any, Any]:
    """Turn one output value into float64, or raise OutputError."""
    try:
        arr = np.asarray(v)
        if arr.dtype.kind not in "biuf":
            raise TypeError(arr.dtype)
        rounded = _rounded(arr)
        arr = arr.astype(np.float64)
    except (TypeError, ValueError):
        raise OutputError(
            f"method {method!r} output {name!r} is not numeric: "
            f"got {type(v).__name__} {str(v)[:60]!r}."
        ) from None
    if rounded is not None:
        raise OutputError(
            f"method {method!r} output {name!r} is the integer {rounded}, which "
            f"float64 (the store's type of every output) cannot hold exactly "
            f"(integers beyond 2**53 = {EXACT:,} round)."
            " Return float(value) if rounding is fine, or split the integer "
            "into outputs below 2**53."
        )
    if arr.size > MAX_OUTPUT_VALUES:
        raise OutputError(
            f"method {method!r} output {name!r} has {arr.size:,} values; "
            f"expected at most {MAX_OUTPUT_VALUES:,} per task (return a "
            "summary of it, not the data)."
        )
    return arr


def _rounded(arr: np.ndarray[Any, Any]) -> int | None:
    """The first integer of ``arr`` that float64 would round, or None."""
    if arr.dtype.kind not in "iu":
        return None
    big = arr[(arr > EXACT) | (arr < -EXACT)]
    return next((int(v) for v in big.ravel() if int(float(v)) != int(v)), None)


def to_outputs(
    method: str, value: Any, specs: OutputSpecs, factors: Mapping[str, Any]
) -> dict[str, np.ndarray[Any, Any]]:
    """Check one return value and turn it into float64 arrays.

    What is not known yet (an output's shape, the method's names) is learned
    into ``specs`` from this value; raises OutputError on a broken rule.
    """
    if isinstance(value, numbers.Real | np.ndarray | np.generic) and not isinstance(
        value, Mapping
    ):
        value = {"value": value}
    if not isinstance(value, Mapping):
        raise OutputError(
            f"method {method!r} returned {type(value).__name__}; expected a dict "
            "{output: number or array} or a number."
        )
    out: dict[str, np.ndarray[Any, Any]] = {}
    for name, v in value.items():
        problem = name_problem(method, name, factors)
        if problem is not None:
            raise OutputError(problem)
        arr = _as_array(method, name, v)
        known = specs.shapes.setdefault(name, arr.shape)
        problem = shape_problem(method, name, arr.shape, known, "the first task")
        if problem is not None:
            raise OutputError(problem)
        out[name] = arr
    names = tuple(sorted(out))
    known_names = specs.names.setdefault(method, names)
    problem = keys_problem(method, names, known_names, "its first successful task")
    if problem is not None:
        raise OutputError(problem)
    return out


def stack(
    method: str, vals: list[Any], specs: OutputSpecs, factors: Mapping[str, Any]
) -> dict[str, np.ndarray[Any, Any]] | None:
    """Stack uniform return values, or None to take the per-value path.

    Uniform: every value a number, or every value a dict with the same keys,
    each output stacking into one finite numeric array of the known shape.
    """
    first = vals[0]
    if type(first) is dict:
        keys = tuple(first)
        if not all(type(v) is dict and tuple(v) == keys for v in vals):
            return None
        columns = {out: [v[out] for v in vals] for out in keys}
    elif isinstance(first, float | int | np.floating | np.integer) and not isinstance(
        first, bool
    ):
        columns = {"value": vals}
    else:
        return None
    names = tuple(sorted(columns))
    if specs.names.get(method, names) != names:
        return None
    shapes: dict[str, tuple[int, ...]] = {}
    stacked: dict[str, np.ndarray[Any, Any]] = {}
    for out, column in columns.items():
        if name_problem(method, out, factors) is not None:
            return None  # the per-value path says what is wrong
        try:
            arr = np.asarray(column)
        except (TypeError, ValueError):
            return None
        if arr.dtype.kind not in "biuf" or arr.ndim < 1 or len(arr) != len(vals):
            return None
        shape = arr.shape[1:]
        if specs.shapes.get(out, shape) != shape:
            return None
        if arr.size > MAX_OUTPUT_VALUES * len(vals) or _rounded(arr) is not None:
            return None  # the per-value path says what is wrong
        shapes[out] = shape
        stacked[out] = arr.astype(np.float64)
    specs.shapes.update(shapes)
    specs.names[method] = names
    return stacked
