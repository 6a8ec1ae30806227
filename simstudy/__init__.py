"""simstudy: simulation studies with reproducible parallel random numbers.

Public API: the names in ``__all__`` (:class:`Study`, :func:`load_study`,
:func:`run`, :func:`open_results`, :func:`summarize`, :func:`solve`,
:func:`replay`, :func:`verify`, :func:`write_report`, :func:`contrast`,
:func:`failure_ledger`, the user-facing classes and the error classes). Everything else is internal. Names whose modules are heavy load
on first use (``_LAZY``), so ``import simstudy`` on a worker stays light; so
does the figures subpackage ``simstudy.plots`` (matplotlib).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from simstudy import _moved
from simstudy.declare.loader import load_study
from simstudy.declare.study import Study
from simstudy.errors import (
    DiskFull,
    FingerprintMismatch,
    ReproducibilityWarning,
    SimstudyError,
    StoreError,
    StudyError,
    UsageError,
)

# the lazily loaded public names: name -> the module that defines it (the
# one table; __all__ and __getattr__ read it, a test checks the block below)
_LAZY: dict[str, str] = {
    "Measure": "simstudy.analysis.summary",
    "Progress": "simstudy.running.runner",
    "RunReport": "simstudy.running.runner",
    "contrast": "simstudy.analysis.contrasts",
    "failure_ledger": "simstudy.analysis.summary",
    "open_results": "simstudy.store",
    "replay": "simstudy.running.debugging",
    "run": "simstudy.running.runner",
    "solve": "simstudy.solving.solver",
    "summarize": "simstudy.analysis.summary",
    "verify": "simstudy.running.debugging",
    "write_report": "simstudy.report",
}
_moved.install()  # the old flat module names (simstudy.summary, ...) still import
_SUBPACKAGES = ("plots",)  # imported on first use: ``simstudy.plots``

if TYPE_CHECKING:  # the same names, for type checkers (which cannot read _LAZY)
    from simstudy.analysis.contrasts import contrast as contrast
    from simstudy.analysis.summary import Measure as Measure
    from simstudy.analysis.summary import failure_ledger as failure_ledger
    from simstudy.analysis.summary import summarize as summarize
    from simstudy.report import write_report as write_report
    from simstudy.running.debugging import replay as replay
    from simstudy.running.debugging import verify as verify
    from simstudy.running.runner import Progress as Progress
    from simstudy.running.runner import RunReport as RunReport
    from simstudy.running.runner import run as run
    from simstudy.solving.solver import solve as solve
    from simstudy.store import open_results as open_results

__version__ = "0.1.0"

__all__ = [
    "DiskFull",
    "FingerprintMismatch",
    "ReproducibilityWarning",
    "SimstudyError",
    "StoreError",
    "Study",
    "StudyError",
    "UsageError",
    "contrast",
    "failure_ledger",
    "load_study",
]
__all__ += list(_LAZY)
__all__.sort()


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    if name in _SUBPACKAGES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module 'simstudy' has no attribute {name!r}")
