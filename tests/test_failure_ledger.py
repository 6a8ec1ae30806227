"""The failure ledger, handling strategies, robust and conditional measures,
and paired contrasts, each checked by hand (numpy on the cube's arrays and
the store's failure records) against what ``summarize`` returns."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

import simstudy
from simstudy.cli import main
from simstudy.errors import StudyError, UsageError
from simstudy.store import read_failures, read_warnings
from tests.helpers import assert_store_consistent
from tests.studies import write_study_file

# a method that raises, warns, returns NaN, runs past the timeout or says it
# did not converge, beside one whose output is no estimate
STUDY = """
import time
import warnings

import numpy as np
from simstudy import Study

study = Study("ledger", factors={"n": [12], "delta": [0.0, 0.6]},
              replicates=40, seed=11)

@study.data
def draw(rng, n, delta):
    if rng.random() < 0.08:
        raise ValueError("bad draw")
    return rng.normal(delta, 1.0, n)

@study.method(se="se")
def ols(x):
    return {"estimate": x.mean(), "se": x.std(ddof=1) / len(x) ** 0.5,
            "converged": float(x[0] > -1.4)}

@study.method(se="se", fallback="ols")
def robust(x):
    if x[1] > 1.5:
        raise RuntimeError("no fit")
    if x[2] > 2.3:
        time.sleep(5)
    if x[1] < -1.3:
        warnings.warn("shaky fit", RuntimeWarning)
    if abs(x[1]) < 0.05:
        return {"estimate": float("nan"), "se": 1.0}
    return {"estimate": float(np.median(x)),
            "se": 1.25 * x.std(ddof=1) / len(x) ** 0.5}

@study.method
def corr(x):
    return {"r": float(np.corrcoef(x[:-1], x[1:])[0, 1])}

@study.truth
def truth(n, delta):
    return {"estimate": delta}
