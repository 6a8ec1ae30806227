"""``python -m simstudy`` in real processes: exit codes, signals, kill -9."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psutil
import pytest

import simstudy
from tests.helpers import assert_store_consistent, cube_digest, wait_for
from tests.studies import write_study_file

SLOW = """
import time
import numpy as np
from simstudy import Study

study = Study("slow", factors={"n": [10, 20]}, replicates=60, seed=5)

@study.data
def gen(rng, n):
    return rng.standard_normal(n)

@study.method
def mean(x):
    time.sleep(0.01)
    return {"estimate": x.mean()}

@study.method
def boot(x, rng):
    return {"estimate": x[rng.integers(0, len(x), len(x))].mean()}
"""


def _cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "simstudy", *args]


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[1])
    return env


def _simstudy(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run ``python -m simstudy ARGS`` in tmp_path to completion."""
    return subprocess.run(
        _cmd(*args),
        cwd=tmp_path,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )


def _ok_count(store: Path) -> int:
    try:
        return int((simstudy.open_results(store).status.values == 1).sum())
    except Exception:
        return 0


def _wait_progress(
    store: Path, proc: subprocess.Popen[bytes], least: int, *, or_end: bool = False
) -> None:
    """Wait for ``least`` committed tasks; ``or_end``: or for the run to end."""

    def progressed() -> bool:
        if _ok_count(store) >= least:
            return True
        assert or_end or proc.poll() is None, "run ended before it could be interrupted"
        return proc.poll() is not None

    wait_for(f"{least} committed tasks", progressed, 60)


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> str:
    tmp = tmp_path_factory.mktemp("ref")
    path = write_study_file(tmp, SLOW, "slow.py")
    simstudy.run(path, store=tmp / "ref.zarr", scheduler="threads", workers=2)
    return cube_digest(tmp / "ref.zarr")


def test_exit_0_default_scheduler(write_study, tmp_path, reference):
    path = write_study(SLOW, "slow.py")
    proc = _simstudy(tmp_path, "run", str(path), "--no-progress")
    assert proc.returncode == 0, proc.stderr
    assert "240 ok, 0 failed, 0 pending" in proc.stdout
    store = tmp_path / "slow.zarr"  # the default store: ./<stem>.zarr
    assert_store_consistent(store)
    assert cube_digest(store) == reference


def test_exit_3_when_tasks_fail(write_study, tmp_path):
    path = write_study(
        SLOW.replace(
            "time.sleep(0.01)", "if x[0] > 1.5:\n        raise RuntimeError('boom')"
        ),
        "slow.py",
    )
    proc = _simstudy(tmp_path, "run", str(path), "--scheduler", "processes")
    assert proc.returncode == 3, proc.stderr
    assert "hint: some tasks failed" in proc.stderr
    ds = assert_store_consistent(tmp_path / "slow.zarr")
    assert int((ds.status.values == 2).sum()) > 0


