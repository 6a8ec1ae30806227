"""`simstudy summarize STORE`: table, CSV, JSON, NetCDF; a partial store."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import xarray as xr
import zarr

import simstudy
from simstudy.analysis.records import pair
from simstudy.cli import main
from tests.helpers import reseal
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
        # points x methods x (7 measures with truth, mae and median_bias among
        # them, + failure and warning rates + the ledger's 6 kinds)
        assert len(rows) == 4 * 2 * (7 + 2 + 6)
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
    reseal(store)
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


def test_latex_is_booktabs_with_value_and_mcse_in_parentheses(store, capsys):
    argv = ["summarize", str(store), "--format", "latex", "--measures", "bias,mae"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0] == r"\begin{tabular}{lllrrr}"
    assert lines[1:4] == [
        r"\toprule",
        r"n & eps & method & replicates & bias & mae \\",
        r"\midrule",
    ]
    assert lines[-2:] == [r"\bottomrule", r"\end{tabular}"]
    assert len(lines) == 4 + 4 * 2 + 2  # one row per design point x method
    res = simstudy.summarize(simstudy.open_results(store))
    cell = res.sel({"n": 10, "eps": 0.5, "method_name": "median"})
    row = rf"10 & 0.5 & median & 4 & {pair(float(cell.bias), float(cell.bias_mcse))}"
    assert row in out


def test_markdown_long_and_wide(store, capsys):
    assert main(["summarize", str(store), "--format", "markdown"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith(
        "| n | eps | method | replicates | mean | bias | empse |"
    )
    assert lines[1].startswith("| --- | --- | --- | ---: | ---: |")
    assert len(lines) == 2 + 4 * 2
    argv = ["summarize", str(store), "--format", "markdown", "--wide"]
    assert main([*argv, "--measures", "bias,rmse"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "| n | eps | measure | mean | median |"
    assert len(lines) == 2 + 4 * 2  # design points x measures


def test_pair_rounds_where_the_mcse_second_digit_falls():
    assert pair(0.123456, 0.0123) == "0.123 (0.012)"
    assert pair(23.44, 5.6) == "23.4 (5.6)"
    assert pair(234.4, 56.0) == "234 (56)"
    assert pair(0.95, 0.0) == "0.95"
    assert pair(1.5, None) == "1.5"


def test_wide_csv_has_a_value_and_mcse_column_per_method(store, tmp_path):
    target = tmp_path / "w.csv"
    assert main(["summarize", str(store), "--wide", "-o", str(target)]) == 0
    rows = list(csv.DictReader(target.open()))
    assert list(rows[0]) == [
        "n",
        "eps",
        "measure",
        "mean",
        "mean_mcse",
        "median",
        "median_mcse",
    ]
    res = simstudy.summarize(simstudy.open_results(store))
    got = [r for r in rows if (r["n"], r["eps"], r["measure"]) == ("5", "0.0", "mse")]
    cell = res.sel({"n": 5, "eps": 0.0})
    assert float(got[0]["median"]) == float(cell.mse.sel(method_name="median"))
    assert float(got[0]["mean_mcse"]) == float(cell.mse_mcse.sel(method_name="mean"))


def test_measures_cases_level_and_reference_reach_summarize(store, tmp_path):
    zarr.open_array(store / "status", mode="r+")[0, 0, 1, 0] = 2  # a failure
    reseal(store)
    target = tmp_path / "s.json"
    argv = ["summarize", str(store), "-o", str(target), "--cases", "complete"]
    argv += ["--measures", "bias,bias_diff", "--reference", "mean", "--level", "0.9"]
    assert main(argv) == 0
    data = json.loads(target.read_text())
    assert data["cases"] == "complete"
    assert {r["measure"] for r in data["measures"]} == {"bias", "bias_diff"}
    first = [r for r in data["measures"] if (r["n"], r["eps"]) == (5, 0.0)]
    assert {r["n_dropped"] for r in first} == {0, 1}  # median loses replicate 1
    res = simstudy.summarize(
        simstudy.open_results(store), cases="complete", reference="mean"
    )
    want = float(res.bias_diff.sel({"n": 5, "eps": 0.0, "method_name": "median"}))
    got = [r["value"] for r in first if r["method"] == "median"]
    assert want in got


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--measures", "bias,nope"], "unknown measure 'nope'; the measures are: mean"),
        (["--cases", "all"], "invalid choice: 'all'"),
        (["--level", "1.5"], "--level must be between 0 and 1"),
        (["--wide", "--format", "json"], "--wide lays out a table"),
        (["--format", "html"], "invalid choice: 'html'"),
    ],
    ids=["unknown-measure", "cases", "level", "wide-json", "format"],
)
def test_bad_summarize_options_exit_2_with_a_hint(store, capsys, argv, expected):
    assert main(["summarize", str(store), *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ")
    assert expected in err
    assert len(err.strip().splitlines()) == 2  # error + hint
