"""The 10^9-task study (issue 19.8): time to the first result, driver memory,
Ctrl-C latency; and ``plan`` on 10^6 design points.

    python benchmarks/scale.py [--replicates 100000000] [--points 10]
                               [--seconds 20] [--plan-points 1000000] [--status]

Runs ``python -m simstudy run`` on a study of POINTS design points x
REPLICATES replicates x 1 tiny method in a scratch folder, samples the
driver's resident memory (psutil, the driver process only; workers apart),
waits until the first status chunk is on disk (the first results written),
lets it compute for SECONDS, sends SIGINT and times the exit; then the same
for a resume. Then times ``python -m simstudy plan`` on a study of
PLAN_POINTS design points (and with --status, ``status`` on the store).
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


def _peak_rss(proc: subprocess.Popen[bytes], until: float | None) -> int:
    """Sample a process's RSS until it exits (or ``until``, a perf_counter)."""
    me, peak = psutil.Process(proc.pid), 0
    while proc.poll() is None and (until is None or time.perf_counter() < until):
        try:
            peak = max(peak, me.memory_info().rss)
        except psutil.NoSuchProcess:
            break
        time.sleep(0.05)
    return peak


def _chunks(store: Path) -> set[str]:
    status = store / "status"
    return {f.name for f in status.glob("c.*")} if status.is_dir() else set()


def run_case(
    folder: Path, points: int, replicates: int, seconds: float, label: str
) -> None:
    """Run (or resume) for ``seconds`` after the first new results, then SIGINT."""
    store = folder / "study.zarr"
    before = _chunks(store)
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
        if first is None and _chunks(store) - before:
            first = time.perf_counter() - t0
        if first is not None and time.perf_counter() - t0 > first + seconds:
            break
        time.sleep(0.05)
    sent = time.perf_counter()
    proc.send_signal(signal.SIGINT)
    peak = max(peak, _peak_rss(proc, None))
    out, _ = proc.communicate()
    latency = time.perf_counter() - sent
    shown = "never" if first is None else f"{first:.1f} s"
    print(
        f"{label} {points} points x {replicates:,} replicates = "
        f"{points * replicates:,} tasks: first new results on disk after {shown}; "
        f"driver peak RSS {peak / 2**20:,.0f} MB; Ctrl-C to exit {latency:.1f} s "
        f"(exit {proc.returncode})"
    )
    print("  " + out.decode().strip()[-300:])


def status_case(folder: Path) -> None:
    cmd = [sys.executable, "-m", "simstudy", "status", "study.zarr"]
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        cmd, cwd=folder, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    peak = _peak_rss(proc, None)
    out, err = proc.communicate()
    print(
        f"status: {time.perf_counter() - t0:.1f} s, peak RSS {peak / 2**20:,.0f} MB "
        f"(exit {proc.returncode})"
    )
    print("  " + (out + err).decode().strip()[:300])


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
    ap.add_argument("--status", action="store_true", help="also time status")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "study.py").write_text(
            STUDY.format(points=args.points, replicates=args.replicates)
        )
        run_case(folder, args.points, args.replicates, args.seconds, "run")
        run_case(folder, args.points, args.replicates, args.seconds, "resume")
        if args.status:
            status_case(folder)
        if args.plan_points:
            plan_case(folder, args.plan_points)


if __name__ == "__main__":
    main()
