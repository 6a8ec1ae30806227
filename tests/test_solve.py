"""simstudy solve: the level where a measure meets a target, honest about noise."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from typing import Any

import numpy as np
import pytest

import simstudy
from simstudy import plots
from simstudy.cli import main
from simstudy.errors import NoSolution, UsageError
from simstudy.solving.rootfit import Point, Scale, fit_root, monotone_breach
from simstudy.store import open_results
from tests.helpers import assert_store_consistent, cube_digest

# A z test of one N(delta * sqrt(n / 2), 1) draw: its power is
# Phi(delta * sqrt(n / 2) - 1.96) + Phi(-delta * sqrt(n / 2) - 1.96), so
# 80% power at delta = 0.5 needs n = 2 * ((1.96 + 0.8416) / 0.5) ** 2 = 62.79
# (the second term is negligible there). One draw per task keeps tasks cheap.
SOURCE = """
import os
import signal
from math import erfc, sqrt

from simstudy import Study

study = Study("z", factors={"n": [10, 120], "delta": [0.5]}, replicates=200, seed=3)

@study.data
def draw(rng, n, delta):
    flag = os.environ.get("SOLVE_KILL_FLAG")
    if flag and os.path.exists(flag) and n not in (10, 33, 70, 120):
        os.remove(flag)  # a level past round 0: die as kill -9 would
        os.kill(os.getpid(), signal.SIGKILL)
    return rng.standard_normal() + delta * sqrt(n / 2)

@study.method(estimate="z", p="p")
def ztest(z):
    return {"z": z, "p": erfc(abs(z) / sqrt(2))}
"""
ROOT_N = 2 * ((1.959964 + 0.841621) / 0.5) ** 2  # 62.79
KW: dict[str, Any] = {
    "target": {"power": 0.8},
    "scheduler": "synchronous",
    "tolerance": "10%",
}


def _z(write_study):
    return write_study(SOURCE)


def test_solve_finds_the_sample_size_with_an_interval_around_the_exact_one(
    write_study, tmp_path
):
    store = tmp_path / "z.zarr"
    lines: list[str] = []
    report = simstudy.solve(
        _z(write_study), factor="n", store=store, on_progress=lines.append, **KW
    )
    (s,) = report.solutions
    assert s.lower <= ROOT_N <= s.upper
    assert s.answer == math.ceil(s.estimate)
    assert isinstance(s.answer, int)
    assert s.met
    assert s.upper - s.lower <= 0.1 * s.estimate
    assert s.tasks == sum(e.replicates for e in s.evaluations)  # one method
    assert report.computed == s.tasks
    assert lines[0].startswith("round 1: n in [")
    # the store shows every evaluated level, and the solve for the report
    assert_store_consistent(store)
    cube = open_results(store)
    assert {e.level for e in s.evaluations} <= set(cube["n"].values.tolist())
    record = cube.attrs["simstudy"]["solve"]
    assert record == [s.to_json()]
    # the power curve, and the report that shows it with the answer
    summary = simstudy.summarize(cube, measures=["power"])
    fig = plots.measure_curve(
        summary, "power", factor="n", target=0.8, solution=record[0]
    )
    (line,) = [ln for ln in fig.axes[0].lines if ln.get_gid() == "curve:ztest"]
    assert np.size(line.get_xdata()) == len(s.evaluations)
    with pytest.raises(UsageError, match="'m' is not a factor of the summary"):
        plots.measure_curve(summary, "power", factor="m")
    page = simstudy.write_report(store, tmp_path / "r.html").read_text()
    assert "<h2>Solved levels</h2>" in page
    assert f"n = <b>{s.answer}</b> at delta = 0.5" in page


def test_a_second_solve_reuses_every_task_and_replays_to_the_same_answer(
    write_study, tmp_path
):
    path = _z(write_study)
    whole = simstudy.solve(path, factor="n", store=tmp_path / "a.zarr", **KW)
    # a small budget stops early; a larger one replays it and goes on
    first = simstudy.solve(
        path, factor="n", store=tmp_path / "b.zarr", budget=1500, **KW
    )
    assert not first.solutions[0].met
    again = simstudy.solve(path, factor="n", store=tmp_path / "b.zarr", **KW)
    assert again.solutions == whole.solutions  # bit for bit
    assert first.computed + again.computed == whole.computed
    assert cube_digest(tmp_path / "a.zarr") == cube_digest(tmp_path / "b.zarr")


def test_kill_9_mid_solve_then_the_same_command_gives_the_same_answer(
    write_study, tmp_path
):
    path = _z(write_study)
    whole = simstudy.solve(path, factor="n", store=tmp_path / "a.zarr", **KW)
    flag = tmp_path / "armed"
    flag.write_text("")
    store = tmp_path / "b.zarr"
    argv = [sys.executable, "-m", "simstudy", "solve", str(path), "--factor", "n"]
    argv += ["--target", "power=0.8", "--tolerance", "10%", "--store", str(store)]
    argv += ["--scheduler", "synchronous", "--no-progress"]
    env = {**os.environ, "SOLVE_KILL_FLAG": str(flag)}
    killed = subprocess.run(argv, env=env, capture_output=True, text=True)
    assert killed.returncode == -9, killed.stderr
    done = int((open_results(store, include_hidden=True)["status"] == 1).sum())
    assert 0 < done < whole.computed
    again = subprocess.run(argv, env=env, capture_output=True, text=True)
    assert again.returncode == 0, again.stderr
    assert whole.solutions[0].line() in again.stdout
    assert f"{whole.computed - done:,} tasks computed now" in again.stdout
    assert cube_digest(tmp_path / "a.zarr") == cube_digest(store)


PEAK = """
from math import erfc, sqrt
from simstudy import Study

