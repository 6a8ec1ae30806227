"""A store's own files, opened safely: no links, regular files only, sizes bounded.

A store handed over by someone else (a tarball, a shared folder) may hold a
symbolic link, a FIFO or a device where simstudy reads or writes: a seal log
linked to a file of the user would get lines appended to it, a failures
folder linked elsewhere would receive JSON files, a chunk linked to
``/dev/zero`` would be read until memory runs out, a FIFO would block a
reader forever. So:

- ``scan`` walks the store (never following a link) and refuses a store
  holding anything but regular files and folders, naming the path; every
  command calls it before it reads or writes any file of the store;
- ``read_bytes`` and ``open_append`` open with ``O_NOFOLLOW`` and
  ``O_NONBLOCK`` (a FIFO does not block the open), check on the open file
  that it is a regular file, and ``read_bytes`` refuses a file larger than
  the caller's bound (a chunk: what its array's metadata allows);
- ``write_atomic`` writes a new file under a fresh name (``O_EXCL``: never
  through a link planted there) and renames it into place.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import stat
import uuid
from pathlib import Path
from typing import Any

from simstudy.errors import StoreError

__all__ = [
    "open_append",
    "open_read",
    "read_bytes",
    "read_meta",
    "scan",
    "write_atomic",
]

# O_NOFOLLOW and O_NONBLOCK are POSIX; elsewhere the scan and the regular-file
# check on the open file remain
_SAFE = sum(getattr(os, flag, 0) for flag in ("O_NOFOLLOW", "O_NONBLOCK", "O_CLOEXEC"))
_HINT = (
    "this store holds what simstudy never writes: if you trust it, replace "
    "the path with a regular copy of what it stands for (or delete it), "
    "else use another store"
)


def _kind(mode: int) -> str:
    if stat.S_ISLNK(mode):
        return "a symbolic link"
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return "not a regular file"


def _refuse(path: Path, what: str) -> StoreError:
    if what == "a symbolic link":
        with contextlib.suppress(OSError):
            what += f" (to {os.readlink(path)})"
    return StoreError(
        f"{path} is {what}, not a regular file or folder; simstudy reads and "
        "writes only its own files inside a store.",
        hint=_HINT,
    )


def scan(store: Path, under: str | None = None) -> None:
    """Refuse a store holding a link, FIFO, socket or device (the first
    found, by path); ``under`` limits the walk to one folder of it.

    Costs one directory listing per folder (no ``stat`` per file).
    """
    top = store / under if under else store
    if under:
        try:
            mode = os.lstat(top).st_mode
        except FileNotFoundError:
            return
        if not stat.S_ISDIR(mode):
            raise _refuse(top, _kind(mode))
    folders = [top]
    while folders:
        try:
            entries = list(os.scandir(folders.pop()))
        except (FileNotFoundError, NotADirectoryError):
            continue  # removed while we walk (a run's leftovers)
        for entry in entries:
            if entry.is_dir(follow_symlinks=False):
                folders.append(Path(entry.path))
            elif not entry.is_file(follow_symlinks=False):
                try:
                    mode = entry.stat(follow_symlinks=False).st_mode
                except FileNotFoundError:
                    continue
                raise _refuse(Path(entry.path), _kind(mode))


def _open(path: Path, flags: int, mode: int = 0o644) -> int:
    """Open without following a link or blocking; a regular file only."""
    try:
        fd = os.open(path, flags | _SAFE, mode)
    except OSError as exc:
        if exc.errno == errno.ELOOP or os.path.islink(path):
            raise _refuse(path, "a symbolic link") from None
        raise
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        raise _refuse(path, _kind(info.st_mode))
    return fd


def read_bytes(path: Path, *, limit: int | None = None) -> bytes:
    """A store file's bytes; a link, a non-regular file or one larger than
    ``limit`` bytes is a ``StoreError`` naming it (nothing is read)."""
    fd = _open(path, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        if limit is not None and size > limit:
            raise StoreError(
                f"{path} is {size} bytes, more than the {limit} its metadata "
                "allows; simstudy did not write it.",
                hint=_HINT,
            )
        parts, got = [], 0
        while part := os.read(fd, max(size - got, 0) + 65536):
            parts.append(part)
            got += len(part)
            if limit is not None and got > limit:
                raise StoreError(f"{path} grew past {limit} bytes as it was read.")
        return b"".join(parts)
    finally:
        os.close(fd)


def read_meta(store: Path) -> dict[str, Any] | None:
    """The store's simstudy metadata (``zarr.json``'s attributes), read as
    every store file is (no link, a regular file); None when there is none."""
    try:
        meta = json.loads(read_bytes(store / "zarr.json"))["attributes"]["simstudy"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return meta if isinstance(meta, dict) else None


def open_read(path: Path) -> int:
    """A file descriptor reading a store's regular file; never through a link."""
    return _open(path, os.O_RDONLY)


def open_append(path: Path) -> int:
    """A file descriptor appending to a store's regular file (created if
    missing); never through a link."""
    return _open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT)


def write_atomic(path: Path, data: bytes) -> None:
    """Replace a store file: a new file under a fresh name, then a rename
    (the rename replaces a link itself, never what it points to)."""
    tmp = path.with_name(f"{path.name}.{uuid.uuid4().hex}.partial")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _SAFE, 0o644)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
