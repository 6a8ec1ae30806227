"""Command lines simstudy prints for the user to paste, shell-quoted.

Every argument goes through :func:`shlex.quote`, so a level, method name or
path taken from a store (``lab=$(touch pwned)``, ``a,b``, ``it's``) is one
literal argument when the line is pasted into a POSIX shell: it runs
nothing and is not split.
"""

from __future__ import annotations

import contextvars
import json
import os
import shlex

__all__ = ["FROM_CLI", "command", "option", "quote"]

PROGRAM = "python -m simstudy"


def quote(arg: str | os.PathLike[str] | float) -> str:
    """One argument, quoted for a POSIX shell (unchanged when already safe)."""
    return shlex.quote(os.fspath(arg) if isinstance(arg, os.PathLike) else str(arg))


def command(*args: str | os.PathLike[str] | float) -> str:
    """``python -m simstudy ARG ...`` with every argument quoted."""
    return " ".join([PROGRAM, *(quote(a) for a in args)])


# set by the command line while a command runs: hints then name its flags
# (``--recompute median``); from Python they name run()'s keywords
FROM_CLI: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "simstudy_from_cli", default=False
)


def option(name: str, value: object = True) -> str:
    """An option as the user spells it here: ``--recompute median`` on the
    command line, ``recompute="median"`` from Python (a list for several)."""
    if FROM_CLI.get():
        flag = "--" + name.replace("_", "-")
        if value is True:
            return flag
        values = value if isinstance(value, list | tuple) else [value]
        return " ".join(f"{flag} {quote(str(v))}" for v in values)
    if isinstance(value, list | tuple):
        return f"{name}=[{', '.join(_py(v) for v in value)}]"
    return f"{name}={_py(value)}"


def _py(value: object) -> str:
    return json.dumps(value) if isinstance(value, str) else repr(value)
