"""What a solve is asked: its arguments, checked before anything is written.

``validate`` turns ``simstudy.solve``'s arguments (and the ``solve``
command's flags) into one ``SolveSpec`` and the design points of the other
factors, or raises UsageError with one line and a hint.
"""

from __future__ import annotations

import itertools
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from simstudy.analysis.registry import BY_NAME, MEASURES
from simstudy.declare.loader import load_study
from simstudy.declare.study import Study
from simstudy.errors import UsageError
from simstudy.running.options import default_store
from simstudy.solving.rootfit import Scale

__all__ = ["DEFAULT_BUDGET", "DEFAULT_TOLERANCE", "REFUSED", "SolveSpec", "validate"]

DEFAULT_BUDGET = 500_000  # tasks per solution
DEFAULT_TOLERANCE = "1%"  # of the root estimate
REFUSED = ("replicates", "restart", "prune", "recompute", "target_mcse")


@dataclass(slots=True)
class SolveSpec:
    """A solve's validated inputs, the same for every design point."""

    study: Study
    factor: str
    measure: str
    target: float
    method: str
    bounds: tuple[float, float]
    integer: bool
    tolerance: tuple[float, bool]  # value, relative
    budget: int
    first: int  # replicates of round 0
    level: float
    store: Path
    options: dict[str, Any]

    @property
    def scale(self) -> Scale:
        return Scale(
            sqrt_factor=self.integer and self.bounds[0] > 0,
            probit=BY_NAME[self.measure].bounded,
        )

    def round_level(self, x: float) -> float:
        lo, hi = self.bounds
        x = min(max(x, lo), hi)
        if self.integer:
            return round(x)
        return float(f"{x:.4g}")


