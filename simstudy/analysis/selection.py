"""A cube or summary cut down to some methods and levels, each one checked:
what ``summarize``, the plots and the report share for ``methods=`` and
``points=`` (``--methods``, ``--points``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import xarray as xr

from simstudy.cube import METHOD, REPLICATE
from simstudy.errors import UsageError

__all__ = ["check_methods", "factors_of", "select_points", "subset"]


def check_methods(
    data: xr.Dataset, methods: str | Sequence[str] | None, *, least: int = 1
) -> list[str]:
    """The methods asked for (all when None), each one known."""
    known = [str(m) for m in data[METHOD].values]
    if methods is None:
        chosen = known
    else:
        chosen = [methods] if isinstance(methods, str) else [str(m) for m in methods]
    for m in chosen:
        if m not in known:
            raise UsageError(
                f"unknown method {m!r}; the methods are: {', '.join(known)}",
                hint="pass methods= with some of those names",
            )
    if len(chosen) < least:
        raise UsageError(
            f"this plot compares methods: it needs at least {least}, got "
            f"{len(chosen)} ({', '.join(chosen) or 'none'})",
            hint=f"pass methods= with {least} or more of: {', '.join(known)}",
        )
    return chosen


def factors_of(data: xr.Dataset | xr.DataArray) -> list[str]:
    """The design factors: the dims that are neither replicate nor method."""
    dims = data.dims if isinstance(data, xr.DataArray) else data["status"].dims
    order = data.attrs.get("simstudy", {}).get("factor_order")
    if order:  # a factor selected down to one level (cube.sel(n=30)) is no dim
        return [str(f) for f in order if f in dims]
    return [str(d) for d in dims if d not in (REPLICATE, METHOD)]


def select_points(
    data: xr.Dataset, points: Mapping[str, Any] | None, factors: Sequence[str]
) -> xr.Dataset:
    """``data`` restricted to the levels in ``points`` (a level or a list)."""
    if not points:
        return data
    where: dict[str, list[Any]] = {}
    for f, want in points.items():
        if f not in factors:
            raise UsageError(
                f"unknown factor {f!r} in points=; the factors are: "
                f"{', '.join(factors) or 'none'}",
                hint="write points={'factor': level} with one of those factors",
            )
        levels = list(data[f].values.tolist())
        wanted = list(want) if isinstance(want, list | tuple) else [want]
        where[f] = [_level(f, levels, v) for v in wanted]
    return data.sel(where)


def _level(factor: str, levels: list[Any], given: Any) -> Any:
    """The level ``given`` names: itself, or its text (``"0"`` for 0.0, as
    the command line gives it)."""
    for level in levels:
        if level == given or str(level) == str(given):
            return level
    if isinstance(given, str):
        try:
            number = float(given)
        except ValueError:
            number = None
        for level in levels:
            if (
                number is not None
                and isinstance(level, int | float)
                and level == number
            ):
                return level
    raise UsageError(
        f"factor {factor!r} has no level {given!r}; its levels are: {levels}",
        hint="pick levels from that list",
    )


def subset(
    cube: xr.Dataset,
    *,
    methods: str | Sequence[str] | None = None,
    points: Mapping[str, Any] | None = None,
) -> xr.Dataset:
    """The cube cut down to some methods and levels (``{"n": [20, 50]}``;
    a level may be given as text, ``"20"``), each one checked."""
    if methods is not None:
        cube = cube.sel({METHOD: check_methods(cube, methods)})
    return select_points(cube, points, factors_of(cube))
