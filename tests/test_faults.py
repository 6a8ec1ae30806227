"""Faults on real worker processes: a worker that dies once, a task that kills
its worker every time (issue 4)."""

from __future__ import annotations

import textwrap

import numpy as np
import pytest

import simstudy
from simstudy.store import read_failures
from tests.helpers import assert_store_consistent, cube_digest

CRASHY = """
import os
from pathlib import Path
from simstudy import Study

study = Study("crashy", factors={"n": [5, 8]}, replicates=24, seed=3)

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
def study_file(tmp_path):
    path = tmp_path / "crashy.py"
    path.write_text(textwrap.dedent(CRASHY))
    return path


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
def test_a_hung_task_times_out_and_the_study_goes_on(tmp_path, scheduler):
    path = tmp_path / "hangs.py"
    path.write_text(textwrap.dedent(HANGS))
    store = tmp_path / "s.zarr"
    report = simstudy.run(
        path, store=store, scheduler=scheduler, workers=2, task_timeout=0.3
    )
    assert report.exit_code == 3
    ds = assert_store_consistent(store)
    x0_big = ds.status.sel({"method": "stuck"}).values == 2
    assert 0 < x0_big.sum() < 12  # some hung, some did not
    assert (ds.status.sel({"method": "mean"}).values == 1).all()
    failures = read_failures(store)
    assert {f["method"] for f in failures} == {"stuck"}
    assert all(f["type"] == "TaskTimeout" for f in failures)
    assert all("--task-timeout 0.3 s" in f["message"] for f in failures)
