"""How the executors start worker processes: BLAS/OpenMP threads = 1 unless
the user set those variables, SIGINT left to the driver, and the driver's
main script not run again in each child.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import sys
from collections.abc import Iterator, Mapping

__all__ = ["THREAD_VARS", "environ", "spawn_env", "worker_env"]

THREAD_VARS = (
    "OMP_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
    "NUMEXPR_NUM_THREADS",
)


def worker_env() -> dict[str, str]:
    """Return the thread variables workers get (the user's own values win)."""
    return {v: os.environ.get(v, "1") for v in THREAD_VARS}


@contextlib.contextmanager
def environ(values: Mapping[str, str]) -> Iterator[None]:
    """Set environment variables for the block; then put back what was there."""
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@contextlib.contextmanager
def spawn_env() -> Iterator[None]:
    """Spawn children with BLAS threads = 1, SIGINT ignored (the driver owns
    it) and without the driver's main script (see ``_main_hidden``)."""
    with environ(worker_env()):
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
    hidden = {
        attr: getattr(main, attr)
        for attr in ("__file__", "__spec__")
        if hasattr(main, attr)
    }
    try:
        for attr in hidden:
            if attr == "__file__":
                delattr(main, attr)
            else:
                setattr(main, attr, None)
        yield
    finally:
        for attr, value in hidden.items():
            setattr(main, attr, value)
