"""The study that made tests/data/format1/store.zarr (simstudy format 1)."""

import numpy as np

from simstudy import Study

study = Study("old", factors={"n": [5, 10], "eps": [0.0, 0.5]}, replicates=4, seed=1)


@study.data
def gen(rng, n, eps):
    return rng.standard_normal(n) + eps


@study.method
def mean(x):
    return {"estimate": float(np.mean(x))}


@study.method
def median(x):
    return {"estimate": float(np.median(x))}


study.truth(estimate=0.0)