def validate(
    study: Study | str | os.PathLike[str], **given: Any
) -> tuple[SolveSpec, list[dict[str, Any]]]:
    """Check every argument before anything is written."""
    if not isinstance(study, Study):
        study = load_study(study)
    options = given["options"]
    for name in REFUSED:
        if options.get(name) not in (None, False, (), []):
            raise UsageError(
                f"solve: option {name!r} does not apply to a solve.",
                hint="drop it; `solve --replicates` sets the first round's size",
            )
    options = {k: v for k, v in options.items() if k not in REFUSED}
    if study.scheme != "spawn":
        raise UsageError(
            f"solve: the study's rng scheme is {study.scheme!r}; a solve adds "
            "levels, which renumbers the streams of a jump scheme.",
            hint='use rng="spawn" (streams keyed by the design point\'s values)',
        )
    factor = given["factor"]
    kind = _numeric_kind(study, factor)
    measure, goal = _target(given["target"])
    method = _method(study, given["method"])
    bounds = _bounds(study, factor, kind, given["bounds"])
    points = _points(study, factor, given["at"])
    first = given["replicates"] or study.replicates
    budget = DEFAULT_BUDGET if given["budget"] is None else given["budget"]
    for name, value in (("replicates", first), ("budget", budget)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise UsageError(
                f"solve: --{name} must be a whole number >= 1, got {value!r}.",
                hint=f"e.g. --{name} 1000",
            )
    level = given["level"]
    if not 0 < level < 1:
        raise UsageError(
            f"solve: the interval's level must be between 0 and 1, got {level!r}.",
            hint="use level=0.95",
        )
    store = Path(options.pop("store", None) or default_store(study))
    return (
        SolveSpec(
            study=study,
            factor=factor,
            measure=measure,
            target=goal,
            method=method,
            bounds=bounds,
            integer=kind == "integer",
            tolerance=_tolerance(given["tolerance"]),
            budget=budget,
            first=int(first),
            level=float(level),
            store=store,
            options=options,
        ),
        points,
    )


def _numeric_kind(study: Study, factor: str) -> str:
    if factor not in study.factors:
        raise UsageError(
            f"solve: --factor {factor!r} is not a factor of the study "
            f"(factors: {', '.join(study.factors)}).",
            hint="name one of the study's numeric factors",
        )
    levels = study.factors[factor]
    if all(isinstance(v, int) and not isinstance(v, bool) for v in levels):
        return "integer"
    if all(isinstance(v, int | float) and not isinstance(v, bool) for v in levels):
        return "real"
    raise UsageError(
        f"solve: factor {factor!r} has non-numeric levels {list(levels)!r}.",
        hint="solve for a factor with int or float levels",
    )


def _target(target: Mapping[str, float]) -> tuple[str, float]:
    items = list(dict(target).items())
    if len(items) != 1:
        raise UsageError(
            f"solve: --target needs exactly one MEASURE=VALUE, got {dict(target)!r}.",
            hint="e.g. --target power=0.8",
        )
    measure, goal = items[0]
    if measure not in MEASURES:
        raise UsageError(
            f"solve: --target {measure!r} is not a measure of summarize "
            f"(measures: {', '.join(MEASURES)}).",
            hint="e.g. --target power=0.8 or --target rmse=0.1",
        )
    if isinstance(goal, bool) or not isinstance(goal, int | float):
        raise UsageError(
            f"solve: --target {measure} must be a number, got {goal!r}.",
            hint="e.g. --target power=0.8",
        )
    if not math.isfinite(goal) or (BY_NAME[measure].bounded and not 0 < goal < 1):
        raise UsageError(
            f"solve: --target {measure}={goal!r} is out of reach: a proportion's "
            "target must be strictly between 0 and 1.",
            hint=f"e.g. --target {measure}=0.8",
        )
    return measure, float(goal)


def _method(study: Study, method: str | None) -> str:
    names = study.method_names
    if method is None:
        if len(names) == 1:
            return names[0]
        raise UsageError(
            f"solve: the study has {len(names)} methods ({', '.join(names)}); "
            "say which one's measure to solve.",
            hint=f"add --method {names[0]}",
        )
    if method not in names:
        raise UsageError(
            f"solve: --method {method!r} is not a method of the study "
            f"(methods: {', '.join(names)}).",
            hint=f"use --method {names[0]}",
        )
    return method


def _bounds(
    study: Study, factor: str, kind: str, bounds: Sequence[float] | None
) -> tuple[float, float]:
    if bounds is None:
        levels = [float(v) for v in study.factors[factor]]
        if len(set(levels)) < 2:
            raise UsageError(
                f"solve: factor {factor!r} has one declared level, so no range "
                "to search.",
                hint="give the range, e.g. --range 10:200",
            )
        lo, hi = min(levels), max(levels)
    else:
        lo, hi = (float(b) for b in bounds)
    ok = math.isfinite(lo) and math.isfinite(hi) and lo < hi
    if kind == "integer":
        ok = ok and lo == int(lo) and hi == int(hi) and hi - lo >= 3
    if not ok:
        raise UsageError(
            f"solve: the range of {factor!r} must be LOW < HIGH"
            f"{' (whole numbers, at least 3 apart)' if kind == 'integer' else ''}, "
            f"got {lo:g}:{hi:g}.",
            hint="e.g. --range 10:200",
        )
    if kind == "integer":
        return int(lo), int(hi)
    return lo, hi


def _points(
    study: Study, factor: str, at: Mapping[str, Any] | None
) -> list[dict[str, Any]]:
    """The design points of the other factors: given by --at, or every
    combination of their declared levels."""
    at = dict(at or {})
    fixed: dict[str, list[Any]] = {}
    for name, value in at.items():
        if name == factor or name not in study.factors:
            others = [f for f in study.factors if f != factor]
            raise UsageError(
                f"solve: --at {name}={value!r}: {name!r} is "
                f"{'the solved factor' if name == factor else 'not a factor'} "
                f"(other factors: {', '.join(others) or 'none'}).",
                hint="fix only the other factors, e.g. --at "
                + (f"{others[0]}=..." if others else "(nothing)"),
            )
        fixed[name] = [_as_level(study.factors[name], name, value)]
    names = [f for f in study.factors if f != factor]
    levels = [fixed.get(f, list(study.factors[f])) for f in names]
    return [
        dict(zip(names, combo, strict=True)) for combo in itertools.product(*levels)
    ]


def _as_level(declared: Sequence[Any], name: str, value: Any) -> Any:
    """A --at value with the type of the factor's declared levels."""
    kind = type(declared[0])
    if isinstance(value, str) and kind is not str:
        try:
            value = (
                bool(value == "True")
                if kind is bool
                else kind(float(value))
                if kind is int and float(value) == int(float(value))
                else kind(value)
            )
        except ValueError:
            raise UsageError(
                f"solve: --at {name}={value!r} is not a {kind.__name__} "
                f"like the declared levels {list(declared)!r}.",
                hint=f"e.g. --at {name}={declared[0]}",
            ) from None
    if kind is int and isinstance(value, float) and value == int(value):
        value = int(value)
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, kind):
        raise UsageError(
            f"solve: --at {name}={value!r} is not a {kind.__name__} like the "
            f"declared levels {list(declared)!r}.",
            hint=f"e.g. --at {name}={declared[0]}",
        )
    return value


def _tolerance(tolerance: float | str | None) -> tuple[float, bool]:
    text = DEFAULT_TOLERANCE if tolerance is None else tolerance
    relative = isinstance(text, str) and text.strip().endswith("%")
    value: Any
    try:
        value = float(text.strip().rstrip("%")) if isinstance(text, str) else text
    except ValueError:
        value = math.nan
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not (0 < value < math.inf)
    ):
        raise UsageError(
            f"solve: --tolerance must be a width > 0 or a percentage, got "
            f"{tolerance!r}.",
            hint="e.g. --tolerance 2 (factor units) or --tolerance 1%",
        )
    return (float(value) / 100 if relative else float(value)), relative
