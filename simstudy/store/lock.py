"""The store's lock: one run writes a store at a time.

``<store>/.simstudy/lock`` holds the owner's pid, host, start time and a
random token (and, inside a Slurm job, its job id). A lock of a dead
process on this host is stale and taken over (so is one naming this very
process that it does not hold: left by a run of this process that failed),
and so is another host's lock whose Slurm job has ended (a driver job
killed by ``scancel`` or its walltime, resubmitted onto another node). The owner checks that the lock is
still its own (the token) before each write of results (``check``) and
before it deletes it (``release``): a run whose lock was deleted or taken
over stops with a clear error instead of writing beside another run, and
never deletes another run's lock.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

from simstudy.errors import StoreError
from simstudy.store.files import read_bytes
from simstudy.system import pid_alive

__all__ = ["Lock"]

LOCK_BYTES = 2**16  # a lock file is ~150 bytes
_HELD: set[str] = set()  # tokens of the locks this process holds
# Slurm job states in which the job's processes may still run
_ALIVE = {"PENDING", "CONFIGURING", "RUNNING", "SUSPENDED", "COMPLETING", "STOPPED"}


def slurm_job_ended(job: str) -> bool:
    """Whether Slurm says job ``job`` no longer runs (False: cannot tell)."""
    if shutil.which("squeue") is None:
        return False
    try:
        out = subprocess.run(
            ["squeue", "-h", "-j", job, "-o", "%T"],
            capture_output=True,
            text=True,
            timeout=20,
        )
    except (OSError, subprocess.SubprocessError):
        return False
    if out.returncode != 0:
        return "invalid job id" in out.stderr.lower()
    return not (set(out.stdout.split()) & _ALIVE)


def _read(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(read_bytes(path, limit=LOCK_BYTES) or b"{}")
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


class Lock:
    """An exclusive lock file; a lock of a dead process on this host is stale."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.held = False
        self.token = uuid.uuid4().hex
        self.lost: StoreError | None = None

    def _stale(self, other: dict[str, Any], host: str) -> bool:
        if not other:
            return True  # empty or damaged: its writer died while writing it
        if other.get("host") != host:
            # another machine's: respect it unless Slurm says its job ended
            job = other.get("slurm_job")
            return bool(job) and slurm_job_ended(str(job))
        try:
            pid = int(other.get("pid", 0))
        except (TypeError, ValueError):
            return True
        if pid == os.getpid():
            return other.get("token") not in _HELD
        return not pid_alive(pid)

    def acquire(self, store: Path) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        holder = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "since": time.time(),
            "token": self.token,
        }
        if os.environ.get("SLURM_JOB_ID"):
            holder["slurm_job"] = os.environ["SLURM_JOB_ID"]
        for _ in range(2):
            try:
                handle = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                other = _read(self.path)
                if self._stale(other, str(holder["host"])):
                    self.path.unlink(missing_ok=True)
                    continue
                raise StoreError(
                    f"store {store} is in use by process {other.get('pid')} on "
                    f"{other.get('host')}; two runs cannot write one store.",
                    hint="wait for that run to finish, or use another --store",
                ) from None
            with os.fdopen(handle, "w") as f:
                json.dump(holder, f)
            self.held = True
            _HELD.add(self.token)
            return
        raise StoreError(f"could not take the lock {self.path}.")  # pragma: no cover

    def ours(self) -> bool:
        """Whether the lock file on disk is still this lock."""
        return _read(self.path).get("token") == self.token

    def check(self) -> None:
        """Raise if the lock was deleted or taken over since we took it."""
        if self.lost is not None:
            raise self.lost
        if not self.held or self.ours():
            return
        other = _read(self.path)
        now = (
            f"now held by process {other.get('pid')} on {other.get('host')}"
            if other
            else "its lock file was deleted"
        )
        self.held = False
        _HELD.discard(self.token)
        self.lost = StoreError(
            f"this run lost the lock of store {self.path.parent.parent} ({now}); "
            "it stopped without writing beside another run.",
            hint="let the other run finish (or stop it), then run the same "
            "command: it resumes; never delete a lock file by hand while a run "
            "uses the store",
        )
        raise self.lost

    def release(self) -> None:
        """Delete the lock file, if it is still ours."""
        if self.held:
            if self.ours():
                self.path.unlink(missing_ok=True)
            self.held = False
            _HELD.discard(self.token)
