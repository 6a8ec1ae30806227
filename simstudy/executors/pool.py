"""The local process pool (``--scheduler processes``, the default): batches
go straight to a reused ``ProcessPoolExecutor`` whose workers are forked
from a preloaded forkserver (``executors._preload``).

The study travels to each worker once (the pool's initializer), never once
per batch. A worker that dies breaks the pool: it is replaced and the
windowed loop isolates the batch that killed it.
"""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing
import os
import threading
import uuid
from collections.abc import Iterable
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any, ClassVar

from simstudy.backends import worker
from simstudy.declare.grid import Batch
from simstudy.declare.loader import installed_modules, study_imports
from simstudy.declare.outputs import OutputSpecs
from simstudy.declare.results import BatchResult
from simstudy.declare.study import Study
from simstudy.errors import StudyError
from simstudy.executors import ExecutorOptions, study_payload
from simstudy.executors.spawn import environ, spawn_env
from simstudy.executors.windowed import WindowedExecutor

__all__ = ["MAIN", "PRELOAD", "PoolExecutor", "start_forkserver"]

PRELOAD = "SIMSTUDY_PRELOAD"  # modules the forkserver imports (executors._preload)
MAIN = "SIMSTUDY_MAIN"  # the driver's main script, which its workers never run


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
    preload = {PRELOAD: ",".join(installed_modules(modules)), MAIN: main}
    with spawn_env(), environ(preload):
        forkserver.ensure_running()


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


class PoolExecutor(WindowedExecutor):
    """``processes``: each batch goes straight to a reused process pool (a
    one-task Dask graph per batch added only its import, ~0.2 s in driver
    and workers, and a thread hop)."""

    timeout: ClassVar[bool] = True
    early: ClassVar[bool] = True
    elsewhere: ClassVar[bool] = True

    def __init__(
        self, study: Study, opts: ExecutorOptions, *, payload: bytes | None = None
    ) -> None:
        workers = opts.workers
        super().__init__(study, window=2 * workers)
        self.token = uuid.uuid4().hex
        self.pool: cf.ProcessPoolExecutor | None = None
        self.warming: list[cf.Future[str]] = []
        self.warmer: threading.Thread | None = None
        self.workers = workers
        self.payload = payload or study_payload(study)
        self._start_pool()
        self.description = f"local process pool, {workers} worker(s)"

    @classmethod
    def prestart(cls, modules: list[str]) -> None:
        start_forkserver(modules)

    def _start_pool(self) -> None:
        start_forkserver(study_imports(self.study.source_file))
        context = _pool_context()
        with spawn_env():
            self.pool = cf.ProcessPoolExecutor(
                max_workers=self.workers,
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
        self.warming = [self.pool.submit(worker.ready) for _ in range(self.workers)]

    def _died(self, exc: BaseException) -> bool:
        return isinstance(exc, BrokenProcessPool)

    def _restart(self) -> None:
        super()._restart()
        self._stop_pool()
        self._start_pool()

    def _stop_pool(self) -> None:
        """Stop the workers at once: nothing they hold is worth waiting for
        (Python's exit handler would otherwise join each ~0.2 s teardown)."""
        pool = self.pool
        if self.warmer is not None:
            self.warmer.join()
            self.warmer = None
        if pool is not None:
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

    def _submit(self, batch: Batch, specs: OutputSpecs) -> Any:
        assert self.pool is not None
        try:
            return self.pool.submit(worker.run_installed, self.token, batch, specs)
        except BrokenProcessPool as exc:  # a worker died: results() restarts
            broken: cf.Future[BatchResult] = cf.Future()
            broken.set_exception(exc)
            return broken

    def close(self) -> None:
        self._stop_pool()
        worker.uninstall(self.token)
