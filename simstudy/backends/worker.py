"""A worker process's side: the study installed once, batches run by its backend.

The study travels to each worker once (a pool initializer or a Dask worker
plugin calls ``install``), never once per batch; ``run_installed`` then runs
a batch with the study's backend.
"""

from __future__ import annotations

import os
import pickle
import threading
import time

from simstudy.backends import backend_of
from simstudy.declare.grid import Batch
from simstudy.declare.outputs import OutputSpecs
from simstudy.declare.results import BatchResult, worker_name
from simstudy.declare.study import Study
from simstudy.system import pid_alive

__all__ = [
    "SetupFailed",
    "install",
    "install_worker",
    "ready",
    "run_installed",
    "uninstall",
]

_installed: dict[str, Study] = {}
_setup_error: list[str] = []  # why this pool worker could not install the study


class SetupFailed(Exception):
    """This worker could not load the study (e.g. a library it imports
    fails to import here): said by ``ready`` and ``run_installed``."""


def install(token: str, payload: bytes) -> None:
    """Unpickle a study once in this process, under ``token``."""
    study = pickle.loads(payload)
    if not isinstance(study, Study):
        raise TypeError(f"payload is a {type(study).__name__}, not a Study")
    _installed[token] = study


def uninstall(token: str) -> None:
    """Forget the study installed under ``token`` (if any)."""
    _installed.pop(token, None)


def install_worker(token: str, payload: bytes, driver: int) -> None:
    """Initialise a pool worker process: exit when the driver (pid
    ``driver``) dies, even by ``kill -9``, instead of waiting forever for work
    that will never come; then install the study.

    The worker's parent is the driver, or the forkserver it was forked from
    (which exits when the driver dies): the worker exits once its parent
    changes or the driver is gone. The driver's pid comes from the driver:
    read here, it would already be init's when the driver died while this
    worker was starting.
    """
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent and pid_alive(driver):
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, name="simstudy-parent-watch", daemon=True).start()
    try:
        install(token, payload)
    except Exception as exc:
        # an exception here would only break the pool ("terminated
        # abruptly"); kept, it is said by the first call instead
        _setup_error[:] = [f"{type(exc).__name__}: {exc}"]


def _check_setup() -> None:
    if _setup_error:
        raise SetupFailed(_setup_error[0])


def ready(_: object = None) -> str:
    """Answer a warm-up call: this worker process is up (study installed)."""
    _check_setup()
    return worker_name()


def run_installed(token: str, batch: Batch, specs: OutputSpecs) -> BatchResult:
    """Run a batch of the study installed under ``token`` with its backend."""
    _check_setup()
    study = _installed[token]
    return backend_of(study).run_batch(study, batch, specs)
