"""Named crash points: where a test may kill the process, to prove recovery.

Every step of creating, growing, migrating and writing a store that leaves
something on disk is marked with ``crash_point(name)``. When the
environment variable ``SIMSTUDY_KILL_AT`` names that point, the process
sends itself SIGKILL there, exactly as ``kill -9`` at that moment would;
tests/test_crash_points.py kills at every point in ``POINTS`` and checks
that the next run finishes with the cube an uninterrupted run gives. When
``SIMSTUDY_DISK_FULL_AT`` names the point, the write that follows it fails
as on a full disk (``OSError(ENOSPC)``) instead: tests/test_disk_full.py
checks that every step then gives a clear error and a resumable store.
"""

from __future__ import annotations

import errno
import os
import signal

__all__ = ["DISK_FULL_AT", "KILL_AT", "POINTS", "crash_point"]

KILL_AT = "SIMSTUDY_KILL_AT"
DISK_FULL_AT = "SIMSTUDY_DISK_FULL_AT"

POINTS = (
    # creation: built in <store>/.simstudy/creating, then moved into place
    "create:built",  # the new cube complete in the scratch folder
    "create:moved",  # its arrays moved into the store, the root not yet
    # growth of an existing store (levels, methods, replicates)
    "grow:coords",  # coordinates rewritten, arrays not yet resized
    "grow:resized",  # arrays resized, metadata not yet saved
    # a new output array (a method's first result with a new output)
    "output:created",  # the array exists, the consolidated metadata not yet
    # writing results
    "flush:sealed",  # chunk writes sealed (store.seals), no chunk replaced
    "flush:outputs",  # outputs and records written, status not yet
    # --recompute METHOD
    "recompute:status",  # the method's status reset, its outputs not yet
    # migration of an older store
    "migrate:arrays",  # arrays renamed, the root metadata not yet
    # --prune
    "prune:copied",  # the pruned copy complete beside the store, not swapped
)


def crash_point(name: str) -> None:
    """Die here, as by ``kill -9``, if ``SIMSTUDY_KILL_AT`` names this point;
    fail as a full disk would, if ``SIMSTUDY_DISK_FULL_AT`` does."""
    if os.environ.get(KILL_AT) == name:
        assert name in POINTS, name
        os.kill(os.getpid(), signal.SIGKILL)
    if os.environ.get(DISK_FULL_AT) == name:
        assert name in POINTS, name
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC) + " (injected)")
