"""The location study end to end: numpy backend vs jax backend (issue 6).

Both run as a user would, ``python -m simstudy run STUDY --replicates R``
into a fresh store (process start, imports, workers or compiles, store
writes all counted), side by side in one session:

- numpy: studies/location.py on the default scheduler (``processes``) and on
  a LocalCluster (``--scheduler distributed``);
- jax: studies/location_jax.py in-process on the CPU, once with an empty
  compilation cache (cold: every kernel compiled) and once with the cache
  that run left (warm: what a rerun, resume or extension pays).

    python benchmarks/jax_vs_numpy.py [--replicates 100000] [--repeat 3]
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

ROOT = Path(__file__).resolve().parents[1]


def run(study: str, replicates: int, *extra: str, env: dict[str, str]) -> float:
    """Seconds for one end-to-end run into a new store."""
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        subprocess.run(
            [
                sys.executable,
                "-m",
                "simstudy",
                "run",
                str(ROOT / "studies" / study),
                "--store",
                str(Path(tmp) / "s.zarr"),
                "--replicates",
                str(replicates),
                "--no-progress",
                *extra,
            ],
            check=True,
            stdout=subprocess.DEVNULL,
            env=env,
        )
        return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--replicates", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--skip-distributed", action="store_true")
    args = parser.parse_args()
    r = args.replicates
    times: dict[str, list[float]] = {}
    for _ in range(args.repeat):
        with tempfile.TemporaryDirectory() as cache:
            env = {**os.environ, "SIMSTUDY_JAX_CACHE": cache}
            times.setdefault("jax, cold compile cache", []).append(
                run("location_jax.py", r, env=env)
            )
            times.setdefault("jax, warm compile cache", []).append(
                run("location_jax.py", r, env=env)
            )
        times.setdefault("numpy, processes (default)", []).append(
            run("location.py", r, env=dict(os.environ))
        )
        if not args.skip_distributed:
            times.setdefault("numpy, LocalCluster", []).append(
                run(
                    "location.py", r, "--scheduler", "distributed", env=dict(os.environ)
                )
            )
    tasks = 6 * r * 3
    base = statistics.median(times["numpy, processes (default)"])
    print(f"location study, {r:,} replicates per design point ({tasks:,} tasks)")
    print(f"{'run':<32} {'median s':>9} {'tasks/s':>11} {'vs numpy default':>17}")
    for name, values in times.items():
        m = statistics.median(values)
        print(f"{name:<32} {m:9.2f} {tasks / m:11,.0f} {base / m:16.1f}x")
    for name, values in times.items():
        print(f"  {name}: {[round(v, 2) for v in values]}")


if __name__ == "__main__":
    main()
