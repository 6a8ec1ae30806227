"""Plots on real data: an exploding method, failures, a method without a
truth, selected cubes, split panels, and figures Jupyter shows inline."""

from __future__ import annotations

import nbformat
import numpy as np
import pytest
from matplotlib.figure import Figure
from nbclient import NotebookClient

import simstudy
from simstudy import plots
from simstudy.errors import UsageError
from simstudy.plots.scales import outliers
from tests.studies import write_study_file

STUDY = """
import warnings
import numpy as np
from simstudy import Study

study = Study("explode", factors={"n": [10, 30], "delta": [0.0, 0.5]},
              replicates=40, seed=7)

@study.truth
def truth(delta):
    return {"est": delta}

@study.data
def gen(rng, n, delta):
    return rng.standard_normal(n) + delta

@study.method(estimate="est", se="se", ci=("lo", "hi"), p="p")
def wald(x):
    m, s = x.mean(), x.std(ddof=1) / np.sqrt(len(x))
    return {"est": m, "se": s, "lo": m - 2 * s, "hi": m + 2 * s,
            "p": float(abs(m / s) > 2) * 0.01 + float(abs(m / s) <= 2) * 0.5}

@study.method(estimate="est", se="se")
def logit(x):  # separation: now and then the SE explodes, the estimate too
    m, s = x.mean(), x.std(ddof=1) / np.sqrt(len(x))
    if x[0] > 1.2:
        return {"est": m + 3e4 * np.sign(x[1]), "se": 1e10}
    return {"est": m, "se": 1.1 * s}

@study.method(estimate="est", se="se")
def fragile(x):
    if x[0] > 1.5:
        raise ArithmeticError("did not converge")
    if x[1] > 1.2:
        warnings.warn("near-singular fit", RuntimeWarning)
    return {"est": np.median(x), "se": 1.25 * x.std(ddof=1) / np.sqrt(len(x))}

@study.method(estimate="lb", se="lb_se")
def lowerbound(x):
    return {"lb": x.mean() - x.std(ddof=1), "lb_se": x.std(ddof=1) / np.sqrt(len(x))}

@study.method(estimate="est", se="se")
def trimmed_mean_long_name(x):
    s = np.sort(x)[1:-1]
    return {"est": s.mean(), "se": s.std(ddof=1) / np.sqrt(len(s))}
"""


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("explode")
    path = write_study_file(tmp, STUDY, "explode.py")
    simstudy.run(path, store=tmp / "explode.zarr", scheduler="synchronous")
    return tmp / "explode.zarr"


@pytest.fixture(scope="module")
def cube(store):
    return simstudy.open_results(store).load()


@pytest.fixture(scope="module")
def summary(cube):
    return simstudy.summarize(cube)


def _gids(fig: Figure, prefix: str) -> list[str]:
    return [
        str(line.get_gid())
        for ax in fig.axes
        for line in ax.lines
        if str(line.get_gid()).startswith(prefix)
    ]


def _finite(summary, measure, methods):
    v = summary[measure].sel(method_name=methods).values
    return np.abs(v[np.isfinite(v)])


CUBE_PLOTS = [
    lambda c: plots.zip_plot(c),
    lambda c: plots.distribution_plot(c),
    lambda c: plots.distribution_plot(c, kind="violin"),
    lambda c: plots.scatter_plot(c, methods=["wald", "fragile"]),
    lambda c: plots.bland_altman_plot(c, methods=["wald", "fragile"]),
]
SUMMARY_PLOTS = [
    lambda s: plots.nested_loop_plot(s, "bias"),
    lambda s: plots.lollipop_plot(s, "bias"),
    lambda s: plots.heatmap(s, "bias"),
]


@pytest.mark.parametrize(
    "draw", CUBE_PLOTS, ids=["zip", "box", "violin", "scatter", "bland-altman"]
)
def test_every_cube_plot_accepts_a_selected_cube(cube, draw):
    fig = draw(cube.sel(n=30))
    assert isinstance(fig, Figure)
    titles = [ax.get_title() for ax in fig.axes] + [fig.get_suptitle()]
    assert any("n=30" in t for t in titles)  # the selected level is named
    both = draw(cube.sel(n=30, delta=0.5))  # every factor selected: one point
    assert isinstance(both, Figure)


