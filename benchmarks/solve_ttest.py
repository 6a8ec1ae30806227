"""`simstudy solve` on the two-sample t test: answers, tasks and wall time (issue 28).

    python benchmarks/solve_ttest.py [--scheduler processes]

Runs, each in a fresh store, the two solves of docs/solve.md with the
defaults (tolerance 1% of the estimate, budget 500,000 tasks per solution):
the sample size per group for 80% power at effect size 0.5 (exact 63.77,
R's power.t.test) and the effect size for 80% power at n = 30 per group
(exact 0.7356); then the first again in its store (a replay: nothing to
compute). Prints each answer with its interval, whether the interval holds
the exact value, the tasks used, the wall time and the load average (the
machine may be shared).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import simstudy

STUDY = ROOT / "studies" / "ttest_power.py"
CASES = [
    ("n", {"delta": 0.5, "vr": 1.0}, None, 63.77),
    ("delta", {"n": 30, "vr": 1.0}, (0.2, 1.5), 0.7356),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scheduler", default=None)
    args = parser.parse_args()
    options = {"scheduler": args.scheduler} if args.scheduler else {}
    with tempfile.TemporaryDirectory() as tmp:
        for i, (factor, at, bounds, exact) in enumerate([*CASES, CASES[0]]):
            store = Path(tmp) / f"{factor}.zarr"
            load = os.getloadavg()[0]
            t0 = time.perf_counter()
            report = simstudy.solve(
                STUDY,
                factor=factor,
                target={"power": 0.8},
                at=at,
                method="student",
                bounds=bounds,
                store=store,
                **options,
            )
            wall = time.perf_counter() - t0
            (s,) = report.solutions
            holds = s.lower <= exact <= s.upper
            what = "replay" if i == len(CASES) else "solve"
            print(
                f"{what} {factor}: answer {s.answer} (estimate {s.estimate:.4g}, "
                f"95% CI {s.lower:.4g} to {s.upper:.4g}, exact {exact}: "
                f"{'inside' if holds else 'OUTSIDE'}); {s.tasks:,} tasks in "
                f"{s.rounds} rounds, {report.computed:,} computed now; "
                f"{wall:.1f} s wall, load average {load:.1f} at start"
            )


if __name__ == "__main__":
    main()
