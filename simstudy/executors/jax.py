"""The in-process executor of jax studies: one batch per thread on one device.

XLA runs each of these kernels on about one core (measured: 1.0-1.1 cores
busy), so ``workers`` threads (default: the cores) each run a batch;
executions are independent, so this changes no number.

Layers: imports ``backends.jax, grid, outputs, results, study``; 3rd-party:
jax (through the backend; this module is imported only for jax studies).
"""

from __future__ import annotations

import concurrent.futures as cf
import os
from collections.abc import Callable, Iterator
from typing import Any

from simstudy.backends.jax import kernels_for, run_jax_batch, use_compilation_cache
from simstudy.grid import Batch, points
from simstudy.outputs import OutputSpecs
from simstudy.results import BatchResult
from simstudy.study import Study

__all__ = ["EXECUTORS", "JaxExecutor"]


class JaxExecutor:
    """Runs a jax study's batches in this process, on one JAX device."""

    def __init__(
        self,
        study: Study,
        *,
        device: str | None = None,
        workers: int | None = None,
        **_: Any,
    ) -> None:
        self.study = study
        self.stopping = False
        use_compilation_cache()
        self.kernels = kernels_for(study, device)
        self.grid = points(study)
        self.threads = max(1, workers or os.cpu_count() or 1)
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
        inflight: set[cf.Future[BatchResult]] = set()
        it = iter(batches)
        while True:
            while not self.stopping and len(inflight) <= self.threads:
                batch = next(it, None)
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

    def wait(self) -> None:
        pass

    def prepare(self, work: list[tuple[int, tuple[int, ...]]]) -> None:
        self.kernels.prepare([(self.grid[p], methods) for p, methods in work])

    def stop_submitting(self) -> None:
        self.stopping = True

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)
        self.kernels.close()


EXECUTORS: dict[str, Callable[..., Any]] = {"jax": JaxExecutor}
