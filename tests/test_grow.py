"""Growing and shrinking a finished study: hidden results, --prune, --recompute."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

import simstudy
from simstudy.cli import main
from simstudy.errors import FingerprintMismatch, UsageError
from simstudy.store import Store, read_failures
from tests.helpers import assert_store_consistent, cube_digest
from tests.test_runner import write


def _failure_keys(store):
    return sorted(
        (f["n"], f["eps"], f["replicate"], f["method"], f["message"])
        for f in read_failures(store)
    )


def test_removed_levels_and_methods_are_hidden_not_lost(tmp_path, capsys):
    big = write(tmp_path, n=(5, 10, 20), methods=("mean", "median", "boot"))
    store = tmp_path / "s.zarr"
    simstudy.run(big, store=store, scheduler="synchronous")
    full = simstudy.open_results(store).load()
    small = write(tmp_path, n=(20, 5), methods=("boot", "mean"), name="small.py")
    assert main(["run", str(small), "--store", str(store), "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert "note: the store holds results the study no longer has" in err
    assert "n = 10" in err
    assert "method median" in err
    shown = simstudy.open_results(store)
    assert shown["n"].values.tolist() == [20, 5]  # the study's order
    assert shown["method_name"].values.tolist() == ["boot", "mean"]
    summary = simstudy.summarize(shown)
    assert summary["method_name"].values.tolist() == ["boot", "mean"]
    main(["status", str(store)])
    status = capsys.readouterr().out
    assert "n=10" not in status
    assert "of 48 tasks" in status  # 2 n x 2 eps x 6 replicates x 2 methods
    everything = simstudy.open_results(store, include_hidden=True).load()
    assert everything.identical(full.assign_attrs(everything.attrs))
    # bringing them back computes nothing: they were never deleted
    again = simstudy.run(big, store=store, scheduler="synchronous")
    assert again.computed == 0
    assert again.notes == ()
    assert "active" not in simstudy.open_results(store).attrs["simstudy"]


def test_prune_deletes_them_and_equals_a_from_scratch_run(tmp_path, capsys):
    methods = ("mean", "flaky", "median")
    big = write(tmp_path, n=(5, 10, 20), methods=methods, replicates=20)
    store = tmp_path / "s.zarr"
    simstudy.run(big, store=store, scheduler="synchronous", batch_size=3)
    small = write(
        tmp_path, n=(5, 20), methods=("flaky", "mean"), replicates=20, name="small.py"
    )
    argv = ["run", str(small), "--store", str(store), "--no-progress", "--prune"]
    assert main(argv) == 3  # flaky's failures are still there: exit 3
    assert "note:" not in capsys.readouterr().err  # nothing hidden any more
    assert not any(p.name.startswith("s.zarr.") for p in tmp_path.iterdir())
    ds = assert_store_consistent(store)
    assert ds["n"].values.tolist() == [5, 20]
    assert ds["method_name"].values.tolist() == ["mean", "flaky"]  # store order kept
    hidden_view = simstudy.open_results(store, include_hidden=True)
    assert dict(hidden_view.sizes) == dict(ds.sizes)
    scratch = tmp_path / "scratch.zarr"
    simstudy.run(small, store=scratch, scheduler="synchronous")
    assert cube_digest(store) == cube_digest(scratch)
    assert _failure_keys(store) == _failure_keys(scratch) != []
    # a level added back after pruning is computed again, and only it
    back = simstudy.run(big, store=store, scheduler="synchronous", batch_size=3)
    assert back.computed == 2 * 20 * 3 + 2 * 2 * 20 * 1  # n=10 all; median at 5, 20
    fresh = tmp_path / "fresh.zarr"
    simstudy.run(big, store=fresh, scheduler="synchronous")
    assert cube_digest(store) == cube_digest(fresh)


def test_an_interrupted_prune_is_finished_or_discarded(tmp_path):
    big = write(tmp_path, n=(5, 10))
    store = tmp_path / "s.zarr"
    simstudy.run(big, store=store, scheduler="synchronous")
    digest = cube_digest(store)
    # a pruned copy that was never marked complete: discarded, store untouched
    shutil.copytree(store, tmp_path / "s.zarr.pruning")
    small = write(tmp_path, n=(5,), name="small.py")
    report = simstudy.run(small, store=store, scheduler="synchronous")
    assert report.notes  # n=10 hidden, nothing pruned
    assert not (tmp_path / "s.zarr.pruning").exists()
    assert cube_digest(store, include_hidden=True) == digest
    # killed between the two renames: the complete copy is swapped in
    simstudy.run(small, store=store, scheduler="synchronous", prune=True)
    pruned = cube_digest(store)
    (store / ".simstudy" / "pruned").write_text("complete\n")
    store.rename(tmp_path / "s.zarr.pruning")
    shutil.copytree(tmp_path / "s.zarr.pruning", tmp_path / "s.zarr.pruned-old")
    report = simstudy.run(small, store=store, scheduler="synchronous")
    assert report.computed == 0
    assert cube_digest(store) == pruned
    assert sorted(p.name for p in tmp_path.iterdir() if "zarr" in p.name) == ["s.zarr"]


def test_a_changed_method_is_refused_with_a_hint_then_recomputed_alone(tmp_path):
    path = write(tmp_path, methods=("mean", "flaky", "boot"), replicates=10)
    store = tmp_path / "s.zarr"
    simstudy.run(path, store=store, scheduler="synchronous")
    before = simstudy.open_results(store).load()
    assert read_failures(store)
    # flaky no longer fails and returns other outputs
    path.write_text(
        path.read_text().replace(
            "    if rng.random() < 0.3:\n"
            '        raise ValueError("did not converge")\n'
            '    return {"estimate": x.max()}\n',
            '    return {"estimate": x.min(), "spread": x.max() - x.min()}\n',
        )
    )
    digest = cube_digest(store)
    with pytest.raises(FingerprintMismatch, match="method 'flaky' changed") as err:
        simstudy.run(path, store=store, scheduler="synchronous")
    assert 'recompute="flaky"' in str(err.value.hint)
    assert cube_digest(store) == digest
    report = simstudy.run(
        path, store=store, scheduler="synchronous", recompute=["flaky"]
    )
    assert report.computed == 4 * 10  # one column: 4 points x 10 replicates
    assert report.failed == 0
    assert read_failures(store) == []
    after = assert_store_consistent(store)
    others = {"method_name": ["mean", "boot"]}
    for var in ("estimate", "q", "started"):
        np.testing.assert_array_equal(after[var].sel(others), before[var].sel(others))
    scratch = tmp_path / "scratch.zarr"
    simstudy.run(path, store=scratch, scheduler="synchronous")
    assert cube_digest(store) == cube_digest(scratch)
    # recomputing an unchanged method reruns just it, with the same numbers
    again = simstudy.run(path, store=store, scheduler="synchronous", recompute=["mean"])
    assert again.computed == 4 * 10
    assert cube_digest(store) == cube_digest(scratch)


def test_a_recompute_interrupted_before_it_is_recorded_is_asked_again(tmp_path):
    path = write(tmp_path, methods=("mean", "median"))
    store = tmp_path / "s.zarr"
    simstudy.run(path, store=store, scheduler="synchronous")
    path.write_text(path.read_text().replace("np.median(x)", "np.median(x) + 0"))
    study = simstudy.load_study(path)
    st = Store.open_for_run(store, study, recompute=("median",))
    st.close()  # the reset is on disk and the new hash recorded, nothing run
    status = simstudy.open_results(store)["status"]
    assert (status.sel({"method_name": "median"}) == 0).all()
    assert (status.sel({"method_name": "mean"}) == 1).all()
    report = simstudy.run(path, store=store, scheduler="synchronous")
    assert report.computed == 4 * 6


def test_recompute_of_an_unknown_method_changes_nothing(tmp_path):
    path = write(tmp_path)
    store = tmp_path / "s.zarr"
    simstudy.run(path, store=store, scheduler="synchronous")
    digest = cube_digest(store)
    with pytest.raises(UsageError, match="the study has no method 'nope'"):
        simstudy.run(path, store=store, scheduler="synchronous", recompute=["nope"])
    assert cube_digest(store) == digest
