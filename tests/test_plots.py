"""simstudy.plots: each figure shows what the cube says, checked by hand."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from matplotlib.collections import LineCollection
from matplotlib.figure import Figure

import simstudy
from simstudy import plots
from simstudy.errors import UsageError
from tests.studies import write_study_file

STUDY = """
import numpy as np
from simstudy import Study

study = Study("iv", factors={"n": [8, 30], "skew": [0, 1]},
              replicates=40, seed=5)
study.truth(est=0.0)

@study.data
def gen(rng, n, skew):
    return rng.standard_normal(n) if skew == 0 else rng.exponential(1, n) - 1

@study.method(estimate="est", se="se")
def wald(x):
    return {"est": x.mean(), "se": x.std(ddof=1) / np.sqrt(len(x))}

@study.method(estimate="est", ci=("lo", "hi"))
def order(x):
    s = np.sort(x)
    return {"est": np.median(x), "lo": s[1], "hi": s[-2]}

@study.method(estimate="est")
def median(x):
    return {"est": np.median(x)}
"""


@pytest.fixture(scope="module")
def cube(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("plots")
    path = write_study_file(tmp, STUDY, "iv.py")
    simstudy.run(path, store=tmp / "iv.zarr", scheduler="synchronous")
    return simstudy.open_results(tmp / "iv.zarr").load()


@pytest.fixture(scope="module")
def summary(cube):
    return simstudy.summarize(cube)


def by_gid(ax, gid):
    return [line for line in ax.lines if line.get_gid() == gid]


def test_zip_plot_shows_the_coverage_computed_by_hand(cube):
    fig = plots.zip_plot(cube)
    assert isinstance(fig, Figure)
    assert len(fig.axes) == 2 * 4  # interval methods (wald, order) x points
    points = [(n, d) for n in (8, 30) for d in (0, 1)]
    for k, (n, d) in enumerate(points):
        cell = cube.sel(n=n, skew=d)
        for row, method in enumerate(("wald", "order")):
            c = cell.sel(method_name=method)
            ok = c["status"].values == 1
            est = c["est"].values[ok]
            if method == "wald":
                se = c["se"].values[ok]
                lo, hi = est - 1.959963984540054 * se, est + 1.959963984540054 * se
            else:
                lo, hi = c["lo"].values[ok], c["hi"].values[ok]
            covers = (lo <= 0) & (hi >= 0)
            coverage = covers.mean()
            mcse = np.sqrt(coverage * (1 - coverage) / ok.sum())
            ax = fig.axes[row * 4 + k]
            (line,) = by_gid(ax, "coverage")
            assert line.get_ydata()[0] == pytest.approx(coverage)
            (low,) = by_gid(ax, "coverage-low")
            assert low.get_ydata()[0] == pytest.approx(coverage - 1.96 * mcse)
            assert f"{method} · n={n}, skew={d}" in ax.get_title()
            shown = re.search(r"coverage ([0-9.]+) \(([0-9.]+)\)", ax.get_title())
            assert shown, ax.get_title()
            places = len(shown[1].split(".")[1]) if "." in shown[1] else 0
            assert float(shown[1]) == pytest.approx(coverage, abs=0.5 * 10**-places)
            assert float(shown[2]) == pytest.approx(mcse, abs=0.5 * 10**-places)
            (segments,) = [c for c in ax.collections if isinstance(c, LineCollection)]
            drawn = segments.get_segments()
            assert len(drawn) == ok.sum()
            if method == "order":  # no SE: ranked so non-coverers sit on top
                ranks = np.array([s[0][1] for s in drawn])
                missed = np.array([s[0][0] > 0 or s[1][0] < 0 for s in drawn])
                if missed.any():
                    assert ranks[missed].min() > ranks[~missed].max()
            assert by_gid(ax, "truth")[0].get_xdata()[0] == 0.0
            assert by_gid(ax, "level")[0].get_ydata()[0] == 0.95


def test_zip_plot_points_zoom_and_wald_from_any_se(cube, tmp_path):
    fig = plots.zip_plot(cube, methods="wald", points={"n": 30}, zoom=0.25)
    assert len(fig.axes) == 2
    assert fig.axes[0].get_ylim() == pytest.approx((0.75, 1.0))
    one = [{"n": 8, "skew": 1}]
    fig = plots.zip_plot(cube, methods=["wald"], points=one, level=0.9)
    assert "n=8, skew=1" in fig.axes[0].get_title()
    fig.savefig(tmp_path / "zip.png", dpi=40)
    assert (tmp_path / "zip.png").read_bytes()[:4] == b"\x89PNG"


def test_zip_plot_t_quantiles_from_df(cube):
    from scipy import stats

    fig = plots.zip_plot(cube, methods="wald", points={"n": 8, "skew": 0}, df=7)
    c = cube.sel(n=8, skew=0, method_name="wald")
    q = stats.t.ppf(0.975, 7)
    covers = np.abs(c["est"].values) <= q * c["se"].values
    (line,) = by_gid(fig.axes[0], "coverage")
    assert line.get_ydata()[0] == pytest.approx(covers.mean())
    assert fig.get_supxlabel() == "95% t intervals"


def test_zip_plot_of_a_cube_made_by_hand():
    import xarray as xr

    rng = np.random.default_rng(0)
    est = rng.standard_normal((2, 50, 1))
    cube = xr.Dataset(
        {
            "estimate": (("n", "replicate", "method_name"), est),
            "se": (("n", "replicate", "method_name"), np.ones_like(est)),
        },
        coords={"n": [10, 20], "replicate": range(50), "method_name": ["wald"]},
    )
    fig = plots.zip_plot(cube, se="se", truth=0.0)
    covers = np.abs(est[1, :, 0]) <= 1.959963984540054
    (line,) = by_gid(fig.axes[1], "coverage")
    assert line.get_ydata()[0] == pytest.approx(covers.mean())


def test_nested_loop_plot_has_one_point_per_design_point_in_order(summary):
    fig = plots.nested_loop_plot(summary, "bias")
    top, loops = fig.axes
    for method in ("wald", "order", "median"):
        (line,) = by_gid(top, f"points:{method}")
        want = summary["bias"].sel(method_name=method).transpose("n", "skew")
        assert list(line.get_xdata()) == [1, 2, 3, 4]
        np.testing.assert_allclose(line.get_ydata(), want.values.ravel())
    assert by_gid(top, "reference")[0].get_ydata()[0] == 0.0
    (n_loop,) = by_gid(loops, "loop:n")
    (skew_loop,) = by_gid(loops, "loop:skew")
    assert np.argsort(n_loop.get_ydata(), kind="stable").tolist() == [0, 1, 2, 3]
    assert skew_loop.get_ydata()[0] != skew_loop.get_ydata()[1]
    flipped = plots.nested_loop_plot(summary, "bias", order=["skew", "n"])
    (line,) = by_gid(flipped.axes[0], "points:wald")
    want = summary["bias"].sel(method_name="wald").transpose("skew", "n")
    np.testing.assert_allclose(line.get_ydata(), want.values.ravel())


def test_nested_loop_plot_of_coverage_has_its_level_line(summary):
    fig = plots.nested_loop_plot(summary, "coverage", methods=["wald", "order"])
    top = fig.axes[0]
    assert by_gid(top, "reference")[0].get_ydata()[0] == 0.95
    assert {line.get_gid() for line in top.lines} >= {"points:wald", "points:order"}


def test_lollipop_and_heatmap(summary):
    fig = plots.lollipop_plot(summary, "rmse", points={"n": 8})
    (ax,) = fig.axes
    (line,) = by_gid(ax, "points:median")
    want = summary["rmse"].sel(method_name="median", n=8).values
    np.testing.assert_allclose(line.get_xdata(), want)
    assert not by_gid(ax, "reference")  # rmse has no reference line
    fig = plots.lollipop_plot(summary, "bias")
    assert by_gid(fig.axes[0], "reference")[0].get_xdata()[0] == 0.0
    fig = plots.heatmap(summary, "coverage", methods=["wald", "order"])
    image = fig.axes[0].get_images()[0]
    want = summary["coverage"].sel(method_name=["wald", "order"])
    want = want.transpose("n", "skew", "method_name").values.reshape(4, 2)
    np.testing.assert_allclose(np.asarray(image.get_array()), want)
    assert len(fig.axes[0].texts) == 8


def test_scatter_and_bland_altman_pair_replicates(cube):
    fig = plots.scatter_plot(cube, "estimate", reference="wald")
    assert len(fig.axes) == 2 * 4  # (order, median) vs wald x points
    ax = fig.axes[4]  # median vs wald at the first point
    (pts,) = by_gid(ax, "points:median")
    cell = cube.sel(n=8, skew=0)
    np.testing.assert_allclose(pts.get_xdata(), cell["est"].sel(method_name="wald"))
    assert by_gid(ax, "identity")
    fig = plots.bland_altman_plot(cube, methods=["wald", "median"], points={"n": 30})
    ax = fig.axes[0]
    cell = cube.sel(n=30, skew=0)["est"]
    diff = cell.sel(method_name="median").values - cell.sel(method_name="wald").values
    (mid,) = by_gid(ax, "mean-difference")
    assert mid.get_ydata()[0] == pytest.approx(diff.mean())
    limits = sorted(line.get_ydata()[0] for line in by_gid(ax, "limits"))
    sd = diff.std(ddof=1)
    assert limits == pytest.approx([diff.mean() - 1.96 * sd, diff.mean() + 1.96 * sd])
    assert by_gid(ax, "zero")[0].get_ydata()[0] == 0.0
    fig = plots.bland_altman_plot(
        cube, methods=["wald", "median"], points={"n": 30}, agreement=3.0
    )
    limits = sorted(line.get_ydata()[0] for line in by_gid(fig.axes[0], "limits"))
    assert limits == pytest.approx([diff.mean() - 3 * sd, diff.mean() + 3 * sd])


def test_distribution_plot_shares_one_scale(cube):
    fig = plots.distribution_plot(cube, "estimate")
    assert len(fig.axes) == 4
    assert len({ax.get_ylim() for ax in fig.axes}) == 1
    assert all(by_gid(ax, "truth") for ax in fig.axes)
    fig = plots.distribution_plot(cube, "se", methods="wald", kind="violin")
    assert not any(by_gid(ax, "truth") for ax in fig.axes)


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (
            lambda c, s: plots.nested_loop_plot(s, "covrage"),
            "unknown measure 'covrage'.*coverage",
        ),
        (
            lambda c, s: plots.heatmap(s, "bias", methods="nope"),
            "unknown method 'nope'.*wald, order, median",
        ),
        (
            lambda c, s: plots.zip_plot(c, methods="median"),
            "method 'median' has no interval",
        ),
        (lambda c, s: plots.zip_plot(c.sel(method_name=["median"])), "needs intervals"),
        (lambda c, s: plots.zip_plot(s), "expected a cube"),
        (lambda c, s: plots.nested_loop_plot(c, "bias"), "expected a summary"),
        (lambda c, s: plots.zip_plot(c, points={"m": 1}), "unknown factor 'm'"),
        (lambda c, s: plots.zip_plot(c, points={"n": 9}), r"no level 9.*\[8, 30\]"),
        (lambda c, s: plots.scatter_plot(c, methods="wald"), "at least 2"),
        (lambda c, s: plots.scatter_plot(c, "se"), "'order' declares no 'se' output"),
        (lambda c, s: plots.distribution_plot(c, "x"), "unknown output 'x'"),
        (lambda c, s: plots.distribution_plot(c, kind="pie"), "unknown kind 'pie'"),
        (
            lambda c, s: plots.nested_loop_plot(s, "bias", order=["n"]),
            "order= must name",
        ),
    ],
    ids=[
        "measure",
        "method",
        "no-interval",
        "no-interval-at-all",
        "summary-as-cube",
        "cube-as-summary",
        "factor",
        "level",
        "one-method",
        "no-se",
        "output",
        "kind",
        "order",
    ],
)
def test_bad_input_is_a_usage_error(cube, summary, call, match):
    with pytest.raises(UsageError, match=match) as info:
        call(cube, summary)
    assert info.value.hint


def test_import_simstudy_plots():
    assert simstudy.plots is plots
    assert callable(plots.zip_plot)
    assert Path(plots.__file__).parent.name == "plots"


def test_array_outputs_ask_for_one_element(write_study, tmp_path):
    path = write_study(
        """
            import numpy as np
            from simstudy import Study

            study = Study("arr", factors={"n": [5, 9]}, replicates=6, seed=3)
            study.truth(est=[0.0, 1.0])

            @study.data
            def gen(rng, n):
                return rng.standard_normal((n, 2)) + np.array([0.0, 1.0])

            @study.method(estimate="est", se="se")
            def mean(x):
                s = x.std(axis=0, ddof=1) / np.sqrt(len(x))
                return {"est": x.mean(axis=0), "se": s}
            """,
        "arr.py",
    )
    simstudy.run(path, store=tmp_path / "arr.zarr", scheduler="synchronous")
    cube = simstudy.open_results(tmp_path / "arr.zarr")
    with pytest.raises(UsageError, match=r"'est' is an array \(dims est_dim_0\)"):
        plots.zip_plot(cube)
    one = cube.isel(est_dim_0=1, se_dim_0=1)
    fig = plots.zip_plot(one, truth=1.0)
    assert len(fig.axes) == 2
    summary = simstudy.summarize(cube)  # the element index is one more loop
    fig = plots.nested_loop_plot(summary, "bias")
    (line,) = by_gid(fig.axes[0], "points:mean")
    want = summary["bias"].sel(method_name="mean").transpose("n", "est_dim_0")
    np.testing.assert_allclose(line.get_ydata(), want.values.ravel())
    assert by_gid(fig.axes[1], "loop:est_dim_0")


def test_a_table_cell_stays_short_for_a_method_far_off_or_a_constant_se():
    """Huge values and tiny MCSEs in powers of ten; rounding noise is (0)."""
    from simstudy.plots.common import with_mcse

    assert with_mcse(1677852348993288.0, 745288334582212.0) == "1.68e+15 (7.5e+14)"
    assert with_mcse(16778523.0, 7452883.0) == "1.68e+07 (7.5e+06)"
    assert with_mcse(0.31622777, 1.2e-17) == "0.3162 (0)"
    assert with_mcse(-99.99999975, 1e-8) == "-100 (0)"
    assert with_mcse(0.55437172, 4e-9) == "0.5544 (0)"
    assert with_mcse(2e-8, 1e-9) == "2e-08 (1e-09)"
    assert with_mcse(0.934, 0.011) == "0.934 (0.011)"
    assert with_mcse(12345.6, 151.0) == "12346 (151)"
