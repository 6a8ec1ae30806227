"""Writing a store can fail for lack of space or rights: say so clearly.

``writing(path)`` wraps every step that writes a store: a full disk (or
quota, or file size limit) becomes ``DiskFull`` (exit 4), a read-only or
forbidden store a ``StoreError`` (exit 2), each naming the store and the
cause, with the hint that the same command resumes. Other ``OSError``\\ s
pass through: they are not the user's to fix.
"""

from __future__ import annotations

import errno
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from simstudy.errors import NO_SPACE, DiskFull, StoreError

__all__ = ["write_error", "writing"]

REFUSED = frozenset({errno.EROFS, errno.EACCES, errno.EPERM})


def write_error(exc: OSError, store: Path) -> StoreError | None:
    """The clear error for a failed write to ``store``, or None if not ours."""
    cause = exc.strerror or str(exc)
    resume = "then run the same command: it resumes where it stopped"
    if exc.errno in NO_SPACE:
        code = errno.errorcode.get(exc.errno or 0, str(exc.errno))
        return DiskFull(
            f"cannot write the store {store}: {cause} ({code}); what was "
            "written is consistent.",
            hint=f"free disk space (or choose another --store), {resume}",
        )
    if exc.errno in REFUSED:
        return StoreError(
            f"cannot write the store {store}: {cause}.",
            hint=f"fix the permissions (or choose another --store), {resume}",
        )
    return None


@contextmanager
def writing(store: Path) -> Iterator[None]:
    """Turn a full disk or a refused write inside the block into a clear error."""
    try:
        yield
    except OSError as exc:
        clear = write_error(exc, store)
        if clear is None:
            raise
        raise clear from exc
