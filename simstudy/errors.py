"""The simstudy exception tree. Imports nothing from simstudy.

::

    SimstudyError            every error simstudy raises on purpose
    ├── StudyError           bad study file or definition        (exit 2)
    ├── UsageError           bad command-line arguments          (exit 2)
    └── StoreError           missing, locked or corrupt store    (exit 2)
        └── FingerprintMismatch   store made by a different study (exit 2)

Task failures are not exceptions: they are data in the cube.
"""

from __future__ import annotations

__all__ = [
    "FingerprintMismatch",
    "SimstudyError",
    "StoreError",
    "StudyError",
    "UsageError",
]


class SimstudyError(Exception):
    """Base class: a one-line message plus an optional hint with one action."""

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message


class StudyError(SimstudyError):
    """The study file or the Study declaration is wrong."""


class UsageError(SimstudyError):
    """The command-line arguments are wrong."""


class StoreError(SimstudyError):
    """The store is missing, locked, unwritable or corrupt."""


class FingerprintMismatch(StoreError):
    """The store was made by a study that differs in a way that changes numbers."""


class ReproducibilityWarning(UserWarning):
    """A study function draws random numbers outside its task's stream."""
