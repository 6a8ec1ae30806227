"""End-to-end runs on real Dask schedulers into real zarr stores."""

from __future__ import annotations

import re

import numpy as np
import pytest

import simstudy
import simstudy.cli
from simstudy.errors import FingerprintMismatch, StoreError, UsageError
from simstudy.store import read_failures
from tests.helpers import assert_store_consistent, cube_digest
from tests.studies import write_study_file

SOURCE = """
import numpy as np
from simstudy import Study

study = Study("small", factors={{"n": {n}, "eps": [0.0, 0.5]}},
              replicates={replicates}, seed={seed})

@study.data
def gen(rng, n, eps):
    return rng.standard_normal(n) + eps

{methods}
"""
METHODS = {
    "mean": '@study.method\ndef mean(x):\n    return {"estimate": x.mean()}\n',
    "median": '@study.method\ndef median(x):\n    return {"estimate": np.median(x)}\n',
    "boot": (
        "@study.method\ndef boot(x, rng):\n"
        "    idx = rng.integers(0, len(x), len(x))\n"
        '    return {"estimate": x[idx].mean(), "q": np.quantile(x, [0.25, 0.75])}\n'
    ),
    "flaky": (
        "@study.method\ndef flaky(x, rng):\n"
        "    if rng.random() < 0.3:\n"
        '        raise ValueError("did not converge")\n'
        '    return {"estimate": x.max()}\n'
    ),
}


def write(
    tmp_path,
    *,
    n=(5, 10),
    replicates=6,
    seed=1,
    methods=("mean", "median", "boot"),
    name="study.py",
):
    src = SOURCE.format(
        n=list(n),
        replicates=replicates,
        seed=seed,
        methods="\n".join(METHODS[m] for m in methods),
    )
    return write_study_file(tmp_path, src, name)


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> str:
    tmp = tmp_path_factory.mktemp("ref")
    path = write(tmp)
    report = simstudy.run(
        path, store=tmp / "ref.zarr", scheduler="synchronous", batch_size=1
    )
    assert report.exit_code == 0
    assert_store_consistent(tmp / "ref.zarr")
    return cube_digest(tmp / "ref.zarr")


@pytest.mark.parametrize(
    ("scheduler", "workers", "batch_size"),
    [
        ("synchronous", 1, 4),
        ("threads", 2, 3),
        ("processes", 2, 2),
        ("distributed", 1, None),
        ("distributed", 2, 5),
    ],
    ids=["sync-b4", "threads-2w", "processes-2w", "distributed-1w", "distributed-2w"],
)
def test_same_cube_on_every_scheduler(
    tmp_path, reference, scheduler, workers, batch_size
):
    path = write(tmp_path)
    store = tmp_path / "s.zarr"
    report = simstudy.run(
        path, store=store, scheduler=scheduler, workers=workers, batch_size=batch_size
    )
    assert report.exit_code == 0
    assert report.computed == report.tasks == 2 * 2 * 6 * 3
    assert_store_consistent(store)
    assert cube_digest(store) == reference


def test_cube_shape_and_values(tmp_path):
    path = write(tmp_path)
    store = tmp_path / "s.zarr"
    simstudy.run(path, store=store, scheduler="synchronous")
    ds = simstudy.open_results(store)
    assert dict(ds.sizes) == {
        "n": 2,
        "eps": 2,
        "replicate": 6,
        "method_name": 3,
        "q_dim_0": 2,
    }
    assert list(ds.method_name.values) == ["mean", "median", "boot"]
    assert ds.attrs["seed"] == 1
    assert ds.attrs["rng"] == "spawn"
    # q is produced by boot only: NaN for the others
    assert np.isnan(ds.q.sel({"method_name": "mean"})).all()
    assert not np.isnan(ds.q.sel({"method_name": "boot"})).any()
    # common random numbers: every method saw the same data
    rng = np.random.Generator(
        np.random.PCG64(
            np.random.SeedSequence(
                1, spawn_key=(simstudy.rng.streams.key({"n": 10, "eps": 0.5}), 3)
            )
        )
    )
    x = rng.standard_normal(10) + 0.5
    cell = ds.estimate.sel(n=10, eps=0.5, replicate=3)
    assert cell.sel({"method_name": "mean"}) == x.mean()
    assert cell.sel({"method_name": "median"}) == np.median(x)


def test_resume_computes_only_missing(tmp_path):
    path = write(tmp_path, replicates=6)
    store = tmp_path / "s.zarr"
    first = simstudy.run(path, store=store, scheduler="synchronous")
    again = simstudy.run(path, store=store, scheduler="synchronous")
    assert first.computed == 72
    assert again.computed == 0
    assert again.already_done == 72
    assert again.executor == "nothing to run"


