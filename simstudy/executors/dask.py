# distributed ships no type hints for these calls
# mypy: disable-error-code="no-untyped-call"
"""Dask executors: a LocalCluster or an external cluster (``distributed``),
Dask's local schedulers (``threads``, ``synchronous``), and a local process
pool (``processes``: batches go straight to it, its workers forked from a
preloaded forkserver).

The study travels to each worker once (a worker plugin, or a pool initializer),
never once per batch. Workers run with BLAS/OpenMP threads = 1 unless the
user set those variables.

Layers: imports ``worker, executors, outputs, results, grid, loader, study,
errors``;
3rd-party: dask, distributed.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import logging
import multiprocessing
import os
import signal
import sys
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

from simstudy import worker
from simstudy.errors import StudyError
from simstudy.executors import MAX_ATTEMPTS, WorkerDied, failed_result, study_payload
from simstudy.executors.connect import check_address, connect
from simstudy.grid import Batch
from simstudy.loader import installed_modules, study_imports
from simstudy.outputs import OutputSpecs
from simstudy.results import BatchResult
from simstudy.study import Study
from simstudy.system import env_seconds

__all__ = ["EXECUTORS", "prestart", "start_forkserver"]

THREAD_VARS = (
    "OMP_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
    "NUMEXPR_NUM_THREADS",
)
SpecsFn = Callable[[], OutputSpecs]
# seconds a launched cluster may have no worker before the run says it waits
QUEUE_SECONDS = 10.0
PRELOAD = "SIMSTUDY_PRELOAD"  # modules the forkserver imports (executors._preload)
MAIN = "SIMSTUDY_MAIN"  # the driver's main script, which its workers never run


def worker_env() -> dict[str, str]:
    """Return the thread variables workers get (the user's own values win)."""
    return {v: os.environ.get(v, "1") for v in THREAD_VARS}


@contextlib.contextmanager
def _spawn_env() -> Iterator[None]:
    """Spawn children with BLAS threads = 1, SIGINT ignored (the driver owns
    it) and without the driver's main script (see ``_main_hidden``)."""
    saved = {v: os.environ.get(v) for v in THREAD_VARS}
    os.environ.update(worker_env())
    old = signal.getsignal(signal.SIGINT)
    in_main = multiprocessing.current_process().name == "MainProcess"
    try:
        if in_main:
            with contextlib.suppress(ValueError):
                signal.signal(signal.SIGINT, signal.SIG_IGN)
        with _main_hidden():
            yield
    finally:
        if in_main:
            with contextlib.suppress(ValueError):
                signal.signal(signal.SIGINT, old)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@contextlib.contextmanager
def _main_hidden() -> Iterator[None]:
    """Start children without running the driver's main script in them.

    A spawned child runs the parent's ``__main__`` file again (as
    ``__mp_main__``) unless told where it is not; a plain script calling
    ``simstudy.run`` without an ``if __name__ == "__main__":`` guard would
    then start a run in every worker. Workers get the study by value and
    need nothing from the script, so hide its file and spec while they start.
    """
    main = sys.modules.get("__main__")
    hidden = {a: getattr(main, a) for a in ("__file__", "__spec__") if hasattr(main, a)}
    try:
        for a in hidden:
            if a == "__file__":
                delattr(main, a)
            else:
                setattr(main, a, None)
        yield
    finally:
        for a, v in hidden.items():
            setattr(main, a, v)


class _WindowedExecutor:
    """Shared loop: keep ``window`` batches in flight, yield as they finish."""

    description = ""

    precise_deaths = False  # True: the scheduler names the batch a death hit
    max_attempts = MAX_ATTEMPTS  # attempts of a one-task batch before it fails
    deaths_per_attempt = 1  # worker deaths behind one failed attempt

    def __init__(self, study: Study, *, window: int) -> None:
        self.study = study
        self.window = max(1, window)
        self.stopping = False
        self.names = study.method_names
        self.generation = 0

    def _window(self) -> int:
        """Batches to keep in flight now (a cluster's follows its workers)."""
        return self.window

    def _submit(self, batch: Batch, specs: OutputSpecs) -> Any:
        raise NotImplementedError

    def _wait(self, futures: set[Any]) -> set[Any]:
        done, _ = cf.wait(futures, return_when=cf.FIRST_COMPLETED)
        return done

    def _died(self, exc: BaseException) -> bool:
        """Whether ``exc`` says the worker process running the batch died."""
        return False

    def _restart(self) -> None:
        """Replace dead workers (after ``_died``); bump ``generation``."""
        self.generation += 1

    def results(
        self, batches: Iterator[Batch], specs: SpecsFn
    ) -> Iterator[BatchResult]:
        """Keep ``window`` batches in flight; yield results as they finish.

        A batch whose worker process dies is not recorded as failed at once:
        the batches that were in flight are rerun one at a time, so a death
        names its batch; that batch is halved until one replicate is left,
        which is recorded as failed once it has killed its worker
        ``max_attempts`` times. Tasks
        that merely shared a worker with it are computed normally.
        """
        # future -> (batch, attempts, pool generation, rerun after a death)
        inflight: dict[Any, tuple[Batch, int, int, bool]] = {}
        retry: deque[tuple[Batch, int]] = deque()
        it = iter(batches)
        while True:
            alone = bool(retry) or any(v[3] for v in inflight.values())
            window = 1 if alone else self._window()
            while not self.stopping and len(inflight) < window:
                if retry:
                    b, attempts = retry.popleft()
                elif alone:
                    break
                else:
                    nxt = next(it, None)
                    if nxt is None:
                        break
                    b, attempts = nxt, 0
                future = self._submit(b, specs())
                inflight[future] = (b, attempts, self.generation, alone)
            if not inflight:
                return
            for f in self._wait(set(inflight)):
                b, attempts, gen, _ = inflight.pop(f)
                try:
                    result: BatchResult = f.result()
                except Exception as exc:
                    if not self._died(exc):
                        yield failed_result(b, exc, self.names)
                        continue
                    others = any(v[2] == gen for v in inflight.values())
                    if gen == self.generation:
                        self._restart()
                    if others and not self.precise_deaths:
                        retry.append((b, attempts))  # a suspect: rerun alone
                    elif b.size > 1:
                        retry.extend((half, attempts) for half in b.split())
                    elif attempts + 1 >= self.max_attempts:
                        deaths = (attempts + 1) * self.deaths_per_attempt
                        yield failed_result(b, WorkerDied(exc, deaths), self.names)
                    else:
                        retry.append((b, attempts + 1))
                    continue
                yield result

    def wait(self) -> None:
        pass

    def prepare(self, work: list[tuple[int, tuple[int, ...]]]) -> None:
        pass

    def stop_submitting(self) -> None:
        self.stopping = True

    def close(self) -> None:
        pass


def start_forkserver(modules: Iterable[str] = ()) -> None:
    """Start the forkserver the process pool's workers are forked from.

    It imports numpy, simstudy's worker side and ``modules`` (the study
    file's own imports) once, in parallel with the driver, which meanwhile
    loads the study and opens the store; each worker is then a fork of it,
    ready in milliseconds instead of importing everything itself (~1 s each,
    competing for the cores). Started with BLAS threads = 1 and SIGINT
    ignored, so the workers inherit both; it exits when the driver does. A
    no-op once running (later runs in this process reuse it), and where
    there is no forkserver (the pool then spawns its workers).
    """
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return
    from multiprocessing import forkserver

    multiprocessing.get_context("forkserver").set_forkserver_preload(
        ["simstudy.executors._preload"]
    )
    from multiprocessing import spawn

    # what a forked worker would run as its main script (see _preload)
    main = spawn.get_preparation_data("main").get("init_main_from_path", "")
    saved = {k: os.environ.get(k) for k in (PRELOAD, MAIN)}
    with _spawn_env():
        os.environ[PRELOAD] = ",".join(installed_modules(modules))
        os.environ[MAIN] = main
        try:
            forkserver.ensure_running()
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v


def _pool_context() -> Any:
    if "forkserver" in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("forkserver")
    return multiprocessing.get_context("spawn")


def _init_worker(token: str, payload: bytes, driver: int, env: dict[str, str]) -> None:
    """Pool worker start: take the driver's environment as it is now (a
    worker forked from a long-lived forkserver would otherwise keep the one
    the forkserver started with), then install the study."""
    os.environ.clear()
    os.environ.update(env)
    worker.install_worker(token, payload, driver)


class LocalSchedulerExecutor(_WindowedExecutor):
    """Local execution: ``processes`` submits each batch straight to a reused
    process pool; ``threads`` and ``synchronous`` run it as a one-task graph
    on Dask's local schedulers."""

    def __init__(
        self,
        study: Study,
        *,
        scheduler: str,
        workers: int,
        window: int | None = None,
        payload: bytes | None = None,
        **_: Any,
    ) -> None:
        n = 1 if scheduler == "synchronous" else workers
        super().__init__(study, window=window or 2 * n)
        self.scheduler = scheduler
        self.token = uuid.uuid4().hex
        self.pool: cf.Executor | None = None
        self.warming: list[cf.Future[str]] = []
        self.warmer: threading.Thread | None = None
        self.n = n
        self.payload = payload or study_payload(study)
        if scheduler == "processes":
            self._start_pool()
        else:
            payload = self.payload
            worker.install(self.token, payload)
            if scheduler == "threads":
                self.pool = cf.ThreadPoolExecutor(max_workers=n)
        self.feeders = cf.ThreadPoolExecutor(max_workers=self.window)
        self.description = f"dask {scheduler} scheduler, {n} worker(s)"
        if scheduler == "processes":
            self.description = f"local process pool, {n} worker(s)"

    def _start_pool(self) -> None:
        start_forkserver(study_imports(self.study.source_file))
        context = _pool_context()
        with _spawn_env():
            self.pool = cf.ProcessPoolExecutor(
                max_workers=self.n,
                mp_context=context,
                initializer=_init_worker,
                initargs=(self.token, self.payload, os.getpid(), dict(os.environ)),
            )
            # start the workers now (they install the study while the driver
            # goes on, e.g. creating the store); wait() waits for the first,
            # so a broken environment fails there
            if context.get_start_method() == "forkserver":
                # a fork waits for the forkserver to finish its imports: do
                # not hold up the driver for it (signals and environment come
                # from the forkserver and the initializer, not this thread)
                self.warmer = threading.Thread(target=self._warm, daemon=True)
                self.warmer.start()
            else:
                self._warm()

    def _warm(self) -> None:
        assert self.pool is not None
        self.warming = [self.pool.submit(worker.ready) for _ in range(self.n)]

    def _died(self, exc: BaseException) -> bool:
        return isinstance(exc, BrokenProcessPool)

    def _restart(self) -> None:
        super()._restart()
        if self.scheduler == "processes":
            self._stop_pool()
            self._start_pool()

    def _stop_pool(self) -> None:
        """Stop the workers at once: nothing they hold is worth waiting for
        (Python's exit handler would otherwise join each ~0.2 s teardown)."""
        pool = self.pool
        if self.warmer is not None:
            self.warmer.join()
            self.warmer = None
        if isinstance(pool, cf.ProcessPoolExecutor):
            procs = list((getattr(pool, "_processes", None) or {}).values())
            manager = getattr(pool, "_executor_manager_thread", None)
            pool.shutdown(wait=False, cancel_futures=True)
            for proc in procs:
                proc.terminate()
            for proc in procs:
                proc.join(timeout=5)
            if manager is not None:
                # its workers gone, it ends at once; left running, it could
                # close its wakeup pipe while the interpreter's exit handler
                # writes to it ("Exception ignored ... Bad file descriptor")
                manager.join(timeout=2)
        elif pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)

    def wait(self) -> None:
        """Return once one worker is up: batches start there while the others
        finish starting (a broken environment fails here, on the first)."""
        if self.warmer is not None:
            self.warmer.join()
            self.warmer = None
        if self.warming:
            done, _ = cf.wait(self.warming, return_when=cf.FIRST_COMPLETED)
            for future in done:
                try:
                    future.result()
                except worker.SetupFailed as exc:
                    name = Path(self.study.source_file or "the study").name
                    raise StudyError(
                        f"{name}: the worker processes cannot load the study: {exc}",
                        hint="run `python FILE` to see it fail the same way; "
                        "fix the import (or install what it needs)",
                    ) from None
            self.warming = []

    def _compute(self, batch: Batch, specs: OutputSpecs) -> BatchResult:
        key = f"batch-{batch.point}-{batch.start}"
        dsk = {key: (worker.run_installed, self.token, batch, specs)}
        if self.scheduler == "threads":
            import dask.threaded

            return dask.threaded.get(dsk, key, pool=self.pool)  # type: ignore[no-any-return]
        import dask.local

        return dask.local.get_sync(dsk, key)  # type: ignore[no-any-return]

    def _submit(self, batch: Batch, specs: OutputSpecs) -> Any:
        if isinstance(self.pool, cf.ProcessPoolExecutor):
            # straight to the pool: a one-task Dask graph per batch added only
            # its import (~0.2 s, driver and workers) and a thread hop
            try:
                return self.pool.submit(worker.run_installed, self.token, batch, specs)
            except BrokenProcessPool as exc:  # a worker died: results() restarts
                broken: cf.Future[BatchResult] = cf.Future()
                broken.set_exception(exc)
                return broken
        if self.scheduler == "synchronous":
            f: cf.Future[BatchResult] = cf.Future()
            try:
                f.set_result(self._compute(batch, specs))
            except Exception as exc:
                f.set_exception(exc)
            return f
        return self.feeders.submit(self._compute, batch, specs)

    def close(self) -> None:
        self.feeders.shutdown(wait=False, cancel_futures=True)
        self._stop_pool()
        worker.uninstall(self.token)


