"""Files simstudy writes outside a store (``report -o``, ``summarize -o``),
written whole or not at all.

:func:`replacing` hands out a temporary file beside the target (same folder,
so same file system) and renames it into place (``os.replace``) only once
it is written and flushed to disk; any failure removes the temporary file
and leaves a previous file at the target byte for byte as it was. A full
disk (or quota, or file size limit) is :class:`DiskFull` (exit 4); a
missing folder or a refused write is a :class:`UsageError` (exit 2), each
naming the file.
"""

from __future__ import annotations

import errno
import os
import secrets
import stat
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from simstudy.errors import NO_SPACE, DiskFull, SimstudyError, UsageError

__all__ = ["check_target", "replacing", "write_text"]

REFUSED = frozenset({errno.EROFS, errno.EACCES, errno.EPERM})
NO_FOLDER = frozenset({errno.ENOENT, errno.ENOTDIR})


@contextmanager
def replacing(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it to ``path`` on success.

    The temporary name keeps the suffix (``.report.1a2b3c4d.tmp.html``), so a
    writer that picks its format from the suffix still does. A new file gets
    the usual permissions (0666 less the umask); a replaced file keeps its
    own.
    """
    target = Path(path)
    tmp = target.with_name(f".{target.stem}.{secrets.token_hex(4)}.tmp{target.suffix}")
    try:
        os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        try:
            yield tmp
            _keep_mode(target, tmp)
            _flush(tmp)
            os.replace(tmp, target)
        finally:
            with suppress(OSError):
                tmp.unlink(missing_ok=True)
    except OSError as exc:
        clear = write_error(exc, target)
        if clear is None:
            raise
        raise clear from exc


def check_target(path: str | os.PathLike[str]) -> Path:
    """Refuse an output whose folder does not exist, before the work that
    fills it is done (``replacing`` says the same, but only at the end)."""
    target = Path(path)
    if not target.parent.is_dir():
        raise UsageError(
            f"cannot write {target}: directory {target.parent} does not exist.",
            hint="create it first or choose another -o",
        )
    return target


def write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` whole or not at all; return the path."""
    with replacing(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_error(exc: OSError, target: Path) -> SimstudyError | None:
    """The clear error for a failed write of ``target``, or None if not ours."""
    cause = exc.strerror or str(exc)
    kept = (
        "the previous file is unchanged" if target.exists() else "nothing was written"
    )
    if exc.errno in NO_SPACE:
        code = errno.errorcode.get(exc.errno or 0, str(exc.errno))
        return DiskFull(
            f"cannot write {target}: {cause} ({code}); {kept}.",
            hint="free disk space (or choose another -o), then run the same command",
        )
    if exc.errno in REFUSED:
        return UsageError(
            f"cannot write {target}: {cause}; {kept}.",
            hint="fix the folder's permissions or choose another -o",
        )
    if exc.errno in NO_FOLDER:
        return UsageError(
            f"cannot write {target}: folder {target.parent} does not exist.",
            hint="create it first or choose another -o",
        )
    if exc.errno == errno.EISDIR or target.is_dir():
        return UsageError(
            f"cannot write {target}: it is a folder.",
            hint="give -o a file name, not a folder",
        )
    return None


def _keep_mode(target: Path, tmp: Path) -> None:
    """Give the new file the permissions of the file it replaces."""
    try:
        mode = stat.S_IMODE(target.stat().st_mode)
    except OSError:
        return
    os.chmod(tmp, mode)


def _flush(tmp: Path) -> None:
    """Flush the written file to disk, so the rename never exposes a hole."""
    fd = os.open(tmp, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
