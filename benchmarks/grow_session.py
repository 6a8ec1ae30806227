"""An extension session on the location study (issue 9's demonstration).

1. run studies/location.py with 1,000 replicates;
2. edit it: 4,000 replicates, a new level n=50, a new method (Huber's M);
   run again into the same store;
3. run the edited study from scratch into a second store;
4. compare: tasks computed vs skipped, every chunk file of the outputs and
   status byte for byte, and the numbers by label.

    python benchmarks/grow_session.py [--workdir DIR]
"""

from __future__ import annotations

import argparse
import filecmp
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HUBER = """

@study.method
def huber(x):
    # Huber's M-estimate of location (k = 1.345), a few IRLS steps from the median
    mu = np.median(x)
    s = 1.4826 * np.median(np.abs(x - mu)) or 1.0
    for _ in range(20):
        r = (x - mu) / s
        w = np.minimum(1.0, 1.345 / np.maximum(np.abs(r), 1e-12))
        mu = float(np.sum(w * x) / np.sum(w))
    return {"estimate": mu}
"""


def run(*args: str) -> tuple[float, str]:
    t = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-m", "simstudy", "run", *args, "--no-progress"],
        capture_output=True,
        text=True,
        check=True,
    )
    return time.perf_counter() - t, out.stdout.strip() + out.stderr.strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--workdir", type=Path)
    args = parser.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="grow-"))
    work.mkdir(parents=True, exist_ok=True)
    source = (ROOT / "studies" / "location.py").read_text()
    small = work / "location.py"
    small.write_text(source.replace("replicates=2000", "replicates=1000"))
    grown, scratch = work / "grown.zarr", work / "scratch.zarr"
    for s in (grown, scratch):
        shutil.rmtree(s, ignore_errors=True)
    secs, out = run(str(small), "--store", str(grown))
    print(f"1. 1,000 replicates: {secs:.1f} s\n   {out}")
    big = work / "location_big.py"
    edited = source.replace("replicates=2000", "replicates=4000")
    edited = re.sub(r'"n": \[20, 100, 500\]', '"n": [20, 100, 500, 50]', edited)
    edited = edited.replace("\n\nstudy.truth", HUBER + "\n\nstudy.truth")
    big.write_text(edited)
    secs, out = run(str(big), "--store", str(grown))
    print(
        f"2. edited (4,000 replicates, n=50, huber), same store: {secs:.1f} s\n   {out}"
    )
    secs, out = run(str(big), "--store", str(scratch))
    print(f"3. edited study from scratch: {secs:.1f} s\n   {out}")
    same = differ = 0
    for var in ("estimate", "status"):
        files = sorted(
            p.name for p in (scratch / var).iterdir() if p.name != "zarr.json"
        )
        grown_files = sorted(
            p.name for p in (grown / var).iterdir() if p.name != "zarr.json"
        )
        assert files == grown_files, f"{var}: different chunk files"
        match, mismatch, errors = filecmp.cmpfiles(
            scratch / var, grown / var, files, shallow=False
        )
        same += len(match)
        differ += len(mismatch) + len(errors)
    print(f"4. chunk files of estimate and status: {same} identical, {differ} differ")
    sys.path.insert(0, str(ROOT))
    from tests.helpers import cube_digest

    a, b = cube_digest(grown), cube_digest(scratch)
    print(f"   cube digest (numbers by label): grown {a[:16]}, scratch {b[:16]}")
    print("   identical" if a == b and not differ else "   DIFFERENT")
    sys.exit(0 if a == b and not differ else 1)


if __name__ == "__main__":
    main()
