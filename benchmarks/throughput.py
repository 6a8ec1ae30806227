"""simstudy against the peers, side by side on this machine (issue 3).

    python benchmarks/throughput.py [--repeat 3] [--only tiny,heavy,...]
        [-- extra `simstudy run` args, e.g. --scheduler distributed]

Sections (all by default):
  tiny     200,000 tasks of `standard_normal(50).mean()` with a fresh stream
  heavy    400 tasks of ~20 ms (bootstrap SE of a median, own method stream)
  delayed  20,000 tiny tasks: one dask.delayed per task vs simstudy
  small    a 100-task study, end to end
  memory   a 10^6-task study: driver peak RSS, then a resume of the finished store
  store    results/s the store takes (in-process, no workers)
  mt       mt19937-jump stream setup (random access): cost per stream, a far
           stream, and a resume that needs only the last chunk

Peers: (a) a serial loop with the same streams built the plain way
(`Generator(PCG64(SeedSequence(seed, spawn_key=...)))`), (b)
`multiprocessing.Pool(cores).map` with automatic chunksize (pool start
included), (c) one `dask.delayed` per task on Dask's processes scheduler,
(d) `python -m simstudy run` in a subprocess: interpreter start, imports,
workers, store writes, all included. Each section checks that simstudy's cube
equals the serial loop's numbers. Prints medians of --repeat runs and the
ratios computed from those medians.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

# the peers get one BLAS thread too, as simstudy's workers do
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np
from numpy.random import PCG64, Generator, SeedSequence

from simstudy.rng.mtjump import MTJumper
from simstudy.rng.streams import key

HERE = Path(__file__).resolve().parent
SEED = 2026
TINY_PK = key({"n": 50})
HEAVY_PK = key({"n": 200})
BOOT_MK = key("boot_se")
CORES = os.cpu_count() or 1
ROWS: list[tuple[str, str, list[float], str]] = []


def tiny_task(r: int) -> float:
    rng = Generator(PCG64(SeedSequence(SEED, spawn_key=(TINY_PK, r))))
    return float(rng.standard_normal(50).mean())


def heavy_task(r: int) -> float:
    x = Generator(PCG64(SeedSequence(SEED, spawn_key=(HEAVY_PK, r)))).standard_normal(
        200
    )
    rng = Generator(PCG64(SeedSequence(SEED, spawn_key=(HEAVY_PK, r, BOOT_MK))))
    idx = rng.integers(0, len(x), (5000, len(x)))
    return float(np.median(x[idx], axis=1).std())


def serial(task: Callable[[int], float], n: int) -> tuple[float, np.ndarray[Any, Any]]:
    t0 = time.perf_counter()
    out = np.array([task(r) for r in range(n)])
    return time.perf_counter() - t0, out


def pool_map(task: Callable[[int], float], n: int) -> float:
    t0 = time.perf_counter()
    with multiprocessing.Pool(CORES) as pool:
        pool.map(task, range(n))
    return time.perf_counter() - t0


def delayed(task: Callable[[int], float], n: int) -> float:
    import dask

    t0 = time.perf_counter()
    dask.compute(*[dask.delayed(task)(r) for r in range(n)], scheduler="processes")
    return time.perf_counter() - t0


def _driver_peak_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


LAST_RUN: dict[str, float] = {}  # "ready": the last run's seconds once a worker was up


def simstudy_run(
    study: str, store: Path, replicates: int, extra: list[str]
) -> tuple[float, int]:
    """Run a study end to end; return wall seconds and the driver's peak RSS (kB).

    Also parses the run's last line into LAST_RUN: the seconds it computed
    once its first worker was up (tasks computed / the tasks/s it reports).
    """
    env = {**os.environ, "SIMSTUDY_BENCH_REPLICATES": str(replicates)}
    cmd = [sys.executable, "-m", "simstudy", "run", str(HERE / "studies" / study)]
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        [*cmd, "--store", str(store), "--no-progress", *extra],
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    peak = 0
    while proc.poll() is None:
        peak = max(peak, _driver_peak_kb(proc.pid))
        time.sleep(0.02)
    wall = time.perf_counter() - t0
    out = proc.stdout.read() if proc.stdout else ""
    if proc.returncode != 0:
        raise SystemExit(f"simstudy run {study} exited {proc.returncode}")
    LAST_RUN.clear()
    if (
        " tasks/s)" in out
    ):  # "computed N in X s (Y s to start the workers, then R tasks/s)"
        computed = int(out.split("computed ")[1].split(" ")[0].replace(",", ""))
        rate = float(out.split("then ")[1].split(" tasks/s")[0].replace(",", ""))
        LAST_RUN["ready"] = computed / rate  # seconds once a worker was up
    return wall, peak


def cube_values(store: Path) -> np.ndarray[Any, Any]:
    import zarr

    return np.asarray(zarr.open_array(store / "value", mode="r")[0, :, 0])


def row(section: str, approach: str, runs: list[float], note: str = "") -> float:
    ROWS.append((section, approach, runs, note))
    return statistics.median(runs)


def compare(
    section: str,
    task: Callable[[int], float],
    study: str,
    n: int,
    repeat: int,
    extra: list[str],
    peers: tuple[str, ...] = ("serial", "pool"),
) -> None:
    times: dict[str, list[float]] = {k: [] for k in (*peers, "simstudy", "ready")}
    expected = None
    for _ in range(repeat):
        with tempfile.TemporaryDirectory() as tmp:
            if "serial" in peers:
                t, expected = serial(task, n)
                times["serial"].append(t)
            if "pool" in peers:
                times["pool"].append(pool_map(task, n))
            if "delayed" in peers:
                times["delayed"].append(delayed(task, n))
            store = Path(tmp) / "s.zarr"
            times["simstudy"].append(simstudy_run(study, store, n, extra)[0])
            times["ready"].append(LAST_RUN["ready"])
            if expected is not None:
                assert np.array_equal(cube_values(store), expected), "cube != serial"
    names = {
        "serial": "serial loop, same streams",
        "pool": f"multiprocessing.Pool({CORES}).map, auto chunks",
        "delayed": "one dask.delayed per task, processes",
        "simstudy": "python -m simstudy run " + " ".join(extra),
        "ready": "  the same, once a worker was up",
    }
    for k, runs in times.items():
        row(f"{section} (n={n:,})", names[k].rstrip(), runs)


def small(repeat: int, extra: list[str]) -> None:
    runs = []
    for _ in range(repeat):
        with tempfile.TemporaryDirectory() as tmp:
            runs.append(simstudy_run("tiny.py", Path(tmp) / "s.zarr", 100, extra)[0])
    row("small (n=100)", "python -m simstudy run, end to end", runs)


def memory(repeat: int, extra: list[str]) -> None:
    n = 1_000_000
    walls, peaks, resumes = [], [], []
    for _ in range(repeat):
        with tempfile.TemporaryDirectory() as tmp:
            store = Path(tmp) / "s.zarr"
            wall, peak = simstudy_run("tiny.py", store, n, extra)
            walls.append(wall)
            peaks.append(peak / 1024)
            resumes.append(simstudy_run("tiny.py", store, n, extra)[0])
    row("memory (n=1,000,000)", "run: wall seconds", walls)
    row("memory (n=1,000,000)", "run: driver peak RSS (MB)", peaks)
    row("memory (n=1,000,000)", "resume of the finished store: seconds", resumes)


def store_writes(repeat: int, extra: list[str]) -> None:
    """Results/s the store takes: 200,000 tiny-task results, computed first,
    then written as the runner writes them (buffered, flushed per chunk)."""
    os.environ["SIMSTUDY_BENCH_REPLICATES"] = "200000"
    from simstudy.backends.numpy import run_batch
    from simstudy.declare import grid
    from simstudy.declare.loader import load_study
    from simstudy.running.plan import BatchSizer, Plan, Round
    from simstudy.store import Store

    study = load_study(HERE / "studies" / "tiny.py")
    pending = [np.ones((study.replicates, 1), bool)]
    points = grid.points(study)
    sizer = BatchSizer(fixed=1024, workers=1, rows=study.replicates, chunk=8192)
    work = Round([study.replicates], pending, 0, 0)
    with tempfile.TemporaryDirectory() as tmp:
        plan = Plan(study, Store.open_for_run(Path(tmp) / "p.zarr", study))
        batches = plan.batches(work, sizer, timeout=None, warnings=None, device=None)
        results = [run_batch(study, b) for b in batches]
        plan.store.close()
    runs = []
    for _ in range(repeat):
        with tempfile.TemporaryDirectory() as tmp:
            st = Store.open_for_run(Path(tmp) / "s.zarr", study)
            st.expect(st.point_index(points[0]), pending[0])
            midx = st.method_index(study.method_names)
            t0 = time.perf_counter()
            for res in results:
                st.write(res, st.point_index(points[0]), midx)
            st.close()
            runs.append(len(results) * 1024 / (time.perf_counter() - t0))
    row("store", "results/s written (batches of 1,024)", runs)


def mt(repeat: int, extra: list[str]) -> None:
    per_stream, far = [], []
    rng = np.random.default_rng(17)
    for _ in range(repeat):
        jumper = MTJumper(SEED)
        t0 = time.perf_counter()
        for k in range(1, 501):
            jumper.row(k)
        per_stream.append((time.perf_counter() - t0) / 500 * 1e3)
        for k in rng.integers(2**31, 2**32, 5):
            t0 = time.perf_counter()
            MTJumper(SEED).row(int(k))
            far.append(time.perf_counter() - t0)
    row("mt19937-jump", "consecutive streams, ms per stream", per_stream)
    row("mt19937-jump", "one stream k in [2^31, 2^32), fresh, seconds", far)
    n = 10_000
    with tempfile.TemporaryDirectory() as tmp:
        store = Path(tmp) / "s.zarr"
        args = [*extra, "--rng", "mt19937-jump"]
        first = simstudy_run("tiny.py", store, n, args)[0]
        row(f"mt19937-jump (n={n:,})", "first run, seconds", [first])
        import zarr

        status = zarr.open_array(store / "status", mode="r+")
        status[0, n - 1024 :, :] = 0  # as if killed before the last chunk
        again = simstudy_run("tiny.py", store, n, args)[0]
        row(f"mt19937-jump (n={n:,})", "resume of the last 1,024, seconds", [again])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--only", default="tiny,heavy,delayed,small,memory,store,mt")
    args, extra = parser.parse_known_args()
    extra = [a for a in extra if a != "--"]
    only = set(args.only.split(","))
    r = args.repeat
    if "tiny" in only:
        compare("tiny", tiny_task, "tiny.py", 200_000, r, extra)
    if "heavy" in only:
        compare("heavy", heavy_task, "heavy.py", 400, r, extra)
    if "delayed" in only:
        compare("delayed", tiny_task, "tiny.py", 20_000, r, extra, ("delayed",))
    if "small" in only:
        small(r, extra)
    if "memory" in only:
        memory(r, extra)
    if "store" in only:
        store_writes(r, extra)
    if "mt" in only:
        mt(r, extra)
    print(f"\n{CORES} cores; medians of {r} run(s)")
    print("x base = the section's first row / this row; x pool = Pool.map / this row\n")
    print(
        f"{'section':<22} {'approach':<48} {'median':>8} {'x base':>7} {'x pool':>7}  runs"
    )
    base: dict[str, float] = {}
    pool: dict[str, float] = {}
    for section, approach, runs, _ in ROWS:
        med = statistics.median(runs)
        base.setdefault(section, med)
        if approach.startswith("multiprocessing"):
            pool[section] = med
        ratios = section.split()[0] in ("tiny", "heavy", "delayed")
        xb = f"{base[section] / med:7.2f}" if ratios else " " * 7
        xp = f"{pool[section] / med:7.2f}" if ratios and section in pool else " " * 7
        shown = ", ".join(f"{x:.2f}" for x in runs)
        print(f"{section:<22} {approach:<48} {med:8.2f} {xb} {xp}  [{shown}]")


if __name__ == "__main__":
    main()
