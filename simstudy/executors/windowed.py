"""The windowed executor base: a bounded window of batches in flight, and a
dead worker's batch isolated by rerunning and halving (see ``results``).

The process pool (``executors.pool``) and the Dask executors
(``executors.dask``) subclass it; a new executor that runs batches as
futures needs only ``_submit`` (and ``_died``/``_restart`` if its workers
can die under it).
"""

from __future__ import annotations

import concurrent.futures as cf
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any

from simstudy.declare.grid import Batch
from simstudy.declare.outputs import OutputSpecs
from simstudy.declare.results import BatchResult
from simstudy.declare.study import Study
from simstudy.executors import MAX_ATTEMPTS, Executor, WorkerDied, failed_result

__all__ = ["SpecsFn", "WindowedExecutor"]

SpecsFn = Callable[[], OutputSpecs]


class WindowedExecutor(Executor):
    """Keep ``window`` batches in flight, yield them as they finish, and find
    the batch that killed its worker.

    A subclass submits a batch (``_submit``, returning a future) and may say
    how to wait for one (``_wait``), whether an exception means the worker
    process died (``_died``) and how to replace dead workers (``_restart``);
    the loop, the window and the bisection of a batch whose worker died are
    here, once.
    """

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
        pending = iter(batches)
        while True:
            alone = bool(retry) or any(v[3] for v in inflight.values())
            window = 1 if alone else self._window()
            while not self.stopping and len(inflight) < window:
                if retry:
                    batch, attempts = retry.popleft()
                elif alone:
                    break
                else:
                    nxt = next(pending, None)
                    if nxt is None:
                        break
                    batch, attempts = nxt, 0
                future = self._submit(batch, specs())
                inflight[future] = (batch, attempts, self.generation, alone)
            if not inflight:
                return
            for finished in self._wait(set(inflight)):
                batch, attempts, gen, _ = inflight.pop(finished)
                try:
                    result: BatchResult = finished.result()
                except Exception as exc:
                    if not self._died(exc):
                        yield failed_result(batch, exc, self.names)
                        continue
                    others = any(v[2] == gen for v in inflight.values())
                    if gen == self.generation:
                        self._restart()
                    if others and not self.precise_deaths:
                        retry.append((batch, attempts))  # a suspect: rerun alone
                    elif batch.size > 1:
                        retry.extend((half, attempts) for half in batch.split())
                    elif attempts + 1 >= self.max_attempts:
                        deaths = (attempts + 1) * self.deaths_per_attempt
                        yield failed_result(batch, WorkerDied(exc, deaths), self.names)
                    else:
                        retry.append((batch, attempts + 1))
                    continue
                yield result
