"""`simstudy summarize STORE`: table, CSV, JSON, NetCDF; a partial store."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import xarray as xr
import zarr

import simstudy
from simstudy.cli import main
from tests.studies import GOOD_STUDY

TRUTH = GOOD_STUDY + "\nstudy.truth(estimate=0.0)\n"


@pytest.fixture
def store(tmp_path: Path, write_study) -> Path:  # type: ignore[no-untyped-def]
    path = write_study(TRUTH)
    out = tmp_path / "s.zarr"
    simstudy.run(path, store=out, scheduler="synchronous")
    return out


def test_table_lists_each_point_method_measure_with_mcse(store, capsys):
    assert main(["summarize", str(store), "--reference", "mean"]) == 0
    out = capsys.readouterr().out
    assert "n=5, eps=0.0" in out
    assert "n=10, eps=0.5" in out
    summary = simstudy.summarize(simstudy.open_results(store), reference="mean")
    bias = float(summary.sel({"n": 10, "eps": 0.5, "method_name": "median"}).bias)
    assert f"{bias:12.5g}" in out  # the table shows summarize's numbers
    assert "relprec" in out
    assert "not computed:" in out
    assert "coverage: no interval outputs declared" in out


@pytest.mark.parametrize("fmt", ["csv", "json", "netcdf"])
def test_files_hold_the_same_numbers(store, tmp_path, capsys, fmt):
    suffix = {"csv": ".csv", "json": ".json", "netcdf": ".nc"}[fmt]
    target = tmp_path / f"summary{suffix}"
    assert main(["summarize", str(store), "-o", str(target)]) == 0  # from suffix
    summary = simstudy.summarize(simstudy.open_results(store))
    expected = float(summary.sel({"n": 5, "eps": 0.0, "method_name": "mean"}).rmse)
    if fmt == "csv":
        rows = list(csv.DictReader(target.open()))
        got = [r for r in rows if r["method"] == "mean" and r["measure"] == "rmse"]
        assert float(got[0]["value"]) == expected
        # points x methods x (6 measures with truth, mae among them since
        # issue 18, + failure and warning rates)
        assert len(rows) == 4 * 2 * 8
    elif fmt == "json":
        data = json.loads(target.read_text())
        got = [
            r
            for r in data["measures"]
            if (r["n"], r["eps"], r["method"], r["measure"]) == (5, 0.0, "mean", "rmse")
        ]
        assert got[0]["value"] == expected
        assert "power" in data["skipped"]
    else:
        ds = xr.open_dataset(target)
        assert (
            float(ds.rmse.sel({"n": 5, "eps": 0.0, "method_name": "mean"})) == expected
        )
        assert "coverage" in json.loads(ds.attrs["skipped"])
        ds.close()


def test_a_partial_store_says_how_many_replicates_each_cell_has(store, capsys):
    zarr.open_array(store / "status", mode="r+")[0, 0, 2:, 0] = 0  # 2 pending
    assert main(["summarize", str(store)]) == 0
    out = capsys.readouterr().out
    assert "2  (0 failed, 2 pending)" in out


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--format", "netcdf"], "give it a name with -o"),
        (["--reference", "nope"], "unknown reference method 'nope'"),
        (["--alpha", "2"], "--alpha must be between 0 and 1"),
    ],
    ids=["netcdf-without-o", "unknown-reference", "alpha-out-of-range"],
)
def test_bad_summarize_arguments_exit_2(store, capsys, argv, expected):
    assert main(["summarize", str(store), *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ")
    assert expected in err
    assert "hint: " in err


def test_summarize_of_a_non_store_exits_2(tmp_path, capsys):
    assert main(["summarize", str(tmp_path)]) == 2
    assert "is not a simstudy store" in capsys.readouterr().err


def test_plan_counts_tasks_and_writes_nothing(
    tmp_path, write_study, capsys, monkeypatch
):
    path = write_study(TRUTH)
    monkeypatch.chdir(tmp_path)
    before = sorted(p.name for p in tmp_path.iterdir())
    assert main(["plan", str(path)]) == 0
    out = capsys.readouterr().out
    assert "tasks: 32 (0 done: " in out  # 4 points x 4 replicates x 2 methods
    assert "cube: (2, 2, 4, 2)" in out
    assert "nothing was written." in out
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    simstudy.run(path, store=tmp_path / "study.zarr", scheduler="synchronous")
    assert main(["plan", str(path), "--replicates", "10"]) == 0
    out = capsys.readouterr().out
    assert "tasks: 80 (32 done in " in out
    assert "48 to run" in out
