"""Progress of a run: a live bar with rate and ETA on a terminal (a line
every 10 s elsewhere), or a bar that updates in place in a notebook.
"""

from __future__ import annotations

import html
import importlib
import math
import sys
import time
from typing import Any, TextIO

__all__ = [
    "NotebookProgress",
    "ProgressPrinter",
    "duration",
    "in_notebook",
    "percent",
]


class _Rate:
    """Rate and ETA from the first result on: start-up and the small pilot
    batches would make the first ETA absurd; "--" until 1 s of data."""

    def __init__(self) -> None:
        self.first: tuple[float, int] | None = None  # (time, done) at the first event

    def __call__(self, ev: Any, now: float, final: bool) -> tuple[float, float]:
        if self.first is None:
            self.first = (now, ev.done)
        t1, d1 = self.first
        span = now - t1
        if final or span < 1.0 or ev.done <= d1:
            rate = ev.done / ev.elapsed if ev.elapsed > 0 else 0.0
            return rate, 0.0 if final else float("nan")
        rate = (ev.done - d1) / span
        return rate, (ev.total - ev.done) / rate


def _line(ev: Any, rate: float, eta: float) -> str:
    line = (
        f"{ev.done:,}/{ev.total:,} tasks  {100 * ev.done / max(ev.total, 1):5.1f}%  "
        f"{rate:,.0f}/s  ETA {duration(eta)}  failed {ev.failed:,}"
    )
    if ev.stopping:
        line += "  (stopping after batches in flight; Ctrl-C again to stop now)"
    return line


class ProgressPrinter:
    """A live line on a terminal, a plain line every 10 s otherwise."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.tty = out.isatty()
        self.last = 0.0
        self.rate = _Rate()

    def __call__(self, ev: Any) -> None:
        now = time.monotonic()
        final = ev.done >= ev.total
        rate, eta = self.rate(ev, now, final)
        if not final and now - self.last < (0.2 if self.tty else 10.0):
            return
        self.last = now
        line = _line(ev, rate, eta)
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


class NotebookProgress:
    """A bar in a Jupyter notebook's output, updated in place (HTML
    ``<progress>``; no terminal escape codes, no widget library)."""

    def __init__(self) -> None:
        ipd: Any = importlib.import_module("IPython.display")  # untyped
        self.HTML = ipd.HTML
        self.last = 0.0
        self.rate = _Rate()
        start = self.HTML(self._html(0, 1, "starting…"))
        self.handle = ipd.display(start, display_id=True)

    def __call__(self, ev: Any) -> None:
        now = time.monotonic()
        final = ev.done >= ev.total
        rate, eta = self.rate(ev, now, final)
        if not final and now - self.last < 0.2:
            return
        self.last = now
        body = self._html(ev.done, ev.total, _line(ev, rate, eta))
        self.handle.update(self.HTML(body))

    @staticmethod
    def _html(done: int, total: int, text: str) -> str:
        return (
            f'<div class="simstudy-progress"><progress value="{done}" '
            f'max="{max(total, 1)}" style="width:24em"></progress> '
            f"<code>{html.escape(text)}</code></div>"
        )


def in_notebook() -> bool:
    """Whether this runs in a Jupyter kernel (which shows HTML output)."""
    ipython = sys.modules.get("IPython")
    get = getattr(ipython, "get_ipython", None)
    shell = get() if get is not None else None
    return shell is not None and hasattr(shell, "kernel")


def duration(seconds: float) -> str:
    if math.isnan(seconds):
        return "--"
    s = round(seconds)
    return (
        f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"
        if s >= 3600
        else f"{s // 60}:{s % 60:02d}"
    )


def percent(part: int, total: int) -> str:
    """``part`` of ``total`` as a percentage that never rounds a difference
    away: ``99.98%`` for 59,991 of 60,000, never ``100.0%`` unless all,
    never ``0.0%`` unless none (one decimal, more only when needed)."""
    if total <= 0 or part == total:
        return "100.0%"
    exact = 100 * part / total
    decimals = 1
    while decimals < 12:
        shown = round(exact, decimals)
        if shown < 100 and (shown > 0 or part == 0):
            break
        decimals += 1
    return f"{exact:.{decimals}f}%"