def test_adding_replicates_levels_methods_changes_no_number(tmp_path):
    small = write(tmp_path, n=(5,), replicates=4, methods=("mean", "boot"))
    store = tmp_path / "s.zarr"
    simstudy.run(small, store=store, scheduler="synchronous")
    before = simstudy.open_results(store).load()
    big = write(tmp_path, n=(7, 5), replicates=9, methods=("median", "boot", "mean"))
    report = simstudy.run(big, store=store, scheduler="synchronous")
    assert report.already_done == 1 * 2 * 4 * 2
    assert report.computed == report.tasks - report.already_done
    after = assert_store_consistent(store)
    old = after.sel({"n": [5], "replicate": range(4), "method_name": ["mean", "boot"]})
    np.testing.assert_array_equal(
        old.estimate.values, before.estimate.sel(n=[5]).values
    )
    # a from-scratch run of the big study has the same numbers
    fresh = tmp_path / "fresh.zarr"
    simstudy.run(big, store=fresh, scheduler="synchronous")
    assert cube_digest(fresh) == cube_digest(store)


def test_reordering_levels_and_methods_changes_no_number(tmp_path):
    a = write(tmp_path, n=(5, 10), methods=("mean", "boot"), name="a.py")
    b = write(tmp_path, n=(10, 5), methods=("boot", "mean"), name="b.py")
    simstudy.run(a, store=tmp_path / "a.zarr", scheduler="synchronous")
    simstudy.run(b, store=tmp_path / "b.zarr", scheduler="synchronous")
    assert cube_digest(tmp_path / "a.zarr") == cube_digest(tmp_path / "b.zarr")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"seed": 2}, r"seed changed \(1 -> 2\)"),
        ({"method_body": True}, r"method 'mean' changed"),
        ({"factor": True}, r"factor names changed"),
    ],
    ids=["seed", "method-body", "factor-list"],
)
def test_changed_study_is_refused_then_restart(tmp_path, change, message):
    path = write(tmp_path)
    store = tmp_path / "s.zarr"
    simstudy.run(path, store=store, scheduler="synchronous")
    digest = cube_digest(store)
    if "seed" in change:
        write(tmp_path, seed=change["seed"])
    elif "method_body" in change:
        path.write_text(path.read_text().replace("x.mean()", "x.mean() + 0"))
    else:
        path.write_text(
            path.read_text()
            .replace('"eps"', '"delta"')
            .replace("n, eps", "n, delta")
            .replace("+ eps", "+ delta")
        )
    with pytest.raises(FingerprintMismatch, match=message):
        simstudy.run(path, store=store, scheduler="synchronous")
    assert cube_digest(store) == digest
    report = simstudy.run(path, store=store, scheduler="synchronous", restart=True)
    assert report.computed == report.tasks
    assert_store_consistent(store)


def test_failing_method_is_recorded_and_others_complete(tmp_path):
    path = write(tmp_path, replicates=20, methods=("mean", "flaky"))
    store = tmp_path / "s.zarr"
    report = simstudy.run(path, store=store, scheduler="synchronous")
    assert report.exit_code == 3
    ds = assert_store_consistent(store)
    status = ds.status
    assert (status.sel({"method_name": "mean"}) == 1).all()
    n_failed = int((status.sel({"method_name": "flaky"}) == 2).sum())
    assert 0 < n_failed == report.failed
    failures = read_failures(store)
    assert all(f["method"] == "flaky" for f in failures)
    assert all(f["type"] == "ValueError" for f in failures)
    assert all("did not converge" in f["message"] for f in failures)
    assert all("raise ValueError" in f["traceback"] for f in failures)
    # retry: the failures are deterministic, so they fail again identically
    again = simstudy.run(path, store=store, scheduler="synchronous", retry_failed=True)
    assert again.computed == n_failed
    assert again.failed == n_failed


def test_max_errors_stops_cleanly(tmp_path):
    path = write(tmp_path, replicates=200, methods=("flaky",))
    store = tmp_path / "s.zarr"
    report = simstudy.run(
        path, store=store, scheduler="synchronous", max_errors=3, batch_size=1
    )
    assert report.stopped_on_errors
    assert report.exit_code == 3
    assert report.pending > 0
    assert_store_consistent(store)
    rest = simstudy.run(path, store=store, scheduler="synchronous")
    assert rest.pending == 0


