"""Compose study + store + executor: resume, bounded window, --max-errors,
Ctrl-C that leaves a consistent store.

Layers: imports ``executors, store, grid, streams, study, loader, errors``.
"""

from __future__ import annotations

import math
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

import numpy as np

from simstudy import streams
from simstudy.batch import FAILED, OK
from simstudy.errors import UsageError
from simstudy.executors import SCHEDULERS, make_executor
from simstudy.executors.dask import check_address
from simstudy.grid import CHUNK_REPLICATES, Batch, batch_runs, points
from simstudy.loader import load_study
from simstudy.store import Store
from simstudy.study import Study

__all__ = [
    "EXIT_BAD_INPUT",
    "EXIT_FAILED",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "Progress",
    "RunReport",
    "default_store",
    "run",
]

# the CLI's exit codes (DESIGN §6), decided here because a run's outcome is
EXIT_OK, EXIT_BAD_INPUT, EXIT_FAILED, EXIT_INTERRUPTED = 0, 2, 3, 130


@dataclass(slots=True)
class Progress:
    """A progress event: tasks done of total this run, failures, elapsed time."""

    done: int
    total: int
    failed: int
    elapsed: float
    stopping: bool = False


@dataclass(slots=True)
class RunReport:
    """What a run did; ``exit_code`` follows the CLI contract."""

    store: Path
    tasks: int  # tasks of the study
    already_done: int  # ok before this run
    computed: int  # tasks run now
    ok: int  # ok in the study after this run
    failed: int
    pending: int
    interrupted: bool
    stopped_on_errors: bool
    seconds: float
    executor: str

    @property
    def exit_code(self) -> int:
        if self.interrupted:
            return EXIT_INTERRUPTED
        return EXIT_FAILED if self.failed or self.stopped_on_errors else EXIT_OK


def default_store(study: Study) -> Path:
    """Return ``./<study-file-stem>.zarr`` (or ``./<name>.zarr`` without a file)."""
    stem = Path(study.source_file).stem if study.source_file else study.name
    return Path.cwd() / f"{stem}.zarr"


def _auto_batch_size(rows: int, workers: int, methods: int) -> int:
    """Aim for ~16 batches per worker but at least ~200 tasks per batch."""
    per = math.ceil(rows / max(1, 16 * workers))
    floor = math.ceil(200 / max(1, methods))
    return int(min(CHUNK_REPLICATES, max(1, min(rows, max(per, floor)))))


def run(
    study: Study | str | os.PathLike[str],
    *,
    store: str | os.PathLike[str] | None = None,
    scheduler: str = "distributed",
    workers: int | None = None,
    address: str | None = None,
    insecure: bool = False,
    batch_size: int | None = None,
    max_errors: int | None = None,
    retry_failed: bool = False,
    restart: bool = False,
    on_progress: Callable[[Progress], None] | None = None,
    on_start: Callable[[str], None] | None = None,
) -> RunReport:
    """Run (or resume) a study into its store.

    Parameters
    ----------
    study : Study or path
        The study, or the path of its study file.
    store : path, optional
        The zarr store; default ``./<study-file-stem>.zarr``.
    scheduler : {"distributed", "processes", "threads", "synchronous"}
        Where batches run. ``distributed`` starts a loopback LocalCluster,
        or connects to ``address``.
    workers : int, optional
        Worker processes (default: the number of cores).
    batch_size : int, optional
        Replicates per batch (default: automatic).
    max_errors : int, optional
        Stop cleanly once this many tasks have failed in this run.
    retry_failed : bool
        Run failed tasks again.
    restart : bool
        Discard the store's contents first.

    Returns
    -------
    RunReport
        Counts and the exit code.
    """
    if not isinstance(study, Study):
        study = load_study(study)
    if scheduler not in SCHEDULERS:
        raise UsageError(
            f"unknown scheduler {scheduler!r}; expected one of {list(SCHEDULERS)}.",
            hint="use --scheduler distributed (the default)",
        )
    for name, value in [("workers", workers), ("batch_size", batch_size)]:
        if value is not None and value < 1:
            raise UsageError(
                f"--{name.replace('_', '-')} must be >= 1, got {value}.",
                hint=f"drop --{name.replace('_', '-')} for the default",
            )
    if max_errors is not None and max_errors < 1:
        raise UsageError(
            f"--max-errors must be >= 1, got {max_errors}.",
            hint="drop --max-errors to never stop on failures",
        )
    if address is not None:
        if scheduler != "distributed":
            raise UsageError(
                f"--address needs the distributed scheduler, not {scheduler!r}.",
                hint="drop --scheduler when you pass --address",
            )
        check_address(address, insecure)  # before anything is written
    n_workers = workers or os.cpu_count() or 1
    path = Path(store) if store is not None else default_store(study)
    t0 = time.perf_counter()
    st = Store.open_for_run(path, study, restart=restart)
    try:
        return _run_open(
            study,
            st,
            t0,
            scheduler=scheduler,
            workers=n_workers,
            address=address,
            insecure=insecure,
            batch_size=batch_size,
            max_errors=max_errors,
            retry_failed=retry_failed,
            on_progress=on_progress,
            on_start=on_start,
        )
    finally:
        st.close()


