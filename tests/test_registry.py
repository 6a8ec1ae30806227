"""The registry of measures is the one source: summary, target, solve,
protocol, plots and report read it, and a user's Measure goes its way."""

from __future__ import annotations

from html import escape as html_escape
from typing import Any

import numpy as np
import pytest
import xarray as xr

from simstudy.analysis import registry
from simstudy.analysis.measures import NEEDS, Measure
from simstudy.analysis.records import to_records
from simstudy.analysis.summary import summarize
from simstudy.errors import UsageError
from tests.test_summary import _cube

FULL: dict[str, Any] = {"se": "se", "ci": ("lo", "hi"), "p": "p", "reference": "a"}


def test_every_built_in_is_declared_once_with_all_it_needs_said():
    names = [m.name for m in registry.BUILTINS]
    assert len(names) == len(set(names)) == len(registry.MEASURES)
    assert tuple(names) == registry.MEASURES
    for measure in registry.BUILTINS:
        ways = (measure.kernel is not None, measure.func is not None, measure.ledger)
        assert sum(ways) == 1, measure.name  # one way to compute it
        assert set(measure.needs) <= set(NEEDS), measure.name
        assert measure.formula is not None, measure.name
        assert all(measure.formula), measure.name


def test_the_summary_computes_each_built_in_in_the_registry_s_order():
    cube = _cube()
    summary = summarize(cube.assign(warnings=xr.zeros_like(cube["status"])), **FULL)
    for name in registry.MEASURES:
        assert name in summary.data_vars, name
        assert f"{name}_mcse" in summary.data_vars, name
    shown = list(dict.fromkeys(r["measure"] for r in to_records(summary)))
    built_in = [m for m in shown if m in registry.MEASURES]
    assert built_in == [m for m in registry.MEASURES if m in built_in]


@pytest.mark.parametrize("need", NEEDS)
def test_a_missing_need_skips_exactly_the_measures_that_declare_it(need):
    # without an SE there is no Wald interval or test either
    lacking = {need, "se"} if need in ("ci", "p") else {need}
    given = {k: v for k, v in FULL.items() if k not in lacking}
    summary = summarize(_cube(with_truth=need != "truth"), **given)
    for measure in registry.BUILTINS:
        if measure.ledger:
            continue
        missing = bool(set(measure.needs) & lacking)
        assert (measure.name in summary.attrs["skipped"]) == missing, measure.name
        assert (measure.name in summary.data_vars) != missing, measure.name


def test_run_targets_and_solve_targets_are_the_registry_s(tmp_path, write_study):
    import simstudy
    from tests.test_solve import SOURCE
    from tests.test_target import write

    targets = [m.name for m in registry.BUILTINS if m.target]
    assert list(registry.TARGET_NEEDS) == targets
    with pytest.raises(UsageError, match="not a measure with a Monte") as refused:
        simstudy.run(write(tmp_path), target_mcse={"median_bias": 0.1})
    assert refused.value.hint == f"choose one of: {', '.join(targets)}"
    with pytest.raises(UsageError, match="is not a measure") as unknown:
        simstudy.solve(write_study(SOURCE), factor="n", target={"pwr": 0.8})
    assert f"(measures: {', '.join(registry.MEASURES)})" in str(unknown.value)


def test_a_user_measure_is_a_measure_like_the_built_ins():
    spec = Measure(
        lambda x, t: np.nanmax(np.abs(x - t[:, None]), axis=-1),
        needs=("truth",),
        reference=0.0,
        section="Bias and precision",
    )
    summary = summarize(_cube(), custom={"maxerr": spec})
    assert "maxerr" in summary.data_vars
    assert "maxerr_mcse" in summary.data_vars
    assert "maxerr" in {r["measure"] for r in to_records(summary)}
    shown = registry.lookup("maxerr", summary.attrs)
    assert shown is not None
    assert (shown.reference, shown.section) == (0.0, "Bias and precision")
    # needs=("truth",): without a truth it is skipped, with the reason
    bare = summarize(_cube(with_truth=False), custom={"maxerr": spec})
    assert "maxerr" not in bare.data_vars
    assert "no truth" in bare.attrs["skipped"]["maxerr"]
    # a plain function is a Measure with nothing declared: no reference line
    plain = summarize(_cube(), custom={"q": lambda x, t: np.nanmax(x, axis=-1)})
    found = registry.lookup("q", plain.attrs)
    assert found is not None
    assert found.reference is None
    assert registry.lookup("nope", plain.attrs) is None


def test_a_user_measure_without_a_function_or_with_an_unknown_need_is_refused():
    with pytest.raises(UsageError, match="has no function"):
        summarize(_cube(), custom={"x": Measure()})
    with pytest.raises(UsageError, match="needs 'truths'"):
        summarize(_cube(), custom={"x": Measure(np.nanmean, needs=("truths",))})  # type: ignore[arg-type]


def _with_user_measures() -> xr.Dataset:
    cube = _cube()
    maxerr = Measure(
        lambda x, t: np.nanmax(np.abs(x - t[:, None]), axis=-1),
        reference=0.0,
        section="Bias and precision",
    )
    custom: dict[str, Any] = {
        "maxerr": maxerr,
        "q": lambda x, t: np.nanmax(x, axis=-1),
    }
    cube = cube.assign(warnings=xr.zeros_like(cube["status"]))
    return summarize(cube, custom=custom, **FULL)


def test_plots_draw_the_registry_s_reference_lines_and_a_user_s():
    from simstudy import plots
    from simstudy.plots.common import reference_value
    from simstudy.plots.scales import bounded

    summary = _with_user_measures()
    for measure in registry.BUILTINS:
        ref = measure.reference
        want = summary.attrs[ref] if isinstance(ref, str) else ref
        assert reference_value(measure.name, summary.attrs) == want, measure.name
        assert bounded(measure.name, summary.attrs) == measure.bounded
    assert reference_value("maxerr", summary.attrs) == 0.0
    assert reference_value("q", summary.attrs) is None

    def lines(measure: str) -> list[str]:
        fig = plots.nested_loop_plot(summary, measure)
        return [str(ln.get_gid()) for ax in fig.axes for ln in ax.lines]

    assert "reference" in lines("maxerr")
    assert "reference" in lines("bias")
    assert "reference" not in lines("q")


def test_the_report_s_tables_are_the_registry_s_sections_and_a_user_s():
    import re

    from simstudy.report.tables import measures_table

    summary = _with_user_measures()
    html = measures_table(to_records(summary), summary)
    tables = re.findall(r"<h3>(.*?)</h3><div class=scroll><table.*?</table>", html)
    present = [m for m in registry.BUILTINS if m.section and m.name in summary]
    assert any(not m.drawn for m in present)  # tables show undrawn measures too
    assert tables == [
        *dict.fromkeys(html_escape(m.section or "") for m in present),
        "Other measures",
    ]
    for title, body in re.findall(r"<h3>(.*?)</h3>(.*?)</table>", html):
        heads = re.findall(r"<th>(\w+)</th>", body)
        for name in heads:
            found = registry.lookup(name, summary.attrs)
            assert found is not None
            assert html_escape(found.section or "") == title, name
    assert "maxerr" in html.split("Bias and precision")[1].split("<h3>")[0]
