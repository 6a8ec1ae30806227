"""Factors and their levels: the names a factor may not take, and levels
normalised to plain Python values and checked.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from simstudy.errors import StudyError

__all__ = [
    "RESERVED",
    "SHADOWED",
    "Level",
    "as_list",
    "check_name",
    "normalize_levels",
    "repeated",
    "validate_factors",
]

RESERVED = frozenset(
    {
        "replicate",
        "method",
        "method_name",
        "rng",
        "key",
        "status",
        "seconds",
        "worker",
        "started",
        "warnings",
    }
)
# keywords of xarray's sel / isel / reindex / interp / shift / drop_sel: a
# factor of one of these names could not be selected by keyword
# (``ds.sel(tolerance=0.1)`` is xarray's own argument, and selects nothing)
SHADOWED = frozenset(
    {
        "indexers",
        "method",
        "tolerance",
        "drop",
        "missing_dims",
        "copy",
        "fill_value",
        "coords",
        "kwargs",
        "assume_sorted",
        "method_non_numeric",
        "labels",
        "errors",
        "shifts",
        "roll_coords",
    }
)
Level = int | float | str | bool


def _normalize_level(factor: str, level: Any) -> Level:
    """Turn a level into a plain Python scalar or raise StudyError."""
    if isinstance(level, np.generic):
        level = level.item()
    if isinstance(level, bool | str):
        return level
    if isinstance(level, numbers.Integral):
        return int(level)
    if isinstance(level, numbers.Real):
        value = float(level)
        if not math.isfinite(value):
            raise StudyError(
                f"factor {factor!r} has a non-finite level {level!r}; "
                "levels must be finite numbers, strings or booleans.",
                hint="use a finite number or a string label such as 'inf'",
            )
        return value
    raise StudyError(
        f"factor {factor!r} has level {level!r} of type {type(level).__name__}; "
        "levels must be int, float, str or bool.",
        hint="use a scalar level and look up bigger objects inside the data function",
    )


def check_name(name: Any) -> str:
    """Return a factor name once it is a usable one, or raise StudyError."""
    if not isinstance(name, str) or not name.isidentifier():
        raise StudyError(
            f"factor name {name!r} is not a valid Python identifier.",
            hint="name factors like function parameters, e.g. 'n' or 'eps'",
        )
    if name in RESERVED:
        raise StudyError(
            f"factor {name!r} clashes with a reserved name; reserved: "
            f"{sorted(RESERVED)}.",
            hint=f"rename the factor, e.g. {name + '_'!r}",
        )
    if name in SHADOWED:
        raise StudyError(
            f"factor {name!r} is also a keyword of xarray's sel/isel: "
            f"ds.sel({name}=...) would be read as that argument and select "
            "nothing.",
            hint=f"rename the factor, e.g. {name + '_'!r}",
        )
    return name


def as_list(name: str, levels: Any) -> list[Any]:
    """A factor's levels as a list, or StudyError for a scalar or a string."""
    if isinstance(levels, np.ndarray):
        return list(levels.tolist())
    if isinstance(levels, str | bytes) or not isinstance(levels, Sequence | range):
        raise StudyError(
            f"factor {name!r} must be a list of levels, got {levels!r}.",
            hint=f"write {name}=[{levels!r}] for a single level",
        )
    return list(levels)


def normalize_levels(name: str, levels: list[Any]) -> list[Level]:
    """Normalise one factor's levels (one type; ints with floats: floats)."""
    norm = [_normalize_level(name, lv) for lv in levels]
    kinds = {type(v) for v in norm}
    if kinds == {int, float}:
        norm = [float(v) for v in norm]
    elif len(kinds) > 1:
        raise StudyError(
            f"factor {name!r} mixes level types "
            f"{sorted(k.__name__ for k in kinds)}: {norm!r}; "
            "levels of one factor must share a type.",
            hint="use all numbers or all strings",
        )
    return norm


def repeated(values: list[Any]) -> list[str]:
    """The values given more than once, as sorted reprs."""
    seen: dict[Any, int] = {}  # a count per value: list.count is O(n^2)
    for v in values:
        seen[v] = seen.get(v, 0) + 1
    return sorted({repr(v) for v in values if seen[v] > 1})


def validate_factors(factors: Any) -> dict[str, tuple[Level, ...]]:
    if not isinstance(factors, Mapping):
        raise StudyError(
            f"factors must be a dict of name -> list of levels, got {factors!r}.",
            hint='write factors={"n": [20, 100]}',
        )
    out: dict[str, tuple[Level, ...]] = {}
    for name, levels in factors.items():
        check_name(name)
        norm = normalize_levels(name, as_list(name, levels))
        if not norm:
            raise StudyError(
                f"factor {name!r} has no levels; give at least one.",
                hint="remove the factor or list its levels",
            )
        dups = repeated(norm)
        if dups:
            raise StudyError(
                f"factor {name!r} has duplicate levels {norm!r} "
                f"(repeated: {', '.join(dups)}); levels must be distinct.",
                hint="remove the repeated levels",
            )
        out[name] = tuple(norm)
    return out