class DistributedExecutor(_WindowedExecutor):
    """A dask.distributed Client on a LocalCluster (loopback), at ``address``,
    or on a cluster a launcher starts (``cluster="slurm"``).

    On a cluster the window of batches in flight follows the workers'
    threads (``2 * threads + 1``, recounted at most every ``RECOUNT``
    seconds), so a worker that joins mid-run gets work at once, and one that
    leaves only shrinks the window (Dask reruns its batches elsewhere).
    """

    RECOUNT = 1.0  # seconds between counts of the cluster's worker threads

    def __init__(
        self,
        study: Study,
        *,
        workers: int,
        address: str | None = None,
        window: int | None = None,
        insecure: bool = False,
        tls: dict[str, str] | None = None,
        cluster: str | None = None,
        cluster_config: str | None = None,
        payload: bytes | None = None,
        **_: Any,
    ) -> None:
        import dask
        from distributed import Client, LocalCluster, as_completed

        self.cluster: Any = None
        self.client: Any = None
        self.config: Any = contextlib.nullcontext()
        if cluster is not None:
            from simstudy.executors.launchers import start_cluster

            self.cluster = start_cluster(cluster, cluster_config)
            address = self.cluster.scheduler_address
            tls = None
        if address is None:
            self.config, self.cluster = _local_cluster(workers)
            self.client = Client(self.cluster)
        else:
            if cluster is None:
                check_address(address, insecure)
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
        self.fixed_window = window
        self.counted = time.monotonic()
        n = self._threads() or workers
        super().__init__(study, window=window or 2 * n + 1)
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
        self.notice: Any = None
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
        if self.fixed_window is None and self.external:
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
        _spawn_env(),
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


def _local(scheduler: str) -> Callable[..., Any]:
    def make(study: Study, **options: Any) -> LocalSchedulerExecutor:
        return LocalSchedulerExecutor(study, scheduler=scheduler, **options)

    return make


prestart = start_forkserver  # executors.prestart: before the study is loaded

EXECUTORS: dict[str, Callable[..., Any]] = {
    "distributed": DistributedExecutor,
    "processes": _local("processes"),
    "threads": _local("threads"),
    "synchronous": _local("synchronous"),
}
