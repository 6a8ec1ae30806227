"""Designs beyond the full cross: ``where=`` and factors that vary together."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

import simstudy
from simstudy import Study
from simstudy.cli import main
from simstudy.declare.grid import points
from simstudy.errors import FingerprintMismatch, StudyError
from tests.helpers import assert_store_consistent, cube_digest, run_study_cli

PAIRS = [(10, 10), (10, 40), (40, 10)]

SOURCE = """
import numpy as np
from simstudy import Study

study = Study(
    "paired",
    factors={{{factors}}},
    replicates={replicates},
    seed=5,
    rng={scheme!r},{where}
)

@study.data
def draw(rng, n1, n2, vr):
    return rng.normal(0.0, 1.0, n1), rng.normal(0.0, np.sqrt(vr), n2)

@study.method(se="se")
def welch(d, rng):
    x, y = d
    se = np.sqrt(x.var(ddof=1) / len(x) + y.var(ddof=1) / len(y))
    return {{"estimate": x.mean() - y.mean() + 0 * rng.random(), "se": se}}

study.truth(estimate=0.0)
"""
PAIRED = '("n1", "n2"): [(10, 10), (10, 40), (40, 10)], "vr": [1.0, 4.0]'
CROSS = '"n1": [10, 40], "n2": [10, 40], "vr": [1.0, 4.0]'


def write(write_study, *, factors=PAIRED, where=None, name="study.py", **kw):
    src = SOURCE.format(
        factors=factors,
        where=f"\n    where={where}," if where else "",
        replicates=kw.get("replicates", 4),
        scheme=kw.get("scheme", "spawn"),
    )
    return write_study(src, name)


def _study(**kw):
    kw.setdefault("factors", {("n1", "n2"): PAIRS, "vr": [1.0, 4.0]})
    return Study("s", replicates=2, seed=1, **kw)


def test_tuple_key_crosses_pairs_with_the_rest_in_grid_order():
    study = _study(where=lambda n1, n2, vr: not (n1 == n2 and vr == 4.0))
    assert study.factors == {"n1": (10, 40), "n2": (10, 40), "vr": (1.0, 4.0)}
    assert [tuple(p.values()) for p in points(study)] == [
        (10, 10, 1.0),
        (10, 40, 1.0),
        (10, 40, 4.0),
        (40, 10, 1.0),
        (40, 10, 4.0),
    ]
    assert study.n_points == 5
    assert study.n_tasks == 5 * 2 * 0  # no method yet


def test_full_cross_fingerprint_is_unchanged_by_the_design_machinery():
    plain = Study("s", factors={"n": [1, 2]}, replicates=2, seed=1)
    assert plain.design.full
    assert plain.design.digest() is None
    kept = Study("s", factors={"n": [1, 2]}, replicates=2, seed=1, where=lambda n: 1)
    assert kept.design.full  # a predicate that keeps everything is no subset


def test_where_takes_only_the_factors_it_names():
    seen = []

    def keep(vr):
        seen.append(vr)
        return True

    _study(where=keep)
    assert sorted(set(seen)) == [1.0, 4.0]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"where": lambda vr: False}, "where= keeps no design point of the 6"),
        ({"where": lambda n1, n2: n1 / (n2 - 10) > 0}, "where= raised ZeroDivision"),
        ({"where": lambda n3: True}, "where= asks for 'n3', which is not a factor"),
        ({"where": "n1 < n2"}, "where= must be a function of factor values"),
        (
            {"factors": {("n1", "n2"): [(10, 10), (10,)]}},
            re.escape("level (10,) is not a tuple of 2 value(s)"),
        ),
        (
            {"factors": {("n1", "n2"): [(10, 10), (10, 10)]}},
            re.escape("have duplicate levels (repeated: (10, 10))"),
        ),
        (
            {"factors": {("n1", "n2"): [(1, 2)], "n1": [3]}},
            "factor 'n1' is named twice in factors=",
        ),
        ({"factors": {("n1", "n1"): [(1, 2)]}}, "factor 'n1' is named twice"),
        ({"factors": {("n1", "n2"): []}}, re.escape("factors (n1, n2) have no levels")),
        ({"factors": {("n1", "seed x"): [(1, 2)]}}, "not a valid Python identifier"),
        (
            {"factors": {("n1", "n2"): [(1, 2), (1, "a")]}},
            "factor 'n2' mixes level types",
        ),
    ],
    ids=[
        "keeps-none",
        "raises",
        "unknown-factor",
        "not-callable",
        "tuple-too-short",
        "duplicate-tuples",
        "factor-in-two-keys",
        "factor-twice-in-a-key",
        "no-tuples",
        "bad-name-in-tuple",
        "mixed-types-in-column",
    ],
)
def test_bad_design_is_a_load_time_error(kwargs, message):
    with pytest.raises(StudyError, match=message):
        _study(**kwargs)


def test_bad_predicate_in_a_study_file_exits_2_and_writes_nothing(
    write_study, tmp_path, capsys
):
    path = write(write_study, where="lambda n1, n2: n1 > 100")
    store = tmp_path / "s.zarr"
    argv = ["run", str(path), "--store", str(store), "--scheduler", "synchronous"]
    assert main([*argv, "--no-progress"]) == 2
    assert "where= keeps no design point" in capsys.readouterr().err
    assert not store.exists()


def test_a_points_numbers_do_not_depend_on_the_design(write_study, tmp_path):
    """Same point, same streams: the where= study and the full cross agree
    bit for bit at every point they share."""
    sub = write(write_study, where="lambda n1, n2, vr: n1 != n2 or vr == 1.0")
    full = write(write_study, factors=CROSS, name="full.py")
    simstudy.run(sub, store=tmp_path / "sub.zarr", scheduler="synchronous")
    simstudy.run(full, store=tmp_path / "full.zarr", scheduler="synchronous")
    a = assert_store_consistent(tmp_path / "sub.zarr")
    b = simstudy.open_results(tmp_path / "full.zarr").load()
    design = [tuple(p) for p in a.attrs["simstudy"]["design"]]
    assert design == [
        (10, 10, 1.0),
        (10, 40, 1.0),
        (10, 40, 4.0),
        (40, 10, 1.0),
        (40, 10, 4.0),
    ]
    for n1, n2, vr in design:
        at = {"n1": n1, "n2": n2, "vr": vr}
        for var in ("estimate", "se", "status"):
            x, y = a[var].sel(at).values, b[var].sel(at).values
            assert x.tobytes() == y.tobytes(), (at, var)
    outside = a.sel(n1=40, n2=40)
    assert not outside["in_design"].any()
    assert (outside["status"] == 0).all()
    assert np.isnan(outside["estimate"]).all()
    assert b["in_design"].all()


def test_out_of_design_points_are_never_counted(write_study, tmp_path, capsys):
    path = write(write_study, where="lambda n1, n2, vr: n1 != n2 or vr == 1.0")
    store = tmp_path / "s.zarr"
    report = simstudy.run(path, store=store, scheduler="synchronous")
    assert (report.tasks, report.ok, report.pending) == (20, 20, 0)
    assert main(["status", str(store)]) == 0
    out = capsys.readouterr().out
    assert "20 ok, 0 failed, 0 pending of 20 tasks (100.0% ok)" in out
    assert "n1=40, n2=40" not in out
    assert "n1=10, n2=10, vr=4.0" not in out
    summary = simstudy.summarize(simstudy.open_results(store))
    assert int(summary["n_pending"].sum()) == 0
    records = simstudy.analysis.records.to_records(summary)
    cells = {(r["n1"], r["n2"], r["vr"]) for r in records}
    assert len(cells) == 5
    assert (10, 10, 4.0) not in cells
    assert main(["summarize", str(store), "--format", "csv"]) == 0
    csv = capsys.readouterr().out
    assert "nan" not in csv.lower()
    assert len({tuple(line.split(",")[:3]) for line in csv.splitlines()[1:]}) == 5


def test_widening_the_predicate_runs_only_the_new_points(write_study, tmp_path):
    narrow = write(write_study, where="lambda n1, n2: n1 <= n2")
    wide = write(write_study, name="wide.py")
    store = tmp_path / "s.zarr"
    first = simstudy.run(narrow, store=store, scheduler="synchronous")
    assert first.computed == 4 * 4  # (10,10), (10,40) x 2 vr x 4 replicates
    before = simstudy.open_results(store).load()
    second = simstudy.run(wide, store=store, scheduler="synchronous")
    assert second.computed == 2 * 4  # only (40, 10) x 2 vr
    after = assert_store_consistent(store)
    kept = {"n1": 10, "n2": [10, 40]}
    assert after.sel(kept)["estimate"].identical(before.sel(kept)["estimate"])
    assert len(simstudy.open_results(store).attrs["simstudy"]["design"]) == 6


def test_narrowing_hides_points_and_prune_deletes_them(write_study, tmp_path):
    wide = write(write_study)
    narrow = write(write_study, where="lambda n1, n2: n1 <= n2", name="narrow.py")
    store = tmp_path / "s.zarr"
    simstudy.run(wide, store=store, scheduler="synchronous")
    hidden = simstudy.run(narrow, store=store, scheduler="synchronous")
    assert hidden.computed == 0
    assert any("2 design point(s) outside the design" in n for n in hidden.notes)
    ds = simstudy.open_results(store)
    assert (ds["status"].sel(n1=40, n2=10) == 1).all()  # kept, only hidden
    assert not ds["in_design"].sel(n1=40, n2=10).any()
    pruned = simstudy.run(narrow, store=store, scheduler="synchronous", prune=True)
    assert pruned.computed == 0
    ds = assert_store_consistent(store)
    assert (ds["status"].sel(n1=40, n2=10) == 0).all()  # deleted by --prune
    assert (ds["status"].sel(n1=10, n2=[10, 40]) == 1).all()
    back = simstudy.run(wide, store=store, scheduler="synchronous")
    assert back.computed == 2 * 4


def test_a_positional_scheme_refuses_a_changed_design(write_study, tmp_path):
    wide = write(write_study, scheme="pcg64-jump")
    narrow = write(
        write_study,
        scheme="pcg64-jump",
        where="lambda n1, n2: n1 <= n2",
        name="narrow.py",
    )
    store = tmp_path / "s.zarr"
    simstudy.run(narrow, store=store, scheduler="synchronous")
    with pytest.raises(FingerprintMismatch, match="the design changed under the"):
        simstudy.run(wide, store=store, scheduler="synchronous")
    again = simstudy.run(narrow, store=store, scheduler="synchronous")
    assert again.computed == 0


def test_a_kill_while_pruning_a_narrowed_design_is_finished_by_the_next_run(
    write_study, tmp_path
):
    write(write_study)
    narrow_src = SOURCE.format(
        factors=PAIRED,
        where="\n    where=lambda n1, n2: n1 <= n2,",
        replicates=4,
        scheme="spawn",
    )
    store = tmp_path / "s.zarr"
    assert run_study_cli(tmp_path, store).returncode == 0
    write_study(narrow_src)
    dead = run_study_cli(tmp_path, store, "--prune", kill="prune:copied")
    assert dead.returncode == -9, dead.stderr
    again = run_study_cli(tmp_path, store, "--prune")
    assert again.returncode == 0, again.stderr
    assert_store_consistent(store)
    fresh = tmp_path / "fresh"
    simstudy.run(
        write_study(narrow_src, "fresh/study.py"),
        store=fresh / "s.zarr",
        scheduler="synchronous",
    )
    assert cube_digest(store) == cube_digest(fresh / "s.zarr")


def test_the_paired_example_study_runs_as_documented(tmp_path):
    path = Path(__file__).resolve().parents[1] / "studies" / "paired.py"
    store = tmp_path / "paired.zarr"
    report = simstudy.run(path, store=store, scheduler="synchronous", replicates=3)
    assert report.tasks == 5 * 3 * 2
    ds = assert_store_consistent(store)
    assert ds["in_design"].sel(vr=4.0).values.tolist() == [[False, True], [True, False]]
    cells = ds.stack(point=["n1", "n2", "vr"])
    assert cells.isel(point=cells.in_design.values).sizes["point"] == 5


def test_replay_refuses_a_point_outside_the_design(write_study, capsys):
    path = write(write_study, where="lambda n1, n2: n1 <= n2")
    task = "n1=40,n2=10,vr=1.0,replicate=0,method=welch"
    assert main(["replay", str(path), "--task", task]) == 2
    err = capsys.readouterr().err
    assert "is outside the study's design" in err
    assert "replay a design point, e.g. n1=10,n2=10,vr=1.0,replicate=0" in err


def test_plots_and_report_show_the_design_points_alone(write_study, tmp_path):
    from simstudy import plots
    from simstudy.report import write_report

    path = write(write_study, where="lambda n1, n2, vr: n1 != n2 or vr == 1.0")
    store = tmp_path / "s.zarr"
    simstudy.run(path, store=store, scheduler="synchronous")
    cube = simstudy.open_results(store)
    summary = simstudy.summarize(cube)
    fig = plots.nested_loop_plot(summary, "bias")
    dots = [ln for ln in fig.axes[0].lines if ln.get_gid() == "points:welch"]
    assert np.size(dots[0].get_xdata()) == 5
    assert "5 design points" in fig.axes[1].get_xlabel()
    plots.lollipop_plot(summary, "bias")
    plots.zip_plot(cube)
    html = write_report(store, tmp_path / "r.html").read_text()
    assert "n1=10, n2=10, vr=4.0" not in html
    assert "n1=10, n2=40, vr=4.0" in html
    tasks = 5 * 4  # design points x replicates (one method); none pending
    assert f"{tasks:,}: {tasks:,} ok, 0 failed, 0 pending" in html


def test_plan_shows_the_cross_and_the_design(write_study, capsys):
    path = write(write_study, where="lambda n1, n2, vr: n1 != n2 or vr == 1.0")
    assert main(["plan", str(path), "--store", str(path.parent / "s.zarr")]) == 0
    out = capsys.readouterr().out
    assert "= 8 point(s) in the cross, 5 in the design; 4 replicates" in out
    assert "tasks: 20 (0 done" in out
