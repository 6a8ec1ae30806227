"""Precision-driven runs: --target-mcse rounds, per-point stops, --max-replicates."""

from __future__ import annotations

import math
import os
import signal

import numpy as np
import pytest

import simstudy
from simstudy.cli import main
from simstudy.errors import UsageError
from tests.helpers import assert_store_consistent, cube_digest
from tests.studies import write_study_file

# the estimate is one N(0, sigma^2) draw: its SD is sigma, so the MCSE of the
# bias after n replicates is about sigma / sqrt(n), and the target t needs
# about (sigma / t)^2 replicates
SOURCE = """
import numpy as np
from simstudy import Study

study = Study("target", factors={{"sigma": [1.0, 2.0]}}, replicates={step}, seed=5)
study.truth(estimate=0.0)

@study.data
def gen(rng, sigma):
    return rng.normal(scale=sigma, size=1)

@study.method
def draw(x):
    return {{"estimate": float(x[0])}}

@study.method
def half(x):
    return {{"estimate": float(x[0]) / 2}}
"""


def write(tmp_path, step=100, name="study.py"):
    return write_study_file(tmp_path, SOURCE.format(step=step), name)


def _replay_rule(x, first, target, limit, step=None):
    """The documented rule, recomputed with plain numpy from one point's
    replicates of its noisiest method (``step``: --round-size, default a
    tenth of the first round)."""
    n, step = first, step or math.ceil(first / 10)
    while True:
        mcse = np.std(x[:n], ddof=1) / math.sqrt(n)
        if mcse <= target or n >= limit:
            return n, mcse
        need = max(n + step, min(2 * n, math.ceil(n * (mcse / target) ** 2)))
        n = min(limit, math.ceil(need / step) * step)


def test_each_point_stops_where_its_known_variance_says(tmp_path):
    path = write(tmp_path)
    store = tmp_path / "s.zarr"
    report = simstudy.run(
        path, store=store, scheduler="synchronous", target_mcse={"bias": 0.05}
    )
    assert report.exit_code == 0
    assert report.warnings == ()
    ds = assert_store_consistent(store)
    ds = simstudy.open_results(store)
    for sigma in (1.0, 2.0):
        stop = int(ds["target_replicates"].sel(sigma=sigma))
        assert bool(ds["target_met"].sel(sigma=sigma))
        # (sigma / t)^2 = 400 and 1600 replicates, up to the noise of the
        # empirical SD the rule uses (~3 SE of it) and one round of 10
        expected = (sigma / 0.05) ** 2
        assert 0.85 * expected <= stop <= 1.15 * expected + 10, (sigma, stop)
        assert stop % 10 == 0
        status = ds["status"].sel(sigma=sigma).values
        assert (status[:stop] == 1).all()
        assert (status[stop:] == 0).all()  # nothing past the stop was run
        x = ds["estimate"].sel({"sigma": sigma, "method_name": "draw"}).values
        n, mcse = _replay_rule(x, 100, 0.05, 100 * 100)
        assert n == stop
        assert mcse <= 0.05
        # "half" has half the SE: "draw", the noisiest, decided
        y = ds["estimate"].sel({"sigma": sigma, "method_name": "half"}).values[:stop]
        assert np.std(y, ddof=1) / math.sqrt(stop) <= 0.05 / 2 * 1.01
    assert report.tasks == int(ds["target_replicates"].sum()) * 2
    summary = simstudy.summarize(ds)
    assert int(summary["n_pending"].sum()) == 0
    assert (summary["bias_mcse"].values <= 0.05).all()


def test_max_replicates_caps_and_says_so(tmp_path, capsys):
    path = write(tmp_path)
    store = tmp_path / "s.zarr"
    argv = ["run", str(path), "--store", str(store), "--no-progress"]
    code = main([*argv, "--target-mcse", "bias=0.01", "--max-replicates", "300"])
    assert code == 0
    err = capsys.readouterr().err
    assert "warning: the MCSE target is not met at 2 of 2 design point(s)" in err
    ds = simstudy.open_results(store)
    assert ds["target_replicates"].values.tolist() == [300, 300]
    assert not ds["target_met"].values.any()
    main(["status", str(store)])
    out = capsys.readouterr().out
    assert "0 pending" in out
    assert "target not met at the cap, 300 replicates" in out
    # a looser target later needs no new task
    again = simstudy.run(
        path, store=store, scheduler="synchronous", target_mcse={"bias": 0.2}
    )
    assert again.computed == 0
    assert simstudy.open_results(store)["target_met"].values.all()