def test_bad_output_shape_is_a_task_failure(write_study, tmp_path):
    src = SOURCE.format(
        n=[5, 10],
        replicates=3,
        seed=1,
        methods=("@study.method\ndef grow(x):\n    return {'v': x[: len(x) // 5]}\n"),
    )
    path = write_study(src, "s.py")
    store = tmp_path / "s.zarr"
    report = simstudy.run(path, store=store, scheduler="synchronous", batch_size=1)
    assert report.exit_code == 3
    ds = assert_store_consistent(store)
    assert (ds.status.sel(n=5) == 1).all()
    assert (ds.status.sel(n=10) == 2).all()
    failures = read_failures(store)
    assert "output 'v' has shape (2,); expected (1,)" in failures[0]["message"]


def test_second_run_on_a_locked_store_is_refused(tmp_path):
    path = write(tmp_path)
    store = tmp_path / "s.zarr"
    study = simstudy.load_study(path)
    held = simstudy.store.Store.open_for_run(store, study)
    try:
        with pytest.raises(StoreError, match="is in use by process"):
            simstudy.run(path, store=store, scheduler="synchronous")
    finally:
        held.close()
    assert simstudy.run(path, store=store, scheduler="synchronous").exit_code == 0


def test_stale_lock_of_a_dead_process_is_taken_over(tmp_path):
    path = write(tmp_path)
    store = tmp_path / "s.zarr"
    (store / ".simstudy").mkdir(parents=True)
    import socket

    (store / ".simstudy" / "lock").write_text(
        f'{{"pid": 999999999, "host": "{socket.gethostname()}", "since": 0}}'
    )
    assert simstudy.run(path, store=store, scheduler="synchronous").exit_code == 0


@pytest.mark.parametrize("scheme", ["pcg64-jump", "mt19937-jump"])
def test_jump_schemes_same_cube_any_batching(tmp_path, scheme):
    path = write(tmp_path)
    path.write_text(path.read_text().replace("seed=1)", f"seed=1, rng={scheme!r})"))
    simstudy.run(path, store=tmp_path / "a.zarr", scheduler="synchronous", batch_size=1)
    simstudy.run(
        path, store=tmp_path / "b.zarr", scheduler="processes", batch_size=4, workers=2
    )
    assert cube_digest(tmp_path / "a.zarr") == cube_digest(tmp_path / "b.zarr")
    ds = assert_store_consistent(tmp_path / "a.zarr")
    assert ds.attrs["rng"] == scheme


def test_jump_scheme_refuses_extension(tmp_path):
    path = write(tmp_path, replicates=3)
    path.write_text(path.read_text().replace("seed=1)", "seed=1, rng='pcg64-jump')"))
    simstudy.run(path, store=tmp_path / "s.zarr", scheduler="synchronous")
    path.write_text(path.read_text().replace("replicates=3", "replicates=4"))
    with pytest.raises(FingerprintMismatch, match="positional 'pcg64-jump' scheme"):
        simstudy.run(path, store=tmp_path / "s.zarr", scheduler="synchronous")


def test_mt19937_resume_sets_up_streams_by_random_access(tmp_path, monkeypatch):
    """A resume of the last chunk reaches its streams directly (no walk from
    the seed, nothing saved in the store) and gives the same cube."""
    import zarr

    monkeypatch.setattr(simstudy.store.layout, "CHUNK_REPLICATES", 4)  # small chunks
    path = write(tmp_path, replicates=10, methods=("mean", "boot"))
    path.write_text(path.read_text().replace("seed=1)", "seed=1, rng='mt19937-jump')"))
    ref, store = tmp_path / "ref.zarr", tmp_path / "s.zarr"
    simstudy.run(path, store=ref, scheduler="synchronous")
    simstudy.run(path, store=store, scheduler="synchronous")
    status = zarr.open_array(store / "status", mode="r+")
    assert status.chunks[2] == 4
    status[1, 1, 8:, :] = 0  # as if the run died before the last chunk of n=10, eps=.5
    from simstudy.rng import mtjump, streams

    streams._jumpers.clear()  # as in a fresh process: nothing cached
    asked: list[int] = []
    real = mtjump.MTJumper.state

    def state(self, k):
        asked.append(k)
        return real(self, k)

    monkeypatch.setattr(mtjump.MTJumper, "state", state)
    report = simstudy.run(path, store=store, scheduler="synchronous")
    assert report.computed == 2 * 2
    # point 3 (n=10, eps=0.5), replicates 8 and 9: the data slot and boot's slot
    assert asked == [(3 * 10 + r) * 3 + s for r in (8, 9) for s in (0, 2)]
    assert cube_digest(store) == cube_digest(ref)
    assert not (store / ".simstudy" / "mt19937").exists()


