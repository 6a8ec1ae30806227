"""Clusters simstudy starts itself: ``--cluster slurm`` (dask-jobqueue).

Settings come from a TOML file (``--cluster-config``, default
``./simstudy-cluster.toml``), table ``[slurm]``: every key but ``jobs`` is
passed to ``dask_jobqueue.SLURMCluster``; what the file leaves out falls back
to Dask's own jobqueue config (``~/.config/dask/jobqueue.yaml``). ``jobs``
(default 1) is how many Slurm jobs of workers to keep: the cluster adapts
to exactly that many, so a job that ends mid-run (walltime, pre-emption,
``scancel``) is replaced and Dask reruns the batches it held. Worker jobs get
BLAS/OpenMP threads = 1 unless the prologue sets them. While no worker job
runs (a busy queue), ``QueueNotice`` says so on stderr. dask_jobqueue (the
optional extra ``simstudy[slurm]``) is imported inside functions.
"""

from __future__ import annotations

import os
import shutil
import sys
import threading
import time
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from simstudy.errors import UsageError

__all__ = [
    "CLUSTERS",
    "DEFAULT_CONFIG",
    "QueueNotice",
    "check_cluster",
    "cluster_settings",
    "make_cluster",
    "start_cluster",
]

CLUSTERS = ("slurm",)
DEFAULT_CONFIG = "simstudy-cluster.toml"
THREADS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def cluster_settings(kind: str, config: str | None) -> dict[str, Any]:
    """Read the ``[kind]`` table of the config file (none: Dask's defaults)."""
    if kind not in CLUSTERS:
        raise UsageError(
            f"--cluster {kind!r}: unknown launcher; expected one of {list(CLUSTERS)}.",
            hint="use --cluster slurm, or start the cluster yourself and pass "
            "--address (docs/cluster.md)",
        )
    path = Path(config if config is not None else DEFAULT_CONFIG)
    if not path.exists():
        if config is not None:
            raise UsageError(
                f"--cluster-config {config}: no such file.",
                hint=f"check the path, or drop it to read ./{DEFAULT_CONFIG}",
            )
        return {}
    try:
        table = tomllib.loads(path.read_text()).get(kind, {})
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise UsageError(
            f"{path}: not valid TOML: {exc}.",
            hint=f"see docs/cluster.md for a [{kind}] example",
        ) from None
    if not isinstance(table, dict):
        raise UsageError(
            f"{path}: [{kind}] must be a table of settings, got {table!r}.",
            hint=f"write a [{kind}] section with key = value lines",
        )
    jobs = table.get("jobs", 1)
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise UsageError(
            f"{path}: [{kind}] jobs = {jobs!r}: expected a whole number >= 1.",
            hint="jobs is how many Slurm jobs of workers to submit, e.g. jobs = 4",
        )
    return dict(table)


def _slurm_class() -> Any:
    try:
        from dask_jobqueue.slurm import SLURMCluster
    except ImportError:
        raise UsageError(
            "--cluster slurm needs dask-jobqueue, which is not installed.",
            hint="pip install 'simstudy[slurm]' (or pip install dask-jobqueue)",
        ) from None
    return SLURMCluster


def check_cluster(kind: str, config: str | None) -> None:
    """Refuse, before anything is written, what would make the launcher fail:
    a bad config file, no dask-jobqueue, no ``sbatch`` on this machine."""
    cluster_settings(kind, config)
    _slurm_class()
    if shutil.which("sbatch") is None:
        raise UsageError(
            "--cluster slurm submits worker jobs with sbatch, which is not on "
            "this machine's PATH.",
            hint="run on the Slurm login node, or start the workers another way "
            "and pass --address (docs/cluster.md)",
        )


def make_cluster(kind: str, config: str | None) -> tuple[Any, int]:
    """Build the launcher's cluster object (no jobs submitted); return it and
    the number of jobs to submit."""
    settings = cluster_settings(kind, config)
    jobs = settings.pop("jobs", 1)
    prologue = list(settings.pop("job_script_prologue", []) or [])
    text = "\n".join(prologue)
    prologue = [
        f"export {v}={os.environ.get(v, '1')}" for v in THREADS if v not in text
    ] + prologue
    cls = _slurm_class()
    try:
        cluster = cls(job_script_prologue=prologue, **settings)
    except (TypeError, ValueError) as exc:
        raise UsageError(
            f"[{kind}] settings refused by dask-jobqueue: {exc}.",
            hint="see dask_jobqueue.SLURMCluster's parameters",
        ) from None
    return cluster, jobs


def start_cluster(kind: str, config: str | None) -> Any:
    """Start the cluster and submit its worker jobs; the workers arrive as
    Slurm runs them (batches wait in Dask's queue until then).

    The cluster adapts between ``jobs`` and ``jobs`` jobs rather than being
    scaled once: a scaled cluster never replaces a job that ended, so a
    study outliving its worker jobs' walltime would wait for ever."""
    cluster, jobs = make_cluster(kind, config)
    cluster.adapt(minimum_jobs=jobs, maximum_jobs=jobs, interval="1s")
    return cluster


class QueueNotice:
    """Say on stderr when a launched cluster has had no worker for
    ``seconds`` (jobs pending in a busy queue, or all ended and being
    replaced), and again when workers arrive; checked every ``POLL`` s."""

    POLL = 0.25

    def __init__(
        self,
        threads: Callable[[], int],
        *,
        kind: str,
        seconds: float = 10.0,
        out: Any = None,
    ) -> None:
        self.threads = threads
        self.kind = kind
        self.seconds = seconds
        self.out = out
        self.waiting = False
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._watch, daemon=True)
        self.thread.start()

    def _say(self, text: str) -> None:
        print(text, file=self.out or sys.stderr, flush=True)

    def _check(self, since: float) -> float:
        """Say what changed since the last check; return when workers were
        last seen (or the wait began)."""
        n = self.threads()
        if n:
            if self.waiting:
                self._say(f"note: {n} worker thread(s) joined; the run goes on.")
            self.waiting = False
            return time.monotonic()
        if not self.waiting and time.monotonic() - since >= self.seconds:
            self.waiting = True
            self._say(
                f"note: waiting for {self.kind} to start the worker jobs: no "
                f"worker for {time.monotonic() - since:.0f} s (squeue --me "
                "shows why); batches wait in the scheduler's queue."
            )
        return since

    def _watch(self) -> None:
        since = time.monotonic()
        while not self.stop.wait(self.POLL):
            since = self._check(since)

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=5)
        if self.waiting and self.threads():  # they came, and the run ended first
            self._check(time.monotonic())
