"""Store buffering: results reach the disk by themselves; bad side files are ignored."""

from __future__ import annotations

import time

import numpy as np
import pytest
import zarr

import simstudy
from simstudy import grid
from simstudy.batch import run_batch
from simstudy.store import Store
from tests.helpers import assert_store_consistent, cube_digest
from tests.studies import GOOD_STUDY


def _open(tmp_path, write_study):
    study = simstudy.load_study(write_study(GOOD_STUDY))
    return study, Store.open_for_run(tmp_path / "s.zarr", study)


def test_a_lone_result_reaches_the_disk_within_flush_seconds(
    tmp_path, write_study, monkeypatch
):
    monkeypatch.setattr(simstudy.store, "FLUSH_SECONDS", 0.2)
    study, st = _open(tmp_path, write_study)
    try:
        points = grid.points(study)
        batch = grid.Batch(0, tuple(points[0].items()), 0, 2, (0, 1))
        st.write(run_batch(study, batch), st.point_index(points[0]), np.arange(2))
        status = zarr.open_array(tmp_path / "s.zarr" / "status", mode="r")
        assert (np.asarray(status[0, 0, 0:2]) == 0).all()  # buffered
        deadline = time.monotonic() + 10
        while (np.asarray(status[0, 0, 0:2]) == 0).any():
            assert time.monotonic() < deadline, "the timer never flushed"
            time.sleep(0.05)
        estimate = zarr.open_array(tmp_path / "s.zarr" / "estimate", mode="r")
        assert np.isfinite(np.asarray(estimate[0, 0, 0:2])).all()
    finally:
        st.close()


def test_unreadable_mt19937_checkpoints_are_ignored(tmp_path, write_study):
    _, st = _open(tmp_path, write_study)
    try:
        st.save_mt_checkpoint(3, 5, np.arange(625, dtype=np.int64))
        folder = st._mt_folder(3)
        (folder / "6.npy").write_bytes(b"not numpy")
        with open(folder / "7.npy", "wb") as f:  # a pickle must never be loaded
            np.save(f, np.array([object()]), allow_pickle=True)
        (folder / "x.npy").write_bytes((folder / "5.npy").read_bytes())
        np.save(folder / "8.npy", np.zeros(3, dtype=np.int64))  # wrong shape
        states = st.mt_checkpoints(3)
        assert list(states) == [5]
        np.testing.assert_array_equal(states[5], np.arange(625))
        assert st.mt_checkpoints(4) == {}
    finally:
        st.close()


def test_damaged_chunks_are_found_on_resume_and_only_their_tasks_rerun(
    tmp_path, write_study, monkeypatch
):
    monkeypatch.setattr(simstudy.store, "CHUNK_REPLICATES", 2)  # 2 chunks a point
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
    assert sorted(report.repaired) == ["estimate/c.0.1.1.0", "status/c.1.0.0.0"]
    assert report.computed == 2 * 2 + 2 * 2  # two chunks of 2 replicates x 2 methods
    assert_store_consistent(store)
    assert cube_digest(store) == cube_digest(reference)
    again = simstudy.run(path, store=store, scheduler="synchronous")
    assert again.repaired == ()
    assert again.computed == 0


def test_a_failing_write_is_a_clear_error_and_the_run_resumes(
    tmp_path, write_study, monkeypatch
):
    """Disk full (or read-only) mid-run: a StoreError naming the cause, a
    consistent store, and a later run finishes with the reference cube."""
    import errno

    from simstudy.chunkio import ChunkedArray
    from simstudy.errors import StoreError

    monkeypatch.setattr(simstudy.store, "CHUNK_REPLICATES", 2)
    path = write_study(GOOD_STUDY)
    reference, store = tmp_path / "ref.zarr", tmp_path / "s.zarr"
    simstudy.run(path, store=reference, scheduler="synchronous")
    real_write = ChunkedArray.write
    writes = {"n": 0}

    def write(self, coords, chunk):
        writes["n"] += 1
        if writes["n"] > 12:
            raise OSError(errno.ENOSPC, "No space left on device")
        real_write(self, coords, chunk)

    monkeypatch.setattr(ChunkedArray, "write", write)
    with pytest.raises(StoreError, match="No space left on device"):
        simstudy.run(path, store=store, scheduler="synchronous", batch_size=1)
    monkeypatch.setattr(ChunkedArray, "write", real_write)
    ds = assert_store_consistent(store)
    assert 0 < int((ds.status.values == 1).sum()) < ds.status.size
    simstudy.run(path, store=store, scheduler="synchronous")
    assert cube_digest(store) == cube_digest(reference)
