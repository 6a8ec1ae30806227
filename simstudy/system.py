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
    """Whether process ``pid`` runs (one of another user's counts).

    A zombie - dead, not yet reaped by its parent - is not alive, although
    ``kill(pid, 0)`` succeeds for it: a run killed while its parent never
    calls ``wait()`` must not hold a store's lock for ever.
    """
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    state = _state(pid)
    return state not in ("Z", "X", "zombie", "dead")


def _state(pid: int) -> str | None:
    """A process's state: /proc's letter on Linux, psutil's word elsewhere
    (None when neither tells)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
        # "pid (comm) S ...": comm may hold spaces and parentheses
        return stat[stat.rindex(b")") + 2 :].split(b" ", 1)[0].decode()
    except (OSError, ValueError):
        pass
    try:
        import psutil
    except ImportError:
        return None
    try:
        return str(psutil.Process(pid).status())
    except Exception:  # gone, or not ours to ask
        return None
