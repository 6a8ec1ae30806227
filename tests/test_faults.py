"""Faults on real worker processes: a worker that dies once, a task that kills
its worker every time (issue 4)."""

from __future__ import annotations

import numpy as np
import pytest

import simstudy
from simstudy.store import read_failures
from tests.helpers import assert_store_consistent, cube_digest
from tests.studies import GOOD_STUDY

CRASHY = """
import os
from pathlib import Path
from simstudy import Study

study = Study("crashy", factors={"n": [5, 8]}, replicates=4, seed=3)

@study.data
def gen(rng, n):
    return rng.standard_normal(n)

@study.method
def mean(x):
    return x.mean()

@study.method
def crashy(x):
    flag = Path(__file__).with_name("crashed-once")
    if os.environ.get("CRASH") == "once" and x[0] > 1.0 and not flag.exists():
        flag.write_text("")
        os._exit(1)  # the worker process dies
    if os.environ.get("CRASH") == "always" and x[0] > 1.2:
        os._exit(1)
    if os.environ.get("CRASH") == "raise" and x[0] > 1.2:
        raise RuntimeError("stand-in for a crash")
    return x.max()
"""

SCHEDULERS = [("processes", {}), ("distributed", {"batch_size": 4})]


@pytest.fixture
def study_file(write_study):
    return write_study(CRASHY, "crashy.py")


@pytest.mark.parametrize(
    ("scheduler", "options"), SCHEDULERS, ids=["processes", "distributed"]
)
def test_a_worker_that_dies_once_changes_nothing(
    study_file, tmp_path, monkeypatch, scheduler, options
):
    reference = tmp_path / "ref.zarr"
    simstudy.run(study_file, store=reference, scheduler="synchronous")
    monkeypatch.setenv("CRASH", "once")
    report = simstudy.run(
        study_file, store=tmp_path / "s.zarr", scheduler=scheduler, workers=2, **options
    )
    assert (tmp_path / "crashed-once").exists(), (
        "no worker died: the test tests nothing"
    )
    assert report.exit_code == 0
    assert_store_consistent(tmp_path / "s.zarr")
    assert cube_digest(tmp_path / "s.zarr") == cube_digest(reference)


@pytest.mark.parametrize(
    ("scheduler", "options"), SCHEDULERS, ids=["processes", "distributed"]
)
def test_a_task_that_kills_its_worker_every_time_fails_alone(
    study_file, tmp_path, monkeypatch, scheduler, options
):
    monkeypatch.setenv("CRASH", "raise")  # same tasks fail, in-process, as exceptions
    reference = tmp_path / "ref.zarr"
    simstudy.run(study_file, store=reference, scheduler="synchronous")
    expected = assert_store_consistent(reference)
    monkeypatch.setenv("CRASH", "always")
    store = tmp_path / "s.zarr"
    report = simstudy.run(
        store=store, study=study_file, scheduler=scheduler, workers=2, **options
    )
    assert report.exit_code == 3
    ds = assert_store_consistent(store)
    n_failed = int((expected.status == 2).sum())
    assert n_failed >= 2  # the study does exercise the crash
    assert report.failed == n_failed
    np.testing.assert_array_equal(ds.status.values, expected.status.values)
    np.testing.assert_array_equal(ds.value.values, expected.value.values)
    failures = read_failures(store)
    assert {f["method"] for f in failures} == {"crashy"}
    assert all(f["type"] == "WorkerDied" for f in failures)
    assert all("worker process died" in f["message"] for f in failures)


HANGS = """
import time
from simstudy import Study

study = Study("hangs", factors={"n": [5]}, replicates=12, seed=3)

@study.data
def gen(rng, n):
    return rng.standard_normal(n)

@study.method
def mean(x):
    return x.mean()

@study.method
def stuck(x):
    if x[0] > 0.8:
        time.sleep(3600)  # hangs
    return x.max()
"""


