"""A library-version change never mixes versions in one cube without a word."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zarr

import simstudy
from simstudy.cli import main
from simstudy.errors import StoreError
from simstudy.running.recompute import recheck_sample
from tests.helpers import assert_store_consistent, cube_digest, pretend_versions, reseal

# `shifted` stands for a method whose numbers a new library version changes
# at one design point only (the last): the env var is not in the fingerprint
DRIFT = """
import os

import numpy as np
from simstudy import Study

study = Study("drift", factors={"n": [5, 8, 11]}, replicates=6, seed=3)


@study.data
def gen(rng, n):
    return rng.standard_normal(n)


@study.method
def mean(x):
    return {"estimate": float(x.mean())}


@study.method
def shifted(x, n):
    shift = float(os.environ.get("DRIFT_SHIFT", "0")) if n == 11 else 0.0
    return {"estimate": float(x.mean()) + shift}
"""


def _meta(store: Path) -> Any:
    return json.loads((store / "zarr.json").read_text())["attributes"]["simstudy"]


def _run(path: Path, store: Path, **kw: Any) -> Any:
    return simstudy.run(path, store=store, scheduler="synchronous", **kw)


def test_a_change_showing_only_at_the_last_point_is_refused_then_recorded(
    tmp_path, write_study, monkeypatch, capsys
):
    path, store = write_study(DRIFT), tmp_path / "s.zarr"
    monkeypatch.delenv("DRIFT_SHIFT", raising=False)
    _run(path, store)
    zarr.open_array(store / "status", mode="r+")[0, 3:, :] = 0  # n=5 left to do
    reseal(store)
    pretend_versions(store, numpy="1.0.0")
    before = cube_digest(store)
    monkeypatch.setenv("DRIFT_SHIFT", "1")
    with pytest.raises(
        StoreError,
        match=r"numpy 1\.0\.0 -> .* no longer come out the same "
        r"\(\{'n': 11\}, replicate 0, method 'shifted', output\(s\) estimate; "
        r"6 of 30 task\(s\) recomputed differ\)",
    ):
        _run(path, store)
    assert cube_digest(store) == before  # refused: nothing changed
    assert _meta(store)["versions"]["numpy"] == "1.0.0"
    assert "version_log" not in _meta(store)
    run = ["run", str(path), "--store", str(store), "--scheduler", "synchronous"]
    assert main(run) == 2
    capsys.readouterr()

    report = _run(path, store, accept_version_change=True)
    assert report.computed == 3 * 2
    assert "6 of 30 recomputed task(s) differ" in report.warnings[0]
    assert_store_consistent(store)
    meta = _meta(store)
    assert meta["versions"]["numpy"] == np.__version__
    (entry,) = meta["version_log"]
    assert entry["from"] == {"numpy": "1.0.0"}
    assert entry["to"] == {"numpy": np.__version__}
    assert entry["finished_before"] == 3 * 6 * 2 - 3 * 2
    assert (entry["checked"], entry["differ"], entry["decision"]) == (30, 6, "accepted")
    started = simstudy.open_results(store)["started"].values
    assert (started > entry["epoch"]).sum() == 3 * 2  # the tasks of the new version

    assert main(["status", str(store)]) == 0
    out = capsys.readouterr().out
    assert f"versions: 30 task(s) finished before {entry['at']}" in out
    assert "computed with numpy 1.0.0, later ones with numpy" in out
    assert "the cube mixes numbers from both versions" in out
    html = simstudy.write_report(store, tmp_path / "r.html").read_text()
    assert "the cube mixes numbers from both versions" in html

    assert _run(path, store).warnings == ()  # same versions: nothing to check
    pretend_versions(store, numpy="9.9.9")  # another change: checked again
    monkeypatch.setenv("DRIFT_SHIFT", "2")
    with pytest.raises(StoreError, match="no longer come out the same"):
        _run(path, store)
    assert len(_meta(store)["version_log"]) == 1


def test_an_identical_change_is_recorded_and_shown(tmp_path, write_study, capsys):
    path, store = write_study(DRIFT), tmp_path / "s.zarr"
    _run(path, store)
    pretend_versions(store, numpy="1.0.0")
    report = _run(path, store)
    assert "36 finished task(s) recomputed bit for bit identical" in report.warnings[0]
    (entry,) = _meta(store)["version_log"]
    assert (entry["decision"], entry["finished_before"]) == ("identical", 36)
    assert main(["status", str(store)]) == 0
    assert "36 finished task(s) were recomputed bit for bit" in capsys.readouterr().out


def test_the_recheck_sample_spreads_over_the_finished_replicates_of_each_method():
    status = np.zeros((6, 3), np.int8)
    status[[1, 2, 4], 0] = 1  # method 0: finished 1, 2, 4
    status[3, 1] = 1  # method 1: one finished; method 2: none
    status[5, 0] = 2  # failed: never rechecked
    assert recheck_sample(status) == [(1, 0), (3, 1), (4, 0)]
    assert recheck_sample(status, per_cell=3) == [(1, 0), (2, 0), (3, 1), (4, 0)]


def test_a_large_design_rechecks_two_tasks_per_point_and_method(
    tmp_path, write_study, monkeypatch
):
    """With more cells than RECHECK_TOTAL / 2, each gets the minimum: the
    first and the last finished replicate."""
    monkeypatch.setattr(simstudy.running.recompute, "RECHECK_TOTAL", 4)
    path, store = write_study(DRIFT), tmp_path / "s.zarr"
    _run(path, store)
    pretend_versions(store, numpy="1.0.0")
    report = _run(path, store)
    assert "12 finished task(s) recomputed" in report.warnings[0]  # 3 x 2 x 2