"""

KINDS: tuple[str, ...] = ("data_error", "method_error", "timeout", "worker_died")
KINDS += ("not_converged", "nonfinite")


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("ledger")
    path = write_study_file(root, STUDY)
    simstudy.run(path, store=root / "s.zarr", scheduler="synchronous", task_timeout=0.5)
    assert_store_consistent(root / "s.zarr")
    return root / "s.zarr"


def _hand_kinds(store: Path) -> dict[str, np.ndarray]:
    """Per task, True where it is each kind of non-result (by hand)."""
    cube = simstudy.open_results(store).load()
    status = cube["status"].values  # (n, delta, replicate, method)
    methods = [str(m) for m in cube["method_name"].values]
    deltas = cube["delta"].values.tolist()
    kinds = {k: np.zeros(status.shape, bool) for k in KINDS}
    for r in read_failures(store):
        at = (0, deltas.index(r["delta"]), r["replicate"], methods.index(r["method"]))
        if r["type"] == "TaskTimeout":
            kinds["timeout"][at] = True
        elif r["message"].startswith("data function"):
            kinds["data_error"][at] = True
        else:
            kinds["method_error"][at] = True
    ok = status == 1
    converged = np.nan_to_num(cube["converged"].values, nan=1.0) != 0
    kinds["not_converged"] = ok & ~converged
    x = cube["estimate"].values
    kinds["nonfinite"] = ok & converged & ~np.isfinite(x)
    kinds["nonfinite"][..., methods.index("corr")] = False
    return kinds


def _rate(hit: np.ndarray, ran: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    n = ran.sum(axis=2)
    p = (hit & ran).sum(axis=2) / n
    return p, np.sqrt(p * (1 - p) / n)


def test_ledger_rates_match_a_count_by_hand(store):
    cube = simstudy.open_results(store)
    summary = simstudy.summarize(cube)
    ledger = simstudy.failure_ledger(cube)
    kinds = _hand_kinds(store)
    ran = cube["status"].values != 0
    for kind, hit in kinds.items():
        p, mcse = _rate(hit, ran)
        if kind == "nonfinite":  # corr has no estimate: NaN there
            p[..., 2] = mcse[..., 2] = np.nan
        got = summary[f"failure_rate_{kind}"].transpose("n", "delta", "method_name")
        np.testing.assert_allclose(got.values, p, atol=1e-10)
        np.testing.assert_allclose(
            summary[f"failure_rate_{kind}_mcse"].values, mcse, atol=1e-10
        )
        np.testing.assert_allclose(ledger["rate"].sel(kind=kind).values, p, atol=1e-10)
    # every kind the study provokes is there, and they add up to all non-results
    for kind in ("data_error", "method_error", "timeout", "not_converged"):
        assert kinds[kind].any(), kind
    assert kinds["nonfinite"].any()
    total = sum(summary[f"failure_rate_{k}"].fillna(0).values for k in KINDS[:4])
    np.testing.assert_allclose(total, summary["failure_rate"].values)


def test_warnings_are_counted_by_category(store):
    cube = simstudy.open_results(store)
    summary = simstudy.summarize(cube)
    warned = np.zeros(cube["status"].shape, bool)
    methods = [str(m) for m in cube["method_name"].values]
    deltas = cube["delta"].values.tolist()
    for r in read_warnings(store):
        assert r["category"] == "RuntimeWarning"
        warned[
            0, deltas.index(r["delta"]), r["replicate"], methods.index(r["method"])
        ] = True
    p, _ = _rate(warned, cube["status"].values != 0)
    np.testing.assert_allclose(summary["warning_rate_RuntimeWarning"].values, p)
    assert warned.any()
    ledger = simstudy.failure_ledger(cube)
    assert "warning:RuntimeWarning" in ledger["kind"].values.tolist()


def test_ledger_of_a_study_without_failures_is_all_zero(write_study, tmp_path):
    path = write_study(
        """
        from simstudy import Study
        study = Study("clean", factors={"n": [5]}, replicates=3, seed=1)
        @study.data
        def d(rng, n):
            return rng.normal(size=n)
        @study.method
        def mean(x):
            return {"estimate": x.mean()}
        """
    )
    simstudy.run(path, store=tmp_path / "c.zarr", scheduler="synchronous")
    ledger = simstudy.failure_ledger(simstudy.open_results(tmp_path / "c.zarr"))
    assert list(ledger["kind"].values) == list(KINDS)
    assert ledger.attrs["all_zero"]
    assert (ledger["rate"] == 0).all()


def _used(store: Path) -> tuple[Any, np.ndarray, np.ndarray]:
    cube = simstudy.open_results(store).load()
    x = cube["estimate"].values
    ok = (cube["status"].values == 1) & (
        np.nan_to_num(cube["converged"].values, nan=1.0) != 0
    )
    return cube, x, ok


def _bias(x: np.ndarray, use: np.ndarray, theta: np.ndarray) -> np.ndarray:
    use = use & np.isfinite(x)
    n = use.sum(axis=2)
    with np.errstate(invalid="ignore"):  # corr: no estimate, no replicate used
        return np.asarray(np.where(use, x, 0).sum(axis=2) / n - theta)


def test_handling_strategies_side_by_side_match_by_hand(store):
    cube, x, ok = _used(store)
    theta = cube["delta"].values[None, :, None]
    summary = simstudy.summarize(
        cube, cases=["available", "complete", "no_warnings", "fallback"]
    )
    assert list(summary["cases"].values) == [
        "available",
        "complete",
        "no_warnings",
        "fallback",
    ]
    est = slice(0, 2)  # ols, robust
    expect = {
        "available": ok,
        "complete": ok & ok.all(axis=3, keepdims=True),
        "no_warnings": ok & (cube["warnings"].values == 0),
    }
    for case, use in expect.items():
        got = summary["bias"].sel(cases=case).transpose("n", "delta", "method_name")
        np.testing.assert_allclose(
            got.values[..., est], _bias(x, use, theta)[..., est], atol=1e-10
        )
    # fallback: where robust gave no result, ols's value in the same replicate
    good = ok & np.isfinite(x)
    take = (cube["status"].values[..., 1] != 0) & ~good[..., 1] & good[..., 0]
    filled = np.where(take, x[..., 0], x[..., 1])
    robust = _bias(filled, good[..., 1] | take, theta[..., 0])
    got = summary["bias"].sel(cases="fallback", method_name="robust")
    np.testing.assert_allclose(got.values, robust, atol=1e-10)
    assert take.any()
    np.testing.assert_array_equal(
        summary["n_fallback"].sel(cases="fallback", method_name="robust").values,
        take.sum(axis=2),
    )


def test_median_bias_winsorising_and_measures_given_rejection(store):
    cube, x, ok = _used(store)
    summary = simstudy.summarize(cube)
    wins = simstudy.summarize(cube, winsorize=1.0)
    se = cube["se"].values
    for d, delta in enumerate(cube["delta"].values):
        for m, name in enumerate(["ols", "robust"]):
            use = ok[0, d, :, m] & np.isfinite(x[0, d, :, m])
            v = x[0, d, use, m]
            at = {"n": 12, "delta": delta, "method_name": name}
            # median bias; MCSE from the order statistics around the median
            k = len(v)
            s = np.sort(v)
            half = 1.959963984540054 * np.sqrt(k) / 2
            lo = int(np.clip(np.floor(k / 2 - half), 1, k))
            hi = int(np.clip(np.ceil(k / 2 + half), 1, k))
            assert float(summary["median_bias"].sel(at)) == pytest.approx(
                np.median(v) - delta, abs=1e-10
            )
            assert float(summary["median_bias_mcse"].sel(at)) == pytest.approx(
                (s[hi - 1] - s[lo - 1]) / (2 * 1.959963984540054), abs=1e-10
            )
            # winsorised: clipped at the quartiles -/+ 1 IQR, then the mean
            q1, q3 = np.quantile(v, [0.25, 0.75])
            w = np.clip(v, q1 - (q3 - q1), q3 + (q3 - q1))
            assert float(wins["bias"].sel(at)) == pytest.approx(
                w.mean() - delta, abs=1e-10
            )
            # given rejection (Wald |z| >= 1.96 from se)
            e = se[0, d, use, m]
            rej = np.abs(v / e) >= 1.959963984540054
            cover = np.abs(v - delta) <= 1.959963984540054 * e
            got = float(summary["coverage_rejected"].sel(at))
            assert got == pytest.approx(cover[rej].mean(), abs=1e-10)
            if delta == 0:
                assert np.isnan(float(summary["type_s"].sel(at)))
                continue
            type_s = (np.sign(v[rej]) != np.sign(delta)).mean()
            assert float(summary["type_s"].sel(at)) == pytest.approx(type_s, abs=1e-10)
            ratio = np.abs(v[rej]) / delta
            assert float(summary["exaggeration"].sel(at)) == pytest.approx(
                ratio.mean(), abs=1e-10
            )
            assert float(summary["exaggeration_mcse"].sel(at)) == pytest.approx(
                ratio.std(ddof=1) / np.sqrt(len(ratio)), abs=1e-10
            )


def test_paired_contrasts_match_by_hand(store):
    cube, x, ok = _used(store)
    theta = cube["delta"].values
    good = ok & np.isfinite(x)
    both = good[..., 1] & good[..., 0]
    bias = simstudy.contrast(cube, "bias", methods=("robust", "ols"))
    rmse = simstudy.contrast(cube, "rmse", methods=("robust", "ols"), ratio=True)
    for d in range(2):
        use = both[0, d]
        a, b = x[0, d, use, 1], x[0, d, use, 0]
        diff = a - b  # the pairing: the same replicates' difference
        at = {"n": 12, "delta": theta[d]}
        assert float(bias["bias_diff"].sel(at)) == pytest.approx(diff.mean(), abs=1e-10)
        assert float(bias["bias_diff_mcse"].sel(at)) == pytest.approx(
            diff.std(ddof=1) / np.sqrt(len(diff)), abs=1e-10
        )
        assert int(bias["n_pairs"].sel(at)) == use.sum()
        # jackknife over replicate pairs, written out
        sa, sb = (a - theta[d]) ** 2, (b - theta[d]) ** 2
        k = len(sa)
        loo = np.array(
            [
                np.sqrt(np.delete(sa, i).mean() / np.delete(sb, i).mean())
                for i in range(k)
            ]
        )
        err = np.sqrt((k - 1) / k * ((loo - loo.mean()) ** 2).sum())
        value = np.sqrt(sa.mean() / sb.mean())
        assert float(rmse["rmse_ratio"].sel(at)) == pytest.approx(value, abs=1e-10)
        assert float(rmse["rmse_ratio_mcse"].sel(at)) == pytest.approx(err, abs=1e-10)


def test_contrast_between_levels_adds_mcses_in_quadrature(store):
    cube = simstudy.open_results(store)
    summary = simstudy.summarize(cube)
    got = simstudy.contrast(cube, "rmse", levels={"delta": (0.6, 0.0)})
    one, two = summary.sel(delta=0.6), summary.sel(delta=0.0)
    np.testing.assert_allclose(
        got["rmse_diff"].values, (one["rmse"] - two["rmse"]).values, atol=1e-12
    )
    np.testing.assert_allclose(
        got["rmse_diff_mcse"].values,
        np.hypot(one["rmse_mcse"].values, two["rmse_mcse"].values),
        atol=1e-12,
    )


def test_contrast_plot_draws_each_value_and_its_mcse_bar(store, tmp_path):
    from simstudy import plots

    cube = simstudy.open_results(store)
    pair = simstudy.contrast(cube, "bias", methods=("robust", "ols"))
    fig = plots.contrast_plot(pair)
    (ax,) = fig.axes
    assert ax.get_title() == "bias: robust - ols (paired by replicate)"
    drawn = sorted(
        float(np.asarray(line.get_xdata())[0])
        for line in ax.lines
        if line.get_marker() == "o"
    )
    want = sorted(float(v) for v in pair["bias_diff"].values.ravel() if np.isfinite(v))
    np.testing.assert_allclose(drawn, want, atol=1e-12)
    assert [
        np.asarray(line.get_xdata())[0]
        for line in ax.lines
        if line.get_gid() == "reference"
    ] == [0.0]
    ratio = simstudy.contrast(cube, "rmse", levels={"delta": (0.6, 0.0)}, ratio=True)
    fig = plots.contrast_plot(ratio)
    (ax,) = fig.axes
    assert "delta=0.6 / delta=0.0" in ax.get_title()
    refs = [
        np.asarray(line.get_xdata())[0]
        for line in ax.lines
        if line.get_gid() == "reference"
    ]
    assert refs == [1.0]
    fig.savefig(tmp_path / "contrast.png")
    with pytest.raises(UsageError, match=r"what simstudy\.contrast returns"):
        plots.contrast_plot(simstudy.summarize(cube))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({}, "either methods"),
        ({"methods": ("robust", "nope")}, "two of the cube's methods"),
        ({"methods": ("robust", "corr")}, "no estimate"),
        ({"levels": {"m": (1, 2)}}, "unknown factor"),
    ],
    ids=["neither", "unknown-method", "no-estimate", "unknown-factor"],
)
def test_contrast_refuses_bad_arguments(store, kwargs, match):
    with pytest.raises(UsageError, match=match):
        simstudy.contrast(simstudy.open_results(store), "bias", **kwargs)


def test_a_method_without_an_estimate_is_skipped_with_its_reason(store, capsys):
    summary = simstudy.summarize(simstudy.open_results(store))
    assert np.isnan(summary["bias"].sel(method_name="corr")).all()
    assert not np.isnan(summary["bias"].sel(method_name="ols")).any()
    why = summary.attrs["skipped"]["bias"]["corr"]
    assert "'corr' declares no estimate and returns no output 'estimate'" in why
    argv = ["summarize", str(store), "--format", "markdown", "--wide"]
    assert main([*argv, "--measures", "bias"]) == 0
    text = capsys.readouterr().out
    assert "| corr |" in text.splitlines()[0] + " |"  # the column is there
    assert "[^1]: corr: method 'corr' declares no estimate" in text


def test_every_task_failed_still_summarises(write_study, tmp_path, capsys):
    path = write_study(
        """
        from simstudy import Study
        study = Study("down", factors={"n": [5]}, replicates=3, seed=1)
        @study.data
        def d(rng, n):
            return rng.normal(size=n)
        @study.method
        def m(x):
            raise RuntimeError("never")
        study.truth(estimate=0.0)
        """
    )
    simstudy.run(path, store=tmp_path / "d.zarr", scheduler="synchronous")
    cube = simstudy.open_results(tmp_path / "d.zarr")
    summary = simstudy.summarize(cube)
    assert float(summary["failure_rate_method_error"].sel(n=5, method_name="m")) == 1
    assert int(summary["n_failed"].sum()) == 3
    assert "bias" in summary.attrs["skipped"]
    assert main(["summarize", str(tmp_path / "d.zarr")]) == 0
    assert "failure_rate_method_error" in capsys.readouterr().out
    report = simstudy.write_report(tmp_path / "d.zarr", tmp_path / "d.html")
    assert "Simulation study" in report.read_text()


def test_fallback_must_name_another_method(write_study, tmp_path):
    path = write_study(
        """
        from simstudy import Study
        study = Study("fb", factors={"n": [5]}, replicates=3, seed=1)
        @study.data
        def d(rng, n):
            return rng.normal(size=n)
        @study.method(fallback="ols")
        def m(x):
            return {"estimate": x.mean()}
        """
    )
    with pytest.raises(StudyError, match="fallback='ols', which is no method"):
        simstudy.run(path, store=tmp_path / "fb.zarr", scheduler="synchronous")
    assert not (tmp_path / "fb.zarr").exists()


def test_unknown_cases_strategy_is_refused(store):
    with pytest.raises(UsageError, match="cases must be one of"):
        simstudy.summarize(simstudy.open_results(store), cases=["available", "x"])


def test_analysis_doc_failures_example_runs(tmp_path, monkeypatch, capsys):
    """docs/analysis.md's failures example runs as written; its contrast is
    the mean paired difference of squared errors, turned into RMSEs."""
    import re
    import runpy

    text = (Path(__file__).parents[1] / "docs" / "analysis.md").read_text()
    head = text.index("## Example: failures, fallbacks and contrasts")
    study, script = re.findall(r"```python\n(.*?)```", text[head:], re.DOTALL)[:2]
    write_study_file(tmp_path, study, "failing.py")
    (tmp_path / "script.py").write_text(script)
    monkeypatch.chdir(tmp_path)
    ns = runpy.run_path(str(tmp_path / "script.py"))
    assert "not_converged" in capsys.readouterr().out
    cube = ns["cube"].load()
    ledger = ns["ledger"]
    robust = ledger["rate"].sel(method_name="robust")
    for kind in ("method_error", "not_converged", "warning:RuntimeWarning"):
        assert float(robust.sel(kind=kind).sum()) > 0, kind
    x = cube["estimate"].sel(n=20, delta=0.5).values
    ok = (cube["status"].sel(n=20, delta=0.5).values == 1) & (
        np.nan_to_num(cube["converged"].sel(n=20, delta=0.5).values, nan=1) != 0
    )
    both = ok[:, 0] & ok[:, 1]
    a, b = (x[both, 1] - 0.5) ** 2, (x[both, 0] - 0.5) ** 2
    d = ns["d"]
    assert float(d["rmse_diff"].sel(n=20, delta=0.5)) == pytest.approx(
        np.sqrt(a.mean()) - np.sqrt(b.mean()), abs=1e-10
    )


@pytest.mark.parametrize(
    ("record", "kind"),
    [
        ({"type": "ValueError", "message": "data function: bad"}, "data_error"),
        (
            {"type": "ValueError", "message": "data function at n=5 (jax): x"},
            "data_error",
        ),
        ({"type": "RuntimeError", "message": "method 'm': no fit"}, "method_error"),
        (
            {"type": "OutputError", "message": "method 'm' output 'e' is not"},
            "method_error",
        ),
        ({"type": "TaskTimeout", "message": "method 'm': took longer"}, "timeout"),
        ({"type": "WorkerDied", "message": "the worker process died"}, "worker_died"),
        (
            {"type": "OSError", "message": "the worker running this batch failed: x"},
            "worker_died",
        ),
    ],
    ids=["data", "data-jax", "method", "output", "timeout", "died", "batch-lost"],
)
def test_failure_records_are_classified_by_kind(record, kind):
    from simstudy.analysis.ledger import failure_kind

    assert failure_kind(record) == kind


def test_a_cube_selected_to_one_level_summarises_like_the_full_one(store):
    cube = simstudy.open_results(store)
    full = simstudy.summarize(cube).sel(delta=0.6)
    one = simstudy.summarize(cube.sel(delta=0.6))  # delta: a scalar coordinate
    for name in ("bias", "median_bias", "failure_rate_method_error", "type_s"):
        np.testing.assert_allclose(one[name].values, full[name].values, atol=1e-12)
    ledger = simstudy.failure_ledger(cube.sel(delta=0.6))
    np.testing.assert_allclose(
        ledger["rate"].sel(kind="timeout").values,
        full["failure_rate_timeout"].values,
        atol=1e-12,
    )
    pair = simstudy.contrast(cube.sel(delta=0.6), "bias", methods=("robust", "ols"))
    whole = simstudy.contrast(cube, "bias", methods=("robust", "ols")).sel(delta=0.6)
    np.testing.assert_allclose(pair["bias_diff"].values, whole["bias_diff"].values)


def test_a_declared_output_never_returned_is_skipped_with_its_reason(
    write_study, tmp_path
):
    path = write_study(
        """
        from simstudy import Study
        study = Study("se", factors={"n": [5]}, replicates=3, seed=1)
        @study.data
        def d(rng, n):
            return rng.normal(size=n)
        @study.method(se="se")
        def mean(x):
            return {"estimate": x.mean(), "se": x.std() / 2}
        @study.method(se="sd")
        def median(x):
            return {"estimate": float(sorted(x)[2])}
        study.truth(estimate=0.0)
        """
    )
    simstudy.run(path, store=tmp_path / "se.zarr", scheduler="synchronous")
    summary = simstudy.summarize(simstudy.open_results(tmp_path / "se.zarr"))
    assert summary.attrs["skipped"]["modelse"] == {
        "median": "the method declares se='sd' but returns no such output"
    }
    assert np.isfinite(summary["modelse"].sel(method_name="mean")).all()
    assert np.isfinite(summary["bias"]).all()


def test_report_shows_several_strategies_side_by_side(store, tmp_path):
    out = tmp_path / "r.html"
    argv = ["report", str(store), "-o", str(out), "--cases", "available,complete"]
    assert main(argv) == 0
    html = out.read_text()
    assert "<h2>Handling strategies side by side</h2>" in html
    side = simstudy.summarize(
        simstudy.open_results(store), cases=["available", "complete"]
    )
    for case in ("available", "complete"):
        assert f"<th>bias ({case})</th>" in html
        cell = side.sel(cases=case, method_name="ols").isel(n=0, delta=0)
        assert f"{float(cell['bias']):.4g} ({float(cell['bias_mcse']):.2g})" in html