def test_outputs_that_change_between_batches_are_task_failures(write_study, tmp_path):
    """A method's output names are fixed by its first task and kept in the store:
    a later batch that returns other names fails those tasks, by name."""
    src = SOURCE.format(
        n=[5],
        replicates=6,
        seed=1,
        methods=(
            "@study.method\ndef shifty(x):\n"
            "    if x[0] > 0:\n        return {'a': x[0], 'b': x[1]}\n"
            "    return {'a': x[0]}\n"
        ),
    )
    path = write_study(src, "s.py")
    store = tmp_path / "s.zarr"
    report = simstudy.run(path, store=store, scheduler="synchronous", batch_size=1)
    ds = assert_store_consistent(store)
    first = ds.attrs["simstudy"]["outputs"]["shifty"]
    assert first in (["a"], ["a", "b"])
    failures = read_failures(store)
    assert report.failed == len(failures) > 0
    for f in failures:
        assert f["method"] == "shifty"
        assert f"expected {first}" in f["message"]


def test_replicates_override_extends_and_matches_a_from_scratch_run(tmp_path):
    path = write(tmp_path, replicates=4)
    store, scratch = tmp_path / "s.zarr", tmp_path / "scratch.zarr"
    first = simstudy.run(path, store=store, scheduler="synchronous")
    assert first.computed == 4 * 4 * 3
    more = simstudy.run(path, store=store, scheduler="synchronous", replicates=10)
    assert more.computed == 4 * 6 * 3  # only the new replicates ran
    big = write(tmp_path, replicates=10, name="big.py")
    simstudy.run(big, store=scratch, scheduler="synchronous")
    assert cube_digest(store) == cube_digest(scratch)
    fewer = simstudy.run(path, store=store, scheduler="synchronous", replicates=2)
    assert fewer.computed == 0
    assert fewer.tasks == 4 * 2 * 3
    with pytest.raises(UsageError, match="--replicates must be >= 1"):
        simstudy.run(path, store=store, scheduler="synchronous", replicates=0)


def test_nan_and_inf_are_values_and_the_run_counts_them(write_study, tmp_path, capsys):
    src = SOURCE.format(
        n=[5],
        replicates=40,
        seed=2,
        methods=(
            "@study.method\ndef fragile(x):\n"
            "    if x[0] > 1.0:\n        return {'est': float('nan'), 'se': 1.0}\n"
            "    if x[0] < -1.5:\n        return {'est': float('-inf'), 'se': 1.0}\n"
            "    return {'est': x[0], 'se': 1.0}\n"
        ),
    )
    path = write_study(src, "s.py")
    store = tmp_path / "s.zarr"
    assert (
        simstudy.cli.main(
            [
                "run",
                str(path),
                "--store",
                str(store),
                "--scheduler",
                "synchronous",
                "--no-progress",
            ]
        )
        == 0
    )
    ds = assert_store_consistent(store)
    est = ds.est.sel({"method_name": "fragile"}).values.ravel()
    assert (ds.status.values == 1).all()  # no task failed
    n_bad = int((~np.isfinite(est)).sum())
    assert 0 < n_bad < 80
    assert np.isinf(est).any()
    err = capsys.readouterr().err
    assert f"note: {n_bad:,} ok task(s) returned NaN or inf in an output" in err
    assert "raise an exception" in err


FAILS_ALWAYS = SOURCE.format(
    n=[5],
    replicates=500,
    seed=2,
    methods=(
        METHODS["mean"] + "@study.method\ndef bad(x):\n    return {'estimate': 1 / 0}\n"
    ),
)


def test_fail_fast_stops_a_method_that_fails_every_task(write_study, tmp_path, capsys):
    path = write_study(FAILS_ALWAYS, "s.py")
    store = tmp_path / "s.zarr"
    argv = ["run", str(path), "--store", str(store), "--no-progress"]
    code = simstudy.cli.main([*argv, "--scheduler", "synchronous", "--batch-size", "5"])
    assert code == 3
    ds = assert_store_consistent(store)
    bad = ds.status.sel({"method_name": "bad"}).values
    assert 50 <= int((bad == 2).sum()) < 100  # stopped soon after the 50th
    assert int((ds.status.values == 0).sum()) > 1000  # most never ran
    err = capsys.readouterr().err
    assert "stopped: method 'bad' failed its first 50 tasks" in err
    assert "ZeroDivisionError: method 'bad': division by zero" in err
    assert "--no-fail-fast" in err
    # --no-fail-fast runs every task; a resume of the rest
    code = simstudy.cli.main([*argv, "--scheduler", "synchronous", "--no-fail-fast"])
    assert code == 3
    ds = assert_store_consistent(store)
    assert (ds.status.sel({"method_name": "bad"}).values == 2).all()
    assert (ds.status.sel({"method_name": "mean"}).values == 1).all()


