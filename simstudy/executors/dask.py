# distributed ships no type hints for these calls
# mypy: disable-error-code="no-untyped-call"
"""Dask executors: a LocalCluster or an external cluster (``distributed``), and
Dask's local schedulers (``processes``, ``threads``, ``synchronous``).

The study travels to each worker once (scattered, or a pool initializer),
never once per batch. Workers run with BLAS/OpenMP threads = 1 unless the
user set those variables.

Layers: imports ``batch, grid, executors, errors``; 3rd-party: dask, distributed.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import logging
import multiprocessing
import os
import signal
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import cloudpickle

from simstudy import batch as batch_mod
from simstudy.batch import BatchResult
from simstudy.errors import UsageError
from simstudy.executors import failed_result
from simstudy.grid import Batch
from simstudy.study import Study

__all__ = ["EXECUTORS"]

THREAD_VARS = (
    "OMP_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
    "NUMEXPR_NUM_THREADS",
)
Specs = Callable[[], dict[str, tuple[int, ...]]]


def worker_env() -> dict[str, str]:
    """Return the thread variables workers get (the user's own values win)."""
    return {v: os.environ.get(v, "1") for v in THREAD_VARS}


@contextlib.contextmanager
def _spawn_env() -> Iterator[None]:
    """Spawn children with BLAS threads = 1 and SIGINT ignored (the driver owns it)."""
    saved = {v: os.environ.get(v) for v in THREAD_VARS}
    os.environ.update(worker_env())
    old = signal.getsignal(signal.SIGINT)
    in_main = multiprocessing.current_process().name == "MainProcess"
    try:
        if in_main:
            with contextlib.suppress(ValueError):
                signal.signal(signal.SIGINT, signal.SIG_IGN)
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


class _WindowedExecutor:
    """Shared loop: keep ``window`` batches in flight, yield as they finish."""

    description = ""

    def __init__(self, study: Study, *, window: int) -> None:
        self.study = study
        self.window = max(1, window)
        self.stopping = False
        self.names = study.method_names

    def _submit(self, batch: Batch, specs: dict[str, tuple[int, ...]]) -> Any:
        raise NotImplementedError

    def _wait(self, futures: set[Any]) -> set[Any]:
        done, _ = cf.wait(futures, return_when=cf.FIRST_COMPLETED)
        return done

    def _result(self, future: Any, batch: Batch) -> BatchResult:
        try:
            result: BatchResult = future.result()
        except Exception as exc:
            result = failed_result(batch, exc, self.names)
        return result

    def results(self, batches: Iterator[Batch], specs: Specs) -> Iterator[BatchResult]:
        inflight: dict[Any, Batch] = {}
        it = iter(batches)
        while True:
            while not self.stopping and len(inflight) < self.window:
                b = next(it, None)
                if b is None:
                    break
                inflight[self._submit(b, specs())] = b
            if not inflight:
                return
            for f in self._wait(set(inflight)):
                yield self._result(f, inflight.pop(f))

    def wait(self) -> None:
        pass

    def stop_submitting(self) -> None:
        self.stopping = True

    def close(self) -> None:
        pass


def _init_worker(token: str, payload: bytes) -> None:
    """Pool worker start: import what running a batch through Dask needs
    (else the first batch pays ~0.1 s for it), then install the study."""
    import dask.local  # noqa: F401

    batch_mod.install_worker(token, payload)


class LocalSchedulerExecutor(_WindowedExecutor):
    """Dask's local schedulers, each batch a one-task graph on a reused pool."""

    def __init__(
        self,
        study: Study,
        *,
        scheduler: str,
        workers: int,
        window: int | None = None,
        **_: Any,
    ) -> None:
        n = 1 if scheduler == "synchronous" else workers
        super().__init__(study, window=window or 2 * n)
        self.scheduler = scheduler
        self.token = uuid.uuid4().hex
        self.pool: cf.Executor | None = None
        self.warming: list[cf.Future[str]] = []
        payload = cloudpickle.dumps(study)
        if scheduler == "processes":
            with _spawn_env():
                self.pool = cf.ProcessPoolExecutor(
                    max_workers=n,
                    mp_context=multiprocessing.get_context("spawn"),
                    initializer=_init_worker,
                    initargs=(self.token, payload),
                )
                # spawn the workers now (they import and install the study
                # while the driver goes on, e.g. creating the store); wait()
                # waits for them, so a broken environment fails there
                self.warming = [self.pool.submit(batch_mod.ready) for _ in range(n)]
            import dask.multiprocessing  # noqa: F401  (here, not in the first batch)
        else:
            batch_mod.install(self.token, payload)
            if scheduler == "threads":
                self.pool = cf.ThreadPoolExecutor(max_workers=n)
        self.feeders = cf.ThreadPoolExecutor(max_workers=self.window)
        self.description = f"dask {scheduler} scheduler, {n} worker(s)"

    def wait(self) -> None:
        """Return once one worker is up: batches start there while the others
        finish starting (a broken environment fails here, on the first)."""
        if self.warming:
            done, _ = cf.wait(self.warming, return_when=cf.FIRST_COMPLETED)
            for future in done:
                future.result()
            self.warming = []

    def _compute(self, batch: Batch, specs: dict[str, tuple[int, ...]]) -> BatchResult:
        key = f"batch-{batch.point}-{batch.start}"
        dsk = {key: (batch_mod.run_installed, self.token, batch, specs)}
        if self.scheduler == "processes":
            import dask.multiprocessing

            return dask.multiprocessing.get(dsk, key, pool=self.pool)  # type: ignore[no-any-return]
        if self.scheduler == "threads":
            import dask.threaded

            return dask.threaded.get(dsk, key, pool=self.pool)  # type: ignore[no-any-return]
        import dask.local

        return dask.local.get_sync(dsk, key)  # type: ignore[no-any-return]

    def _submit(self, batch: Batch, specs: dict[str, tuple[int, ...]]) -> Any:
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
        if isinstance(self.pool, cf.ProcessPoolExecutor):
            # the workers hold nothing worth keeping once we close: stop them
            # at once instead of waiting ~0.2 s for each interpreter to tear
            # down (Python's exit handler joins them)
            procs = list((getattr(self.pool, "_processes", None) or {}).values())
            self.pool.shutdown(wait=False, cancel_futures=True)
            for proc in procs:
                proc.terminate()
            for proc in procs:
                proc.join(timeout=5)
        elif self.pool is not None:
            self.pool.shutdown(wait=False, cancel_futures=True)
        batch_mod._installed.pop(self.token, None)


class DistributedExecutor(_WindowedExecutor):
    """A dask.distributed Client on a LocalCluster (loopback) or at ``address``."""

    def __init__(
        self,
        study: Study,
        *,
        workers: int,
        address: str | None = None,
        window: int | None = None,
        insecure: bool = False,
        **_: Any,
    ) -> None:
        from distributed import Client, LocalCluster, as_completed

        self.cluster: Any = None
        if address is None:
            with _spawn_env():
                self.cluster = LocalCluster(
                    n_workers=workers,
                    threads_per_worker=1,
                    processes=True,
                    host="127.0.0.1",
                    dashboard_address="127.0.0.1:0",
                    silence_logs=logging.ERROR,
                    env=worker_env(),
                )
            self.client = Client(self.cluster)
        else:
            check_address(address, insecure)
            try:
                self.client = Client(address, timeout="10s")
            except OSError as exc:
                raise UsageError(
                    f"cannot connect to the Dask scheduler at {address}: {exc}",
                    hint="start it with `dask scheduler` and check the address",
                ) from None
        n = max(1, len(self.client.scheduler_info().get("workers", {})) or workers)
        super().__init__(study, window=window or 2 * n + 1)
        self.payload = self.client.scatter(
            cloudpickle.dumps(study), broadcast=True, hash=False
        )
        where = "LocalCluster" if address is None else address
        self.description = f"dask distributed ({where}, {n} worker(s))"
        self.dashboard = getattr(self.client, "dashboard_link", None)
        self.finished = as_completed()

    def _submit(self, batch: Batch, specs: dict[str, tuple[int, ...]]) -> Any:
        future = self.client.submit(
            batch_mod.run_payload, self.payload, batch, specs, pure=False
        )
        self.finished.add(future)
        return future

    def _wait(self, futures: set[Any]) -> set[Any]:
        return {next(self.finished)}

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.client.close(timeout=5)
        if self.cluster is not None:
            with contextlib.suppress(Exception):
                self.cluster.close(timeout=5)


def check_address(address: str, insecure: bool) -> None:
    """Refuse a bad scheme, or plain tcp off loopback without ``insecure``."""
    from urllib.parse import urlparse

    url = urlparse(address if "://" in address else f"tcp://{address}")
    if url.scheme not in ("tcp", "tls"):
        raise UsageError(
            f"--address {address!r} has scheme {url.scheme!r}; expected tcp:// or "
            "tls://.",
            hint="write --address tcp://127.0.0.1:8786",
        )
    loopback = url.hostname in ("127.0.0.1", "localhost", "::1")
    if url.scheme == "tcp" and not loopback and not insecure:
        raise UsageError(
            f"--address {address!r} is plain tcp to a non-loopback host; traffic "
            "would be unencrypted and unauthenticated.",
            hint="use tls:// with certificates, or add --insecure on a trusted network",
        )


def _local(scheduler: str) -> Callable[..., Any]:
    def make(study: Study, **options: Any) -> LocalSchedulerExecutor:
        return LocalSchedulerExecutor(study, scheduler=scheduler, **options)

    return make


EXECUTORS: dict[str, Callable[..., Any]] = {
    "distributed": DistributedExecutor,
    "processes": _local("processes"),
    "threads": _local("threads"),
    "synchronous": _local("synchronous"),
}
