"""Confidence intervals for a mean under skewed (log-normal) data.

Three 95% intervals for the mean exp(sigma^2 / 2) of log-normal data:
- ``wald``: mean ± 1.96 SE (declares only ``se``: simstudy builds the Wald
  interval itself);
- ``t``: the Student t interval (declares its bounds and its SE);
- ``cox``: Cox's interval on the log scale, made for log-normal data
  (declares only its bounds, which are not symmetric about the estimate).

Run it, then write the report:

    python -m simstudy run studies/intervals.py
    python -m simstudy report intervals.zarr -o report.html
"""

import numpy as np
from scipy import stats

from simstudy import Study

study = Study(
    "intervals",
    factors={"n": [10, 30, 100], "sigma": [0.25, 1.0]},
    replicates=1000,
    seed=2026,
)


@study.data
def lognormal(rng, n, sigma):
    return rng.lognormal(0.0, sigma, n)


@study.truth
def truth(sigma):
    return {"est": float(np.exp(sigma**2 / 2))}


@study.method(estimate="est", se="se")
def wald(x):
    return {"est": x.mean(), "se": x.std(ddof=1) / np.sqrt(len(x))}


@study.method(estimate="est", se="se", ci=("lo", "hi"))
def t(x):
    m, se = x.mean(), x.std(ddof=1) / np.sqrt(len(x))
    q = stats.t.ppf(0.975, len(x) - 1)
    return {"est": m, "se": se, "lo": m - q * se, "hi": m + q * se}


@study.method(estimate="est", ci=("lo", "hi"))
def cox(x):
    y = np.log(x)
    n, mu, s2 = len(y), y.mean(), y.var(ddof=1)
    centre = mu + s2 / 2
    half = 1.959963984540054 * np.sqrt(s2 / n + s2**2 / (2 * (n - 1)))
    return {
        "est": np.exp(centre),
        "lo": np.exp(centre - half),
        "hi": np.exp(centre + half),
    }