def test_an_interrupted_target_run_resumes_to_the_same_cube(tmp_path):
    path = write(tmp_path)
    whole, broken = tmp_path / "whole.zarr", tmp_path / "broken.zarr"
    simstudy.run(path, store=whole, scheduler="synchronous", target_mcse={"bias": 0.05})
    seen = []

    def interrupt(progress):
        seen.append(progress.done)
        if len(seen) == 30:  # mid-way through a later round
            os.kill(os.getpid(), signal.SIGINT)

    first = simstudy.run(
        path,
        store=broken,
        scheduler="synchronous",
        batch_size=10,
        target_mcse={"bias": 0.05},
        on_progress=interrupt,
    )
    assert first.interrupted
    assert 2 * 100 * 2 < first.computed < 4000  # past the first round
    rest = simstudy.run(
        path, store=broken, scheduler="synchronous", target_mcse={"bias": 0.05}
    )
    assert rest.exit_code == 0
    assert first.computed + rest.computed == rest.tasks
    assert cube_digest(broken) == cube_digest(whole)
    a, b = simstudy.open_results(broken), simstudy.open_results(whole)
    np.testing.assert_array_equal(a["target_replicates"], b["target_replicates"])


def test_a_plain_run_past_the_targets_forgets_them(tmp_path):
    path = write(tmp_path)
    store = tmp_path / "s.zarr"
    simstudy.run(path, store=store, scheduler="synchronous", target_mcse={"bias": 0.1})
    assert "target_replicates" in simstudy.open_results(store)
    simstudy.run(path, store=store, scheduler="synchronous", replicates=2000)
    ds = simstudy.open_results(store)
    assert "target_replicates" not in ds
    assert (ds["status"] == 1).all()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"target_mcse": {"relprec": 1.0}}, "not a measure with a Monte Carlo SE"),
        ({"target_mcse": {"bogus": 1.0}}, "not a measure with a Monte Carlo SE"),
        ({"target_mcse": {"bias": 0.0}}, "the target must be a number > 0"),
        ({"target_mcse": {"bias": math.inf}}, "the target must be a number > 0"),
        ({"target_mcse": {"coverage": 0.01}}, "no method declares ci="),
        ({"target_mcse": {"modelse": 0.01}}, "no method declares se="),
        ({"target_mcse": {"power": 0.01}}, "no method declares p="),
        ({"max_replicates": 500}, "--max-replicates only applies"),
        (
            {"target_mcse": {"bias": 0.1}, "max_replicates": 50},
            "below the first round's 100",
        ),
    ],
    ids=lambda v: str(v)[:40],
)
def test_bad_targets_are_refused_before_anything_is_written(tmp_path, kwargs, message):
    path = write(tmp_path)
    with pytest.raises(UsageError, match=message):
        simstudy.run(path, store=tmp_path / "s.zarr", **kwargs)
    assert not (tmp_path / "s.zarr").exists()


def test_targets_need_truth_and_the_spawn_scheme(tmp_path):
    path = write(tmp_path)
    path.write_text(path.read_text().replace("study.truth(estimate=0.0)\n", ""))
    with pytest.raises(UsageError, match="the study declares no true value"):
        simstudy.run(path, store=tmp_path / "s.zarr", target_mcse={"bias": 0.1})
    report = simstudy.run(
        path,
        store=tmp_path / "s.zarr",
        scheduler="synchronous",
        target_mcse={"empse": 0.05},
    )
    assert report.exit_code == 0  # empse needs no truth
    jump = write(tmp_path, name="jump.py")
    jump.write_text(jump.read_text().replace("seed=5)", "seed=5, rng='pcg64-jump')"))
    with pytest.raises(UsageError, match="renumbers every stream"):
        simstudy.run(jump, store=tmp_path / "j.zarr", target_mcse={"empse": 0.1})
    assert not (tmp_path / "j.zarr").exists()


def test_status_says_which_points_are_still_running(tmp_path, capsys):
    path = write(tmp_path)
    store = tmp_path / "s.zarr"
    seen = []

    def interrupt(progress):
        seen.append(progress.done)
        if len(seen) == 30:
            os.kill(os.getpid(), signal.SIGINT)

    report = simstudy.run(
        path,
        store=store,
        scheduler="synchronous",
        batch_size=10,
        target_mcse={"bias": 0.05},
        on_progress=interrupt,
    )
    assert report.interrupted
    main(["status", str(store)])
    out = capsys.readouterr().out
    assert "target not met yet: next round to" in out
