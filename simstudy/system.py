"""What simstudy asks of the operating system: a number of seconds set in an
environment variable, and whether a process is alive.
"""

from __future__ import annotations

import os

from simstudy.errors import UsageError

__all__ = ["env_seconds", "pid_alive"]


def env_seconds(name: str, default: float) -> float:
    """The seconds in environment variable ``name`` (> 0), else ``default``."""
    text = os.environ.get(name)
    if text is None:
        return default
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0 < value < float("inf"):
        raise UsageError(
            f"{name} must be a number of seconds > 0, got {text!r}.",
            hint=f"unset it for the default ({default:g} s)",
        )
    return value


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists (one of another user's counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
