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
import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

import numpy as np

from simstudy import streams
from simstudy.batch import FAILED, OK
from simstudy.errors import ReproducibilityWarning, StoreError, UsageError
from simstudy.executors import SCHEDULERS, Executor, make_executor, study_payload
from simstudy.executors.dask import check_address, check_tls
from simstudy.grid import Batch, batch_runs, points
from simstudy.lint import lint_study
from simstudy.loader import load_study
from simstudy.study import Study

if TYPE_CHECKING:
    from simstudy.store import Store

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
    startup: float = 0.0  # seconds until the workers were ready
    repaired: tuple[str, ...] = ()  # damaged chunks found on open, recomputed
    warnings: tuple[str, ...] = ()  # said once, e.g. a library version changed
    notes: tuple[str, ...] = ()  # e.g. results hidden because the study dropped them

    @property
    def tasks_per_second(self) -> float:
        """Tasks computed per second once the workers were ready."""
        busy = self.seconds - self.startup
        return self.computed / busy if busy > 0 else 0.0

    @property
    def exit_code(self) -> int:
        if self.interrupted:
            return EXIT_INTERRUPTED
        return EXIT_FAILED if self.failed or self.stopped_on_errors else EXIT_OK


def default_store(study: Study) -> Path:
    """Return ``./<study-file-stem>.zarr`` (or ``./<name>.zarr`` without a file)."""
    stem = Path(study.source_file).stem if study.source_file else study.name
    return Path.cwd() / f"{stem}.zarr"


MT_CHECKPOINT_EVERY = 1024  # mt19937 jumps between saved chain states (~1-2 s)


@dataclass(slots=True)
class TargetRule:
    """Run replicates in rounds until every method meets an MCSE target.

    After each round, at each design point still running, the Monte Carlo
    SE of every target measure is computed (``summarize``) for every method
    over the point's first ``counts[p]`` replicates, and only those, so a
    resumed run takes the same decisions. The point stops when every
    method meets every target; else its count grows to the projection
    ``n * (mcse / target)**2`` (MCSE shrinks like 1/sqrt(n)) but at most
    ``2 n`` (an early MCSE is itself noisy, so a far projection is not
    trusted), at least ``n + step``, rounded up to a multiple of ``step``
    (the first round's size), at most ``max_replicates``.
    """

    targets: dict[str, float]
    max_replicates: int
    step: int
    last: list[dict[str, Any]] = field(default_factory=list)  # the last decisions

    def next_counts(
        self, st: Store, grid: list[dict[str, Any]], counts: list[int]
    ) -> tuple[list[int], bool]:
        """Return the next round's replicates per point, and whether any grew."""
        import xarray as xr

        from simstudy.store import open_results
        from simstudy.summary import summarize

        cube = open_results(st.path)
        factors = list(grid[0]) if grid else []
        # each point's first counts[p] replicates, the others masked as pending
        shape = tuple(cube.sizes[f] for f in factors)
        limit = np.zeros(shape, np.int64)
        for p, point in enumerate(grid):
            limit[tuple(cube.indexes[f].get_loc(point[f]) for f in factors)] = counts[p]
        cube = cube.isel(replicate=slice(0, max(counts)))
        inside = cube["replicate"] < xr.DataArray(
            limit, coords={f: cube[f] for f in factors}, dims=factors
        )
        cube = cube.assign(status=cube["status"].where(inside, 0))
        summary = summarize(cube)
        new, more, entries = list(counts), False, []
        for measure in self.targets:
            if f"{measure}_mcse" not in summary:
                why = summary.attrs["skipped"].get(measure, "not computed")
                raise UsageError(
                    f"--target-mcse {measure}: the measure cannot be computed "
                    f"for this study ({why}).",
                    hint="choose a measure `simstudy summarize` shows",
                )
        for p, point in enumerate(grid):
            cell = summary.sel(point)
            worst, mcse = 0.0, {}
            for measure, goal in self.targets.items():
                values = np.asarray(cell[f"{measure}_mcse"].values).ravel()
                finite = values[~np.isnan(values)]
                top = float(finite.max()) if finite.size else math.nan
                mcse[measure] = None if math.isnan(top) else top
                worst = max(worst, top / goal) if not math.isnan(top) else math.inf
            if worst <= 1.0:
                state = "met"
            elif counts[p] >= self.max_replicates:
                state = "max"
            else:
                state = "running"
                # the projection, but at most double: an early MCSE is noisy
                need = 2 * counts[p]
                if math.isfinite(worst):
                    need = min(need, math.ceil(counts[p] * worst**2))
                need = max(need, counts[p] + self.step)
                need = math.ceil(need / self.step) * self.step
                new[p] = min(self.max_replicates, need)
                more = True
            entries.append(
                {
                    "point": point,
                    "replicates": new[p],
                    "state": state,
                    "mcse": mcse,
                    "at": counts[p],
                }
            )
        cube.close()
        self.last = entries
        st.record_target(
            {
                "targets": self.targets,
                "max_replicates": self.max_replicates,
                "step": self.step,
                "points": entries,
            }
        )
        return new, more