@pytest.mark.parametrize("scheduler", ["processes", "synchronous"])
def test_a_hung_task_times_out_and_the_study_goes_on(write_study, tmp_path, scheduler):
    path = write_study(HANGS, "hangs.py")
    store = tmp_path / "s.zarr"
    report = simstudy.run(
        path, store=store, scheduler=scheduler, workers=2, task_timeout=0.3
    )
    assert report.exit_code == 3
    ds = assert_store_consistent(store)
    x0_big = ds.status.sel({"method_name": "stuck"}).values == 2
    assert 0 < x0_big.sum() < 12  # some hung, some did not
    assert (ds.status.sel({"method_name": "mean"}).values == 1).all()
    failures = read_failures(store)
    assert {f["method"] for f in failures} == {"stuck"}
    assert all(f["type"] == "TaskTimeout" for f in failures)
    assert all("--task-timeout 0.3 s" in f["message"] for f in failures)


WARNS = """
import warnings
import numpy as np
from simstudy import Study

study = Study("warns", factors={"n": [6]}, replicates=40, seed=9)

@study.data
def gen(rng, n):
    return rng.standard_normal(n)

@study.method
def logmean(x):
    if x[0] < 0:
        warnings.warn("did not converge in 50 iterations", RuntimeWarning)
        warnings.warn("did not converge in 50 iterations", RuntimeWarning)
    return float(np.mean(x))
"""


@pytest.mark.parametrize("scheduler", ["processes", "synchronous"])
def test_warnings_are_counted_per_task_and_can_be_errors(
    write_study, tmp_path, scheduler
):
    from simstudy.store import read_warnings

    path = write_study(WARNS, "warns.py")
    store = tmp_path / "w.zarr"
    report = simstudy.run(path, store=store, scheduler=scheduler, workers=2)
    assert report.exit_code == 0
    ds = assert_store_consistent(store)
    counts = ds.warnings.values[0, :, 0]
    x0_negative = counts > 0
    assert 0 < x0_negative.sum() < 40
    assert set(counts.tolist()) == {0, 2}  # the same warning twice is counted twice
    records = read_warnings(store)
    assert len(records) == int(x0_negative.sum())
    assert all(r["category"] == "RuntimeWarning" for r in records)
    assert all("did not converge" in r["message"] for r in records)
    assert all(r["count"] == 2 for r in records)
    summary = simstudy.summarize(simstudy.open_results(store))
    rate = float(summary.warning_rate.sel({"n": 6, "method_name": "logmean"}))
    assert rate == pytest.approx(x0_negative.mean())
    # --warnings-as-errors: the same tasks fail, with the warning as the reason
    strict = tmp_path / "strict.zarr"
    report = simstudy.run(
        path, store=strict, scheduler=scheduler, workers=2, warnings_as_errors=True
    )
    assert report.exit_code == 3
    ds = assert_store_consistent(strict)
    np.testing.assert_array_equal(ds.status.values[0, :, 0] == 2, x0_negative)
    failures = read_failures(strict)
    assert {f["type"] for f in failures} == {"RuntimeWarning"}


def test_a_worker_whose_driver_died_while_it_started_exits(write_study, tmp_path):
    """The driver's pid travels to the worker: a worker that starts after its
    driver was killed (its parent is already init) still sees it and exits.
    Before, it read the parent pid itself after installing the study, got
    init's, and waited forever (left behind by the kill -9 test)."""
    import subprocess
    import sys
    import time

    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()  # a pid that is no longer our parent (nor running)
    code = (
        "import time, cloudpickle, simstudy.backends.worker as b, simstudy.declare.loader as l\n"
        f"study = l.load_study({str(tmp_path / 'study.py')!r})\n"
        f"b.install_worker('t', cloudpickle.dumps(study), {gone.pid})\n"
        "time.sleep(30)\n"
    )
    write_study(GOOD_STUDY)
    t0 = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-c", code], timeout=20, capture_output=True, text=True
    )
    # the watch's os._exit(1): no traceback, and long before the sleep's end
    assert proc.returncode == 1
    assert proc.stderr == ""
    assert time.monotonic() - t0 < 10
