"""Issue 18 measures: array outputs, Wald fallback, new measures, cases,
user-defined measures, blocks; each against a plain numpy computation."""

from __future__ import annotations

import math
from pathlib import Path
from statistics import NormalDist
from typing import Any

import numpy as np
import pytest
import xarray as xr
from scipy import stats

import simstudy
from simstudy.analysis.records import to_records
from simstudy.analysis.summary import Measure, summarize
from simstudy.cli import main
from simstudy.errors import StudyError, UsageError
from tests.studies import write_study_file
from tests.test_summary import EST, SE, STATUS, THETA, _cube

ARRAY_STUDY = """
import numpy as np
from simstudy import Study

study = Study("arr", factors={"n": [10, 20]}, replicates=8, seed=3)
TRUTH

@study.data
def gen(rng, n):
    return rng.normal(0.0, 1.0, size=(n, 3)) + np.array([0.0, 1.0, 2.0])

@study.method(se="se")
def mean(x):
    return {"estimate": x.mean(axis=0), "se": x.std(axis=0, ddof=1) / np.sqrt(len(x))}

@study.method(se="se")
def median(x):
    s = 1.25 * x.std(axis=0, ddof=1) / np.sqrt(len(x))
    return {"estimate": np.median(x, axis=0), "se": s}
"""


def _ok(i, j):
    return STATUS[i, :, j] == 1


def _vals(i: int, j: int) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any], float]:
    ok = _ok(i, j)
    return EST[i, ok, j], SE[i, ok, j], THETA[[10, 20][i]]


def _run_array(tmp_path: Path, truth: str) -> Path:
    path = write_study_file(tmp_path, ARRAY_STUDY.replace("TRUTH", truth), "arr.py")
    store = tmp_path / "arr.zarr"
    simstudy.run(path, store=store, scheduler="synchronous")
    return store


@pytest.mark.parametrize(
    "truth",
    [
        "study.truth(estimate=[0.0, 1.0, 2.0])",
        "@study.truth\ndef truth(n):\n    return {'estimate': np.arange(3.0)}",
    ],
    ids=["values", "function"],
)
def test_array_output_and_truth_summarised_element_by_element(tmp_path, capsys, truth):
    store = _run_array(tmp_path, truth)
    cube = simstudy.open_results(store)
    res = summarize(cube, reference="mean")
    assert res["bias"].dims == ("n", "method_name", "estimate_dim_0")
    x = cube["estimate"].sel({"n": 20, "method_name": "median"}).values  # (rep, 3)
    theta = np.arange(3.0)
    got = res.sel({"n": 20, "method_name": "median"})
    np.testing.assert_allclose(got["bias"], x.mean(0) - theta, rtol=1e-12)
    np.testing.assert_allclose(got["mse"], ((x - theta) ** 2).mean(0), rtol=1e-12)
    np.testing.assert_allclose(got["empse"], x.std(0, ddof=1), rtol=1e-12)
    s = cube["se"].sel({"n": 20, "method_name": "median"}).values
    np.testing.assert_allclose(got["modelse"], np.sqrt((s**2).mean(0)), rtol=1e-12)
    # the truth is 0 for element 0 only: relbias there is skipped, with why
    assert np.isnan(got["relbias"][0])
    assert np.isfinite(got["relbias"][1:]).all()
    assert "the truth is 0" in res.attrs["skipped"]["relbias"]
    assert {r["estimate_dim_0"] for r in to_records(res)} == {0, 1, 2}
    assert main(["summarize", str(store)]) == 0
    assert "n=20, estimate_dim_0=2" in capsys.readouterr().out
    assert main(["report", str(store), "-o", str(tmp_path / "r.html")]) == 0


def test_bad_truths_are_refused():
    study = simstudy.Study("t", factors={"n": [1]}, replicates=1, seed=1)
    with pytest.raises(StudyError, match="is not a number or an array of numbers"):
        study.truth(estimate="zero")
    with pytest.raises(UsageError, match=r"the truth of 'estimate' has shape \(2,\)"):
        summarize(_cube(), truth=[1.0, 2.0])


