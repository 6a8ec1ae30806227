"""A study's design: its factors, which of them vary together, and the
design points a ``where=`` predicate keeps.

``factors={("n1", "n2"): [(10, 10), (10, 40)], "vr": [1.0, 4.0]}``: a tuple
key names factors that vary together, each tuple level giving one value per
named factor; the entries are crossed. ``where=lambda n1, n2: ...`` then
keeps the points where it is true. Each factor keeps its own levels (the
union of the values it takes, in the order first given), so the cube keeps
one dimension per factor; the design points are a subset of the full cross
of those levels, in its order (first factor slowest).
"""

from __future__ import annotations

import hashlib
import inspect
import itertools
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from simstudy.declare.factors import (
    Level,
    as_list,
    check_name,
    normalize_levels,
    repeated,
    validate_factors,
)
from simstudy.errors import StudyError

__all__ = ["Design", "design_of"]

Row = tuple[Level, ...]


@dataclass(frozen=True, slots=True)
class Design:
    """The factors' levels and the design points, in grid order."""

    factors: dict[str, tuple[Level, ...]]  # name -> its levels (a union)
    groups: tuple[tuple[str, ...], ...]  # factors that vary together
    points: tuple[Row, ...]  # one level per factor, in ``factors`` order
    where: Callable[..., Any] | None = None

    @property
    def full(self) -> bool:
        """Whether the design is the full cross of the factors' levels."""
        n = 1
        for levels in self.factors.values():
            n *= len(levels)
        return len(self.points) == n

    def digest(self) -> str | None:
        """A hash of the design points (None for a full cross): what the
        positional jump schemes' numbers depend on."""
        if self.full:
            return None
        text = json.dumps([list(p) for p in self.points])
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def design_of(
    factors: Mapping[Any, Any] | None, where: Callable[..., Any] | None
) -> Design:
    """Check ``factors`` (tuple keys too) and ``where``; build the design."""
    if factors is None:
        factors = {}
    if not isinstance(factors, Mapping):
        raise StudyError(
            f"factors must be a dict of name -> list of levels, got {factors!r}.",
            hint='write factors={"n": [20, 100]}',
        )
    groups: list[tuple[str, ...]] = []
    rows: list[list[Row]] = []
    for key, levels in factors.items():
        names = _names(key, groups)
        if len(names) == 1 and not isinstance(key, tuple):
            single = validate_factors({key: levels})[key]
            rows.append([(v,) for v in single])
        else:
            rows.append(_tuple_levels(names, levels))
        groups.append(names)
    order = [n for g in groups for n in g]
    union: dict[str, tuple[Level, ...]] = {}
    for names, group_rows in zip(groups, rows, strict=True):
        for j, name in enumerate(names):
            union[name] = tuple(dict.fromkeys(r[j] for r in group_rows))
    index = {f: {v: i for i, v in enumerate(union[f])} for f in order}
    points = []
    for combo in itertools.product(*rows):
        point = dict(zip(order, itertools.chain(*combo), strict=True))
        points.append(tuple(point[f] for f in union))
    if where is not None:
        points = _kept(list(union), points, where)
    points.sort(key=lambda p: [index[f][v] for f, v in zip(union, p, strict=True)])
    return Design(union, tuple(groups), tuple(points), where)


def _names(key: Any, seen: list[tuple[str, ...]]) -> tuple[str, ...]:
    """A factors= key as factor names (a tuple key names several)."""
    names = key if isinstance(key, tuple) else (key,)
    if isinstance(key, tuple) and not key:
        raise StudyError(
            "factors= has an empty tuple key; it must name the factors that "
            "vary together.",
            hint='write factors={("n1", "n2"): [(10, 10), (10, 40)]}',
        )
    for name in names:
        check_name(name)
    taken = {n for g in seen for n in g}
    for i, name in enumerate(names):
        if name in taken or name in names[:i]:
            raise StudyError(
                f"factor {name!r} is named twice in factors= (key {key!r}); "
                "each factor is named once, alone or in one tuple key.",
                hint="remove it from all but one key",
            )
    return tuple(names)


def _tuple_levels(names: tuple[str, ...], levels: Any) -> list[Row]:
    """The tuple levels of factors that vary together, checked."""
    label = "(" + ", ".join(names) + ")"
    given = as_list(label, levels)
    if not given:
        raise StudyError(
            f"factors {label} have no levels; give at least one tuple.",
            hint=f"write {names!r}: [{tuple(1 for _ in names)!r}, ...]",
        )
    for lv in given:
        if not isinstance(lv, tuple | list) or len(lv) != len(names):
            raise StudyError(
                f"factors {label}: level {lv!r} is not a tuple of {len(names)} "
                f"value(s), one per factor {list(names)}.",
                hint=f"write each level as a tuple such as {tuple(given[0])!r}"
                if isinstance(given[0], tuple | list)
                else "write each level as a tuple, e.g. (10, 40)",
            )
    columns = [
        normalize_levels(n, [lv[j] for lv in given]) for j, n in enumerate(names)
    ]
    rows: list[Row] = list(zip(*columns, strict=True))
    dups = repeated(rows)
    if dups:
        raise StudyError(
            f"factors {label} have duplicate levels (repeated: {', '.join(dups)}); "
            "tuple levels must be distinct.",
            hint="remove the repeated tuples",
        )
    return rows


def _kept(names: list[str], points: list[Row], where: Callable[..., Any]) -> list[Row]:
    """The points where ``where`` is true; StudyError if it is never, raises
    or asks for a name that is no factor."""
    if not callable(where):
        raise StudyError(
            f"where= must be a function of factor values, got {where!r}.",
            hint="write where=lambda n1, n2: n1 <= n2",
        )
    try:
        params = inspect.signature(where).parameters
    except (TypeError, ValueError) as exc:
        raise StudyError(f"cannot read the signature of where=: {exc}") from None
    takes_all = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    asked = [
        n
        for n, p in params.items()
        if p.kind
        not in (inspect.Parameter.VAR_KEYWORD, inspect.Parameter.VAR_POSITIONAL)
    ]
    unknown = [
        n for n in asked if n not in names and params[n].default is params[n].empty
    ]
    if unknown:
        raise StudyError(
            f"where= asks for {unknown[0]!r}, which is not a factor; factors: {names}.",
            hint="name the predicate's parameters after factors",
        )
    used = names if takes_all else [n for n in asked if n in names]
    at = [names.index(n) for n in used]
    kept = []
    for point in points:
        values = {n: point[i] for n, i in zip(used, at, strict=True)}
        try:
            keep = bool(where(**values))
        except Exception as exc:
            raise StudyError(
                f"where= raised {type(exc).__name__}: {exc} (at {values}).",
                hint="make the predicate return True or False for every "
                "combination of levels",
            ) from exc
        if keep:
            kept.append(point)
    if not kept:
        raise StudyError(
            f"where= keeps no design point of the {len(points)} it was given.",
            hint="loosen the predicate, or check the factors it compares",
        )
    return kept
