"""The in-process executor of jax studies: one batch per thread on one device.

XLA runs each of these kernels on about one core (measured: 1.0-1.1 cores
busy), so ``workers`` threads (default: the cores) each run a batch;
executions are independent, so this changes no number.

jax itself is imported (through ``backends.jax``) when the executor is
built, so reading its traits costs nothing.
"""

from __future__ import annotations

import concurrent.futures as cf
import os
from collections.abc import Callable, Iterator
from typing import ClassVar

from simstudy.declare.grid import Batch, points
from simstudy.declare.outputs import OutputSpecs
from simstudy.declare.results import BatchResult
from simstudy.declare.study import Study
from simstudy.executors import Executor, ExecutorOptions

__all__ = ["JaxExecutor"]


class JaxExecutor(Executor):
    """Runs a jax study's batches in this process, on one JAX device."""

    warnings: ClassVar[bool] = False  # jax kernels run no Python per task

    def __init__(
        self, study: Study, opts: ExecutorOptions, *, payload: bytes | None = None
    ) -> None:
        from simstudy.backends.jax import kernels_for, use_compilation_cache

        super().__init__(study, opts)
        use_compilation_cache()
        self.kernels = kernels_for(study, opts.device)
        self.grid = points(study)
        self.threads = max(1, opts.workers or os.cpu_count() or 1)
        self.pool = cf.ThreadPoolExecutor(self.threads, "simstudy-jax")
        dev = self.kernels.device
        self.description = (
            f"jax in-process on {dev.platform}:{dev.id} "
            f"({self.threads} thread(s), vmap width {study.vmap_width:,})"
        )

    def results(
        self, batches: Iterator[Batch], specs: Callable[[], OutputSpecs]
    ) -> Iterator[BatchResult]:
        """Keep one batch per thread in flight, and one more queued (the
        driver writes a finished batch meanwhile); yield as they finish."""
        from simstudy.backends.jax import run_jax_batch

        inflight: set[cf.Future[BatchResult]] = set()
        pending = iter(batches)
        while True:
            while not self.stopping and len(inflight) <= self.threads:
                batch = next(pending, None)
                if batch is None:
                    break
                inflight.add(
                    self.pool.submit(run_jax_batch, self.study, batch, specs())
                )
            if not inflight:
                return
            done, inflight = cf.wait(inflight, return_when=cf.FIRST_COMPLETED)
            for future in done:
                yield future.result()

    def prepare(self, work: list[tuple[int, tuple[int, ...]]]) -> None:
        self.kernels.prepare([(self.grid[p], methods) for p, methods in work])

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)
        self.kernels.close()