def test_fail_fast_is_per_method_and_never_on_a_method_that_succeeds(
    write_study, tmp_path
):
    """flaky fails 30% of its tasks: never all of its first 50."""
    path = write_study(
        SOURCE.format(n=[5], replicates=200, seed=3, methods=METHODS["flaky"]),
        "s.py",
    )
    report = simstudy.run(path, store=tmp_path / "s.zarr", scheduler="synchronous")
    assert report.failing is None
    assert report.pending == 0
    assert 0 < report.failed < report.tasks


SHIFTY = SOURCE.format(
    n=[5, 6],
    replicates=60,
    seed=4,
    methods=(
        "@study.method\ndef shifty(x):\n"
        "    if x[0] > 0.8:\n        return {'a': x[0], 'b': x[1], 'c': x[2]}\n"
        "    if x[0] > 0:\n        return {'a': x[0], 'b': x[1]}\n"
        "    return {'a': x[0]}\n"
    ),
)


@pytest.mark.parametrize(
    "options",
    [
        {"scheduler": "threads", "workers": 2, "batch_size": 7},
        {"scheduler": "processes", "workers": 2},
        {"scheduler": "synchronous", "batch_size": 1, "max_errors": 5},
    ],
    ids=["threads-7", "processes", "interrupted-then-resumed"],
)
def test_output_names_fail_the_same_tasks_however_it_runs(
    write_study, tmp_path, options
):
    """The names a method returns are fixed by its first successful task in
    task order, so the same tasks fail whatever the workers, batches, or an
    interruption (was: 849, 773, 719 failures in three runs)."""
    path = write_study(SHIFTY, "s.py")
    ref = tmp_path / "ref.zarr"
    simstudy.run(path, store=ref, scheduler="synchronous", batch_size=60)
    store = tmp_path / "s.zarr"
    first = simstudy.run(path, store=store, **options)
    if "max_errors" in options:
        assert first.stopped_on_errors
        simstudy.run(path, store=store, scheduler="threads", workers=2)
    expected = assert_store_consistent(ref)
    ds = assert_store_consistent(store)
    np.testing.assert_array_equal(ds.status.values, expected.status.values)
    assert cube_digest(store) == cube_digest(ref)
    messages = {
        (f["n"], f["eps"], f["replicate"], f["message"]) for f in read_failures(store)
    }
    assert messages == {
        (f["n"], f["eps"], f["replicate"], f["message"]) for f in read_failures(ref)
    }
    kinds = {f["type"] for f in read_failures(store)}
    assert kinds == {"OutputError"}  # never an internal class name
    one = next(iter(messages))[3]
    assert "expected ['a'" in one
    assert "missing" in one or "extra" in one


TRUTH_P = (
    SOURCE.format(
        n=[5],
        replicates=10,
        seed=2,
        methods="@study.method\ndef test(x):\n    return {'p': float(x[0] > 0)}\n",
    )
    + "\nstudy.truth(estimate=0.0)\n"
)


def test_a_truth_no_method_returns_is_refused_and_leaves_no_store(
    write_study, tmp_path, capsys
):
    path = write_study(TRUTH_P, "s.py")
    store = tmp_path / "s.zarr"
    code = simstudy.cli.main(["run", str(path), "--store", str(store), "--no-progress"])
    assert code == 2
    err = capsys.readouterr().err
    assert "study.truth names 'estimate', which no method returns (outputs: p)" in err
    assert "hint: key the truth by the output" in err
    assert not store.exists()


@pytest.mark.parametrize(
    ("truth", "message"),
    [
        (
            "study.truth(mu=0.0)",
            "study.truth names 'mu', which is no method's estimate",
        ),
        (
            "@study.truth\ndef truth(n):\n    return {'centre': 0.0}\n",
            "study.truth names 'centre', which is no method's estimate",
        ),
        (
            "@study.truth\ndef truth(n):\n    return {'estimate': 1 / 0}\n",
            "the truth function raised ZeroDivisionError",
        ),
    ],
    ids=["keyword", "function", "function-raises"],
)
def test_a_truth_naming_no_estimate_is_refused_at_load(
    write_study, tmp_path, truth, message
):
    path = write_study(
        SOURCE.format(n=[5], replicates=3, seed=1, methods=METHODS["mean"]) + truth,
        "s.py",
    )
    with pytest.raises(simstudy.StudyError, match=re.escape(message)):
        simstudy.load_study(path)
