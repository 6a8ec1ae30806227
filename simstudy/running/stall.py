"""A notice when no task has finished for a long time: a task may hang.

Without ``--task-timeout`` a task stuck in an endless loop or a dead lock
stalls the run with no word. ``Watchdog`` runs beside the run: when no
batch has arrived for ``SIMSTUDY_STALL_SECONDS`` (60 s by default) it
writes one ``warning:`` line to stderr, and again after the next finished
batch if it stalls again. Not through ``warnings``: the synchronous and
threads schedulers record the warnings raised while a task runs as that
task's, and this one is the run's.
"""

from __future__ import annotations

import sys
import threading
import time

from simstudy.system import env_seconds

__all__ = ["STALL_SECONDS", "Watchdog", "stall_seconds"]

STALL_SECONDS = 60.0


def stall_seconds() -> float:
    """SIMSTUDY_STALL_SECONDS, else STALL_SECONDS."""
    return env_seconds("SIMSTUDY_STALL_SECONDS", STALL_SECONDS)


class Watchdog:
    """Warn once per stall when no batch finished for ``seconds``."""

    def __init__(self, *, timeout: float | None, seconds: float | None = None) -> None:
        self.seconds = stall_seconds() if seconds is None else seconds
        self.timeout = timeout
        self.last = time.monotonic()
        self.warned = False
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._watch, daemon=True)
        self.thread.start()

    def beat(self) -> None:
        """A batch finished."""
        self.last = time.monotonic()
        self.warned = False

    def _watch(self) -> None:
        while not self.stop.wait(min(5.0, self.seconds / 4)):
            idle = time.monotonic() - self.last
            if idle >= self.seconds and not self.warned:
                self.warned = True
                print(f"warning: {self.message(idle)}", file=sys.stderr, flush=True)

    def message(self, idle: float) -> str:
        hint = (
            "use --task-timeout SECONDS to record a hung task as failed and go on"
            if self.timeout is None
            else f"tasks longer than --task-timeout {self.timeout:g} s are stopped "
            "only when they return to Python"
        )
        return (
            f"no task finished for {idle:.0f} s; a task may hang: {hint} "
            "(Ctrl-C stops the run; it resumes)."
        )

    def close(self) -> None:
        self.stop.set()
