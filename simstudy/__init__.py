"""simstudy: simulation studies with reproducible parallel random numbers.

Public API: :class:`Study`, :func:`load_study`, :func:`run`,
:func:`open_results`, :func:`summarize`, :func:`solve`, :func:`replay`,
:func:`verify`, :func:`write_report`, :func:`contrast`, :func:`failure_ledger`
and the error classes. Everything else is internal.
Heavy names are resolved lazily so ``import simstudy.batch`` on a worker
stays light; so is the figures subpackage ``simstudy.plots`` (matplotlib),
imported on first use of ``simstudy.plots``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from simstudy.errors import (
    DiskFull,
    FingerprintMismatch,
    SimstudyError,
    StoreError,
    StudyError,
    UsageError,
)
from simstudy.loader import load_study
from simstudy.study import Study

if TYPE_CHECKING:
    from simstudy.contrasts import contrast
    from simstudy.debugging import replay, verify
    from simstudy.report import write_report
    from simstudy.runner import run
    from simstudy.solver import solve
    from simstudy.store import open_results
    from simstudy.summary import failure_ledger, summarize

__version__ = "0.1.0"

__all__ = [
    "DiskFull",
    "FingerprintMismatch",
    "SimstudyError",
    "StoreError",
    "Study",
    "StudyError",
    "UsageError",
    "contrast",
    "failure_ledger",
    "load_study",
    "open_results",
    "replay",
    "run",
    "solve",
    "summarize",
    "verify",
    "write_report",
]


def __getattr__(name: str) -> Any:
    if name == "run":
        from simstudy.runner import run

        return run
    if name == "solve":
        from simstudy.solver import solve

        return solve
    if name == "open_results":
        from simstudy.store import open_results

        return open_results
    if name in ("summarize", "failure_ledger"):
        from simstudy import summary

        return getattr(summary, name)
    if name == "contrast":
        from simstudy.contrasts import contrast

        return contrast
    if name in ("replay", "verify"):
        from simstudy import debugging

        return getattr(debugging, name)
    if name == "plots":  # a subpackage (matplotlib): loaded on first use
        import simstudy.plots

        return simstudy.plots
    if name == "write_report":
        from simstudy.report import write_report

        return write_report
    raise AttributeError(f"module 'simstudy' has no attribute {name!r}")
