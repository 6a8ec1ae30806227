"""Location estimators under contamination: mean vs median vs 10% trimmed mean.

Run it:  python -m simstudy run studies/location.py
"""

import numpy as np
from scipy import stats

from simstudy import Study

study = Study(
    "location",
    factors={"n": [20, 100, 500], "eps": [0.0, 0.1]},
    replicates=2000,
    seed=2026,
)


@study.data
def contaminated(rng, n, eps):
    x = rng.standard_normal(n)
    x[rng.random(n) < eps] += 10.0
    return x


@study.method
def mean(x):
    return {"estimate": x.mean()}


@study.method
def median(x):
    return {"estimate": np.median(x)}


@study.method(name="trimmed")
def trimmed_mean(x):
    return {"estimate": stats.trim_mean(x, 0.1)}


study.truth(estimate=0.0)