def test_wald_coverage_power_from_se_with_level_and_null():
    level, null = 0.9, 0.5
    res = summarize(_cube(), se="se", level=level, null=null)
    z = NormalDist().inv_cdf(1 - (1 - level) / 2)
    z_test = NormalDist().inv_cdf(1 - 0.05 / 2)
    for i in range(2):
        for j in range(2):
            x, s, th = _vals(i, j)
            lo, hi = x - z * s, x + z * s
            cell = res.isel(n=i, method_name=j)
            cov = np.mean((lo <= th) & (th <= hi))
            assert float(cell["coverage"]) == pytest.approx(cov, rel=1e-12)
            bec = np.mean((lo <= x.mean()) & (x.mean() <= hi))
            assert float(cell["becoverage"]) == pytest.approx(bec, rel=1e-12)
            pw = np.mean(np.abs((x - null) / s) >= z_test)
            assert float(cell["power"]) == pytest.approx(pw, rel=1e-12)
            mcse = math.sqrt(pw * (1 - pw) / len(x))
            assert float(cell["power_mcse"]) == pytest.approx(mcse, rel=1e-12)
            w = hi - lo
            assert float(cell["ci_width"]) == pytest.approx(w.mean(), rel=1e-12)
            w_mcse = w.std(ddof=1) / math.sqrt(len(w))
            assert float(cell["ci_width_mcse"]) == pytest.approx(w_mcse, rel=1e-12)
    assert res.attrs["intervals"] == {"a": "Wald from se", "b": "Wald from se"}


def test_wald_t_quantile_from_a_number_or_an_output():
    cube = _cube().copy(deep=True)
    cube["dof"] = xr.full_like(cube["se"], 4.0)
    by_number = summarize(cube, se="se", df=4)
    by_output = summarize(cube, se="se", df="dof")
    q = stats.t.ppf(0.975, 4)
    x, s, th = _vals(1, 0)
    cov = np.mean((x - q * s <= th) & (th <= x + q * s))
    for res in (by_number, by_output):
        got = float(res["coverage"].isel(n=1, method_name=0))
        assert got == pytest.approx(cov, rel=1e-12)
        assert float(res["ci_width"].isel(n=1, method_name=0)) == pytest.approx(
            np.mean(2 * q * s), rel=1e-12
        )


def test_declared_interval_wins_over_wald():
    res = summarize(_cube(), se="se", ci=("lo", "hi"), level=0.5)
    x, s, th = _vals(0, 0)  # lo, hi are +-1.96 se: the level is not used
    cov = np.mean((x - 1.96 * s <= th) & (th <= x + 1.96 * s))
    assert float(res["coverage"].isel(n=0, method_name=0)) == pytest.approx(cov)
    assert res.attrs["intervals"]["a"] == "declared: ['lo', 'hi']"


def test_mae_matches_numpy():
    res = summarize(_cube())
    for i in range(2):
        for j in range(2):
            x, _, th = _vals(i, j)
            e = np.abs(x - th)
            cell = res.isel(n=i, method_name=j)
            assert float(cell["mae"]) == pytest.approx(e.mean(), rel=1e-12)
            mcse = e.std(ddof=1) / math.sqrt(len(e))
            assert float(cell["mae_mcse"]) == pytest.approx(mcse, rel=1e-12)


def test_paired_measures_against_reference_match_numpy():
    res = summarize(_cube(), reference="a")
    for i in range(2):
        both = _ok(i, 0) & _ok(i, 1)
        a, b = EST[i, both, 0], EST[i, both, 1]
        th, n = THETA[[10, 20][i]], int(both.sum())
        cell = res.isel(n=i).sel(method_name="b")
        d = b - a
        assert float(cell["bias_diff"]) == pytest.approx(d.mean(), rel=1e-12)
        assert float(cell["bias_diff_mcse"]) == pytest.approx(
            d.std(ddof=1) / math.sqrt(n), rel=1e-12
        )
        ea, eb = (a - th) ** 2, (b - th) ** 2
        ratio = eb.mean() / ea.mean()
        cov = np.cov(eb, ea, ddof=1)
        rel = (
            cov[0, 0] / eb.mean() ** 2
            + cov[1, 1] / ea.mean() ** 2
            - 2 * cov[0, 1] / (ea.mean() * eb.mean())
        )
        assert float(cell["mse_ratio"]) == pytest.approx(ratio, rel=1e-12)
        mcse = ratio * math.sqrt(max(rel, 0.0) / n)
        assert float(cell["mse_ratio_mcse"]) == pytest.approx(mcse, rel=1e-12)
        r = np.corrcoef(a, b)[0, 1]
        assert float(cell["corr"]) == pytest.approx(r, rel=1e-12)
        if n > 3:
            assert float(cell["corr_mcse"]) == pytest.approx(
                (1 - r**2) / math.sqrt(n - 3), rel=1e-12
            )
        ref = res.isel(n=i).sel(method_name="a")
        assert float(ref["bias_diff"]) == 0.0
        assert float(ref["mse_ratio"]) == pytest.approx(1.0)
        assert float(ref["corr"]) == pytest.approx(1.0)


