# distributed ships no type hints for these calls
# mypy: disable-error-code="no-untyped-call"
"""Dask executors: a LocalCluster or an external cluster (``distributed``),
and Dask's local schedulers (``threads``, ``synchronous``). The local
process pool (``processes``) is ``executors.pool``.

The study travels to each worker once (a worker plugin), never once per
batch. Workers run with BLAS/OpenMP threads = 1 unless the user set those
variables. Dask itself is imported inside the executors, when one is built.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import logging
import time
import uuid
from typing import Any, ClassVar

from simstudy.backends import worker
from simstudy.declare.grid import Batch
from simstudy.declare.outputs import OutputSpecs
from simstudy.declare.results import BatchResult
from simstudy.declare.study import Study
from simstudy.executors import ExecutorOptions, study_payload
from simstudy.executors.connect import check_address, connect
from simstudy.executors.spawn import spawn_env, worker_env
from simstudy.executors.windowed import WindowedExecutor
from simstudy.system import env_seconds

__all__ = ["DistributedExecutor", "SynchronousExecutor", "ThreadsExecutor"]

# seconds a launched cluster may have no worker before the run says it waits
QUEUE_SECONDS = 10.0


class _DaskLocalExecutor(WindowedExecutor):
    """Each batch as a one-task graph on one of Dask's local schedulers."""

    scheduler: ClassVar[str]

    def __init__(
        self, study: Study, opts: ExecutorOptions, *, payload: bytes | None = None
    ) -> None:
        workers = self._workers(opts.workers)
        super().__init__(study, window=2 * workers)
        self.token = uuid.uuid4().hex
        self.payload = payload or study_payload(study)
        worker.install(self.token, self.payload)
        self._start(workers)
        self.feeders = cf.ThreadPoolExecutor(max_workers=self.window)
        self.description = f"dask {self.scheduler} scheduler, {workers} worker(s)"

    def _workers(self, workers: int) -> int:
        return workers

    def _start(self, workers: int) -> None:
        """Start what the batches run on (before the first is submitted)."""

    def _stop(self) -> None:
        """Stop what ``_start`` started."""

    def _get(self, graph: dict[str, Any], key: str) -> BatchResult:
        raise NotImplementedError

    def _compute(self, batch: Batch, specs: OutputSpecs) -> BatchResult:
        key = f"batch-{batch.point}-{batch.start}"
        return self._get({key: (worker.run_installed, self.token, batch, specs)}, key)

    def _submit(self, batch: Batch, specs: OutputSpecs) -> Any:
        return self.feeders.submit(self._compute, batch, specs)

    def close(self) -> None:
        self.feeders.shutdown(wait=False, cancel_futures=True)
        self._stop()
        worker.uninstall(self.token)


class ThreadsExecutor(_DaskLocalExecutor):
    """``threads``: Dask's threaded scheduler on a pool of ``workers``
    threads (they share Python's warning filters, so no per-task count)."""

    scheduler = "threads"
    warnings: ClassVar[bool] = False

    pool: cf.ThreadPoolExecutor

    def _start(self, workers: int) -> None:
        self.pool = cf.ThreadPoolExecutor(max_workers=workers)

    def _stop(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)

    def _get(self, graph: dict[str, Any], key: str) -> BatchResult:
        import dask.threaded

        return dask.threaded.get(graph, key, pool=self.pool)  # type: ignore[no-any-return]


class SynchronousExecutor(_DaskLocalExecutor):
    """``synchronous``: each batch in this thread, as it is submitted (a hung
    call can be interrupted: SIGALRM reaches the main thread)."""

    scheduler = "synchronous"
    timeout: ClassVar[bool] = True

    def _workers(self, workers: int) -> int:
        return 1

    def _get(self, graph: dict[str, Any], key: str) -> BatchResult:
        import dask.local

        return dask.local.get_sync(graph, key)  # type: ignore[no-any-return]

    def _submit(self, batch: Batch, specs: OutputSpecs) -> Any:
        future: cf.Future[BatchResult] = cf.Future()
        try:
            future.set_result(self._compute(batch, specs))
        except Exception as exc:
            future.set_exception(exc)
        return future


