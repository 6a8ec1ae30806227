"""Store buffering: results reach the disk by themselves; bad side files are ignored."""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zarr

import simstudy
from simstudy.backends.numpy import run_batch
from simstudy.declare import grid
from simstudy.store import Store
from tests.helpers import assert_store_consistent, cube_digest, reseal, wait_for
from tests.studies import GOOD_STUDY


def _open(tmp_path, write_study):
    study = simstudy.load_study(write_study(GOOD_STUDY))
    return study, Store.open_for_run(tmp_path / "s.zarr", study)


def test_a_lone_result_reaches_the_disk_within_flush_seconds(
    tmp_path, write_study, monkeypatch
):
    monkeypatch.setattr(simstudy.store.writer, "FLUSH_SECONDS", 0.2)
    study, st = _open(tmp_path, write_study)
    try:
        points = grid.points(study)
        batch = grid.Batch(0, tuple(points[0].items()), 0, 2, (0, 1))
        st.write(run_batch(study, batch), st.point_index(points[0]), np.arange(2))
        status = zarr.open_array(tmp_path / "s.zarr" / "status", mode="r")
        assert (np.asarray(status[0, 0, 0:2]) == 0).all()  # buffered
        wait_for(
            "the timer to flush", lambda: (np.asarray(status[0, 0, 0:2]) != 0).all(), 10
        )
        estimate = zarr.open_array(tmp_path / "s.zarr" / "estimate", mode="r")
        assert np.isfinite(np.asarray(estimate[0, 0, 0:2])).all()
    finally:
        st.close()


def test_damaged_chunks_are_found_on_resume_and_only_their_tasks_rerun(
    tmp_path, write_study, monkeypatch
):
    monkeypatch.setattr(
        simstudy.store.layout, "CHUNK_REPLICATES", 2
    )  # 2 chunks a point
    path = write_study(GOOD_STUDY)  # 4 points x 4 replicates x 2 methods
    reference, store = tmp_path / "ref.zarr", tmp_path / "s.zarr"
    simstudy.run(path, store=reference, scheduler="synchronous")
    simstudy.run(path, store=store, scheduler="synchronous")
    estimate = store / "estimate" / "c.0.1.1.0"  # n=5, eps=0.5, replicates 2-3
    estimate.write_bytes(estimate.read_bytes()[:-3])  # truncated
    status = store / "status" / "c.1.0.0.0"  # n=10, eps=0.0, replicates 0-1
    blob = bytearray(status.read_bytes())
    blob[0] ^= 0xFF  # one flipped bit pattern
    status.write_bytes(bytes(blob))
    report = simstudy.run(path, store=store, scheduler="synchronous")
    assert sorted(r.split(" ")[0] for r in report.repaired) == [
        "estimate/c.0.1.1.0",
        "status/c.1.0.0.0",
    ]
    assert report.computed == 2 * 2 + 2 * 2  # two chunks of 2 replicates x 2 methods
    assert_store_consistent(store)
    assert cube_digest(store) == cube_digest(reference)
    again = simstudy.run(path, store=store, scheduler="synchronous")
    assert again.repaired == ()
    assert again.computed == 0


@pytest.mark.parametrize(
    ("code", "text"),
    [
        ("ENOSPC", "No space left on device"),
        ("EROFS", "Read-only file system"),
        ("EACCES", "Permission denied"),
    ],
    ids=["disk-full", "read-only", "no-permission"],
)
def test_a_failing_write_is_a_clear_error_and_the_run_resumes(
    tmp_path, write_study, monkeypatch, code, text
):
    """Disk full (or read-only) mid-run: a StoreError naming the cause, a
    consistent store, and a later run finishes with the reference cube."""
    import errno

    from simstudy.errors import StoreError
    from simstudy.store.chunks import ChunkedArray

    monkeypatch.setattr(simstudy.store.layout, "CHUNK_REPLICATES", 2)
    path = write_study(GOOD_STUDY)
    reference, store = tmp_path / "ref.zarr", tmp_path / "s.zarr"
    simstudy.run(path, store=reference, scheduler="synchronous")
    real_write = ChunkedArray.write
    writes = {"n": 0}

    def write(self, coords, chunk):
        writes["n"] += 1
        if writes["n"] > 12:
            raise OSError(getattr(errno, code), text)
        real_write(self, coords, chunk)

    monkeypatch.setattr(ChunkedArray, "write", write)
    with pytest.raises(StoreError, match=text):
        simstudy.run(path, store=store, scheduler="synchronous", batch_size=1)
    monkeypatch.setattr(ChunkedArray, "write", real_write)
    ds = assert_store_consistent(store)
    assert 0 < int((ds.status.values == 1).sum()) < ds.status.size
    simstudy.run(path, store=store, scheduler="synchronous")
    assert cube_digest(store) == cube_digest(reference)


