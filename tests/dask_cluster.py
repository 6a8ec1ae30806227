"""Real ``dask scheduler`` / ``dask worker`` processes on 127.0.0.1 for tests and
benchmarks, and temporary TLS certificates made with the ``openssl`` CLI.

Every process is started in its own session, so teardown can stop it and its
children (the nanny's worker process) by process group: SIGTERM, a bounded
wait, then SIGKILL. Nothing here waits without a time limit.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from tests.helpers import wait_for

DASK = str(Path(sys.executable).with_name("dask"))
START_TIMEOUT = 60.0  # seconds for the scheduler file or the workers to appear


@dataclass(frozen=True)
class Certs:
    """PEM files of one certificate authority and a certificate it signed."""

    ca: Path
    cert: Path
    key: Path

    def args(self) -> list[str]:
        return [
            "--tls-ca-file",
            str(self.ca),
            "--tls-cert",
            str(self.cert),
            "--tls-key",
            str(self.key),
        ]


def make_certs(root: Path, name: str = "ca") -> Certs:
    """A throwaway CA under ``root/name`` and a certificate for 127.0.0.1."""
    d = root / name
    d.mkdir(parents=True)

    def openssl(*args: str) -> None:
        subprocess.run(
            ["openssl", *args], cwd=d, check=True, capture_output=True, timeout=60
        )

    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    openssl(
        "req",
        "-x509",
        *ec,
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        f"/CN=simstudy test {name}",
    )
    openssl("req", *ec, "-keyout", "node.key", "-out", "node.csr", "-subj", "/CN=node")
    (d / "ext.cnf").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    openssl(
        "x509",
        "-req",
        "-in",
        "node.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "node.pem",
        "-days",
        "2",
        "-extfile",
        "ext.cnf",
    )
    return Certs(d / "ca.pem", d / "node.pem", d / "node.key")


class DaskProcesses:
    """A scheduler and workers as separate processes, each in its own
    working directory under ``root`` (no study file on their path)."""

    def __init__(self, root: Path, *, certs: Certs | None = None) -> None:
        self.root = root
        self.certs = certs
        self.procs: list[subprocess.Popen[bytes]] = []
        self.workers: dict[str, subprocess.Popen[bytes]] = {}
        self.address = ""

    def _env(self, extra: dict[str, str] | None) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        env.update(extra or {})
        return env

    def _popen(
        self, cmd: list[str], cwd: Path, env: dict[str, str] | None, log: str
    ) -> subprocess.Popen[bytes]:
        cwd.mkdir(parents=True, exist_ok=True)
        with open(self.root / log, "wb") as out:
            proc = subprocess.Popen(
                cmd,
                cwd=cwd,
                env=self._env(env),
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        self.procs.append(proc)
        return proc

    def start_scheduler(self) -> str:
        """Start ``dask scheduler`` on a free loopback port; return its address."""
        file = self.root / "scheduler.json"
        cmd = [DASK, "scheduler", "--host", "127.0.0.1", "--port", "0"]
        cmd += ["--no-dashboard", "--scheduler-file", str(file)]
        if self.certs is not None:
            cmd += ["--protocol", "tls", *self.certs.args()]
        proc = self._popen(cmd, self.root / "scheduler", None, "scheduler.log")

        def written() -> bool:
            if proc.poll() is not None:
                raise RuntimeError(f"dask scheduler exited: {self.log('scheduler')}")
            with contextlib.suppress(OSError, ValueError, KeyError):
                self.address = str(json.loads(file.read_text())["address"])
                return True
            return False

        wait_for("the scheduler file", written, START_TIMEOUT)
        return self.address

    def start_worker(
        self, name: str, *, env: dict[str, str] | None = None, nanny: bool = True
    ) -> subprocess.Popen[bytes]:
        """Start one single-threaded ``dask worker`` (not waiting for it)."""
        cmd = [DASK, "worker", self.address, "--name", name, "--nthreads", "1"]
        cmd += ["--nworkers", "1", "--host", "127.0.0.1", "--no-dashboard"]
        cmd += ["--local-directory", str(self.root / name / "dask-scratch")]
        cmd += [] if nanny else ["--no-nanny"]
        if self.certs is not None:
            cmd += self.certs.args()
        proc = self._popen(cmd, self.root / name, env, f"{name}.log")
        self.workers[name] = proc
        return proc

    def security(self) -> Any:
        from distributed.security import Security

        if self.certs is None:
            return None
        c = self.certs
        return Security(
            tls_ca_file=str(c.ca),
            tls_client_cert=str(c.cert),
            tls_client_key=str(c.key),
            require_encryption=True,
        )

    def wait_for_workers(self, n: int) -> None:
        """Return once the scheduler has ``n`` workers (bounded)."""
        from distributed import Client

        with Client(self.address, security=self.security(), timeout="30s") as c:
            c.wait_for_workers(n, timeout=START_TIMEOUT)

    def worker_pids(self, name: str) -> set[int]:
        """The worker's processes: the nanny and the worker it runs."""
        proc = psutil.Process(self.workers[name].pid)
        return {proc.pid, *(p.pid for p in proc.children(recursive=True))}

    def log(self, name: str) -> str:
        path = self.root / f"{name}.log"
        return path.read_text(errors="replace")[-3000:] if path.exists() else ""

    def stop(self) -> None:
        """SIGTERM every process group, wait a little, then SIGKILL."""
        for proc in self.procs:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 3  # then SIGKILL
        for proc in self.procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        for proc in self.procs:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)  # children left in the group
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)


def group_alive(pgid: int) -> bool:
    """Whether any process of the group is still running (not a zombie)."""
    for p in psutil.process_iter(["status"]):
        with contextlib.suppress(psutil.Error):
            if os.getpgid(p.pid) == pgid and p.info["status"] != "zombie":
                return True
    return False