def test_exit_2_bad_study_writes_nothing(write_study, tmp_path):
    path = write_study(SLOW.replace("replicates=60", "replicates=0"), "slow.py")
    proc = _simstudy(tmp_path, "run", str(path))
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: slow.py:")
    assert "replicates must be >= 1" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "slow.zarr").exists()


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["int", "term"])
def test_exit_130_on_signal_then_resume(write_study, tmp_path, reference, sig):
    path = write_study(SLOW, "slow.py")
    store = tmp_path / "slow.zarr"
    proc = subprocess.Popen(
        _cmd(
            "run",
            str(path),
            "--scheduler",
            "processes",
            "--workers",
            "2",
            "--batch-size",
            "2",
        ),
        cwd=tmp_path,
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    _wait_progress(store, proc, 20)
    proc.send_signal(sig)
    _out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err.decode()
    assert b"run the same command to resume" in err
    ds = assert_store_consistent(store)
    done = int((ds.status.values == 1).sum())
    assert 20 <= done < 240
    again = _simstudy(tmp_path, "run", str(path), "--scheduler", "synchronous")
    assert again.returncode == 0, again.stderr
    assert f"computed {240 - done:,}" in again.stdout
    assert cube_digest(store) == reference


def test_kill_9_then_resume_gives_the_same_cube(write_study, tmp_path, reference):
    path = write_study(SLOW, "slow.py")
    store = tmp_path / "slow.zarr"
    proc = subprocess.Popen(
        _cmd("run", str(path), "--batch-size", "2"),
        cwd=tmp_path,
        env=_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    _wait_progress(store, proc, 30)
    children = psutil.Process(proc.pid).children(recursive=True)
    proc.kill()
    proc.wait(timeout=30)
    done_at_kill = _ok_count(store)
    # the workers of a killed driver do not run on forever
    _gone, alive = psutil.wait_procs(children, timeout=30)
    assert not alive, f"orphaned workers still running: {alive}"
    again = _simstudy(tmp_path, "run", str(path))
    assert again.returncode == 0, again.stderr
    ds = assert_store_consistent(store)
    assert (ds.status.values == 1).all()
    computed = int(again.stdout.split("computed ")[1].split(" ")[0].replace(",", ""))
    assert computed == 240 - done_at_kill
    assert cube_digest(store) == reference
    assert np.isfinite(ds.estimate.values).all()


def test_kill_9_at_20_points_then_resume_gives_the_same_cube(
    write_study, tmp_path, reference
):
    """Start, SIGKILL after a random delay, repeat 20 times, then finish: the
    cube is the uninterrupted one, no temporary files are left, no task
    committed by one run is computed again by a later one, and no worker of a
    killed driver stays behind (also one still starting when it was killed)."""

    path = write_study(SLOW.replace("time.sleep(0.01)", "time.sleep(0.02)"), "slow.py")
    store = tmp_path / "slow.zarr"
    rng = np.random.Generator(np.random.PCG64(20261125))
    env = {**_env(), "SIMSTUDY_FLUSH_SECONDS": "0.2"}  # commits every 0.2 s
    committed: dict[tuple[int, ...], float] = {}  # task -> its start time
    partial = 0  # kills that left some, not all, tasks committed
    workers: list[psutil.Process] = []  # of the killed drivers
    for i in range(20):
        before = _ok_count(store)
        proc = subprocess.Popen(
            _cmd("run", str(path), "--no-progress"),
            cwd=tmp_path,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        if i % 2:
            # every other kill waits for this run's first commit, so kills land
            # mid-run however slowly a loaded machine starts the run
            _wait_progress(store, proc, before + 1, or_end=True)
            time.sleep(rng.uniform(0.0, 0.3))
        else:
            time.sleep(rng.uniform(0.2, 2.5))
        with contextlib.suppress(psutil.NoSuchProcess):
            workers += psutil.Process(proc.pid).children(recursive=True)
        proc.kill()
        proc.wait(timeout=30)
        if not (store / "zarr.json").exists():
            # killed before the store was created: a new store is built in
            # its .simstudy/creating and published by its root zarr.json, last
            continue
        ds = assert_store_consistent(store, killed=True)
        status, started = ds.status.values, ds.started.values
        partial += 0 < int((status == 1).sum()) < status.size
        for idx in zip(*np.nonzero(status == 1), strict=True):
            if idx in committed:  # committed earlier: never computed again
                assert started[idx] == committed[idx], f"task {idx} ran twice"
            committed[idx] = float(started[idx])
    assert partial >= 3, f"only {partial} kills landed mid-run: the test tests little"
    final = _simstudy(tmp_path, "run", str(path), "--no-progress")
    assert final.returncode == 0, final.stderr
    ds = assert_store_consistent(store)
    for idx, t in committed.items():
        assert ds.started.values[idx] == t, f"task {idx} ran twice"
    assert cube_digest(store) == reference
    assert workers, "no worker was seen: the test tests little"
    _, alive = psutil.wait_procs(workers, timeout=10)  # they check every 0.5 s
    assert not alive, f"workers of killed drivers left running: {alive}"


def test_a_second_sigint_stops_at_once_and_the_store_resumes(
    write_study, tmp_path, reference
):
    path = write_study(SLOW.replace("time.sleep(0.01)", "time.sleep(0.05)"), "slow.py")
    store = tmp_path / "slow.zarr"
    env = {**_env(), "SIMSTUDY_FLUSH_SECONDS": "0.2"}
    proc = subprocess.Popen(
        _cmd("run", str(path), "--no-progress"),
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    _wait_progress(store, proc, 10)
    t0 = time.monotonic()
    proc.send_signal(signal.SIGINT)
    time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err.decode()
    assert time.monotonic() - t0 < 5, "the second Ctrl-C did not stop the run at once"
    ds = assert_store_consistent(store)
    assert int((ds.status.values == 1).sum()) < 240
    again = _simstudy(tmp_path, "run", str(path), "--no-progress")
    assert again.returncode == 0, again.stderr
    assert cube_digest(store) == reference
