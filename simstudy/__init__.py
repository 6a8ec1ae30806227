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

from simstudy.errors import (
    DiskFull,
    FingerprintMismatch,
    ReproducibilityWarning,
    SimstudyError,
    StoreError,
    StudyError,
    UsageError,
)
from simstudy.loader import load_study
from simstudy.study import Study

# the lazily loaded public names: name -> the module that defines it (the
# one table; __all__ and __getattr__ read it, a test checks the block below)
_LAZY: dict[str, str] = {
    "Measure": "simstudy.summary",
    "Progress": "simstudy.runner",
    "RunReport": "simstudy.runner",
    "contrast": "simstudy.contrasts",
    "failure_ledger": "simstudy.summary",
    "open_results": "simstudy.store",
    "replay": "simstudy.debugging",
    "run": "simstudy.runner",
    "solve": "simstudy.solver",
    "summarize": "simstudy.summary",
    "verify": "simstudy.debugging",
    "write_report": "simstudy.report",
}
_SUBPACKAGES = ("plots",)  # imported on first use: ``simstudy.plots``

if TYPE_CHECKING:  # the same names, for type checkers (which cannot read _LAZY)
    from simstudy.contrasts import contrast as contrast
    from simstudy.debugging import replay as replay
    from simstudy.debugging import verify as verify
    from simstudy.report import write_report as write_report
    from simstudy.runner import Progress as Progress
    from simstudy.runner import RunReport as RunReport
    from simstudy.runner import run as run
    from simstudy.solver import solve as solve
    from simstudy.store import open_results as open_results
    from simstudy.summary import Measure as Measure
    from simstudy.summary import failure_ledger as failure_ledger
    from simstudy.summary import summarize as summarize

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