def test_complete_cases_use_only_replicates_every_method_has():
    avail = summarize(_cube())
    res = summarize(_cube(), cases="complete")
    assert res.attrs["cases"] == "complete"
    assert "n_dropped" not in avail
    # n=10: replicate 3 failed for a, replicate 4 pending for b
    assert res["n_dropped"].values.tolist() == [[1, 1], [0, 0]]
    assert res["n_ok"].values.tolist() == avail["n_ok"].values.tolist()
    both = _ok(0, 0) & _ok(0, 1)
    for j in range(2):
        x = EST[0, both, j]
        cell = res.isel(n=0, method_name=j)
        assert float(cell["mean"]) == pytest.approx(x.mean(), rel=1e-12)
        assert float(cell["empse"]) == pytest.approx(x.std(ddof=1), rel=1e-12)
        assert float(cell["mse"]) == pytest.approx(np.mean((x - 1.0) ** 2), rel=1e-12)
    xr.testing.assert_identical(
        res.isel(n=1).drop_vars("n_dropped"),
        avail.isel(n=1).assign_attrs(res.attrs),
    )


def test_truth_zero_everywhere_says_why_relbias_is_missing():
    res = summarize(_cube(), truth=0.0)
    assert np.isnan(res["relbias"]).all()
    assert "the truth is 0" in res.attrs["skipped"]["relbias"]


def test_custom_measure_with_jackknife_mcse_matches_a_loop():
    def q75(x, truth):
        return np.nanquantile(x, 0.75, axis=-1)

    res = summarize(_cube(), custom={"q75": q75})
    x, _, _ = _vals(1, 1)
    n = len(x)
    assert float(res["q75"].isel(n=1, method_name=1)) == pytest.approx(
        np.quantile(x, 0.75)
    )
    loo = np.array([np.quantile(np.delete(x, k), 0.75) for k in range(n)])
    jack = math.sqrt((n - 1) / n * np.sum((loo - loo.mean()) ** 2))
    got = float(res["q75_mcse"].isel(n=1, method_name=1))
    assert got == pytest.approx(jack, rel=1e-12)
    # the jackknife of the mean is the usual sd / sqrt(n)
    mean = summarize(_cube(), measures={"avg": lambda x, t: np.nanmean(x, axis=-1)})
    np.testing.assert_allclose(mean["avg_mcse"], mean["mean_mcse"], rtol=1e-10)


def test_custom_measure_per_cell_with_truth_and_own_mcse():
    spec = Measure(
        lambda x, t: np.max(np.abs(x - t)),
        mcse=lambda x, t: 0.0,
        vectorized=False,
    )
    res = summarize(_cube(), custom={"maxerr": spec}, measures=["bias", "maxerr"])
    x, _, th = _vals(0, 0)
    cell = res.isel(n=0, method_name=0)
    assert float(cell["maxerr"]) == np.max(np.abs(x - th))
    assert float(cell["maxerr_mcse"]) == 0.0
    kept = {str(v) for v in res.data_vars}
    assert kept == {
        "n_ok",
        "n_failed",
        "n_pending",
        "bias",
        "bias_mcse",
        "maxerr",
        "maxerr_mcse",
    }


