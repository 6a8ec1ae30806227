"""Heavy tasks on 1 vs 2 external `dask worker` processes (issue 7).

    python benchmarks/cluster_throughput.py [--replicates 400] [--repeat 3]

Starts, on 127.0.0.1, a `dask scheduler` and single-threaded `dask worker`
processes (each in its own temporary directory, no study file on their path),
runs benchmarks/studies/heavy.py (a bootstrap SE of a median, ~20 ms a task)
through `python -m simstudy run --address`, first with one worker, then with
two, and for reference the local default (`--scheduler processes
--workers 2`) in the same run, and prints tasks/s (the rate the run reports once its workers were up,
and end to end including the driver's start) and the 2-vs-1 ratio, medians of
--repeat runs. The cubes of all runs must be identical. Every process it
starts is stopped at the end.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.dask_cluster import DaskProcesses
from tests.helpers import cube_digest

HEAVY = ROOT / "benchmarks" / "studies" / "heavy.py"


def one_run(where: list[str], store: Path, replicates: int) -> tuple[float, float]:
    """Return (tasks/s once the workers were up, tasks/s end to end)."""
    env = {**os.environ, "SIMSTUDY_BENCH_REPLICATES": str(replicates)}
    cmd = [sys.executable, "-m", "simstudy", "run", str(HEAVY), "--no-progress"]
    cmd += [*where, "--store", str(store)]
    t0 = time.perf_counter()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    wall = time.perf_counter() - t0
    if done.returncode != 0:
        raise SystemExit(f"simstudy run failed:\n{done.stderr}")
    rate = float(done.stdout.split("then ")[1].split(" tasks/s")[0].replace(",", ""))
    return rate, replicates / wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--replicates", type=int, default=400)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        procs = DaskProcesses(root)
        digests = set()
        rows: dict[str, tuple[float, float]] = {}

        def measure(label: str, where: list[str]) -> None:
            runs = []
            for i in range(args.repeat):
                store = root / f"{len(rows)}-{i}.zarr"
                runs.append(one_run(where, store, args.replicates))
                digests.add(cube_digest(store))
            rows[label] = (
                statistics.median(r[0] for r in runs),
                statistics.median(r[1] for r in runs),
            )

        try:
            address = procs.start_scheduler()
            for n in (1, 2):
                procs.start_worker(f"w{n}")
                procs.wait_for_workers(n)
                measure(f"{n} external", ["--address", address])
        finally:
            procs.stop()
        measure("local processes, 2", ["--scheduler", "processes", "--workers", "2"])
    if len(digests) != 1:
        raise SystemExit(f"the cubes differ between runs: {digests}")
    print(f"heavy study, {args.replicates} tasks, medians of {args.repeat} run(s)")
    print(f"cores on this machine: {os.cpu_count()}; identical cubes: yes")
    print(f"{'workers':<20} {'tasks/s (workers up)':>22} {'tasks/s (end to end)':>22}")
    for label, (rate, e2e) in rows.items():
        print(f"{label:<20} {rate:>22.1f} {e2e:>22.1f}")
    one, two = rows["1 external"], rows["2 external"]
    print(
        f"ratio 2 vs 1 external workers: {two[0] / one[0]:.2f} (workers up), "
        f"{two[1] / one[1]:.2f} (end to end); ideal 2.00"
    )


if __name__ == "__main__":
    main()
