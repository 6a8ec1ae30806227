"""The simstudy exception tree. Imports nothing from simstudy.

::

    SimstudyError            every error simstudy raises on purpose
    ├── StudyError           bad study file or definition        (exit 2)
    ├── UsageError           bad command-line arguments          (exit 2)
    ├── StoreError           missing, locked or corrupt store    (exit 2)
    │   ├── FingerprintMismatch   store made by a different study (exit 2)
    │   └── DiskFull         no space left writing the store     (exit 4)
    └── NoSolution           solve: the measure is not monotone or
                             misses the target in the range      (exit 5)

Task failures are not exceptions: they are data in the cube.

The command line's exit codes live here too, beside the errors that map
to them: 0 all tasks ok; 3 finished with failed tasks; 2 bad input
(nothing written); 4 disk full (store consistent, resumable once there is
space); 5 a solve found no solution (its evaluations are kept); 6 an MCSE
target missed under ``--strict``; 130 interrupted (store consistent, resumable). Each error class
carries its exit code (``exit_code``).
"""

from __future__ import annotations

import errno

__all__ = [
    "EXIT_BAD_INPUT",
    "EXIT_DISK_FULL",
    "EXIT_FAILED",
    "EXIT_INTERRUPTED",
    "EXIT_NO_SOLUTION",
    "EXIT_OK",
    "EXIT_TARGET_MISSED",
    "NO_SPACE",
    "DiskFull",
    "FingerprintMismatch",
    "NoSolution",
    "SimstudyError",
    "StoreError",
    "StudyError",
    "UsageError",
]

EXIT_OK, EXIT_BAD_INPUT, EXIT_FAILED, EXIT_INTERRUPTED = 0, 2, 3, 130
EXIT_DISK_FULL = 4
EXIT_NO_SOLUTION = 5  # solve: not monotone, or the target is out of range
EXIT_TARGET_MISSED = 6  # run --target-mcse --strict: a point missed its target
# errno values that mean "no room": disk full, quota, file size limit
NO_SPACE = frozenset(
    {errno.ENOSPC, errno.EFBIG, getattr(errno, "EDQUOT", errno.ENOSPC)}
)


class SimstudyError(Exception):
    """Base class: a one-line message plus an optional hint with one action."""

    exit_code = EXIT_BAD_INPUT

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        if hint:  # a traceback (a script, a notebook) shows it, as the CLI does
            self.add_note(f"hint: {hint}")

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


class DiskFull(StoreError):
    """Writing the store failed for lack of space (disk full, quota, size limit).

    What was written is consistent (status is the commit mark): once there
    is space, the same command resumes.
    """

    exit_code = EXIT_DISK_FULL


class NoSolution(SimstudyError):
    """A solve found no level meeting the target: the measure is not
    monotone in the factor within its Monte Carlo error, or does not reach
    the target in the range. The evaluations made are kept in the store."""

    exit_code = EXIT_NO_SOLUTION


class ReproducibilityWarning(UserWarning):
    """A study function draws random numbers outside its task's stream."""
