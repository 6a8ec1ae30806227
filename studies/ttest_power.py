"""Power of the two-sample t test: how many participants per group?

Two groups of ``n`` normal observations (SD 1), means differing by
``delta``; Student's two-sample t test at alpha = 0.05. For delta = 0.5 the
exact answer to "which n gives 80% power?" is 63.77 per group (the
noncentral t distribution; R's ``power.t.test(delta=0.5, power=0.8)``),
and at n = 30 per group the effect size with 80% power is 0.7356.
``welch`` is Welch's test, which has no closed power formula under unequal
variances (``vr``: the second group's variance over the first's).

Solve for the sample size, then for the effect size at n = 30:

    python -m simstudy solve studies/ttest_power.py --factor n --target power=0.8 --at delta=0.5,vr=1 --method student
    python -m simstudy solve studies/ttest_power.py --factor delta --target power=0.8 --at n=30,vr=1 --method student
"""

import numpy as np
from scipy import special

from simstudy import Study

study = Study(
    "ttest_power",
    factors={"n": [20, 100], "delta": [0.5], "vr": [1.0]},
    replicates=1000,
    seed=2026,
)


@study.data
def two_groups(rng, n, delta, vr):
    x = rng.standard_normal(n)
    y = delta + np.sqrt(vr) * rng.standard_normal(n)
    return x, y


def _p_two_sided(t, df):
    return 2.0 * special.stdtr(df, -abs(t))


@study.method(estimate="diff", p="p")
def student(data):
    x, y = data
    n1, n2 = len(x), len(y)
    df = n1 + n2 - 2
    pooled = ((n1 - 1) * x.var(ddof=1) + (n2 - 1) * y.var(ddof=1)) / df
    diff = y.mean() - x.mean()
    t = diff / np.sqrt(pooled * (1 / n1 + 1 / n2))
    return {"diff": diff, "p": _p_two_sided(t, df)}


@study.method(estimate="diff", p="p")
def welch(data):
    x, y = data
    a, b = x.var(ddof=1) / len(x), y.var(ddof=1) / len(y)
    diff = y.mean() - x.mean()
    t = diff / np.sqrt(a + b)
    df = (a + b) ** 2 / (a**2 / (len(x) - 1) + b**2 / (len(y) - 1))
    return {"diff": diff, "p": _p_two_sided(t, df)}


@study.truth
def truth(delta):
    return {"diff": delta}
