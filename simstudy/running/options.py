"""A run's options: one frozen, validated object, built once.

``RunOptions.build(study, **kwargs)`` checks every option against the study
and against what the chosen scheduler can do (its ``Scheduler`` traits and
the study's backend), in one place and before anything is written; the
run then reads the options and never re-checks them. The CLI builds the
same object from its flags (``run(**vars)`` and ``python -m simstudy run``
agree by construction).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypedDict, Unpack

from simstudy.analysis.registry import TARGET_NEEDS
from simstudy.backends import Placement, backend_of
from simstudy.cube import MAX_REPLICATES
from simstudy.declare.study import Study
from simstudy.errors import UsageError
from simstudy.executors import SCHEDULERS
from simstudy.shell import option

__all__ = [
    "FAIL_FAST",
    "RunKwargs",
    "RunOptions",
    "TargetSpec",
    "default_store",
]

FAIL_FAST = 50  # a method whose first this many tasks all fail stops the run


class RunKwargs(TypedDict, total=False):
    """The options of ``simstudy.run`` (``python -m simstudy run`` has a flag
    for each: ``--max-errors`` for ``max_errors``).

    Attributes
    ----------
    store : path
        The zarr store; default ``./<study-file-stem>.zarr``.
    scheduler : {"processes", "distributed", "threads", "synchronous", "jax"}
        Where batches run. Default: ``processes`` (Dask's local scheduler on
        a reused pool of worker processes, the fastest on one machine; see
        docs/benchmarks.md), or ``distributed`` when ``address`` is given.
        ``distributed`` without ``address`` starts a loopback LocalCluster.
        A ``backend="jax"`` study runs in this process (``jax``, its
        default) or on Dask workers (``distributed``).
    workers : int
        Worker processes (default: the number of cores).
    address : str
        ``tcp://HOST:PORT`` or ``tls://HOST:PORT`` of a running Dask
        scheduler (docs/cluster.md); plain tcp off loopback needs ``insecure``.
    insecure : bool
        Allow plain ``tcp://`` to a non-loopback scheduler.
    tls_ca_file, tls_cert, tls_key : str
        The client's TLS files for a ``tls://`` address (default: Dask's
        ``distributed.comm.tls`` config).
    cluster : {"slurm"}
        Start a cluster with a launcher (dask-jobqueue's SLURMCluster), with
        settings from ``cluster_config`` (default ``./simstudy-cluster.toml``).
    cluster_config : str
        The TOML settings file of ``cluster``.
    batch_size : int
        Replicates per batch (default: automatic).
    max_errors : int
        Stop cleanly once this many tasks have failed in this run.
    fail_fast : bool
        Stop cleanly when a method's first ``FAIL_FAST`` (50) tasks of this
        run have all failed (default True; SimDesign stops after 50
        consecutive errors too); the report names the method and its first
        error. False (``--no-fail-fast``) runs every task whatever fails.
    task_timeout : float
        Seconds a data function or method call may run; a call running
        longer is interrupted and recorded as a failed task (``TaskTimeout``).
        Needs the ``processes`` or ``synchronous`` scheduler.
    accept_version_change : bool
        Go on when numpy/jax changed since the store was made even if
        recomputed finished tasks differ (they are compared either way).
    warnings_as_errors : bool
        A warning a task emits makes it a failed task (default: warnings are
        counted per task, see ``warnings`` in the cube).
    retry_failed : bool
        Run failed tasks again.
    restart : bool
        Discard the store's contents first.
    recompute : str or list of str
        Methods whose stored results are discarded and computed again (after
        their code changed; every other result is kept). One name may be
        given as a string: ``recompute="median"``.
    prune : bool
        Delete the stored levels and methods the study no longer has (by
        default they are kept, hidden from summaries).
    target_mcse : mapping of measure -> MCSE
        Run replicates in rounds (the first of the study's ``replicates``)
        until, at each design point, every method's Monte Carlo SE of each
        measure (any of ``summarize``'s but relprec) is at most the target;
        see ``simstudy.running.target.TargetRule``. Needs the spawn scheme.
    max_replicates : int
        Stop a point at this many replicates even if its target is not met
        (default 100 x the first round).
    round_size : int
        With ``target_mcse``: a point's next round adds at least this many
        replicates, its count a multiple of it (default: a tenth of the
        first round, rounded up).
    strict : bool
        With ``target_mcse``: a point stopped at ``max_replicates`` short of
        its target makes the run exit with code 6 (``EXIT_TARGET_MISSED``)
        instead of 0.
    device : {"cpu", "gpu"}
        jax backend: the JAX platform to run on (default: JAX's default
        device, a GPU when there is one).
    protocol : path
        A protocol file (``python -m simstudy protocol``) to record in the
        store; the report then lists the deviations from it (docs/share.md).
    """

    store: str | os.PathLike[str] | None
    scheduler: str | None
    workers: int | None
    address: str | None
    insecure: bool
    tls_ca_file: str | None
    tls_cert: str | None
    tls_key: str | None
    cluster: str | None
    cluster_config: str | None
    batch_size: int | None
    max_errors: int | None
    fail_fast: bool
    task_timeout: float | None
    accept_version_change: bool
    warnings_as_errors: bool
    retry_failed: bool
    restart: bool
    recompute: str | tuple[str, ...] | list[str]
    prune: bool
    target_mcse: Mapping[str, float] | None
    max_replicates: int | None
    round_size: int | None
    strict: bool
    device: str | None
    protocol: str | os.PathLike[str] | None


@dataclass(frozen=True, slots=True)
class TargetSpec:
    """``--target-mcse``: MCSE goals per measure, the cap, the round size
    (``--round-size``: the least a round adds, counts are its multiples)."""

    targets: Mapping[str, float]
    max_replicates: int
    step: int


@dataclass(frozen=True, slots=True)
class RunOptions:
    """Everything that decides how a run goes (not what it computes)."""

    store: Path
    scheduler: str
    workers: int
    address: str | None = None
    insecure: bool = False
    tls: Mapping[str, str] | None = None
    cluster: str | None = None
    cluster_config: str | None = None
    batch_size: int | None = None
    max_errors: int | None = None
    fail_fast: bool = True
    task_timeout: float | None = None
    accept_version_change: bool = False
    warnings: str | None = None  # per task: "record", "error", or None (threads)
    retry_failed: bool = False
    restart: bool = False
    recompute: tuple[str, ...] = ()
    prune: bool = False
    target: TargetSpec | None = None
    strict: bool = False
    device: str | None = None
    protocol: dict[str, Any] | None = None  # a registration (deviations)

    @classmethod
    def build(cls, study: Study, **kwargs: Unpack[RunKwargs]) -> RunOptions:
        """Check every option (``RunKwargs``) for ``study``; raise UsageError."""
        given: dict[str, Any] = dict(kwargs)
        unknown = sorted(set(given) - set(RunKwargs.__annotations__))
        if unknown:
            raise UsageError(
                f"run() got an unknown option {unknown[0]!r}.",
                hint=f"options: {', '.join(RunKwargs.__annotations__)}",
            )
        address, cluster = given.get("address"), given.get("cluster")
        scheduler, device = given.get("scheduler"), given.get("device")
        task_timeout = given.get("task_timeout")
        warnings_as_errors = bool(given.get("warnings_as_errors", False))
        target = _target(
            study,
            given.get("target_mcse"),
            given.get("max_replicates"),
            given.get("round_size"),
            strict=bool(given.get("strict", False)),
        )
        recompute = _names(given.get("recompute", ()))
        _check_known("recompute", recompute, study.method_names)
        scheduler = _scheduler(study, scheduler, remote=bool(address or cluster))
        backend_of(study).check(study, Placement(scheduler, device, task_timeout))
        workers, batch_size = given.get("workers"), given.get("batch_size")
        max_errors = given.get("max_errors")
        _at_least_one(workers=workers, batch_size=batch_size, max_errors=max_errors)
        if not (address or cluster):
            _local_workers(workers)
        traits = SCHEDULERS[scheduler]
        if warnings_as_errors and not traits.warnings:
            raise UsageError(
                f"--warnings-as-errors does not work with the {scheduler} scheduler "
                "(threads share Python's warning filters; jax kernels run no "
                "Python per task).",
                hint="drop --scheduler threads (processes is the default)",
            )
        if task_timeout is not None:
            _check_timeout(task_timeout, scheduler, traits.timeout)
        insecure = bool(given.get("insecure", False))
        tls = _remote(
            scheduler,
            address,
            insecure,
            cluster,
            given.get("cluster_config"),
            (given.get("tls_ca_file"), given.get("tls_cert"), given.get("tls_key")),
        )
        warnings = "error" if warnings_as_errors else None
        if warnings is None and traits.warnings:
            warnings = "record"
        store = given.get("store")
        return cls(
            store=Path(store) if store is not None else default_store(study),
            scheduler=scheduler,
            workers=workers or os.cpu_count() or 1,
            address=address,
            insecure=insecure,
            tls=tls,
            cluster=cluster,
            cluster_config=given.get("cluster_config"),
            batch_size=batch_size,
            max_errors=max_errors,
            fail_fast=bool(given.get("fail_fast", True)),
            task_timeout=task_timeout,
            accept_version_change=bool(given.get("accept_version_change", False)),
            warnings=warnings,
            retry_failed=bool(given.get("retry_failed", False)),
            restart=bool(given.get("restart", False)),
            recompute=recompute,
            prune=bool(given.get("prune", False)),
            target=target,
            strict=bool(given.get("strict", False)),
            device=device,
            protocol=_protocol(given.get("protocol")),
        )


def _protocol(path: str | os.PathLike[str] | None) -> dict[str, Any] | None:
    from simstudy.declare.deviations import read_protocol

    return None if path is None else read_protocol(path)


def default_store(study: Study) -> Path:
    """Return ``./<study-file-stem>.zarr`` (or ``./<name>.zarr`` without a file)."""
    stem = Path(study.source_file).stem if study.source_file else study.name
    return Path.cwd() / f"{stem}.zarr"


def _names(value: Any) -> tuple[str, ...]:
    """A list-valued option: one name is a list of one (``recompute="welch"``
    is ``recompute=["welch"]``, never the letters of ``welch``)."""
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    return tuple(value)


def _scheduler(study: Study, scheduler: str | None, *, remote: bool) -> str:
    """The scheduler asked for, or the backend's default (distributed when
    an address or a cluster is given)."""
    if scheduler is None:
        return "distributed" if remote else backend_of(study).default_scheduler
    if scheduler not in SCHEDULERS:
        raise UsageError(
            f"unknown scheduler {scheduler!r}; expected one of {list(SCHEDULERS)}.",
            hint="use --scheduler processes (the default)",
        )
    return scheduler


def _at_least_one(**values: int | None) -> None:
    for name, value in values.items():
        if value is None or value >= 1:
            continue
        flag = f"--{name.replace('_', '-')}"
        hint = f"drop {flag} for the default"
        if name == "max_errors":
            hint = "drop --max-errors to never stop on failures"
        raise UsageError(f"{flag} must be >= 1, got {value}.", hint=hint)


MAX_WORKERS_PER_CORE = 8


def _local_workers(workers: int | None) -> None:
    """Refuse more local workers than this machine can run (8 per core):
    each is a process (or thread) that only competes for the same cores."""
    cores = os.cpu_count() or 1
    most = MAX_WORKERS_PER_CORE * cores
    if workers is not None and workers > most:
        raise UsageError(
            f"--workers {workers} on a machine with {cores} core(s): at most "
            f"{most} ({MAX_WORKERS_PER_CORE} per core) run here; more only "
            "compete for the same cores and memory.",
            hint=f"drop --workers (one per core: {cores}), or use --address or "
            "--cluster to run on more machines",
        )


def _check_timeout(seconds: float, scheduler: str, supported: bool) -> None:
    if not seconds > 0:
        raise UsageError(
            f"--task-timeout must be > 0 seconds, got {seconds}.",
            hint="drop --task-timeout to let tasks run as long as they need",
        )
    if not supported:
        names = [name for name, executor in SCHEDULERS.items() if executor.timeout]
        raise UsageError(
            f"--task-timeout works with the {' and '.join(names)} "
            f"schedulers, not {scheduler!r} (it interrupts a task with a "
            "signal, which only a process's main thread receives).",
            hint="drop --scheduler (processes is the default) or --task-timeout",
        )


def _remote(
    scheduler: str,
    address: str | None,
    insecure: bool,
    cluster: str | None,
    cluster_config: str | None,
    tls_files: tuple[str | None, str | None, str | None],
) -> dict[str, str] | None:
    """Check --address, the TLS files and --cluster; return the TLS files."""
    from simstudy.executors.connect import check_address, check_tls

    remote = SCHEDULERS[scheduler].remote
    if address is not None:
        if not remote:
            raise UsageError(
                f"--address needs the distributed scheduler, not {scheduler!r}.",
                hint="drop --scheduler when you pass --address",
            )
        check_address(address, insecure)  # before anything is written
    tls = check_tls(address, *tls_files)
    if cluster is not None:
        from simstudy.executors.launchers import check_cluster

        if address is not None or not remote:
            raise UsageError(
                "--cluster starts its own scheduler; it does not go with "
                "--address or --scheduler.",
                hint="drop --address / --scheduler, or drop --cluster",
            )
        check_cluster(cluster, cluster_config)  # a bad file fails here
    return tls


def _target(
    study: Study,
    targets: Mapping[str, float] | None,
    max_replicates: int | None,
    round_size: int | None,
    *,
    strict: bool,
) -> TargetSpec | None:
    """Check --target-mcse / --max-replicates / --round-size / --strict
    before anything is written."""
    if not targets:
        given = {
            "--max-replicates": max_replicates is not None,
            "--round-size": round_size is not None,
            "--strict": strict,
        }
        for flag, used in given.items():
            if used:
                raise UsageError(
                    f"{flag} only applies to a --target-mcse run.",
                    hint="add --target-mcse MEASURE=MCSE, or drop " + flag,
                )
        return None
    size: Any = round_size  # user input: check its type at run time
    if size is not None and (
        isinstance(size, bool) or not isinstance(size, int) or size < 1
    ):
        raise UsageError(
            f"--round-size must be a whole number >= 1, got {round_size!r}.",
            hint="e.g. --round-size 100",
        )
    for measure, goal in targets.items():
        _check_goal(study, measure, goal)
    if study.scheme != "spawn":
        raise UsageError(
            f"--target-mcse adds replicates, which renumbers every stream of the "
            f"positional {study.scheme!r} scheme.",
            hint="use the spawn scheme (the default) for precision-driven runs",
        )
    limit = max_replicates
    if limit is None:
        limit = min(100 * study.replicates, MAX_REPLICATES)
    if isinstance(limit, bool) or limit < study.replicates:
        raise UsageError(
            f"--max-replicates {limit} is below the first round's "
            f"{study.replicates} replicates.",
            hint="raise --max-replicates or lower --replicates",
        )
    if limit > MAX_REPLICATES:
        raise UsageError(
            f"--max-replicates {limit} is above the {MAX_REPLICATES:,} a store holds.",
            hint=f"give --max-replicates {MAX_REPLICATES} or less",
        )
    step = round_size or max(1, -(-study.replicates // 10))
    return TargetSpec(dict(targets), int(limit), int(step))


def _check_goal(study: Study, measure: str, goal: float) -> None:
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
                hint="add study.truth(...) to the study file, or target mean or empse",
            )
        wald = need in ("ci", "p")  # summarize builds them from se= too
        if need != "truth" and not any(
            m.measures.get(need) or (wald and m.measures.get("se"))
            for m in study.methods
        ):
            also = " (or se=, for Wald intervals and tests)" if wald else ""
            raise UsageError(
                f"--target-mcse {measure}: no method declares {need}={also}.",
                hint=f"declare @study.method({need}=...) or choose another measure",
            )


def _check_known(name: str, given: Sequence[str], methods: Sequence[str]) -> None:
    """Refuse option ``name`` when it names no method of the study."""
    unknown = [method for method in given if method not in methods]
    if unknown:
        raise UsageError(
            f"{option(name, unknown[0])}: the study has no method {unknown[0]!r}.",
            hint=f"methods: {', '.join(methods)}",
        )
