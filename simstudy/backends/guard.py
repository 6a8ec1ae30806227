"""Data each method cannot change under another method (numpy backend).

Every method of a replicate gets the same generated data (common random
numbers). A method that changed it in place (``x.sort()``, ``x[:] = 0``)
would change what the next method sees, so a number would depend on which
methods ran before it in the batch. ``Guard`` hands each method data it
cannot change under another one:

- numpy arrays (also inside tuples, named tuples, lists, dicts and
  dataclass instances, nested up to ``DEPTH`` levels) as read-only views,
  made once per replicate (~0.2 µs each; the data is not copied). An
  in-place write raises ``ValueError: ... read-only``, which the backend
  records as the method's failure with the advice to copy
  (``read_only_advice``).
- lists, dicts and dataclass instances holding them: a new shell per
  method (shallow: the arrays in it are the shared read-only views).
- anything else (a pandas DataFrame, an array of Python objects, a custom
  object): a fresh ``copy.deepcopy`` per method, which costs what copying
  the object costs.
- immutable values (numbers, strings, bytes, None, numpy scalars) are
  shared as they are.

Fixed inputs (``study.fixed``) that are arrays, or tuples of them, reach the
data function and methods as read-only views too (``read_only_inputs``);
other fixed inputs are passed as they are.

A method that sets ``x.flags.writeable = True`` on its view again defeats
the guard; that is deliberate and not caught here (``verify`` catches the
numbers it changes).
"""

from __future__ import annotations

import copy
import dataclasses
from typing import Any

import numpy as np

__all__ = ["DEPTH", "DataCopyError", "Guard", "read_only_advice", "read_only_inputs"]

DEPTH = 4  # containers nested deeper than this are deep-copied whole
_SHARED = (int, float, complex, bool, str, bytes, type(None), range)


class DataCopyError(TypeError):
    """The data function's value could not be copied for a method."""


class _Copy:
    """A value each method gets its own ``copy.deepcopy`` of."""

    __slots__ = ("obj",)

    def __init__(self, obj: Any) -> None:
        self.obj = obj


class _Flat(list):  # type: ignore[type-arg]
    """A list of immutable values: a shallow ``list`` copy per method."""


class _FlatDict(dict):  # type: ignore[type-arg]
    """A dict of immutable values: a shallow ``dict`` copy per method."""


def _read_only(a: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    view = a.view()
    view.flags.writeable = False
    return view


def _prepare(x: Any, depth: int) -> tuple[Any, bool]:
    """(x with arrays made read-only views and opaque values wrapped in
    ``_Copy``, whether the result may be shared by every method as it is)."""
    t = type(x)
    if t is np.ndarray:
        if x.dtype.hasobject:  # its elements may be mutable objects
            return _Copy(x), False
        return _read_only(x), True
    if t in _SHARED or (isinstance(x, np.generic) and not x.dtype.hasobject):
        return x, True
    if depth >= DEPTH:
        return _Copy(x), False
    if t is tuple or (isinstance(x, tuple) and hasattr(x, "_make")):
        parts = [_prepare(v, depth + 1) for v in x]
        values = [v for v, _ in parts]
        shared = all(s for _, s in parts)
        return (tuple(values) if t is tuple else t._make(values)), shared
    if t is list:
        if all(type(v) in _SHARED for v in x):  # the common case, fast
            return _Flat(x), False
        parts = [_prepare(v, depth + 1) for v in x]
        if all(s for _, s in parts):
            return _Flat(v for v, _ in parts), False
        return [v for v, _ in parts], False
    if t is dict:
        items = {k: _prepare(v, depth + 1) for k, v in x.items()}
        if all(s for _, s in items.values()):
            return _FlatDict((k, v) for k, (v, _) in items.items()), False
        return {k: v for k, (v, _) in items.items()}, False
    if dataclasses.is_dataclass(x) and not isinstance(x, type):
        try:
            shell = copy.copy(x)
        except Exception:  # a class copy cannot handle: copy it whole
            return _Copy(x), False
        for f in dataclasses.fields(x):
            if hasattr(x, f.name):
                value = _prepare(getattr(x, f.name), depth + 1)[0]
                object.__setattr__(shell, f.name, value)
        return shell, False
    return _Copy(x), False


def _fresh(x: Any) -> Any:
    """A new copy of a prepared value: shells rebuilt, ``_Copy`` deep-copied,
    read-only views and immutable values shared."""
    t = type(x)
    if t is _Copy:
        return copy.deepcopy(x.obj)
    if t is _Flat:
        return list(x)
    if t is _FlatDict:
        return dict(x)
    if t is np.ndarray or t in _SHARED:
        return x
    if t is tuple:
        return tuple(_fresh(v) for v in x)
    if isinstance(x, tuple) and hasattr(x, "_make"):
        return t._make(_fresh(v) for v in x)
    if t is list:
        return [_fresh(v) for v in x]
    if t is dict:
        return {k: _fresh(v) for k, v in x.items()}
    if dataclasses.is_dataclass(x) and not isinstance(x, type):
        shell = copy.copy(x)
        for f in dataclasses.fields(x):
            if hasattr(x, f.name):
                object.__setattr__(shell, f.name, _fresh(getattr(x, f.name)))
        return shell
    return x


class Guard:
    """One replicate's data, handed to each method so that no method can
    change what another one sees."""

    __slots__ = ("prepared", "shared")

    def __init__(self, data: Any) -> None:
        if type(data) is np.ndarray and not data.dtype.hasobject:
            self.prepared, self.shared = _read_only(data), True  # the hot path
        else:
            self.prepared, self.shared = _prepare(data, 0)

    def get(self) -> Any:
        """What the next method receives."""
        if self.shared:
            return self.prepared
        try:
            return _fresh(self.prepared)
        except Exception as exc:
            raise DataCopyError(
                f"its data could not be copied for it ({type(exc).__name__}: "
                f"{exc}); each method gets its own copy of data that is not a "
                "numpy array: return arrays, or objects copy.deepcopy can copy"
            ) from exc


def read_only_inputs(values: dict[str, Any]) -> dict[str, Any]:
    """Fixed inputs as user functions get them: arrays (and tuples of them)
    as read-only views, made once per batch; other objects as they are (a
    copy per call of a large input would cost too much)."""
    out = {}
    for name, value in values.items():
        if type(value) is np.ndarray or isinstance(value, tuple):
            guard = Guard(value)  # only these can come back shared
            out[name] = guard.prepared if guard.shared else value
        else:  # a list, dict or object would be prepared to be thrown away
            out[name] = value
    return out


def read_only_advice(exc: BaseException) -> str:
    """The advice to add to a method's error, if it wrote into its data."""
    if isinstance(exc, ValueError) and "read-only" in str(exc):
        return (
            " (methods get their data, and every call its fixed-input arrays, "
            "read-only, so that no call changes what another one sees: copy "
            "it before changing it, e.g. x = x.copy())"
        )
    return ""
