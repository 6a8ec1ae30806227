"""Store buffering: results reach the disk by themselves; bad side files are ignored."""

from __future__ import annotations

import time

import numpy as np
import zarr

import simstudy
from simstudy import grid
from simstudy.batch import run_batch
from simstudy.store import Store
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
