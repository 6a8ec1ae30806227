"""The 10^9-task study (issue 19.8): time to the first result, driver memory,
Ctrl-C latency; and ``plan`` on 10^6 design points.

    python benchmarks/scale.py [--replicates 100000000] [--points 10]
                               [--seconds 20] [--plan-points 1000000]

Runs ``python -m simstudy run`` on a study of POINTS design points x
REPLICATES replicates x 1 tiny method in a scratch folder, samples the
driver's resident memory (psutil, the driver process only; workers apart),
waits until the first status chunk is on disk (the first results written),
lets it compute for SECONDS, sends SIGINT and times the exit. Then times
``python -m simstudy plan`` on a study of PLAN_POINTS design points.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

STUDY = """
from simstudy import Study

study = Study("scale", factors={{"p": list(range({points}))}},
              replicates={replicates}, seed=1)

@study.data
def gen(rng, p):
    return rng.random()

@study.method
def copy(x):
    return {{"estimate": x}}
"""


def _env() -> dict[str, str]:
    root = str(Path(__file__).resolve().parents[1])
    return {**os.environ, "PYTHONPATH": root}


def run_case(folder: Path, points: int, replicates: int, seconds: float) -> None:
    (folder / "study.py").write_text(STUDY.format(points=points, replicates=replicates))
    store = folder / "study.zarr"
    cmd = [sys.executable, "-m", "simstudy", "run", "study.py", "--no-progress"]
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        cmd, cwd=folder, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    me = psutil.Process(proc.pid)
    peak, first = 0, None
    while proc.poll() is None:
        try:
            peak = max(peak, me.memory_info().rss)
        except psutil.NoSuchProcess:
            break
        status = store / "status"
        if first is None and status.is_dir() and any(status.glob("c.*")):
            first = time.perf_counter() - t0
        if first is not None and time.perf_counter() - t0 > first + seconds:
            break
        time.sleep(0.05)
    sent = time.perf_counter()
    proc.send_signal(signal.SIGINT)
    while proc.poll() is None:
        try:
            peak = max(peak, me.memory_info().rss)
        except psutil.NoSuchProcess:
            break
        time.sleep(0.05)
    out, err = proc.communicate()
    latency = time.perf_counter() - sent
    print(
        f"run {points} points x {replicates:,} replicates = "
        f"{points * replicates:,} tasks: first results on disk after "
        f"{first if first is None else round(first, 1)} s; driver peak RSS "
        f"{peak / 2**20:,.0f} MB; Ctrl-C to exit {latency:.1f} s "
        f"(exit {proc.returncode})"
    )
    print("  " + out.decode().strip()[-300:])
    print("  " + err.decode().strip()[-300:])


def plan_case(folder: Path, points: int) -> None:
    (folder / "plan.py").write_text(STUDY.format(points=points, replicates=10))
    t0 = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "simstudy", "plan", "plan.py"],
        cwd=folder,
        env=_env(),
        capture_output=True,
        text=True,
    )
    print(
        f"plan {points:,} design points: {time.perf_counter() - t0:.1f} s "
        f"(exit {done.returncode})"
    )
    print("  " + (done.stdout + done.stderr).strip().replace("\n", "\n  ")[-600:])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--replicates", type=int, default=10**8)
    ap.add_argument("--points", type=int, default=10)
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--plan-points", type=int, default=10**6)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        run_case(Path(tmp), args.points, args.replicates, args.seconds)
        if args.plan_points:
            plan_case(Path(tmp), args.plan_points)


if __name__ == "__main__":
    main()
