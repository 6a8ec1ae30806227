"""Tiny tasks: the mean of 50 standard normals (BENCHMARKS.md's task).

Replicates from SIMSTUDY_BENCH_REPLICATES (default 200,000): one design point,
one method, so tasks = replicates.
"""

import os

from simstudy import Study

study = Study(
    "tiny",
    factors={"n": [50]},
    replicates=int(os.environ.get("SIMSTUDY_BENCH_REPLICATES", "200000")),
    seed=2026,
)


@study.data
def normal(rng, n):
    return rng.standard_normal(n)


@study.method
def mean(x):
    return x.mean()
