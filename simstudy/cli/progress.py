"""Progress on the terminal: a live bar with rate and ETA, or a line every 10 s.

Layers: imports nothing from simstudy.
"""

from __future__ import annotations

import math
import time
from typing import Any, TextIO

__all__ = ["ProgressPrinter", "duration"]


class ProgressPrinter:
    """A live line on a terminal, a plain line every 10 s otherwise."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.tty = out.isatty()
        self.last = 0.0
        self.first: tuple[float, int] | None = None  # (time, done) at the first event

    def __call__(self, ev: Any) -> None:
        now = time.monotonic()
        if self.first is None:
            self.first = (now, ev.done)
        final = ev.done >= ev.total
        if not final and now - self.last < (0.2 if self.tty else 10.0):
            return
        self.last = now
        # rate and ETA from the first result on: start-up and the small
        # pilot batches would make the first ETA absurd; "--" until 1 s of data
        t1, d1 = self.first
        span = now - t1
        if final or span < 1.0 or ev.done <= d1:
            rate = ev.done / ev.elapsed if ev.elapsed > 0 else 0.0
            eta = 0.0 if final else float("nan")
        else:
            rate = (ev.done - d1) / span
            eta = (ev.total - ev.done) / rate
        line = (
            f"{ev.done:,}/{ev.total:,} tasks  {100 * ev.done / ev.total:5.1f}%  "
            f"{rate:,.0f}/s  ETA {duration(eta)}  failed {ev.failed:,}"
        )
        if ev.stopping:
            line += "  (stopping after batches in flight; Ctrl-C again to stop now)"
        if self.tty:
            filled = int(24 * ev.done / max(ev.total, 1))
            bar = "[" + "#" * filled + "-" * (24 - filled) + "] "
            self.out.write("\r\x1b[2K" + bar + line)
            if final:
                self.out.write("\n")
        else:
            self.out.write(line + "\n")
        self.out.flush()

    def close(self) -> None:
        if self.tty and self.last:
            self.out.write("\n")
            self.out.flush()


def duration(seconds: float) -> str:
    if math.isnan(seconds):
        return "--"
    s = round(seconds)
    return (
        f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"
        if s >= 3600
        else f"{s // 60}:{s % 60:02d}"
    )
