"""What a run tells its caller: a ``Progress`` event after each finished
batch, and the ``RunReport`` it returns (counts, notes, the exit code).
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from pathlib import Path

from simstudy.errors import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, EXIT_TARGET_MISSED

__all__ = ["Progress", "RunReport"]


@dataclass(slots=True)
class Progress:
    """A progress event: tasks done of total this run, failures, elapsed time."""

    done: int
    total: int
    failed: int
    elapsed: float
    stopping: bool = False


@dataclass(slots=True, kw_only=True)
class RunReport:
    """What a run did; ``exit_code`` follows the CLI contract."""

    store: Path
    tasks: int = 0  # tasks of the study
    already_done: int = 0  # ok before this run
    computed: int = 0  # tasks run now
    ok: int = 0  # ok in the study after this run
    failed: int = 0
    pending: int = 0
    interrupted: bool = False
    stopped_on_errors: bool = False  # by --max-errors or by fail-fast
    # fail-fast: the method whose first tasks all failed, and its first error
    failing: tuple[str, str] | None = None
    seconds: float = 0.0
    executor: str = "nothing to run"
    startup: float = 0.0  # seconds until the workers were ready
    repaired: tuple[str, ...] = ()  # damaged chunks found on open, recomputed
    warnings: tuple[str, ...] = ()  # said once, e.g. a library version changed
    notes: tuple[str, ...] = ()  # e.g. results hidden because the study dropped them
    nonfinite: int = 0  # ok tasks of this run with a NaN or inf output
    target_missed: bool = False  # --target-mcse: a point stopped short of it
    strict: bool = False  # --strict: a missed target is exit code 6

    @property
    def tasks_per_second(self) -> float:
        """Tasks computed per second once the workers were ready."""
        busy = self.seconds - self.startup
        return self.computed / busy if busy > 0 else 0.0

    @property
    def exit_code(self) -> int:
        if self.interrupted:
            return EXIT_INTERRUPTED
        if self.failed or self.stopped_on_errors:
            return EXIT_FAILED
        return EXIT_TARGET_MISSED if self.strict and self.target_missed else EXIT_OK

    def lines(self) -> list[tuple[str, str]]:
        """What a person wants to see of the run, as (label, text) rows."""
        state = (
            "interrupted (run again to resume)"
            if self.interrupted
            else "stopped on errors"
            if self.stopped_on_errors
            else "finished"
        )
        left, total = f"{self.pending:,} pending", f"{self.tasks:,}"
        rows = [
            ("store", str(self.store)),
            ("state", f"{state}, exit code {self.exit_code}"),
            ("tasks", f"{self.ok:,} ok, {self.failed:,} failed, {left} of {total}"),
            ("this run", f"{self.computed:,} computed in {self.seconds:.1f} s"),
        ]
        if self.failing:
            rows.append(("failing", f"method {self.failing[0]!r}: {self.failing[1]}"))
        rows += [("note", n) for n in (*self.warnings, *self.notes)]
        rows.append(
            ("next", f"simstudy.summarize(simstudy.open_results({str(self.store)!r}))")
        )
        return rows

    def __str__(self) -> str:
        return "\n".join(f"{k:>9}: {v}" for k, v in self.lines())

    def _repr_html_(self) -> str:
        """A notebook shows the returned report as this table."""
        body = "".join(
            f"<tr><th style='text-align:right'>{html.escape(k)}</th>"
            f"<td style='text-align:left'><code>{html.escape(v)}</code></td></tr>"
            for k, v in self.lines()
        )
        return (
            f"<table class='simstudy-run'><caption>simstudy run</caption>{body}</table>"
        )
