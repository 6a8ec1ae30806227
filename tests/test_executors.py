"""The executor contract (issue 15): one set of behaviour tests
that every executor passes — synchronous, threads, processes, a LocalCluster
and the JAX executor — each subclassing :class:`ExecutorContract`.

Every executor must give the reference cube bit for bit, record the same
failures, stop on an interrupt leaving a store that resumes to the same cube,
and either time out a hung task (where it supports ``task_timeout``) or refuse
the option before anything is written.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest

import simstudy
from simstudy.store import read_failures
from tests.helpers import assert_store_consistent, cube_digest
from tests.studies import write_study_file

NUMPY = """
import time
import numpy as np
from simstudy import Study

study = Study("contract", factors={"n": [5, 8], "eps": [0.0, 0.5]},
              replicates=12, seed=4)

@study.data
def gen(rng, n, eps):
    return rng.standard_normal(n) + eps

@study.method
def mean(x):
    return {"estimate": x.mean()}

@study.method
def picky(x, n):
    if n == 8:
        raise ValueError("picky refuses n=8")
    return {"estimate": np.max(x)}

@study.method
def noisy(x, rng):
    if HANG and x[0] > 1.5:
        time.sleep(3600)
    return {"estimate": x.mean() + rng.standard_normal()}

HANG = False
"""

JAX = """
import jax
import jax.numpy as jnp
from simstudy import Study

study = Study("contract", factors={"n": [5, 8], "eps": [0.0, 0.5]},
              replicates=12, seed=4, backend="jax", vmap_width=4)

@study.data
def gen(key, n, eps):
    return jax.random.normal(key, (n,)) + eps

@study.method
def mean(x):
    return {"estimate": x.mean()}

@study.method
def picky(x, n):
    if n == 8:
        raise ValueError("picky refuses n=8")
    return {"estimate": jnp.max(x)}

@study.method
def noisy(x, key):
    return {"estimate": x.mean() + jax.random.normal(key)}
"""

_REFERENCES: dict[str, tuple[str, Any]] = {}  # source -> (digest, status)


def _write(folder: Path, source: str, hang: bool = False) -> Path:
    if hang:
        source = source.replace("HANG = False", "HANG = True")
    return write_study_file(folder, source, "contract.py")


class ExecutorContract:
    """The behaviour every executor owes the runner."""

    options: ClassVar[dict[str, Any]] = {}
    source: ClassVar[str] = NUMPY
    reference_options: ClassVar[dict[str, Any]] = {"scheduler": "synchronous"}
    timeout_supported: ClassVar[bool] = False
    timeout_refused: ClassVar[str] = "--task-timeout works with the processes"

    @pytest.fixture
    def reference(self, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Any]:
        """The cube digest and status array of the reference run (once per source)."""
        if self.source not in _REFERENCES:
            folder = tmp_path_factory.mktemp("reference")
            store = folder / "ref.zarr"
            path = _write(folder, self.source)
            report = simstudy.run(path, store=store, **self.reference_options)
            assert report.exit_code == 3  # picky fails at n=8
            ds = assert_store_consistent(store)
            _REFERENCES[self.source] = (cube_digest(store), ds.status.values.copy())
        return _REFERENCES[self.source]

    @pytest.fixture(scope="class")
    @classmethod
    def finished(
        cls, tmp_path_factory: pytest.TempPathFactory
    ) -> tuple[simstudy.running.runner.RunReport, Path]:
        """One whole run with this executor and its store, which the tests
        below only read (one run, not one per test: a cluster starts slowly)."""
        folder = tmp_path_factory.mktemp("finished")
        store = folder / "s.zarr"
        return cls.run(_write(folder, cls.source), store), store

    @classmethod
    def run(
        cls, path: Path, store: Path, **extra: Any
    ) -> simstudy.running.runner.RunReport:
        return simstudy.run(path, store=store, **{**cls.options, **extra})

    def test_gives_the_reference_cube(self, finished, reference):
        report, store = finished
        assert report.exit_code == 3
        assert report.computed == report.tasks == 2 * 2 * 12 * 3
        assert_store_consistent(store)
        assert cube_digest(store) == reference[0]

    def test_records_failures_as_data(self, finished, reference):
        report, store = finished
        ds = assert_store_consistent(store)
        np.testing.assert_array_equal(ds.status.values, reference[1])
        picky = ds.status.sel(method_name="picky")
        assert (picky.sel(n=8).values == 2).all()
        assert (picky.sel(n=5).values == 1).all()
        assert report.failed == int((ds.status.values == 2).sum()) == 2 * 12
        failures = read_failures(store)
        assert {f["method"] for f in failures} == {"picky"}
        assert all(f["type"] == "ValueError" for f in failures)
        assert all("picky refuses n=8" in f["message"] for f in failures)

    def test_an_interrupt_leaves_a_store_that_resumes_to_the_reference(
        self, tmp_path, reference
    ):
        path, store = _write(tmp_path, self.source), tmp_path / "s.zarr"
        calls = []

        def interrupt(ev: Any) -> None:
            calls.append(ev)
            if len(calls) == 2:
                raise KeyboardInterrupt

        first = self.run(path, store, batch_size=4, on_progress=interrupt)
        assert first.interrupted
        assert first.exit_code == 130
        assert 0 < first.ok + first.failed < first.tasks
        assert_store_consistent(store)
        second = self.run(path, store)
        assert second.computed == first.tasks - first.ok - first.failed
        assert_store_consistent(store)
        assert cube_digest(store) == reference[0]

    def test_task_timeout_fails_hung_tasks_or_is_refused(self, tmp_path):
        path, store = _write(tmp_path, self.source, hang=True), tmp_path / "s.zarr"
        if not self.timeout_supported:
            with pytest.raises(simstudy.UsageError, match=self.timeout_refused):
                self.run(path, store, task_timeout=0.2)
            assert not store.exists()
            return
        report = self.run(path, store, task_timeout=0.2)
        assert report.exit_code == 3
        ds = assert_store_consistent(store)
        hung = ds.status.sel(method_name="noisy").values == 2
        assert 0 < hung.sum() < hung.size
        timeouts = [f for f in read_failures(store) if f["method"] == "noisy"]
        assert len(timeouts) == hung.sum()
        assert all(f["type"] == "TaskTimeout" for f in timeouts)
        assert (ds.status.sel(method_name="mean").values == 1).all()


class TestSynchronous(ExecutorContract):
    options: ClassVar[dict[str, Any]] = {"scheduler": "synchronous", "batch_size": 5}
    timeout_supported = True


class TestThreads(ExecutorContract):
    options: ClassVar[dict[str, Any]] = {"scheduler": "threads", "workers": 2}


class TestProcesses(ExecutorContract):
    options: ClassVar[dict[str, Any]] = {"scheduler": "processes", "workers": 2}
    timeout_supported = True


class TestDistributed(ExecutorContract):
    options: ClassVar[dict[str, Any]] = {"scheduler": "distributed", "workers": 2}


@pytest.mark.jax
class TestJax(ExecutorContract):
    source = JAX
    options: ClassVar[dict[str, Any]] = {"scheduler": "jax", "batch_size": 3}
    reference_options: ClassVar[dict[str, Any]] = {"scheduler": "jax"}
    timeout_refused = "--task-timeout cannot interrupt a jitted jax kernel"
