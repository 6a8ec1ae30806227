"""Command lines simstudy prints for the user to paste, shell-quoted.

Every argument goes through :func:`shlex.quote`, so a level, method name or
path taken from a store (``lab=$(touch pwned)``, ``a,b``, ``it's``) is one
literal argument when the line is pasted into a POSIX shell: it runs
nothing and is not split.
"""

from __future__ import annotations

import os
import shlex

__all__ = ["command", "quote"]

PROGRAM = "python -m simstudy"


def quote(arg: str | os.PathLike[str] | float) -> str:
    """One argument, quoted for a POSIX shell (unchanged when already safe)."""
    return shlex.quote(os.fspath(arg) if isinstance(arg, os.PathLike) else str(arg))


def command(*args: str | os.PathLike[str] | float) -> str:
    """``python -m simstudy ARG ...`` with every argument quoted."""
    return " ".join([PROGRAM, *(quote(a) for a in args)])