def test_blocks_give_the_same_summary_as_one_read(tmp_path):
    store = _run_array(tmp_path, "study.truth(estimate=[0.0, 1.0, 2.0])")
    cube = simstudy.open_results(store)
    whole = summarize(cube, reference="median", cases="complete")
    # 816 bytes per design point, 136 per point x element: blocks of two
    # elements (then one), of one design point
    for budget in (300, 500):
        parts = summarize(
            cube, reference="median", cases="complete", block_bytes=budget
        )
        xr.testing.assert_identical(parts, whole)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"measures": ["bias", "nope"]}, "unknown measure 'nope'; the measures are: "),
        ({"cases": "all"}, "cases must be one of 'available', 'complete'"),
        ({"level": 1.0}, "level must be between 0 and 1"),
        ({"alpha": 0.0}, "alpha must be between 0 and 1"),
        ({"df": -1}, "df must be a positive number or an output name"),
        ({"se": "se", "df": "nodf"}, "unknown output 'nodf'"),
        ({"custom": {"bias": np.mean}}, "has the name of a built-in measure"),
        ({"custom": {"q": 3}}, "not a function or Measure"),
        (
            {"custom": {"q": lambda x, t: np.zeros(2)}},
            r"measure 'q' returned shape \(2,\)",
        ),
    ],
    ids=[
        "measure",
        "cases",
        "level",
        "alpha",
        "df",
        "df-output",
        "custom-name",
        "custom-type",
        "custom-shape",
    ],
)
def test_bad_arguments_raise_usage_errors(kwargs, match):
    with pytest.raises(UsageError, match=match) as info:
        summarize(_cube(), **kwargs)
    assert info.value.hint


def test_end_to_end_declared_se_gives_wald_measures(write_study, tmp_path):
    path = write_study(
        """
        import numpy as np
        from simstudy import Study

        study = Study("w", factors={"n": [15]}, replicates=50, seed=5)
        study.truth(est=0.0)

        @study.data
        def gen(rng, n):
            return rng.standard_normal(n)

        @study.method(estimate="est", se="se")
        def mean(x):
            return {"est": x.mean(), "se": x.std(ddof=1) / np.sqrt(len(x))}
        """,
        "w.py",
    )
    simstudy.run(path, store=tmp_path / "w.zarr", scheduler="synchronous")
    cube = simstudy.open_results(tmp_path / "w.zarr")
    res = summarize(cube, df=14).isel(n=0, method_name=0)
    x = cube["est"].values[0, :, 0]
    s = cube["se"].values[0, :, 0]
    q = stats.t.ppf(0.975, 14)
    assert float(res["coverage"]) == pytest.approx(np.mean(np.abs(x) <= q * s))
    assert float(res["power"]) == pytest.approx(np.mean(np.abs(x / s) >= q))


def test_reference_compares_methods_that_declare_other_outputs():
    cube = _cube().copy(deep=True)
    cube.attrs["simstudy"] = {
        **cube.attrs["simstudy"],
        "measures": {"a": {"ci": ["lo", "hi"]}},
    }
    res = summarize(cube, reference="a")
    assert res.attrs["outputs"]["b"] == {"estimate": "estimate"}
    assert np.isnan(float(res["coverage"].isel(n=0).sel(method_name="b")))
    both = _ok(0, 0) & _ok(0, 1)
    d = EST[0, both, 1] - EST[0, both, 0]
    got = float(res["bias_diff"].isel(n=0).sel(method_name="b"))
    assert got == pytest.approx(d.mean(), rel=1e-12)
    assert "relprec" not in res.attrs["skipped"]


def test_a_cell_without_ok_replicates_is_nan_without_warnings():
    cube = _cube().copy(deep=True)  # _cube() wraps shared module arrays
    cube["status"][0, :, 1] = 2  # every replicate of b at n=10 failed
    cube["estimate"][1, 2, 0] = np.nan  # a NaN estimate is left out
    res = summarize(
        cube,
        se="se",
        reference="a",
        cases="complete",
        custom={"q": lambda x, t: np.nanmax(x, axis=-1)},
    )
    dead = res.isel(n=0)
    for name in ("mean", "bias", "mae", "coverage", "ci_width", "power", "corr", "q"):
        assert np.isnan(dead[name]).all(), name
    assert res["n_nonfinite"].values.tolist() == [[0, 0], [1, 0]]
    assert "n_nonfinite" not in summarize(_cube())  # shown only when some
    x = np.delete(EST[1, :, 0], 2)
    got = float(res["mean"].isel(n=1, method_name=0))
    assert got == pytest.approx(x.mean(), rel=1e-12)