@pytest.mark.parametrize(
    "draw", SUMMARY_PLOTS, ids=["nested-loop", "lollipop", "heatmap"]
)
def test_every_summary_plot_accepts_a_selected_summary(summary, draw):
    fig = draw(summary.sel(n=30))
    shown = fig.legends[0].get_title().get_text() if fig.legends else fig.get_suptitle()
    assert shown == "n=30"
    assert isinstance(draw(summary.sel(n=30, delta=0.0)), Figure)


def test_a_zip_plot_of_a_selected_cube_finds_the_truth(cube):
    fig = plots.zip_plot(cube.sel(delta=0.5), methods=["wald"])
    truths = {
        float(np.asarray(line.get_xdata())[0])
        for ax in fig.axes
        for line in ax.lines
        if line.get_gid() == "truth"
    }
    assert truths == {0.5}


def test_summarize_of_a_selected_cube_keeps_the_truth(cube, summary):
    sel = simstudy.summarize(cube.sel(n=30))
    assert float(sel.bias.sel(delta=0.5, method_name="wald")) == pytest.approx(
        float(summary.bias.sel(n=30, delta=0.5, method_name="wald")), abs=1e-12
    )


@pytest.mark.parametrize("measure", ["modelse", "mae", "bias", "ci_width"])
def test_an_exploding_method_is_drawn_off_scale_not_over_the_others(summary, measure):
    fig = plots.nested_loop_plot(summary, measure, size=(5.3, 3.8))
    others = ["wald", "fragile", "trimmed_mean_long_name"]
    lo, hi = fig.axes[0].get_ylim()
    biggest = float(_finite(summary, measure, others).max())
    assert hi - lo < 20 * biggest  # the others fill the axis, not 1e-10 of it
    assert float(_finite(summary, measure, ["logit"]).max()) > 1e3 * (hi - lo)
    assert "offscale:logit" in _gids(fig, "offscale:")  # marked at the edge
    texts = [t.get_text() for t in fig.legends[0].get_texts()]
    assert "logit (off scale)" in texts
    assert any("off scale" in n and "logit" in n for n in fig.notes)
    fig.canvas.draw()
    offset = fig.axes[0].yaxis.get_offset_text().get_text()
    assert offset == ""  # no '1e10' multiplier over the legend


def test_shares_stay_on_their_natural_scale(summary):
    fig = plots.nested_loop_plot(summary, "coverage")
    assert not _gids(fig, "offscale:")
    assert not fig.notes


def test_symlog_draws_every_method_and_a_bad_scale_is_refused(summary):
    fig = plots.nested_loop_plot(summary, "modelse", scale="symlog")
    assert fig.axes[0].get_yscale() == "symlog"
    assert not _gids(fig, "offscale:")
    with pytest.raises(UsageError, match="unknown scale 'log'; expected one of"):
        plots.nested_loop_plot(summary, "modelse", scale="log")


def test_off_scale_rule_keeps_a_biased_method_and_cuts_an_exploding_one():
    unbiased, biased = np.array([0.002, -0.001]), np.array([0.3, 0.25])
    assert outliers({"a": unbiased, "b": biased}, 0.0) == []
    exploding = np.array([1500.0, -700.0])
    assert outliers({"a": unbiased, "b": biased, "c": exploding}, 0.0) == ["c"]
    assert outliers({"a": np.array([0.0]), "b": biased}, 0.0) == []


def test_box_plots_clip_far_estimates_and_count_them(cube):
    fig = plots.distribution_plot(cube)
    lo, hi = fig.axes[0].get_ylim()
    assert hi - lo < 20  # the boxes of values near 0 fill the panel
    assert np.nanmax(np.abs(cube.est.values)) > 1e4  # though estimates reach 3e4
    assert _gids(fig, "offscale")
    assert any("beyond the axis" in n for n in fig.notes)
    linear = plots.distribution_plot(cube, scale="linear")
    assert linear.axes[0].get_ylim()[1] > 1e4  # every value, as asked


