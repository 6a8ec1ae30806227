"""summarize: hand-computed measures, analytic checks, counts, errors, end to end."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import xarray as xr

import simstudy
from simstudy.analysis.summary import summarize
from simstudy.errors import UsageError
from tests.conftest import WriteStudy

NAN = np.nan
# dims (n, replicate, method); methods "a", "b"; truth 1.0 at n=10, 2.0 at n=20
EST = np.array(
    [
        [[1.0, 1.5], [2.0, 0.5], [0.5, 1.0], [NAN, 2.0], [1.5, NAN]],
        [[2.5, 2.0], [1.0, 3.0], [2.0, 1.5], [3.5, 2.5], [2.0, 1.0]],
    ]
)
STATUS = np.ones(EST.shape, dtype=np.int8)
STATUS[0, 3, 0] = 2  # failed
STATUS[0, 4, 1] = 0  # pending
SE = np.abs(EST) * 0.3 + 0.2
P = np.array(
    [
        [[0.01, 0.2], [0.04, 0.06], [0.5, 0.001], [NAN, 0.03], [0.9, NAN]],
        [[0.02, 0.7], [0.3, 0.01], [0.049, 0.05], [0.01, 0.02], [0.8, 0.6]],
    ]
)
THETA = {10: 1.0, 20: 2.0}


def _cube(with_truth: bool = True) -> xr.Dataset:
    dims = ("n", "replicate", "method_name")
    meta: dict[str, Any] = {"factor_order": ["n"]}
    if with_truth:
        meta["truth"] = {
            json.dumps({"n": k}, sort_keys=True): {"estimate": v}
            for k, v in THETA.items()
        }
    return xr.Dataset(
        {
            "estimate": (dims, EST),
            "se": (dims, SE),
            "lo": (dims, EST - 1.96 * SE),
            "hi": (dims, EST + 1.96 * SE),
            "p": (dims, P),
            "status": (dims, STATUS),
        },
        coords={"n": [10, 20], "replicate": np.arange(5), "method_name": ["a", "b"]},
        attrs={"simstudy": meta},
    )


def _cell(i: int, j: int) -> dict[str, float]:
    """Every measure for one cell, computed directly with plain numpy."""
    ok = STATUS[i, :, j] == 1
    x, s, p = EST[i, ok, j], SE[i, ok, j], P[i, ok, j]
    lo, hi = x - 1.96 * s, x + 1.96 * s
    th = THETA[[10, 20][i]]
    n = len(x)
    emp = float(np.std(x, ddof=1))
    mse = float(np.mean((x - th) ** 2))
    mse_mcse = math.sqrt(np.sum(((x - th) ** 2 - mse) ** 2) / (n * (n - 1)))
    mod = math.sqrt(np.mean(s**2))
    var_v = float(np.var(s**2, ddof=1))
    cov = float(np.mean((lo <= th) & (th <= hi)))
    bec = float(np.mean((lo <= x.mean()) & (x.mean() <= hi)))
    pw = float(np.mean(p < 0.05))
    return {
        "n_ok": n,
        "mean": x.mean(),
        "mean_mcse": emp / math.sqrt(n),
        "bias": x.mean() - th,
        "bias_mcse": emp / math.sqrt(n),
        "relbias": (x.mean() - th) / th,
        "relbias_mcse": emp / math.sqrt(n) / th,
        "empse": emp,
        "empse_mcse": emp / math.sqrt(2 * (n - 1)),
        "mse": mse,
        "mse_mcse": mse_mcse,
        "rmse": math.sqrt(mse),
        "rmse_mcse": mse_mcse / (2 * math.sqrt(mse)),
        "modelse": mod,
        "modelse_mcse": math.sqrt(var_v / (4 * n * mod**2)),
        "relerr_modelse": 100 * (mod / emp - 1),
        "relerr_modelse_mcse": 100
        * (mod / emp)
        * math.sqrt(var_v / (4 * n * mod**4) + 1 / (2 * (n - 1))),
        "coverage": cov,
        "coverage_mcse": math.sqrt(cov * (1 - cov) / n),
        "becoverage": bec,
        "becoverage_mcse": math.sqrt(bec * (1 - bec) / n),
        "power": pw,
        "power_mcse": math.sqrt(pw * (1 - pw) / n),
    }


def _full(cube: xr.Dataset | None = None, **kw: Any) -> xr.Dataset:
    return summarize(
        _cube() if cube is None else cube, se="se", ci=("lo", "hi"), p="p", **kw
    )


def test_dims_and_variables() -> None:
    res = _full(reference="a")
    assert res["mean"].dims == ("n", "method_name")
    names = "mean bias relbias empse mse rmse modelse relerr_modelse"
    names += " coverage becoverage power relprec failure_rate"
    for m in names.split():
        assert m in res
        assert f"{m}_mcse" in res
    # this hand-made cube has no per-task warning counts
    assert list(res.attrs["skipped"]) == ["warning_rate"]


@pytest.mark.parametrize(("i", "j"), [(0, 0), (0, 1), (1, 0), (1, 1)])
def test_every_measure_matches_plain_numpy(i: int, j: int) -> None:
    res = _full().isel(n=i, method_name=j)
    for name, value in _cell(i, j).items():
        assert float(res[name]) == pytest.approx(value, rel=1e-12), name


def test_hand_computed_first_cell() -> None:
    res = _full().sel({"n": 10, "method_name": "a"})
    # ok estimates 1, 2, 0.5, 1.5: mean 1.25, SS 1.25, var 5/12
    assert float(res["mean"]) == pytest.approx(1.25)
    assert float(res["bias"]) == pytest.approx(0.25)
    assert float(res["empse"]) == pytest.approx(math.sqrt(5 / 12))
    assert float(res["mse"]) == pytest.approx((0 + 1 + 0.25 + 0.25) / 4)
    assert float(res["power"]) == pytest.approx(0.5)  # 0.01, 0.04 of 4


def test_counts_ignore_failed_and_pending() -> None:
    res = _full()
    assert res["n_ok"].dtype == np.int64
    assert res["n_ok"].values.tolist() == [[4, 4], [5, 5]]
    assert res["n_failed"].values.tolist() == [[1, 0], [0, 0]]
    assert res["n_pending"].values.tolist() == [[0, 1], [0, 0]]


def test_relprec_uses_paired_ok_replicates() -> None:
    res = _full(reference="a").sel({"n": 10})
    both = (STATUS[0, :, 0] == 1) & (STATUS[0, :, 1] == 1)  # reps 0, 1, 2
    a, b = EST[0, both, 0], EST[0, both, 1]
    ratio2 = (np.std(a, ddof=1) / np.std(b, ddof=1)) ** 2
    rho = np.corrcoef(a, b)[0, 1]
    rp = res.sel({"method_name": "b"})
    assert float(rp["relprec"]) == pytest.approx(100 * (ratio2 - 1))
    mcse = 200 * ratio2 * math.sqrt((1 - rho**2) / (len(a) - 1))
    assert float(rp["relprec_mcse"]) == pytest.approx(mcse)
    assert float(res.sel({"method_name": "a"})["relprec"]) == pytest.approx(0.0)


def test_truth_argument_overrides_attrs() -> None:
    res = summarize(_cube(with_truth=False), truth={"estimate": 1.0})
    x = EST[1, :, 0]
    assert float(res["bias"].sel({"n": 20, "method_name": "a"})) == pytest.approx(
        x.mean() - 1.0
    )
    res0 = summarize(_cube(), truth=0.0)
    assert np.isnan(res0["relbias"]).all()
    assert np.isfinite(res0["bias"]).all()


def test_no_truth_skips_bias_measures() -> None:
    res = summarize(_cube(with_truth=False), ci=("lo", "hi"))
    for m in ("bias", "relbias", "mse", "rmse", "coverage"):
        assert m not in res
        assert f"{m}_mcse" not in res
        assert "truth" in res.attrs["skipped"][m]
    assert "becoverage" in res
    assert set(res.attrs["skipped"]) >= {"modelse", "power", "relprec"}


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"estimate": "nope"}, "unknown output 'nope'"),
        ({"se": "sd"}, "unknown output 'sd'"),
        ({"ci": ("lo", "upper")}, "unknown output 'upper'"),
        ({"p": "pval"}, "unknown output 'pval'"),
        ({"reference": "c"}, "unknown reference method 'c'"),
    ],
    ids=["estimate", "se", "ci", "p", "reference"],
)
def test_usage_errors(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(UsageError, match=match) as info:
        summarize(_cube(), **kwargs)
    assert info.value.hint


def test_analytic_large_simulation() -> None:
    reps, n = 20000, 25
    rng = np.random.default_rng(12345)
    data = rng.standard_normal((reps, n))
    mean = data.mean(axis=1)
    se = data.std(axis=1, ddof=1) / math.sqrt(n)
    t975 = 2.0638985616280205  # t quantile, 24 df
    z = mean * math.sqrt(n)  # known sigma = 1
    p = np.array([math.erfc(abs(v) / math.sqrt(2)) for v in z])
    dims = ("n", "replicate", "method_name")

    def var(a: np.ndarray[Any, Any]) -> tuple[tuple[str, ...], Any]:
        return dims, a.reshape(1, reps, 1)

    cube = xr.Dataset(
        {
            "estimate": var(mean),
            "se": var(se),
            "lo": var(mean - t975 * se),
            "hi": var(mean + t975 * se),
            "p": var(p),
            "status": var(np.ones(reps, dtype=np.int8)),
        },
        coords={"n": [n], "replicate": np.arange(reps), "method_name": ["m"]},
    )
    res = summarize(cube, truth=0.0, se="se", ci=("lo", "hi"), p="p").isel(
        n=0, method_name=0
    )

    def within(name: str, target: float) -> None:
        gap = abs(float(res[name]) - target)
        assert gap < 3 * float(res[f"{name}_mcse"]), name

    within("empse", 0.2)
    within("bias", 0.0)
    within("mse", 0.04)
    within("coverage", 0.95)
    within("power", 0.05)
    within("relerr_modelse", 100 * (math.sqrt(0.04) / 0.2 - 1) + 0.0)


def test_end_to_end_with_stored_truth(write_study: WriteStudy, tmp_path: Path) -> None:
    study = write_study(
        """
            import numpy as np
            from simstudy import Study

            study = Study("tiny", factors={"mu": [0.0, 2.0]}, replicates=30, seed=7)

            @study.data
            def gen(rng, mu):
                return rng.normal(mu, 1.0, size=10)

            @study.method
            def mean(x):
                return {"estimate": x.mean()}

            @study.method
            def median(x):
                return {"estimate": float(np.median(x))}

            @study.truth
            def truth(mu):
                return {"estimate": mu}
            """,
        "tiny.py",
    )
    store = tmp_path / "tiny.zarr"
    simstudy.run(study, store=store, scheduler="synchronous")
    cube = simstudy.open_results(store)
    res = summarize(cube, reference="mean")
    assert res["bias"].dims == ("mu", "method_name")
    assert res["n_ok"].values.tolist() == [[30, 30], [30, 30]]
    est = cube["estimate"].sel({"mu": 2.0, "method_name": "median"}).values
    got = float(res["bias"].sel({"mu": 2.0, "method_name": "median"}))
    assert got == pytest.approx(est.mean() - 2.0)
    assert np.isnan(res["relbias"].sel({"mu": 0.0})).all()
    assert float(res["relprec"].sel({"mu": 0.0, "method_name": "mean"})) == 0.0


def test_declared_outputs_are_summarised_per_method(write_study, tmp_path):
    """`@study.method(estimate=, se=, ci=, p=)` is stored in the cube; summarize
    uses each method's own outputs, and measures a method cannot have are NaN
    and listed, per method, as skipped."""
    path = write_study(
        """
        import numpy as np
        from scipy import stats
        from simstudy import Study

        study = Study("decl", factors={"n": [20]}, replicates=400, seed=4)
        study.truth(est=0.0, value=0.0)

        @study.data
        def gen(rng, n):
            return rng.standard_normal(n)

        @study.method(estimate="est", se="se", ci=("lo", "hi"), p="pval")
        def t_test(x):
            m, s = x.mean(), x.std(ddof=1) / np.sqrt(len(x))
            q = stats.t.ppf(0.975, len(x) - 1)
            p = 2 * stats.t.sf(abs(m / s), len(x) - 1)
            return {"est": m, "se": s, "lo": m - q * s, "hi": m + q * s, "pval": p}

        @study.method
        def median(x):
            return np.median(x)
        """,
        "decl.py",
    )
    simstudy.run(path, store=tmp_path / "d.zarr", scheduler="synchronous")
    cube = simstudy.open_results(tmp_path / "d.zarr")
    out = simstudy.summarize(cube)
    assert out.attrs["outputs"]["t_test"] == {
        "estimate": "est",
        "se": "se",
        "ci": ["lo", "hi"],
        "p": "pval",
    }
    assert out.attrs["outputs"]["median"] == {"estimate": "value"}
    t = out.sel({"method_name": "t_test", "n": 20})
    cov, mcse = float(t.coverage), float(t.coverage_mcse)
    assert abs(cov - 0.95) < 3 * mcse  # the t-interval covers 95%
    assert abs(float(t.power) - 0.05) < 3 * float(t.power_mcse)  # size under H0
    med = out.sel({"method_name": "median", "n": 20})
    assert np.isnan(float(med.coverage))
    assert out.attrs["skipped"]["coverage"] == {
        "median": "no interval outputs declared (@study.method(ci=(lo, hi)))"
    }
    assert abs(float(med.bias)) < 3 * float(med.bias_mcse)


def test_a_text_factor_with_a_truth_summarises_and_reports(
    write_study: WriteStudy, tmp_path: Path
) -> None:
    """Text levels are no numpy scalars: summarize and report used to fail
    with "'str' object has no attribute 'item'"."""
    path = write_study(
        """
            from simstudy import Study
            study = Study("txt", factors={"dist": ["normal", "t3"]}, replicates=30,
                          seed=3)
            @study.data
            def gen(rng, dist):
                return rng.standard_normal(8) if dist == "normal" else rng.standard_t(3, 8)
            @study.method
            def mean(x):
                return {"estimate": x.mean()}
            study.truth(estimate=0.0)
            """,
        "txt.py",
    )
    store = tmp_path / "s.zarr"
    simstudy.run(path, store=store, scheduler="synchronous")
    cube = simstudy.open_results(store)
    summary = summarize(cube)
    for dist in ("normal", "t3"):
        x = cube.estimate.sel(dist=dist, method_name="mean").values
        assert float(summary.bias.sel(dist=dist, method_name="mean")) == pytest.approx(
            x.mean()
        )
    out = simstudy.write_report(store, tmp_path / "r.html")
    assert "dist=t3" in out.read_text()