def _meta(store: Path) -> Any:
    return json.loads((store / "zarr.json").read_text())["attributes"]["simstudy"]


def _pretend_made_with_numpy(store: Path, version: str) -> None:
    """Rewrite the recorded numpy version, as an older install would have."""
    group = zarr.open_group(store, mode="r+")
    meta = _meta(store)
    meta["versions"] = {**meta["versions"], "numpy": version}
    group.attrs["simstudy"] = meta
    with warnings.catch_warnings():  # .simstudy/ is not a zarr node
        warnings.simplefilter("ignore")
        zarr.consolidate_metadata(store)


def test_a_numpy_change_is_checked_by_recomputing_finished_tasks(tmp_path, write_study):
    path = write_study(GOOD_STUDY.replace("replicates=4", "replicates=6"))
    store = tmp_path / "s.zarr"
    simstudy.run(path, store=store, scheduler="synchronous")
    status = zarr.open_array(store / "status", mode="r+")
    status[1, 1, 3:, :] = 0  # a few tasks left to do
    reseal(store)
    _pretend_made_with_numpy(store, "1.0.0")
    report = simstudy.run(path, store=store, scheduler="synchronous")
    assert report.computed == 3 * 2
    assert len(report.warnings) == 1
    assert f"numpy 1.0.0 -> {np.__version__}" in report.warnings[0]
    # every finished task (few cells: up to RECHECK_TOTAL in all), each alone
    assert "42 finished task(s) recomputed bit for bit identical" in report.warnings[0]
    meta = _meta(store)
    assert meta["versions"]["numpy"] == np.__version__  # accepted, with history
    assert meta["versions_history"][-1]["numpy"] == "1.0.0"
    again = simstudy.run(path, store=store, scheduler="synchronous")
    assert again.warnings == ()


def test_a_numpy_change_that_changes_numbers_is_refused(tmp_path, write_study):
    from simstudy.errors import StoreError

    path = write_study(GOOD_STUDY)
    store = tmp_path / "s.zarr"
    simstudy.run(path, store=store, scheduler="synchronous")
    estimate = zarr.open_array(store / "estimate", mode="r+")
    estimate[0, 0, 0, 0] = 123.0  # as if the old numpy had drawn other numbers
    zarr.open_array(store / "status", mode="r+")[1, 1, 3, :] = 0
    reseal(store)
    _pretend_made_with_numpy(store, "1.0.0")
    with pytest.raises(StoreError, match="no longer come out the same"):
        simstudy.run(path, store=store, scheduler="synchronous")
    assert _meta(store)["versions"]["numpy"] == "1.0.0"  # refused: none accepted
    report = simstudy.run(
        path, store=store, scheduler="synchronous", accept_version_change=True
    )
    assert report.computed == 2
    assert "differ from the stored ones" in report.warnings[0]


FORMAT1 = Path(__file__).parent / "data" / "format1"


def test_a_format1_store_reads_as_before_and_migrates_on_run(tmp_path):
    """Format 1 named the method dimension `method`, which xarray's
    sel(method=...) keyword shadows; it reads renamed and a run migrates it,
    metadata only, keeping every number."""
    store = tmp_path / "old.zarr"
    shutil.copytree(FORMAT1 / "store.zarr", store)
    study = tmp_path / "study.py"
    shutil.copy(FORMAT1 / "study.py", study)
    before = simstudy.open_results(store)
    assert "method_name" in before.dims
    assert "method" not in before.dims
    medians = before.estimate.sel(method_name="median").values.copy()
    chunks = sorted(
        (f.relative_to(store), f.read_bytes())
        for f in store.rglob("c.*")
        if f.parent.name == "estimate"
    )
    report = simstudy.run(study, store=store, scheduler="synchronous")
    assert report.computed == 0
    assert report.exit_code == 0
    assert not (store / "method").exists()
    ds = assert_store_consistent(store)
    assert ds.attrs["simstudy"]["format"] == 2
    np.testing.assert_array_equal(ds.estimate.sel(method_name="median"), medians)
    after = sorted(
        (f.relative_to(store), f.read_bytes())
        for f in store.rglob("c.*")
        if f.parent.name == "estimate"
    )
    assert after == chunks  # results untouched: metadata only
    # the migrated store equals one made from scratch by this version
    fresh = tmp_path / "fresh.zarr"
    simstudy.run(study, store=fresh, scheduler="synchronous")
    assert cube_digest(store) == cube_digest(fresh)
