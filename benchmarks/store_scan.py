"""What refusing links and special files costs a command (issue 24.4).

    python benchmarks/store_scan.py [--points 200] [--files 100000]

Every command walks its store first (``simstudy.store.files.scan``: one
directory listing per folder, no ``stat`` per file). This prints:

1. on a real store (``--points`` design points, ~6 chunk files each), the
   time of the checks a reader runs before it reads anything
   (``reading._checked``) with and without the scan, and the ratio;
2. on a synthetic folder of ``--files`` one-byte chunk files in 8 array
   folders, the scan against reading every file once (what the health
   check of ``status``/``summarize`` does anyway), and the ratio.

Medians of 5 repeats each.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import simstudy
from simstudy.store import files, reading

STUDY = """
from simstudy import Study

study = Study("scan", factors={"k": list(range(POINTS))}, replicates=2, seed=1)

@study.data
def gen(rng, k):
    return rng.standard_normal(3)

@study.method
def mean(x):
    return {"estimate": float(x.mean())}
"""


def median_seconds(fn: Callable[[], object], repeat: int = 5) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def real_store(tmp: Path, points: int) -> None:
    study = tmp / "scan.py"
    study.write_text(textwrap.dedent(STUDY.replace("POINTS", str(points))))
    store = tmp / "scan.zarr"
    simstudy.run(study, store=store, scheduler="synchronous")
    chunks = sum(1 for f in store.rglob("c*") if f.is_file())
    with_scan = median_seconds(lambda: reading._checked(store))
    reading.scan = lambda *a, **k: None  # type: ignore[assignment]
    try:
        without = median_seconds(lambda: reading._checked(store))
    finally:
        reading.scan = files.scan
    print(
        f"real store, {points} points, {chunks} chunk files: reader checks "
        f"{with_scan * 1e3:.1f} ms with the scan, {without * 1e3:.1f} ms without "
        f"(ratio {with_scan / without:.3f})"
    )


def synthetic(tmp: Path, n: int) -> None:
    root = tmp / "big.zarr"
    per = n // 8
    for v in range(8):
        folder = root / f"v{v}"
        folder.mkdir(parents=True)
        for i in range(per):
            (folder / f"c.{i}.0.0").write_bytes(b"x")
    scan = median_seconds(lambda: files.scan(root))
    read = median_seconds(
        lambda: [f.read_bytes() for f in root.glob("v*/c.*")], repeat=3
    )
    print(
        f"synthetic, {8 * per} chunk files: scan {scan:.3f} s, reading each "
        f"once {read:.3f} s (scan / read = {scan / read:.3f})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=200)
    parser.add_argument("--files", type=int, default=100_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        real_store(Path(tmp), args.points)
        synthetic(Path(tmp), args.files)


if __name__ == "__main__":
    main()
