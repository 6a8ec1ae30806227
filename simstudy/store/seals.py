"""Tie each chunk's checksum to its position: a swapped chunk is found.

A chunk file's crc32c proves its bytes are whole, not that they belong where
they are: two chunks of one variable swapped (or one copied over another) by
a hand, a script or a bad restore pass their checksums and would be read as
the results of other tasks. So each write of a chunk is sealed first: one
line per chunk in ``.simstudy/seals/<variable>.log``,

    c.0.3.1.0 <crc32c before the write, or -> <crc32c written>

appended before the chunk file is replaced. A chunk position is sound when
its file's crc32c is one of the two on its last line: the new one, or - a
run killed between the line and the rename - the one it replaces. A
position with no line (a store made before seals, or by ``--prune``) is not
judged. A crc32c that a line gives for another position names the chunk it
came from.

One swap goes unseen: a position given back the very bytes it held before
its last write (an old backup of that one chunk), which a kill could have
left there too.

A torn last line (a kill or a full disk mid-append) does not parse and is
skipped; the next append starts a new line. The log only grows by what the
chunk writes add (about one line per chunk of a run).
"""

from __future__ import annotations

import os
from pathlib import Path

from simstudy.store import files
from simstudy.store.meta import META

__all__ = ["SEALS", "Seals", "append", "crc_of", "log_path", "seal_folder"]

SEALS = "seals"  # folder in the store's .simstudy


def crc_of(blob: bytes) -> int:
    """The crc32c a chunk file ends with (its last four bytes)."""
    return int.from_bytes(blob[-4:], "little")


def _file_crc(path: Path) -> int | None:
    try:
        fd = files.open_read(path)
    except FileNotFoundError:
        return None
    try:
        size = os.fstat(fd).st_size
        return (
            int.from_bytes(os.pread(fd, 4, size - 4), "little") if size >= 4 else None
        )
    finally:
        os.close(fd)


def log_path(array_dir: Path) -> Path:
    return array_dir.parent / META / SEALS / f"{array_dir.name}.log"


def append(array_dir: Path, entries: list[tuple[Path, int]]) -> None:
    """Seal chunk writes about to happen: (chunk file, crc32c it will hold).

    Called before the files are replaced; records what each file holds now,
    so a kill between this and the rename leaves a position that still
    passes.
    """
    if not entries:
        return
    log = log_path(array_dir)
    lines = []
    for path, new in entries:
        old = _file_crc(path)
        key = path.relative_to(array_dir).as_posix()
        lines.append(f"{key} {'-' if old is None else f'{old:08x}'} {new:08x}\n")
    if not log.parent.is_dir():
        log.parent.mkdir(parents=True, exist_ok=True)
    fd = files.open_append(log)  # never through a link
    try:
        info = os.fstat(fd)
        if info.st_nlink > 1:  # shared with another path (a hard-linked copy)
            os.close(fd)
            files.write_atomic(log, files.read_bytes(log))  # a copy of our own
            fd = files.open_append(log)
            info = os.fstat(fd)
        head = b""
        if info.st_size and os.pread(fd, 1, info.st_size - 1) != b"\n":
            head = b"\n"  # after a torn line: start a new one
        os.write(fd, head + "".join(lines).encode())
    finally:
        os.close(fd)


def seal_folder(array_dir: Path) -> None:
    """Seal every chunk of one variable as it is now (a copy zarr wrote)."""
    chunks = sorted(f for f in array_dir.glob("c.*") if not f.name.endswith(".partial"))
    append(array_dir, [(f, crc_of(files.read_bytes(f))) for f in chunks])


class Seals:
    """The last seal of each chunk position of one variable."""

    def __init__(self, array_dir: Path) -> None:
        self.last: dict[str, tuple[int | None, int]] = {}
        self._owner: dict[int, str] | None = None
        log = log_path(array_dir)
        try:
            text = files.read_bytes(log).decode("ascii", errors="replace")
        except FileNotFoundError:
            return
        for line in text.split("\n"):
            parts = line.split(" ")
            if len(parts) != 3 or len(parts[2]) != 8:
                continue  # a torn or damaged line
            try:
                old = None if parts[1] == "-" else int(parts[1], 16)
                self.last[parts[0]] = (old, int(parts[2], 16))
            except ValueError:
                continue

    def judge(self, key: str, crc: int) -> str | None:
        """Why the chunk at ``key`` with this crc32c is not what was written
        there; None when it is (or when the position has no seal)."""
        seal = self.last.get(key)
        if seal is None or crc in seal:
            return None
        if self._owner is None:
            self._owner = {new: k for k, (_, new) in self.last.items()}
        other = self._owner.get(crc)
        if other is not None and other != key:
            return f"holds the chunk written at {other}: swapped or copied chunk files"
        return "not the chunk written at this position (its checksum differs)"
