"""Heavy tasks: a bootstrap SE of the median, about 20 ms of numpy each.

Replicates from SIMSTUDY_BENCH_REPLICATES (default 400): one design point,
one method, so tasks = replicates. The method takes its own ``rng``.
"""

import os

import numpy as np

from simstudy import Study

study = Study(
    "heavy",
    factors={"n": [200]},
    replicates=int(os.environ.get("SIMSTUDY_BENCH_REPLICATES", "400")),
    seed=2026,
)
study.fixed(B=5000)


@study.data
def normal(rng, n):
    return rng.standard_normal(n)


@study.method
def boot_se(x, rng, B):
    idx = rng.integers(0, len(x), (B, len(x)))
    return np.median(x[idx], axis=1).std()