study = Study("peak", factors={"x": [0.0, 3.0]}, replicates=400, seed=1)

@study.data
def draw(rng, x):
    return rng.standard_normal() + 3 * (x - 1.5) ** 2

@study.method(estimate="z", p="p")
def ztest(z):
    return {"z": z, "p": erfc(abs(z) / sqrt(2))}
"""


def test_a_measure_that_is_not_monotone_is_refused_with_where_it_turns(
    write_study, tmp_path, capsys
):
    path = write_study(PEAK)
    store = tmp_path / "p.zarr"
    argv = ["solve", str(path), "--factor", "x", "--target", "power=0.5"]
    argv += ["--store", str(store), "--scheduler", "synchronous", "--no-progress"]
    assert main(argv) == 5
    err = capsys.readouterr().err
    assert "power of ztest is not monotone in x" in err
    assert "rises from" in err
    assert "falls from" in err
    assert "hint:" in err
    with pytest.raises(NoSolution, match="not monotone"):
        simstudy.solve(path, factor="x", target={"power": 0.5}, store=store)


def test_a_target_outside_the_range_is_refused_not_extrapolated(write_study, tmp_path):
    with pytest.raises(NoSolution, match=r"does not reach 0\.8 for n in 10\.\.20"):
        simstudy.solve(
            _z(write_study),
            factor="n",
            bounds=(10, 20),
            store=tmp_path / "z.zarr",
            **KW,
        )


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"factor": "m"}, "'m' is not a factor"),
        ({"factor": "n", "target": {"pwr": 0.8}}, "'pwr' is not a measure"),
        ({"factor": "n", "target": {"power": 1.2}}, "strictly between 0 and 1"),
        ({"factor": "n", "at": {"sigma": 1}}, "'sigma' is not a factor"),
        ({"factor": "n", "at": {"delta": "big"}}, "is not a float"),
        ({"factor": "delta"}, "one declared level"),
        ({"factor": "n", "bounds": (50, 20)}, "LOW < HIGH"),
        ({"factor": "n", "tolerance": "x%"}, "--tolerance must be"),
        ({"factor": "n", "restart": True}, "'restart' does not apply"),
    ],
    ids=[
        "unknown-factor",
        "unknown-measure",
        "proportion-out-of-0-1",
        "at-unknown-factor",
        "at-bad-level",
        "no-range",
        "range-reversed",
        "bad-tolerance",
        "restart",
    ],
)
def test_bad_input_is_refused_and_writes_nothing(write_study, tmp_path, kwargs, match):
    store = tmp_path / "z.zarr"
    kwargs = {"target": {"power": 0.8}, **kwargs}
    with pytest.raises(UsageError, match=match):
        simstudy.solve(_z(write_study), store=store, **kwargs)
    assert not store.exists()


def test_the_fit_recovers_an_exact_probit_root_and_flags_a_turn():
    scale = Scale(sqrt_factor=True, probit=True)
    from scipy.special import ndtr

    pts = [
        Point(n, float(ndtr(0.5 * math.sqrt(n / 2) - 1.959964)), 0.01, 1000)
        for n in (20, 40, 60, 80, 100)
    ]
    fit = fit_root(pts, 0.8, scale)
    assert fit is not None
    assert fit.lower < fit.root < fit.upper
    assert fit.root == pytest.approx(ROOT_N, rel=1e-3)
    assert monotone_breach(pts) is None
    turned = [*pts, Point(120, 0.3, 0.01, 1000)]
    assert monotone_breach(turned) is not None


MEAN = """
from simstudy import Study

study = Study("mean", factors={"n": [4, 100]}, replicates=200, seed=2)
study.truth(estimate=0.0)

@study.data
def draw(rng, n):
    return rng.standard_normal(n)

@study.method
def mean(x):
    return {"estimate": float(x.mean())}
"""


def test_a_measure_against_the_truth_is_solved_at_every_evaluated_level(
    write_study, tmp_path
):
    # rmse of the mean of n N(0, 1) draws is 1 / sqrt(n): 0.2 at n = 25
    report = simstudy.solve(
        write_study(MEAN),
        factor="n",
        target={"rmse": 0.2},
        tolerance="10%",
        scheduler="synchronous",
        store=tmp_path / "m.zarr",
    )
    (s,) = report.solutions
    assert all(math.isfinite(e.value) for e in s.evaluations)
    assert s.lower <= 25 <= s.upper


def test_a_method_whose_tasks_fail_stops_the_solve_with_its_error(
    write_study, tmp_path
):
    source = MEAN.replace(
        'return {"estimate": float(x.mean())}', 'raise ValueError("no luck")'
    )
    with pytest.raises(NoSolution, match=r"method 'mean' fail .*no luck"):
        simstudy.solve(
            write_study(source),
            factor="n",
            target={"rmse": 0.2},
            scheduler="synchronous",
            store=tmp_path / "m.zarr",
        )
