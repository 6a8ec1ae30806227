"""summarize on a cube larger than it needs to hold (issue 18): peak RSS and time.

    python benchmarks/summarize_large.py [--gb 2] [--store DIR] [--keep]
        [--block-mb 32] [--whole]

Builds (once; reused when --store exists) a store of about --gb GB: a study
with 2 methods whose estimate and SE are arrays of 2,000 values each (32 kB
per task), over 16 design points x R replicates. Then, each in a fresh
process so the figures are summarize's own, it runs
``summarize(open_results(store), reference="a")`` block by block
(--block-mb, default summarize's own budget), and with --whole also the old way,
``summarize(cube.load())``, for comparison. Prints the cube's size, the
time, and the peak resident memory (ru_maxrss) over the process's RSS once
the cube is opened.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

STUDY = """
import numpy as np
from simstudy import Study

study = Study("large", factors={{"k": list(range(16))}}, replicates={reps}, seed=1)
study.truth(estimate=0.0)


@study.data
def gen(rng, k):
    return rng.standard_normal(2000)


@study.method(se="se")
def a(x):
    return {{"estimate": x, "se": np.abs(x) + 0.5}}


@study.method(se="se")
def b(x):
    return {{"estimate": 0.9 * x, "se": np.abs(x) + 0.4}}
"""

MEASURE = """
import json, resource, sys, time
import simstudy

store, block, whole = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "1"
cube = simstudy.open_results(store)
size = sum(v.nbytes for v in cube.data_vars.values())
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t0 = time.perf_counter()
if whole:
    res = simstudy.summarize(cube.load(), reference="a")
else:
    res = simstudy.summarize(cube, reference="a", block_bytes=block)
seconds = time.perf_counter() - t0
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"cube_bytes": size, "seconds": seconds, "base_kb": base,
                  "peak_kb": peak, "cells": int(res["bias"].size)}))
"""


def build(store: Path, gb: float) -> float:
    """Run the study into ``store``; return the seconds it took."""
    reps = max(2, round(gb * 2**30 / (16 * 2 * 32_000)))
    path = store.parent / "large_study.py"
    path.write_text(textwrap.dedent(STUDY.format(reps=reps)))
    t0 = time.perf_counter()
    cmd = [sys.executable, "-m", "simstudy", "run", str(path), "--store", str(store)]
    subprocess.run([*cmd, "--no-progress", "--scheduler", "synchronous"], check=True)
    return time.perf_counter() - t0


def measure(store: Path, block: int, whole: bool) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, "-c", MEASURE, str(store), str(block), "1" if whole else "0"],
        check=True,
        capture_output=True,
        text=True,
    )
    data: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
    return data


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--gb", type=float, default=2.0, help="cube size to build (2)")
    ap.add_argument("--store", help="build here (or reuse), default a temp dir")
    ap.add_argument("--keep", action="store_true", help="keep the temp store")
    ap.add_argument(
        "--block-mb",
        type=int,
        default=32,
        help="block budget (32, the default of summarize)",
    )
    ap.add_argument("--whole", action="store_true", help="also cube.load() first")
    args = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="simstudy-large-")
    store = Path(args.store) if args.store else Path(tmp) / "large.zarr"
    if not store.exists():
        print(f"building {store} ({args.gb} GB) ...", flush=True)
        print(f"  built in {build(store, args.gb):.0f} s", flush=True)
    runs = [("blocks", False)] + ([("cube.load()", True)] if args.whole else [])
    for name, whole in runs:
        r = measure(store, args.block_mb * 2**20, whole)
        extra = (r["peak_kb"] - r["base_kb"]) / 2**10
        print(
            f"{name:>12}: cube {r['cube_bytes'] / 2**30:.2f} GB, "
            f"{r['seconds']:.1f} s, peak RSS {r['peak_kb'] / 2**10:,.0f} MB "
            f"(+{extra:,.0f} MB over the opened cube), {r['cells']:,} cells"
        )
    if not args.store and not args.keep:
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
