"""The store's lock: one run writes a store at a time.

``<store>/.simstudy/lock`` holds the owner's pid, host and start time; a
lock of a dead process on this host is stale and taken over.

Layers: imports ``errors``.
"""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path

from simstudy.errors import StoreError

__all__ = ["Lock"]


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Lock:
    """An exclusive lock file; a lock of a dead process on this host is stale."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.held = False

    def acquire(self, store: Path) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        me = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.time()}
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                try:
                    other = json.loads(self.path.read_text() or "{}")
                except (OSError, ValueError):
                    other = {}
                stale = other.get("host") == me["host"] and not _pid_alive(
                    int(other.get("pid", 0))
                )
                if stale or not other:
                    self.path.unlink(missing_ok=True)
                    continue
                raise StoreError(
                    f"store {store} is in use by process {other.get('pid')} on "
                    f"{other.get('host')}; two runs cannot write one store.",
                    hint="wait for that run to finish, or use another --store",
                ) from None
            with os.fdopen(fd, "w") as f:
                json.dump(me, f)
            self.held = True
            return
        raise StoreError(f"could not take the lock {self.path}.")  # pragma: no cover

    def release(self) -> None:
        if self.held:
            self.path.unlink(missing_ok=True)
            self.held = False