class DistributedExecutor(WindowedExecutor):
    """A dask.distributed Client on a LocalCluster (loopback), at ``address``,
    or on a cluster a launcher starts (``cluster="slurm"``).

    On a cluster the window of batches in flight follows the workers'
    threads (``2 * threads + 1``, recounted at most every ``RECOUNT``
    seconds), so a worker that joins mid-run gets work at once, and one that
    leaves only shrinks the window (Dask reruns its batches elsewhere).
    """

    remote: ClassVar[bool] = True
    elsewhere: ClassVar[bool] = True

    RECOUNT = 1.0  # seconds between counts of the cluster's worker threads

    def __init__(
        self, study: Study, opts: ExecutorOptions, *, payload: bytes | None = None
    ) -> None:
        workers, address, cluster = opts.workers, opts.address, opts.cluster
        tls = None if opts.tls is None else dict(opts.tls)
        import dask
        from distributed import Client, LocalCluster, as_completed

        self.cluster: Any = None
        self.client: Any = None
        self.config: Any = contextlib.nullcontext()
        self.notice: Any = None  # close() reads it, also when connecting fails
        if cluster is not None:
            from simstudy.executors.launchers import start_cluster

            self.cluster = start_cluster(cluster, opts.cluster_config)
            address = self.cluster.scheduler_address
            tls = None
        if address is None:
            self.config, self.cluster = _local_cluster(workers)
            self.client = Client(self.cluster)
        else:
            if cluster is None:
                check_address(address, opts.insecure)
            # an external scheduler retries a task on other workers up to its
            # allowed-failures, then raises KilledWorker: fail it then
            self.max_attempts = 1
            self.deaths_per_attempt = 1 + int(
                dask.config.get("distributed.scheduler.allowed-failures", 3)
            )
            try:
                self.client = connect(address, tls, self.cluster)
            except BaseException:
                self.close()
                raise
        # a cluster's workers come and go; our LocalCluster's are fixed
        self.external = not isinstance(self.cluster, LocalCluster)
        self.counted = time.monotonic()
        n = self._threads() or workers
        super().__init__(study, window=2 * n + 1)
        from simstudy.executors._plugin import InstallStudy

        self.token = uuid.uuid4().hex
        self.plugin = InstallStudy(self.token, payload or study_payload(study))
        self.client.register_plugin(self.plugin)
        where = "LocalCluster" if address is None else address
        if cluster is not None:
            where = f"{cluster} cluster at {address}"
        self.description = f"dask distributed ({where}, {n} worker thread(s))"
        self.dashboard = None
        with contextlib.suppress(Exception):
            if "dashboard" in self.client.scheduler_info().get("services", {}):
                self.dashboard = self.client.dashboard_link
        self.finished = as_completed()
        if cluster is not None:
            from simstudy.executors.launchers import QueueNotice

            self.notice = QueueNotice(
                self._threads,
                kind=cluster.capitalize(),
                seconds=env_seconds("SIMSTUDY_QUEUE_SECONDS", QUEUE_SECONDS),
            )

    def _threads(self) -> int:
        """Worker threads the scheduler knows now (0 if it cannot say)."""
        try:
            info = self.client.scheduler_info()
        except Exception:
            return 0
        return sum(int(w.get("nthreads", 1)) for w in info.get("workers", {}).values())

    def _window(self) -> int:
        if self.external:
            now = time.monotonic()
            if now - self.counted >= self.RECOUNT:
                self.counted = now
                n = self._threads()
                if n:
                    self.window = 2 * n + 1
        return self.window

    def _submit(self, batch: Batch, specs: OutputSpecs) -> Any:
        future = self.client.submit(
            worker.run_installed, self.token, batch, specs, pure=False
        )
        self.finished.add(future)
        return future

    def _wait(self, futures: set[Any]) -> set[Any]:
        return {next(self.finished)}

    # Dask reruns a task whose worker died on other workers and gives up
    # (KilledWorker) after distributed.scheduler.allowed-failures deaths, so a
    # death always names its batch
    precise_deaths = True

    def _died(self, exc: BaseException) -> bool:
        from distributed import KilledWorker

        return isinstance(exc, KilledWorker)

    def close(self) -> None:
        if self.notice is not None:
            self.notice.close()
        self.config.__exit__(None, None, None)
        if self.client is not None:
            with contextlib.suppress(Exception):  # leave long-lived workers clean
                self.client.unregister_worker_plugin(self.plugin.name)
            with contextlib.suppress(Exception):
                self.client.close(timeout=5)
        if self.cluster is not None:
            with contextlib.suppress(Exception):
                self.cluster.close(timeout=5)


def _local_cluster(workers: int) -> tuple[Any, Any]:
    """Start our own LocalCluster on loopback; return it with the Dask
    config it needs for its life (exit that config on close)."""
    import dask
    from distributed import LocalCluster

    # a LocalCluster closes a worker's nanny for good when the worker has
    # been gone for lost-worker-timeout (15 s), judged when that time is up:
    # a task that kills its worker again and again, or restarts slowed by a
    # loaded machine, then left the cluster with no workers and the run
    # waiting for ever. Our nannies restart their workers, so the cluster
    # never needs it; set for the executor's life, since the check runs then
    config = dask.config.set({"distributed.deploy.lost-worker-timeout": "7d"})
    # our LocalCluster's scheduler gives up on a task at its first worker
    # death; results() retries and isolates the task itself
    with (
        spawn_env(),
        dask.config.set({"distributed.scheduler.allowed-failures": 0}),
    ):
        cluster = LocalCluster(
            n_workers=workers,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address="127.0.0.1:0",
            silence_logs=logging.CRITICAL,  # deaths are handled
            env=worker_env(),
        )
    return config, cluster