def _run_open(
    study: Study,
    st: Store,
    t0: float,
    *,
    scheduler: str,
    workers: int,
    address: str | None,
    insecure: bool,
    batch_size: int | None,
    max_errors: int | None,
    retry_failed: bool,
    on_progress: Callable[[Progress], None] | None,
    on_start: Callable[[str], None] | None,
) -> RunReport:
    grid = points(study)
    pidx = [st.point_index(p) for p in grid]
    midx = st.method_index(study.method_names)
    pending: list[np.ndarray[Any, Any]] = []
    done_before = failed_before = 0
    for p in range(len(grid)):
        status = st.status_of(pidx[p], study.replicates, midx)
        done_before += int((status == OK).sum())
        failed_before += int((status == FAILED).sum())
        pending.append(status != OK if retry_failed else status == 0)
    total = int(sum(int(m.sum()) for m in pending))
    if retry_failed:
        failed_before = 0
    rows = int(sum(int(m.any(axis=1).sum()) for m in pending))
    size = batch_size or _auto_batch_size(rows, workers, len(study.methods))
    report = RunReport(
        st.path,
        study.n_tasks,
        done_before,
        0,
        done_before,
        failed_before,
        total,
        False,
        False,
        0.0,
        "nothing to run",
    )
    if total == 0:
        report.seconds = time.perf_counter() - t0
        return report
    executor = make_executor(
        scheduler, study=study, workers=workers, address=address, insecure=insecure
    )
    report.executor = executor.description
    if on_start is not None:
        on_start(executor.description + _dashboard(executor))
    failed_now = 0
    signals = _Signals()

    def emit() -> None:
        if on_progress is not None:
            stopping = report.interrupted or report.stopped_on_errors
            elapsed = time.perf_counter() - t0
            failed = report.failed - failed_before
            on_progress(Progress(report.computed, total, failed, elapsed, stopping))

    try:
        results = executor.results(
            _batches(study, grid, pending, size), st.output_specs
        )
        while True:
            try:
                if signals.count and not report.interrupted:
                    report.interrupted = True
                    executor.stop_submitting()
                    emit()
                result = next(results, None)
                if result is None:
                    break
                b = result.batch
                result = st.write(result, pidx[b.point], midx[list(b.methods)])
                n_ok = int((result.status == OK).sum())
                n_bad = int((result.status == FAILED).sum())
                report.computed += n_ok + n_bad
                report.ok += n_ok
                failed_now += n_bad
                report.failed = failed_before + failed_now
                report.pending -= n_ok + n_bad
                if max_errors is not None and failed_now >= max_errors:
                    report.stopped_on_errors = True
                    executor.stop_submitting()
                emit()
            except KeyboardInterrupt:
                # raised by the signal handler outside a store write
                report.interrupted = True
                signals.count = max(signals.count, 1)
                if signals.count >= 2:
                    raise
    except KeyboardInterrupt:
        report.interrupted = True
    finally:
        signals.restore()
        executor.close()
    report.seconds = time.perf_counter() - t0
    return report


class _Signals:
    """SIGINT/SIGTERM once: finish the batches in flight; twice: stop now.

    The first signal only sets a flag, so a batch being written is never cut
    between its outputs and its status.
    """

    def __init__(self) -> None:
        self.count = 0
        self.saved: dict[int, Any] = {}
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self.saved[sig] = signal.signal(sig, self._handle)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.count += 1
        if self.count >= 2:
            raise KeyboardInterrupt

    def restore(self) -> None:
        for sig, handler in self.saved.items():
            signal.signal(sig, handler)


def _dashboard(executor: Any) -> str:
    link = getattr(executor, "dashboard", None)
    return f"; dashboard {link}" if link else ""


def _batches(
    study: Study,
    grid: list[dict[str, Any]],
    pending: list[np.ndarray[Any, Any]],
    size: int,
) -> Iterator[Batch]:
    """Yield batches point by point; mt19937 states are chained forward once."""
    chain = streams.MTChain(study.seed) if study.scheme == "mt19937-jump" else None
    nm = len(study.methods)
    for p, point in enumerate(grid):
        levels = tuple(point.items())
        for start, stop, methods in batch_runs(pending[p], size=size):
            states = None
            if chain is not None:
                ks = [
                    streams.jump_index(p, r, s, replicates=study.replicates, methods=nm)
                    for r in range(start, stop)
                    for s in range(nm + 1)
                ]
                states = chain.states(ks)
            yield Batch(p, levels, start, stop, methods, states)
