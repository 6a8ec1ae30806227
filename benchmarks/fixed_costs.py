"""Fixed costs and small runs: simstudy end to end vs the plain code it replaces
(issue 17), each pair measured side by side, interleaved, medians of --repeat.

    python benchmarks/fixed_costs.py [--repeat 3] [--only reference,pilot,...]
        [-- extra `simstudy run` args]

Sections (all by default):
  reference  the batchtools reference design (studies/location.py: 3x2 points
             x 2,000 replicates x 3 methods = 36,000 tasks) vs the same work
             in a serial loop in one process (imports done, as in a session)
  pilot      the same design with 20 replicates (360 tasks) vs a bare
             `python -c` doing it serially, interpreter start and imports in
  heavy      400 tasks of ~20 ms vs a serial loop and Pool(2).map
  tiny       200,000 tiny tasks vs a serial loop and Pool(2).map
  mt         rng="mt19937-jump", 4,096 tiny tasks, 1 worker vs 2; and the
             setup of one stream k < 2**32 by random access
  memory     a 10^6-task study: the driver's peak RSS

heavy, tiny and memory are benchmarks/throughput.py's sections, reused.
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

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import throughput as tp

ROOT = HERE.parent
RATIOS: list[tuple[str, str]] = []

PILOT = """
import json, hashlib
import numpy as np
from scipy import stats
def key(obj):
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"))
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little")
out = np.empty((3, 2, 20, 3))
for i, n in enumerate([20, 100, 500]):
    for j, eps in enumerate([0.0, 0.1]):
        pk = key({"n": n, "eps": eps})
        for r in range(20):
            ss = np.random.SeedSequence(2026, spawn_key=(pk, r))
            rng = np.random.Generator(np.random.PCG64(ss))
            x = rng.standard_normal(n)
            x[rng.random(n) < eps] += 10.0
            out[i, j, r] = (x.mean(), np.median(x), stats.trim_mean(x, 0.1))
"""


def run_study(path: Path, store: Path, extra: list[str], env: dict[str, str]) -> float:
    t0 = time.perf_counter()
    cmd = [sys.executable, "-m", "simstudy", "run", str(path), "--store", str(store)]
    subprocess.run(
        [*cmd, "--no-progress", *extra],
        check=True,
        stdout=subprocess.DEVNULL,
        env={**os.environ, **env},
    )
    return time.perf_counter() - t0


def reference(repeat: int, extra: list[str]) -> None:
    from location_vs_serial import serial_loop

    serial, ours = [], []
    for _ in range(repeat):
        serial.append(serial_loop())
        with tempfile.TemporaryDirectory() as tmp:
            study = ROOT / "studies" / "location.py"
            ours.append(run_study(study, Path(tmp) / "s.zarr", extra, {}))
    s = tp.row("reference (36,000)", "serial loop in one process", serial)
    o = tp.row("reference (36,000)", "python -m simstudy run, end to end", ours)
    RATIOS.append(("reference design: simstudy x faster than the loop", f"{s / o:.2f}"))


def pilot(repeat: int, extra: list[str]) -> None:
    bare, ours = [], []
    with tempfile.TemporaryDirectory() as tmp:
        study = Path(tmp) / "location.py"
        text = (ROOT / "studies" / "location.py").read_text()
        study.write_text(text.replace("replicates=2000", "replicates=20"))
        for i in range(repeat):
            t0 = time.perf_counter()
            subprocess.run([sys.executable, "-c", PILOT], check=True)
            bare.append(time.perf_counter() - t0)
            ours.append(run_study(study, Path(tmp) / f"s{i}.zarr", extra, {}))
    b = tp.row("pilot (360)", "bare python -c, serial, imports included", bare)
    o = tp.row("pilot (360)", "python -m simstudy run, end to end", ours)
    RATIOS.append(("360-task study: simstudy / bare python", f"{o / b:.2f}"))


def mt(repeat: int, extra: list[str]) -> None:
    from simstudy.rng.mtjump import MTJumper

    env = {"SIMSTUDY_BENCH_REPLICATES": "4096"}
    args = [*extra, "--rng", "mt19937-jump"]
    one, two, far = [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        tiny = HERE / "studies" / "tiny.py"
        for i in range(repeat):
            one.append(
                run_study(
                    tiny, Path(tmp) / f"a{i}.zarr", [*args, "--workers", "1"], env
                )
            )
            two.append(
                run_study(
                    tiny, Path(tmp) / f"b{i}.zarr", [*args, "--workers", "2"], env
                )
            )
    for k in (2**32 - 1, 3_000_000_019, 2**31 + 12345):
        t0 = time.perf_counter()
        MTJumper(2026).row(k)
        far.append(time.perf_counter() - t0)
    w1 = tp.row("mt19937-jump (4,096)", "--workers 1, end to end", one)
    w2 = tp.row("mt19937-jump (4,096)", "--workers 2, end to end", two)
    tp.row("mt19937-jump", "stream k < 2^32 from the seed, seconds", far)
    RATIOS.append(
        ("mt19937-jump 4,096 tasks: 2 workers x faster than 1", f"{w1 / w2:.2f}")
    )
    RATIOS.append(("mt19937-jump 4,096 tasks, 2 workers: seconds", f"{w2:.2f}"))
    RATIOS.append(("mt19937-jump: slowest stream k < 2^32, seconds", f"{max(far):.3f}"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--only", default="reference,pilot,heavy,tiny,mt,memory")
    args, extra = parser.parse_known_args()
    extra = [a for a in extra if a != "--"]
    only, r = set(args.only.split(",")), args.repeat
    load = os.getloadavg()
    if "reference" in only:
        reference(r, extra)
    if "pilot" in only:
        pilot(r, extra)
    for name, task, study, n in (
        ("heavy", tp.heavy_task, "heavy.py", 400),
        ("tiny", tp.tiny_task, "tiny.py", 200_000),
    ):
        if name in only:
            tp.compare(name, task, study, n, r, extra)
            rows = {
                a: statistics.median(x) for s, a, x, _ in tp.ROWS if s.startswith(name)
            }
            serial = rows["serial loop, same streams"]
            pool = rows[f"multiprocessing.Pool({tp.CORES}).map, auto chunks"]
            ours = next(
                v for a, v in rows.items() if a.startswith("python -m simstudy")
            )
            RATIOS.append(
                (f"{name}: simstudy x faster than serial", f"{serial / ours:.2f}")
            )
            RATIOS.append(
                (f"{name}: simstudy x faster than Pool.map", f"{pool / ours:.2f}")
            )
    if "mt" in only:
        mt(r, extra)
    if "memory" in only:
        tp.memory(1, extra)
    print(
        f"\n{tp.CORES} cores; load average at start {load[0]:.2f}, at end "
        f"{os.getloadavg()[0]:.2f}; medians of {r} run(s)\n"
    )
    print(f"{'section':<22} {'approach':<48} {'median':>8}  runs")
    for section, approach, runs, _ in tp.ROWS:
        shown = ", ".join(f"{x:.2f}" for x in runs)
        print(f"{section:<22} {approach:<48} {statistics.median(runs):8.2f}  [{shown}]")
    print()
    for what, value in RATIOS:
        print(f"{what:<56} {value:>7}")


if __name__ == "__main__":
    main()
