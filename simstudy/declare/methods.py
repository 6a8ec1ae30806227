"""A method's declaration: the Method record, the outputs its measures read,
the parameters a study function asks for, and when a second declaration
replaces the first (typed again in a notebook) instead of being an error.
"""

from __future__ import annotations

import contextvars
import inspect
import sys
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from simstudy.errors import StudyError

__all__ = [
    "FROM_FILE",
    "Method",
    "measures_of",
    "params_of",
    "redeclared",
]

# set by the loader while a study file runs: there a second declaration of a
# method is a mistake; typed again in a notebook or a REPL it is an edit
FROM_FILE: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "simstudy_from_file", default=False
)


@dataclass(frozen=True, slots=True)
class Method:
    """A method: its name, function and the parameters it asks for."""

    name: str
    func: Callable[..., Any]
    params: tuple[str, ...]  # injected parameters after the data argument
    # which outputs summaries read: {"estimate": ..., "se": ..., "ci": [lo, hi], "p": ...}
    measures: dict[str, Any] = field(default_factory=dict)

    @property
    def takes_rng(self) -> bool:
        return "rng" in self.params

    @property
    def takes_key(self) -> bool:
        return "key" in self.params


def measures_of(method: str | None, **declared: Any) -> dict[str, Any]:
    """Check a method's measure declarations; return the ones given."""
    out: dict[str, Any] = {}
    where = f"method {method!r}" if method else "@study.method"
    for key, value in declared.items():
        if value is None:
            continue
        names = (
            list(value) if key == "ci" and isinstance(value, tuple | list) else [value]
        )
        if key == "ci" and len(names) != 2:
            raise StudyError(
                f"{where}: ci must be two output names (lower, upper), got {value!r}.",
                hint='write ci=("lo", "hi")',
            )
        for output in names:
            if not isinstance(output, str) or not output.isidentifier():
                raise StudyError(
                    f"{where}: {key}= must name an output (an identifier), "
                    f"got {output!r}.",
                    hint='write e.g. se="se" for a method returning {"se": ...}',
                )
        out[key] = names if key == "ci" else value
    return out


def params_of(
    func: Callable[..., Any], *, skip_first: bool, what: str
) -> tuple[str, ...]:
    """The named parameters ``func`` asks for (after the data, with
    ``skip_first``); ``*args`` and ``**kwargs`` ask for nothing."""
    if not callable(func):
        raise StudyError(f"{what} {func!r} is not callable.", hint="decorate a def")
    try:
        sig = inspect.signature(func)
    except (TypeError, ValueError) as exc:
        raise StudyError(f"cannot read the signature of {what}: {exc}") from None
    params = list(sig.parameters.values())
    if skip_first:
        if not params or params[0].kind not in (
            inspect.Parameter.POSITIONAL_ONLY,
            inspect.Parameter.POSITIONAL_OR_KEYWORD,
        ):
            raise StudyError(
                f"{what} must take the data as its first parameter.",
                hint=f"write def {getattr(func, '__name__', 'method')}(x): ...",
            )
        params = params[1:]
    variadic = (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
    return tuple(p.name for p in params if p.kind not in variadic)


def _interactive() -> bool:
    """Whether code runs in a notebook or a REPL (not from a file)."""
    ipython = sys.modules.get("IPython")
    get = getattr(ipython, "get_ipython", None)
    if get is not None and get() is not None:
        return True
    return hasattr(sys, "ps1") or not hasattr(sys.modules.get("__main__"), "__file__")


def redeclared(what: str, old: str, new: str) -> bool:
    """Allow a second declaration typed in a notebook or REPL (a cell run
    again), with a notice; in a study file it stays an error (False)."""
    if FROM_FILE.get() or not _interactive():
        return False
    name = repr(new) if old == new else f"{old!r} by {new!r}"
    warnings.warn(f"{what} {name} declared again: replaced.", stacklevel=4)
    return True
