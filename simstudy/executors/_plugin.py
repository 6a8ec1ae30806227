# distributed ships no type hints for its plugin base
# mypy: disable-error-code="misc"
"""A Dask worker plugin that installs the study on every worker once.

Workers that join later, or that the nanny restarts after a crash, run the
plugin too, so a lost worker never loses the study (scattered data would be).
A module of its own: importing ``distributed`` costs ~0.3 s, which the
``processes`` scheduler's workers (they import ``simstudy.executors.pool``)
should not pay.
"""

from __future__ import annotations

from typing import Any

from distributed.diagnostics.plugin import WorkerPlugin

from simstudy.backends.worker import install, uninstall


class InstallStudy(WorkerPlugin):
    """Unpickle the study under ``token`` in each worker process."""

    def __init__(self, token: str, payload: bytes) -> None:
        self.token = token
        self.payload = payload
        self.name = f"simstudy-{token}"

    def setup(self, worker: Any) -> None:
        install(self.token, self.payload)

    def teardown(self, worker: Any) -> None:
        uninstall(self.token)
