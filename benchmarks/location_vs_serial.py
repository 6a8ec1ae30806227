"""Wall time of `python -m simstudy run studies/location.py` (end to end:
process start, cluster start, store writes) vs the same work in a plain
serial Python loop with identical streams, measured side by side.

    python benchmarks/location_vs_serial.py [--repeat 3] [-- extra run args]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from numpy.random import PCG64, Generator, SeedSequence
from scipy import stats

from simstudy.rng.streams import key

ROOT = Path(__file__).resolve().parents[1]


def serial_loop() -> float:
    """The location study as a hand-written loop with the same streams."""
    t0 = time.perf_counter()
    out = np.empty((3, 2, 2000, 3))
    for i, n in enumerate([20, 100, 500]):
        for j, eps in enumerate([0.0, 0.1]):
            pk = key({"n": n, "eps": eps})
            for r in range(2000):
                rng = Generator(PCG64(SeedSequence(2026, spawn_key=(pk, r))))
                x = rng.standard_normal(n)
                x[rng.random(n) < eps] += 10.0
                out[i, j, r] = (x.mean(), np.median(x), stats.trim_mean(x, 0.1))
    return time.perf_counter() - t0


def simstudy_run(extra: list[str]) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        subprocess.run(
            [
                sys.executable,
                "-m",
                "simstudy",
                "run",
                str(ROOT / "studies/location.py"),
                "--store",
                str(Path(tmp) / "loc.zarr"),
                "--no-progress",
                *extra,
            ],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=3)
    args, extra = parser.parse_known_args()
    extra = [a for a in extra if a != "--"]
    serial, ours = [], []
    for _ in range(args.repeat):
        serial.append(serial_loop())
        ours.append(simstudy_run(extra))
    s, o = statistics.median(serial), statistics.median(ours)
    print(f"{'approach':<40} {'median s':>9} {'x serial':>9}")
    print(f"{'serial loop, same streams':<40} {s:9.2f} {1.0:9.2f}")
    label = "python -m simstudy run " + " ".join(extra)
    print(f"{label:<40} {o:9.2f} {s / o:9.2f}")
    print(
        f"runs: serial {[round(x, 2) for x in serial]}, simstudy "
        f"{[round(x, 2) for x in ours]}"
    )


if __name__ == "__main__":
    main()
