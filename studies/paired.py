"""Welch's and Student's t-tests with paired group sizes: a design that is
not a full cross.

The group sizes vary together, as ``(n1, n2)`` pairs: balanced (10, 10),
then each group the small one. They are crossed with the variance ratio
``vr`` of group 2 to group 1. A variance ratio only matters when the sizes
differ (``where=``), so the balanced pair runs with ``vr = 1`` alone: 5
design points of the 8 in the cross of the levels. The cube keeps one
dimension per factor (``n1``, ``n2``, ``vr``); ``open_results`` marks the
5 points in the design (``in_design``), and nothing else is computed,
counted or summarised.

Under the null (equal means) Student's pooled t-test keeps its level only
when the larger group has the larger variance; Welch's keeps it throughout.

    python -m simstudy plan studies/paired.py
    python -m simstudy run studies/paired.py
    python -m simstudy summarize paired.zarr --measures power,coverage
"""

import numpy as np
from scipy import stats

from simstudy import Study

study = Study(
    "paired",
    factors={("n1", "n2"): [(10, 10), (10, 40), (40, 10)], "vr": [1.0, 4.0]},
    where=lambda n1, n2, vr: n1 != n2 or vr == 1.0,
    replicates=200,
    seed=2026,
)


@study.data
def two_groups(rng, n1, n2, vr):
    return rng.normal(0.0, 1.0, n1), rng.normal(0.0, np.sqrt(vr), n2)


def _test(x, y, *, equal_var):
    """The two-sample t-test of mean(y) - mean(x): estimate, 95% CI, p."""
    n1, n2 = len(x), len(y)
    v1, v2 = x.var(ddof=1), y.var(ddof=1)
    if equal_var:
        df = n1 + n2 - 2
        pooled = ((n1 - 1) * v1 + (n2 - 1) * v2) / df
        se = np.sqrt(pooled * (1 / n1 + 1 / n2))
    else:
        a, b = v1 / n1, v2 / n2
        se = np.sqrt(a + b)
        df = (a + b) ** 2 / (a**2 / (n1 - 1) + b**2 / (n2 - 1))
    diff = y.mean() - x.mean()
    q = stats.t.ppf(0.975, df)
    return {
        "estimate": float(diff),
        "lo": float(diff - q * se),
        "hi": float(diff + q * se),
        "p": float(2 * stats.t.sf(abs(diff / se), df)),
    }


@study.method(ci=("lo", "hi"), p="p")
def welch(groups):
    x, y = groups
    return _test(x, y, equal_var=False)


@study.method(ci=("lo", "hi"), p="p")
def student(groups):
    x, y = groups
    return _test(x, y, equal_var=True)


study.truth(estimate=0.0)
