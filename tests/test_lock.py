"""Lock ownership (issue 19.7): a run checks that the store's lock is still
its own before it writes and before it deletes the lock. Two real
processes: the first run's lock is deleted by hand, a second run takes the
store; the first stops without writing (exit 2) and leaves the second's
lock alone; the second finishes with the reference cube."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import simstudy
from simstudy.errors import StoreError
from simstudy.store.lock import Lock
from tests.helpers import assert_store_consistent, cube_digest, wait_for
from tests.studies import write_study_file

NAPPING = """
import os
import time
import numpy as np
from simstudy import Study

study = Study("napping", factors={"n": [5, 6]}, replicates=60, seed=3)

@study.data
def gen(rng, n):
    return rng.standard_normal(n)

@study.method
def mean(x):
    time.sleep(float(os.environ.get("NAP", "0")))
    return {"estimate": float(np.mean(x))}
"""


def _start(folder: Path, store: Path) -> subprocess.Popen[str]:
    env = {**os.environ, "NAP": "0.025", "SIMSTUDY_FLUSH_SECONDS": "0.2"}
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[1])
    cmd = [sys.executable, "-m", "simstudy", "run", "study.py", "--store", str(store)]
    return subprocess.Popen(
        [*cmd, "--scheduler", "synchronous", "--no-progress", "--batch-size", "2"],
        cwd=folder,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _holder(lock: Path) -> int | None:
    try:
        return int(json.loads(lock.read_text())["pid"])
    except (OSError, ValueError, KeyError):
        return None


def test_a_run_that_lost_its_lock_stops_and_spares_the_new_owner(
    tmp_path,
):
    folder = tmp_path / "run"
    path = write_study_file(folder, NAPPING)
    store = folder / "s.zarr"
    lock = store / ".simstudy" / "lock"
    first = _start(folder, store)
    second = None
    try:
        wait_for(
            "the first run to hold the lock",
            lambda: (store / "status").is_dir() and _holder(lock) == first.pid,
        )
        lock.unlink()  # by hand, while the first run writes the store
        second = _start(folder, store)
        wait_for("the second run to hold the lock", lambda: _holder(lock) == second.pid)
        _, err = first.communicate(timeout=60)
        assert first.returncode == 2, err
        assert "error: this run lost the lock of store" in err
        # it noticed at its next flush: the file gone, or the second's
        assert f"now held by process {second.pid}" in err or "was deleted" in err
        assert "internal error" not in err
        if second.poll() is None:
            assert _holder(lock) == second.pid  # the first did not delete it
        _, err = second.communicate(timeout=120)
        assert second.returncode == 0, err
    finally:
        for proc in (first, second):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.communicate()
    assert not lock.exists()
    assert_store_consistent(store)
    reference = tmp_path / "ref.zarr"
    simstudy.run(path, store=reference, scheduler="synchronous")
    assert cube_digest(store) == cube_digest(reference)


def test_release_leaves_a_lock_that_is_not_ours(tmp_path):
    store = tmp_path / "s.zarr"
    mine = Lock(store / ".simstudy" / "lock")
    mine.acquire(store)
    mine.path.write_text(json.dumps({"pid": 1, "host": "elsewhere", "token": "x"}))
    with pytest.raises(
        StoreError, match=r"lost the lock .*\(now held by process 1 on elsewhere\)"
    ):
        mine.check()
    mine.release()
    assert json.loads(mine.path.read_text())["token"] == "x"