class BatchSizer:
    """Replicates per batch: a small pilot, then sized from measured task times.

    A batch aims at ``TARGET`` seconds of work, so the ~1-5 ms a batch costs
    in shipping and bookkeeping stays under 5% of it; near the end batches
    shrink (at most a quarter of each worker's share of what is left) so no
    worker idles while another finishes a long one. Task times are tracked
    per design point, so cheap and expensive points get their own sizes.
    """

    TARGET = 0.2  # seconds of work per batch
    PILOT = 4  # replicates per batch before any task has been timed

    def __init__(
        self,
        *,
        fixed: int | None,
        workers: int,
        rows: int,
        chunk: int,
        quantum: int = 1,
    ):
        self.fixed = fixed
        self.quantum = quantum  # sizes are multiples of it (a jax block)
        self.workers = workers
        self.rows_left = rows
        self.chunk = chunk
        self.points: dict[int, tuple[float, int]] = {}  # seconds, replicates
        self.total = (0.0, 0)

    def observe(self, batch: Batch, seconds: np.ndarray[Any, Any]) -> None:
        """Account a finished batch and its per-task seconds."""
        reps = batch.stop - batch.start
        spent = float(np.nansum(seconds))
        s, n = self.points.get(batch.point, (0.0, 0))
        self.points[batch.point] = (s + spent, n + reps)
        self.total = (self.total[0] + spent, self.total[1] + reps)

    def issued(self, batch: Batch) -> None:
        self.rows_left -= batch.stop - batch.start

    def size(self, point: int) -> int:
        """Replicates for the next batch of ``point``."""
        if self.fixed is not None:
            return self.fixed
        s, n = self.points.get(point, self.total)
        if n == 0:
            return max(self.PILOT, self.quantum)
        per_replicate = max(s / n, 1e-7)
        tail = math.ceil(self.rows_left / (4 * self.workers))
        size = int(min(self.chunk, max(1, min(self.TARGET / per_replicate, tail))))
        q = self.quantum
        return min(max(self.chunk, q), math.ceil(size / q) * q)