def test_zip_plot_skips_a_method_without_truth_and_scales_an_exploding_one(cube):
    fig = plots.zip_plot(cube, points={"n": 10})
    titles = " ".join(ax.get_title() for ax in fig.axes)
    assert "lowerbound" not in titles
    assert "wald" in titles
    assert "logit" in titles
    assert any("not drawn: lowerbound" in n and "'lb'" in n for n in fig.notes)
    assert "not drawn: lowerbound" in fig.get_supxlabel()  # printed in it too
    widths = {
        ax.get_title().split(" ")[0]: np.diff(ax.get_xlim())[0] for ax in fig.axes
    }
    assert widths["logit"] > 1e6 * widths["wald"]  # its own x scale
    assert widths["fragile"] == pytest.approx(widths["wald"])  # shared
    with pytest.raises(UsageError, match="the zip plot needs the truth of 'lb'"):
        plots.zip_plot(cube, methods=["lowerbound"])


def test_the_legend_of_five_methods_is_whole_and_inside_the_figure(summary):
    fig = plots.nested_loop_plot(summary, "bias", size=(5.3, 3.8))
    fig.canvas.draw()
    legend = fig.legends[0]
    texts = [t.get_text().replace(" (off scale)", "") for t in legend.get_texts()]
    drawn = [str(m) for m in summary.method_name.values if m != "lowerbound"]
    assert sorted(texts) == sorted(drawn)  # lowerbound has no bias: not drawn
    box = legend.get_window_extent()
    whole = fig.bbox
    assert whole.x0 <= box.x0 < box.x1 <= whole.x1
    assert whole.y0 <= box.y0 < box.y1 <= whole.y1
    top = fig.axes[0].get_window_extent()
    assert box.y0 >= top.y1  # above the data, never over it


def test_split_draws_one_panel_per_level_each_with_its_reference(summary):
    fig = plots.nested_loop_plot(summary, "power", split="delta")
    assert [sub.get_suptitle() for sub in fig.subfigs] == ["delta=0.0", "delta=0.5"]
    for sub in fig.subfigs:
        top = sub.axes[0]
        refs = [line for line in top.lines if line.get_gid() == "reference"]
        assert [float(np.asarray(r.get_ydata())[0]) for r in refs] == [0.05]
        assert (
            np.asarray(top.lines[0].get_xdata()).size == 2
        )  # n=10, n=30 in each panel
    with pytest.raises(UsageError, match="split='m' is not a factor"):
        plots.nested_loop_plot(summary, "power", split="m")


@pytest.mark.parametrize(
    "draw", [plots.lollipop_plot, plots.heatmap], ids=["lollipop", "heatmap"]
)
def test_lollipop_and_heat_map_split_too(summary, draw):
    fig = draw(summary, "modelse", split="delta")
    assert [sub.get_suptitle() for sub in fig.subfigs] == ["delta=0.0", "delta=0.5"]
    assert any("logit" in n for n in fig.notes)  # off scale, said once
    assert len(fig.notes) == 1


def test_a_figure_is_a_matplotlib_figure_with_a_png_repr(summary):
    fig = plots.heatmap(summary, "bias")
    assert isinstance(fig, Figure)
    assert fig._repr_png_()[:8] == b"\x89PNG\r\n\x1a\n"


def test_jupyter_shows_a_plot_inline_without_matplotlib_magic(store, tmp_path):
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell(
            "import simstudy\nfrom simstudy import plots\n"
            f"s = simstudy.summarize(simstudy.open_results({str(store)!r}))\n"
            "plots.nested_loop_plot(s, 'bias')"
        )
    ]
    client = NotebookClient(
        nb,
        timeout=120,
        kernel_name="python3",
        resources={"metadata": {"path": str(tmp_path)}},
    )
    client.execute()
    (result,) = [o for o in nb.cells[0].outputs if o.output_type == "execute_result"]
    assert "image/png" in result.data
    assert len(result.data["image/png"]) > 1000  # base64 of a real picture


def test_one_selected_method_is_a_method_dimension_of_one(cube, summary):
    wald = cube.sel(method_name="wald")
    assert plots.zip_plot(wald).axes[0].get_title().startswith("wald")
    assert plots.distribution_plot(wald).axes[0].get_xticklabels()[0].get_text() == (
        "wald"
    )
    for draw in (plots.nested_loop_plot, plots.lollipop_plot, plots.heatmap):
        assert isinstance(draw(summary.sel(method_name="wald"), "bias"), Figure)
    with pytest.raises(UsageError, match="it needs at least 2, got 1"):
        plots.scatter_plot(wald)
