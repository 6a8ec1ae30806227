"""Scale (issue 19.8): planning, status and resume do not grow with the
replicates; Ctrl-C acts within seconds; absurd --workers are refused; plan
on many design points takes seconds. The real 10^9-task case is measured
by ``benchmarks/scale.py`` (docs/benchmarks.md); here the mechanism, at 10^7."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np
import psutil

import simstudy
from simstudy.cli import main
from simstudy.running.pilot import PILOT_POINTS, estimate
from simstudy.running.plan import Plan
from simstudy.store import Store
from tests.helpers import wait_for
from tests.studies import write_study_file

TINY = """
from simstudy import Study

study = Study("tiny", factors={{"p": list(range({points}))}},
              replicates={replicates}, seed=1)

@study.data
def gen(rng, p):
    return rng.random()

@study.method
def copy(x):
    return {{"estimate": x}}

@study.method
def twice(x):
    return {{"estimate": 2 * x}}
"""


def _study(tmp_path: Path, points: int, replicates: int) -> Path:
    source = TINY.format(points=points, replicates=replicates)
    return write_study_file(tmp_path, source, "tiny.py")


def test_a_round_of_10_million_tasks_holds_no_per_replicate_mask(
    tmp_path,
):
    path = _study(tmp_path, 5, 10**6)  # 5 points x 10^6 x 2 methods = 10^7 tasks
    study = simstudy.load_study(path)
    st = Store.open_for_run(tmp_path / "s.zarr", study)
    try:
        plan = Plan(study, st)
        counts = [study.replicates] * len(plan.grid)
        tracemalloc.start()
        t0 = time.perf_counter()
        work = plan.round(counts, retry_failed=False)
        assert work.total == 10**7
        assert work.rows == 5 * 10**6
        assert work.first_pending([1]) == (0, 0)
        batches = plan_batches(plan, work, st)
        first = next(batches)
        seconds = time.perf_counter() - t0
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert (first.point, first.start, first.methods) == (0, 0, (0, 1))
        assert seconds < 60, seconds  # O(chunks), not O(10^7 tasks): ~0.1 s here
        assert peak < 20 * 2**20, f"{peak / 2**20:.0f} MB for a 10^7-task round"
        assert all(not p.partial and not p.done for p in work.pending)
        # one status chunk written in part: only that chunk holds a mask
        from simstudy.backends.numpy import run_batch

        batch = next(b for b in batches if b.point == 1)
        st.write(run_batch(study, batch), plan.pidx[1], plan.midx)
        st.flush()
        again = plan.round(counts, retry_failed=False)
        assert again.total == 10**7 - 2 * (batch.stop - batch.start)
        assert [len(p.partial) for p in again.pending] == [0, 1, 0, 0, 0]
    finally:
        st.close()


def plan_batches(plan, work, st):
    from simstudy.running.plan import BatchSizer

    sizer = BatchSizer(fixed=4, workers=1, rows=work.rows, chunk=st.group_rows)
    return plan.batches(work, sizer, timeout=None, warnings=None, device=None)


def test_ctrl_c_stops_a_10_million_task_run_within_seconds(tmp_path):
    path = _study(tmp_path, 10, 5 * 10**5)
    store = tmp_path / "tiny.zarr"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    env["SIMSTUDY_FLUSH_SECONDS"] = "0.5"
    proc = subprocess.Popen(
        [sys.executable, "-m", "simstudy", "run", str(path), "--no-progress"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    driver = psutil.Process(proc.pid)
    peak = 0

    def first_result() -> bool:
        """Whether a result is on disk; samples the driver's memory meanwhile."""
        nonlocal peak
        if any((store / "status").glob("c.*")):
            return True
        assert proc.poll() is None, proc.communicate()
        peak = max(peak, driver.memory_info().rss)
        return False

    try:
        wait_for("a first result", first_result, 60)
        peak = max(peak, driver.memory_info().rss)
        sent = time.monotonic()
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
        latency = time.monotonic() - sent
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 130, err
    assert latency < 10, latency
    assert peak < 600 * 2**20, f"driver {peak / 2**20:.0f} MB"
    assert "interrupted: the store is consistent" in err
    ok = main(["status", str(store)])
    assert ok == 0


def test_absurd_workers_are_refused_before_anything_is_written(tmp_path, capsys):
    path = _study(tmp_path, 2, 4)
    most = 8 * (os.cpu_count() or 1)
    assert main(["run", str(path), "--workers", str(most + 1)]) == 2
    err = capsys.readouterr().err
    assert f"error: --workers {most + 1} on a machine with" in err
    assert "hint: drop --workers" in err
    assert not (tmp_path / "tiny.zarr").exists()


def test_plan_times_a_sample_of_a_large_grid(tmp_path):
    path = _study(tmp_path, 100_000, 3)
    t0 = time.perf_counter()
    p = estimate(path, workers=2, pilot_seconds=0.5)
    assert time.perf_counter() - t0 < 30
    assert p.tasks == 600_000
    assert 0 < p.pilot_tasks <= 3 * 2 * PILOT_POINTS
    assert np.isfinite(p.estimate)