def run(
    study: Study | str | os.PathLike[str],
    *,
    store: str | os.PathLike[str] | None = None,
    scheduler: str | None = None,
    workers: int | None = None,
    address: str | None = None,
    insecure: bool = False,
    tls_ca_file: str | None = None,
    tls_cert: str | None = None,
    tls_key: str | None = None,
    cluster: str | None = None,
    cluster_config: str | None = None,
    batch_size: int | None = None,
    max_errors: int | None = None,
    task_timeout: float | None = None,
    accept_version_change: bool = False,
    warnings_as_errors: bool = False,
    replicates: int | None = None,
    retry_failed: bool = False,
    restart: bool = False,
    recompute: tuple[str, ...] | list[str] = (),
    prune: bool = False,
    target_mcse: Mapping[str, float] | None = None,
    max_replicates: int | None = None,
    device: str | None = None,
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
    scheduler : {"processes", "distributed", "threads", "synchronous", "jax"}, optional
        Where batches run. Default: ``processes`` (Dask's local scheduler on
        a reused pool of worker processes, the fastest on one machine; see
        docs/benchmarks.md), or ``distributed`` when ``address`` is given.
        ``distributed`` without ``address`` starts a loopback LocalCluster.
        A ``backend="jax"`` study runs in this process (``jax``, its
        default) or on Dask workers (``distributed``).
    address : str, optional
        ``tcp://HOST:PORT`` or ``tls://HOST:PORT`` of a running Dask
        scheduler (docs/cluster.md); plain tcp off loopback needs ``insecure``.
    tls_ca_file, tls_cert, tls_key : str, optional
        The client's TLS files for a ``tls://`` address (default: Dask's
        ``distributed.comm.tls`` config).
    cluster : {"slurm"}, optional
        Start a cluster with a launcher (dask-jobqueue's SLURMCluster), with
        settings from ``cluster_config`` (default ``./simstudy-cluster.toml``).
    workers : int, optional
        Worker processes (default: the number of cores).
    batch_size : int, optional
        Replicates per batch (default: automatic).
    task_timeout : float, optional
        Seconds a data function or method call may run; a call running
        longer is interrupted and recorded as a failed task (``TaskTimeout``).
        Needs the ``processes`` or ``synchronous`` scheduler.
    max_errors : int, optional
        Stop cleanly once this many tasks have failed in this run.
    replicates : int, optional
        Override the study's replicate count (more extends the store; fewer
        computes only those and keeps the rest of the store as it is).
    warnings_as_errors : bool
        A warning a task emits makes it a failed task (default: warnings are
        counted per task, see ``warnings`` in the cube).
    accept_version_change : bool
        Go on when numpy/jax changed since the store was made even if
        recomputed finished tasks differ (they are compared either way).
    retry_failed : bool
        Run failed tasks again.
    restart : bool
        Discard the store's contents first.
    recompute : list of str
        Methods whose stored results are discarded and computed again (after
        their code changed; every other result is kept).
    prune : bool
        Delete the stored levels and methods the study no longer has (by
        default they are kept, hidden from summaries).
    target_mcse : mapping of measure -> MCSE, optional
        Run replicates in rounds (the first of the study's ``replicates``)
        until, at each design point, every method's Monte Carlo SE of each
        measure (any of ``summarize``'s but relprec) is at most the target;
        see ``TargetRule``. Needs the spawn scheme.
    max_replicates : int, optional
        Stop a point at this many replicates even if its target is not met
        (default 100 x the first round).
    device : {"cpu", "gpu"}, optional
        jax backend: the JAX platform to run on (default: JAX's default
        device, a GPU when there is one).

    Returns
    -------
    RunReport
        Counts and the exit code.
    """
    if not isinstance(study, Study):
        study = load_study(study)
    if replicates is not None:
        if isinstance(replicates, bool) or replicates < 1:
            raise UsageError(
                f"--replicates must be >= 1, got {replicates}.",
                hint="drop --replicates to use the study file's count",
            )
        study.replicates = int(replicates)
    target = _target_rule(study, target_mcse, max_replicates)
    unknown = [m for m in recompute if m not in study.method_names]
    if unknown:
        raise UsageError(
            f"--recompute {unknown[0]}: the study has no method {unknown[0]!r}.",
            hint=f"methods: {', '.join(study.method_names)}",
        )
    for message in lint_study(study):
        warnings.warn(message, ReproducibilityWarning, stacklevel=2)
    if scheduler is None:
        local = "jax" if study.backend == "jax" else "processes"
        remote = address is not None or cluster is not None
        scheduler = "distributed" if remote else local
    if scheduler not in SCHEDULERS:
        raise UsageError(
            f"unknown scheduler {scheduler!r}; expected one of {list(SCHEDULERS)}.",
            hint="use --scheduler processes (the default)",
        )
    _check_backend(study, scheduler, device=device, task_timeout=task_timeout)
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
    if warnings_as_errors and scheduler in ("threads", "jax"):
        raise UsageError(
            f"--warnings-as-errors does not work with the {scheduler} scheduler "
            "(threads share Python's warning filters; jax kernels run no Python "
            "per task).",
            hint="drop --scheduler threads (processes is the default)",
        )
    if task_timeout is not None:
        if not task_timeout > 0:
            raise UsageError(
                f"--task-timeout must be > 0 seconds, got {task_timeout}.",
                hint="drop --task-timeout to let tasks run as long as they need",
            )
        if scheduler not in ("processes", "synchronous"):
            raise UsageError(
                f"--task-timeout works with the processes and synchronous "
                f"schedulers, not {scheduler!r} (it interrupts a task with a "
                "signal, which only a process's main thread receives).",
                hint="drop --scheduler (processes is the default) or --task-timeout",
            )
    if address is not None:
        if scheduler != "distributed":
            raise UsageError(
                f"--address needs the distributed scheduler, not {scheduler!r}.",
                hint="drop --scheduler when you pass --address",
            )
        check_address(address, insecure)  # before anything is written
    tls = check_tls(address, tls_ca_file, tls_cert, tls_key)
    if cluster is not None:
        from simstudy.executors.launchers import check_cluster

        if address is not None or scheduler != "distributed":
            raise UsageError(
                "--cluster starts its own scheduler; it does not go with "
                "--address or --scheduler.",
                hint="drop --address / --scheduler, or drop --cluster",
            )
        check_cluster(cluster, cluster_config)  # a bad file fails here
    payload = study_payload(study)  # an unpicklable input fails here, first
    n_workers = workers or os.cpu_count() or 1
    path = Path(store) if store is not None else default_store(study)
    t0 = time.perf_counter()
    early = None
    fresh = restart or not path.exists()
    if scheduler == "processes" and fresh and os.access(path.parent, os.W_OK):
        # a new store always has work: spawn the workers first, so they
        # import and install the study while the store is being created
        early = make_executor(
            scheduler, study=study, workers=n_workers, payload=payload
        )
    elif address is not None:
        # connect first: an unreachable or refusing scheduler writes no store
        early = make_executor(
            scheduler,
            study=study,
            workers=n_workers,
            address=address,
            insecure=insecure,
            tls=tls,
            payload=payload,
        )
    try:
        # imported here: zarr's ~0.15 s import overlaps the workers' start
        from simstudy.store import Store

        st = Store.open_for_run(
            path,
            study,
            restart=restart,
            recompute=tuple(recompute),
            prune=prune,
            provenance=_provenance(study, scheduler, device),
        )
    except BaseException:
        if early is not None:
            early.close()
        raise
    try:
        return _run_open(
            study,
            st,
            t0,
            executor=early,
            payload=payload,
            scheduler=scheduler,
            workers=n_workers,
            address=address,
            insecure=insecure,
            batch_size=batch_size,
            max_errors=max_errors,
            task_timeout=task_timeout,
            accept_version_change=accept_version_change,
            warnings_mode=_warnings_mode(scheduler, warnings_as_errors),
            device=device,
            retry_failed=retry_failed,
            on_progress=on_progress,
            on_start=on_start,
            target=target,
            tls=tls,
            cluster=cluster,
            cluster_config=cluster_config,
        )
    finally:
        st.close()
        if early is not None:
            early.close()  # closing twice is harmless


def _run_open(
    study: Study,
    st: Store,
    t0: float,
    *,
    executor: Executor | None,
    payload: bytes,
    scheduler: str,
    workers: int,
    address: str | None,
    insecure: bool,
    batch_size: int | None,
    max_errors: int | None,
    task_timeout: float | None,
    accept_version_change: bool,
    warnings_mode: str | None,
    device: str | None,
    retry_failed: bool,
    on_progress: Callable[[Progress], None] | None,
    on_start: Callable[[str], None] | None,
    target: TargetRule | None = None,
    tls: dict[str, str] | None = None,
    cluster: str | None = None,
    cluster_config: str | None = None,
) -> RunReport:
    grid = points(study)
    pidx = [st.point_index(p) for p in grid]
    midx = st.method_index(study.method_names)
    counts = [study.replicates] * len(grid)  # replicates per point this round
    report = RunReport(st.path, 0, 0, 0, 0, 0, 0, False, False, 0.0, "nothing to run")
    report.repaired = tuple(st.repaired)
    report.notes = _hidden_notes(st.hidden)
    changes = st.version_changes()
    if changes:
        report.warnings += _recheck_versions(
            study, st, grid, pidx, midx, changes, accept=accept_version_change
        )
    record = st.meta.get("target_mcse")
    if target is None and record:
        planned = min(e["replicates"] for e in record["points"])
        if study.replicates > planned:  # a plain run past the rule's counts
            st.record_target(None)
    signals = _Signals()
    failed_now = 0
    first = True
    # one sizer for all rounds: task times measured in one round size the next
    sizer = BatchSizer(
        fixed=batch_size,
        workers=workers,
        rows=0,
        chunk=st.group_rows,
        quantum=study.vmap_width or 1,
    )
    try:
        while True:
            # the tasks of this round: what is not done within `counts`
            pending: list[np.ndarray[Any, Any]] = []
            done = failed = 0
            for p in range(len(grid)):
                status = st.status_of(pidx[p], counts[p], midx)
                done += int((status == OK).sum())
                failed += int((status == FAILED).sum())
                pending.append(status != OK if retry_failed else status == 0)
            total = int(sum(int(m.sum()) for m in pending))
            report.tasks = sum(counts) * len(study.methods)
            report.ok = done
            report.failed = 0 if retry_failed and first else failed
            report.pending = total
            if first:
                report.already_done = done
                failed_before = report.failed
                retry_failed = False  # failed tasks rerun once, in round one
            first = False
            if total:
                if executor is None:
                    executor = make_executor(
                        scheduler,
                        study=study,
                        workers=workers,
                        address=address,
                        insecure=insecure,
                        tls=tls,
                        cluster=cluster,
                        cluster_config=cluster_config,
                        payload=payload,
                        device=device,
                    )
                if report.executor == "nothing to run":
                    executor.wait()
                    report.executor = executor.description
                    report.startup = time.perf_counter() - t0
                    if on_start is not None:
                        on_start(executor.description + _dashboard(executor))
                failed_now = _run_round(
                    study,
                    st,
                    executor,
                    grid,
                    pidx,
                    midx,
                    pending,
                    report,
                    signals,
                    sizer,
                    t0=t0,
                    total=total,
                    failed_before=failed_before,
                    failed_now=failed_now,
                    max_errors=max_errors,
                    task_timeout=task_timeout,
                    warnings_mode=warnings_mode,
                    device=device,
                    on_progress=on_progress,
                )
            if target is None or report.interrupted or report.stopped_on_errors:
                break
            st.flush()
            counts, more = target.next_counts(st, grid, counts)
            if not more:
                short = [e for e in target.last if e["state"] == "max"]
                if short:
                    message = (
                        f"the MCSE target is not met at {len(short)} of {len(grid)} "
                        f"design point(s), stopped at --max-replicates "
                        f"{target.max_replicates:,} (e.g. {short[0]['point']}: "
                        f"{short[0]['mcse']})."
                    )
                    report.warnings += (message,)
                break
            st.extend_replicates(max(counts))
    except KeyboardInterrupt:
        report.interrupted = True
    finally:
        signals.restore()
        if executor is not None:
            executor.close()
    report.seconds = time.perf_counter() - t0
    return report


def _run_round(
    study: Study,
    st: Store,
    executor: Executor,
    grid: list[dict[str, Any]],
    pidx: list[tuple[int, ...]],
    midx: np.ndarray[Any, Any],
    pending: list[np.ndarray[Any, Any]],
    report: RunReport,
    signals: _Signals,
    sizer: BatchSizer,
    *,
    t0: float,
    total: int,
    failed_before: int,
    failed_now: int,
    max_errors: int | None,
    task_timeout: float | None,
    warnings_mode: str | None,
    device: str | None,
    on_progress: Callable[[Progress], None] | None,
) -> int:
    """Compute the pending tasks; update ``report``; return the failures so far."""
    sizer.rows_left = int(sum(int(m.any(axis=1).sum()) for m in pending))
    for p, mask in enumerate(pending):
        st.expect(pidx[p], mask)
    executor.prepare(
        [
            (p, tuple(int(m) for m in np.flatnonzero(mask.any(axis=0))))
            for p, mask in enumerate(pending)
            if mask.any()
        ]
    )
    base = report.computed  # computed in earlier rounds

    def emit() -> None:
        if on_progress is not None:
            stopping = report.interrupted or report.stopped_on_errors
            elapsed = time.perf_counter() - t0
            failed = report.failed - failed_before
            on_progress(
                Progress(report.computed, base + total, failed, elapsed, stopping)
            )

    results = executor.results(
        _batches(
            study,
            grid,
            pending,
            sizer,
            task_timeout,
            warnings_mode,
            st.mt_checkpoints(study.seed),
            partial(st.save_mt_checkpoint, study.seed),
            device,
            align=1 if sizer.fixed else sizer.quantum,
        ),
        st.output_specs,
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
            sizer.observe(b, result.seconds)
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
            # raised by the signal handler outside a store write, or by the
            # caller's code (an on_progress callback): finish what is in flight
            report.interrupted = True
            executor.stop_submitting()
            signals.count = max(signals.count, 1)
            if signals.count >= 2:
                raise
    return failed_now


# measures a target may name: all of summarize's with an MCSE, and what each needs
TARGET_NEEDS = {
    "mean": (),
    "empse": (),
    "bias": ("truth",),
    "relbias": ("truth",),
    "mse": ("truth",),
    "rmse": ("truth",),
    "coverage": ("truth", "ci"),
    "becoverage": ("ci",),
    "modelse": ("se",),
    "relerr_modelse": ("se",),
    "power": ("p",),
    "failure_rate": (),
    "warning_rate": (),
}


def _target_rule(
    study: Study,
    targets: Mapping[str, float] | None,
    max_replicates: int | None,
) -> TargetRule | None:
    """Check --target-mcse / --max-replicates before anything is written."""
    if not targets:
        if max_replicates is not None:
            raise UsageError(
                "--max-replicates only applies to a --target-mcse run.",
                hint="add --target-mcse MEASURE=MCSE, or use --replicates N",
            )
        return None
    for measure, goal in targets.items():
        if measure not in TARGET_NEEDS:
            raise UsageError(
                f"--target-mcse {measure}: not a measure with a Monte Carlo SE.",
                hint=f"choose one of: {', '.join(TARGET_NEEDS)}",
            )
        if isinstance(goal, bool) or not (0 < goal < math.inf):
            raise UsageError(
                f"--target-mcse {measure}={goal}: the target must be a number > 0.",
                hint=f"e.g. --target-mcse {measure}=0.005",
            )
        for need in TARGET_NEEDS[measure]:
            if need == "truth" and study.truth_values is None:
                raise UsageError(
                    f"--target-mcse {measure}: the study declares no true value.",
                    hint="add study.truth(...) to the study file, or target "
                    "mean or empse",
                )
            if need != "truth" and not any(m.measures.get(need) for m in study.methods):
                raise UsageError(
                    f"--target-mcse {measure}: no method declares {need}=.",
                    hint=f"declare @study.method({need}=...) or choose another measure",
                )
    if study.scheme != "spawn":
        raise UsageError(
            f"--target-mcse adds replicates, which renumbers every stream of the "
            f"positional {study.scheme!r} scheme.",
            hint="use the spawn scheme (the default) for precision-driven runs",
        )
    limit = 100 * study.replicates if max_replicates is None else max_replicates
    if isinstance(limit, bool) or limit < study.replicates:
        raise UsageError(
            f"--max-replicates {limit} is below the first round's "
            f"{study.replicates} replicates.",
            hint="raise --max-replicates or lower --replicates",
        )
    return TargetRule(dict(targets), int(limit), study.replicates)


def _hidden_notes(hidden: dict[str, Any]) -> tuple[str, ...]:
    """Say which stored levels and methods the study no longer has."""
    parts = [
        f"{f} = {', '.join(map(str, levels))}" for f, levels in hidden["levels"].items()
    ]
    if hidden["methods"]:
        parts.append(f"method {', '.join(hidden['methods'])}")
    if not parts:
        return ()
    note = (
        f"the store holds results the study no longer has ({'; '.join(parts)}): "
        "they are kept but hidden from status, summarize and report "
        "(open_results(..., include_hidden=True) shows them; "
        "run --prune deletes them)."
    )
    return (note,)


def _check_backend(
    study: Study, scheduler: str, *, device: str | None, task_timeout: float | None
) -> None:
    """Refuse a scheduler or option the study's backend cannot use."""
    if study.backend != "jax":
        if scheduler == "jax":
            raise UsageError(
                f"--scheduler jax runs studies declared with backend='jax'; "
                f"study {study.name!r} uses numpy.",
                hint='declare Study(..., backend="jax") with jax.numpy functions, '
                "or drop --scheduler jax",
            )
        if device is not None:
            raise UsageError(
                f"--device {device} applies to backend='jax' studies; study "
                f"{study.name!r} uses numpy.",
                hint="drop --device",
            )
        return
    if scheduler not in ("jax", "distributed"):
        raise UsageError(
            f"study {study.name!r} uses backend='jax', which runs in this process "
            f"(--scheduler jax, the default) or on Dask workers (--scheduler "
            f"distributed or --address), not on {scheduler!r}.",
            hint="drop --scheduler",
        )
    if study.scheme != "spawn":
        raise UsageError(
            f"backend='jax' takes its keys from the spawn scheme, not "
            f"{study.scheme!r}.",
            hint="drop --rng",
        )
    if device not in (None, "cpu", "gpu"):
        raise UsageError(
            f"--device {device!r} is unknown; expected cpu or gpu.",
            hint="drop --device for JAX's default device",
        )
    if task_timeout is not None:
        raise UsageError(
            "--task-timeout cannot interrupt a jitted jax kernel.",
            hint="drop --task-timeout",
        )
    if scheduler == "jax":
        from simstudy.executors.jax import device as jax_device

        jax_device(device)  # a missing GPU is refused before anything is written


def _provenance(study: Study, scheduler: str, device: str | None) -> dict[str, str]:
    """What besides the library versions makes a jax study's numbers: the
    device kind and the x64 setting (recorded; a change triggers a recheck)."""
    if study.backend != "jax":
        return {}
    from simstudy.executors.jax import devices

    if scheduler == "jax":
        return devices(device)
    return {**devices(), "jax-device": f"dask workers ({device or 'default'})"}


def _warnings_mode(scheduler: str, as_errors: bool) -> str | None:
    """How batches treat warnings: counted per task ("record"), or as errors.
    Not with threads: warning filters are process-wide, not per thread."""
    if as_errors:
        return "error"
    return None if scheduler in ("threads", "jax") else "record"


RECHECK_TASKS = 3  # finished tasks recomputed when numpy/jax changed


def _recheck_versions(
    study: Study,
    st: Store,
    grid: list[dict[str, Any]],
    pidx: list[tuple[int, ...]],
    midx: np.ndarray[Any, Any],
    changes: dict[str, tuple[str, str]],
    *,
    accept: bool,
) -> tuple[str, ...]:
    """Recompute a few finished tasks; refuse if they no longer come out the same.

    A new numpy (or jax) may change generated numbers or results; mixing
    the two in one cube would be silent. Up to RECHECK_TASKS replicates whose
    every method finished are recomputed here and compared bit for bit.
    """
    from simstudy.executors import batch_runner

    run_batch = batch_runner(study)
    what = ", ".join(f"{k} {a} -> {b}" for k, (a, b) in changes.items())
    nm = len(study.methods)
    checked, differ = 0, []
    for p, point in enumerate(grid):
        status = st.status_of(pidx[p], study.replicates, midx)
        for r in np.flatnonzero((status == OK).all(axis=1))[: RECHECK_TASKS - checked]:
            r = int(r)
            ks = [
                streams.jump_index(p, r, s, replicates=study.replicates, methods=nm)
                for s in range(nm + 1)
            ]
            if study.scheme == "mt19937-jump" and ks[-1] > 2000:
                continue  # too far along the chain to recompute cheaply
            states = None
            if study.scheme == "mt19937-jump":
                states = streams.MTChain(study.seed).states(ks)
            batch = Batch(p, tuple(point.items()), r, r + 1, tuple(range(nm)), states)
            result = run_batch(study, batch, st.output_specs())
            stored = st.read_task_outputs(pidx[p], r)
            for name, values in result.outputs.items():
                old = stored.get(name)
                if old is None or not np.array_equal(
                    values[0], old[midx], equal_nan=True
                ):
                    differ.append(f"{point}, replicate {r}, output {name!r}")
            checked += 1
        if checked >= RECHECK_TASKS:
            break
    if differ and not accept:
        raise StoreError(
            f"{what} since this store was made, and finished tasks no longer "
            f"come out the same ({differ[0]}); refusing to mix numbers from both "
            "versions in one cube.",
            hint="run with the old version, or --restart to recompute everything, "
            "or --accept-version-change to go on anyway",
        )
    st.accept_versions()
    if differ:
        message = (
            f"{what}: {len(differ)} recomputed result(s) differ from the stored "
            "ones; going on as --accept-version-change asks (the cube now mixes "
            "both versions)."
        )
    else:
        message = (
            f"{what} since this store was made; {checked} finished task(s) "
            "recomputed bit for bit identical, so the run goes on."
        )
    return (message,)


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
    sizer: BatchSizer,
    timeout: float | None = None,
    warnings_mode: str | None = None,
    checkpoints: dict[int, np.ndarray[Any, Any]] | None = None,
    save: Callable[[int, np.ndarray[Any, Any]], None] | None = None,
    device: str | None = None,
    *,
    align: int = 1,
) -> Iterator[Batch]:
    """Yield batches point by point.

    mt19937 states are chained forward once (each jump costs ~1-2 ms). Every
    ``MT_CHECKPOINT_EVERY``-th state passed is saved (``save``), and a resume
    starts the chain from the last saved state before the first pending
    stream (``checkpoints``) instead of from the seed.
    """
    chain = None
    if study.scheme == "mt19937-jump":
        chain = streams.MTChain(study.seed, every=MT_CHECKPOINT_EVERY)
    known = dict(checkpoints or {})
    nm = len(study.methods)
    for p, point in enumerate(grid):
        levels = tuple(point.items())
        runs = batch_runs(
            pending[p], size=partial(sizer.size, p), chunk=sizer.chunk, align=align
        )
        for start, stop, methods in runs:
            states = None
            if chain is not None:
                ks = [
                    streams.jump_index(p, r, s, replicates=study.replicates, methods=nm)
                    for r in range(start, stop)
                    for s in range(nm + 1)
                ]
                usable = [k for k in known if chain.k < k <= ks[0]]
                if usable:
                    chain.seek(max(usable), known[max(usable)])
                states = chain.states(ks)
                for k, row in chain.marks.items():
                    if k not in known and save is not None:
                        save(k, row)
                    known[k] = row
                chain.marks.clear()
            batch = Batch(
                p, levels, start, stop, methods, states, timeout, warnings_mode, device
            )
            sizer.issued(batch)
            yield batch
