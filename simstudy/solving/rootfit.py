"""Where a noisy, monotone measure crosses a target: a fitted curve and its root.

``fit_root`` takes the levels a solve evaluated and each level's measure
with its Monte Carlo SE, and fits a straight line on linearising scales by
weighted least squares: the factor on ``sqrt`` for counts (power of a test
grows like ``Phi(c * sqrt(n) - z)``) or as is, and proportions (power,
coverage) on the probit scale, each point weighted by the inverse of its
MCSE squared (on that scale, by the delta method). On the probit scale this
is Berkson's minimum chi-square estimator of a probit regression,
asymptotically the binomial GLM's maximum likelihood fit. The root is where
the line crosses the target; its interval comes from the delta method,
widened by the lack of fit (quasi-likelihood dispersion, never below 1).
When the line does not fit (chi-square test of lack of fit), the level
farthest from the root is left out and the line refitted: the fit becomes
local around the root as evaluations concentrate there.

``check_monotone`` refuses a measure that goes both up and down across the
evaluated levels by more than its Monte Carlo error allows.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["Point", "RootFit", "Scale", "fit_root", "monotone_breach"]

Z_BREACH = 3.5  # a pair of levels this many SEs out of order breaks monotonicity
LACK_OF_FIT_P = 0.001  # below this the farthest level is left out of the fit
MIN_POINTS = 3


@dataclass(frozen=True, slots=True)
class Point:
    """One evaluated level: the measure's value, its MCSE, replicates used."""

    level: float
    value: float
    mcse: float
    n: int


@dataclass(frozen=True, slots=True)
class Scale:
    """How the factor and the measure are linearised."""

    sqrt_factor: bool  # the factor on sqrt (positive counts), else as is
    probit: bool  # the measure on the probit scale (proportions)

    def x(self, level: float) -> float:
        return math.sqrt(level) if self.sqrt_factor else level

    def level(self, x: float) -> float:
        return max(x, 0.0) ** 2 if self.sqrt_factor else x

    def y(self, value: float, n: int) -> tuple[float, float]:
        """The measure on the fitted scale, and the factor its SE is
        multiplied by there (delta method)."""
        if not self.probit:
            return value, 1.0
        from scipy.special import ndtri

        eps = 0.5 / max(n, 1)
        v = min(max(value, eps), 1 - eps)
        z = float(ndtri(v))
        return z, 1.0 / _phi(z)


@dataclass(frozen=True, slots=True)
class RootFit:
    """The fitted line's root, on the factor's scale, with its interval."""

    root: float
    lower: float
    upper: float
    slope: float  # on the fitted scales; its sign is the measure's direction
    used: tuple[float, ...]  # the levels the final fit used
    dispersion: float

    @property
    def width(self) -> float:
        return self.upper - self.lower


def _phi(z: float) -> float:
    return math.exp(-0.5 * z * z) / math.sqrt(2 * math.pi)


def _se(p: Point, scale: Scale) -> float:
    """A point's SE on the fitted scale; a proportion of 0 or 1 (MCSE 0)
    gets the binomial SE of half a success."""
    _, stretch = scale.y(p.value, p.n)
    se = p.mcse
    if scale.probit:
        eps = 0.5 / max(p.n, 1)
        share = min(max(p.value, eps), 1 - eps)
        se = max(se, math.sqrt(share * (1 - share) / max(p.n, 1)))
    return max(se * stretch, 1e-12)


def fit_root(
    points: Sequence[Point], target: float, scale: Scale, *, level: float = 0.95
) -> RootFit | None:
    """Fit the line and return its root, or None when the slope is zero."""
    from scipy.special import chdtrc, ndtri

    z_level = float(ndtri(0.5 + level / 2))
    goal, _ = scale.y(target, 10**9)
    kept = sorted(points, key=lambda p: p.level)
    while True:
        fit = _wls(kept, scale)
        if fit is None:
            return None
        beta, cov, rss = fit
        intercept, slope = float(beta[0]), float(beta[1])
        if slope == 0.0:
            return None
        root = (goal - intercept) / slope
        df = len(kept) - 2
        if df > 1 and len(kept) > MIN_POINTS and chdtrc(df, rss) < LACK_OF_FIT_P:
            far = max(kept, key=lambda p: (abs(scale.x(p.level) - root), p.level))
            kept = [p for p in kept if p is not far]
            continue
        break
    disp = max(1.0, rss / df) if df > 0 else 1.0
    grad = np.array([-1.0 / slope, -root / slope])
    var = float(grad @ cov @ grad) * disp
    half = z_level * math.sqrt(max(var, 0.0))
    lo, hi = scale.level(root - half), scale.level(root + half)
    return RootFit(
        root=scale.level(root),
        lower=min(lo, hi),
        upper=max(lo, hi),
        slope=slope,
        used=tuple(p.level for p in kept),
        dispersion=disp,
    )


def _wls(
    points: Sequence[Point], scale: Scale
) -> tuple[np.ndarray, np.ndarray, float] | None:
    """Weighted least squares of y on x: coefficients, covariance, chi-square."""
    if len({p.level for p in points}) < 2:
        return None
    x = np.array([scale.x(p.level) for p in points])
    y = np.array([scale.y(p.value, p.n)[0] for p in points])
    weights = np.array([1.0 / _se(p, scale) ** 2 for p in points])
    design = np.column_stack([np.ones_like(x), x])
    info = design.T @ (design * weights[:, None])
    if abs(np.linalg.det(info)) < 1e-300:
        return None
    cov = np.linalg.inv(info)
    beta = cov @ (design.T @ (weights * y))
    rss = float(np.sum(weights * (y - design @ beta) ** 2))
    return beta, cov, rss


def monotone_breach(
    points: Sequence[Point],
) -> tuple[Point, Point, Point, Point] | None:
    """Two pairs of levels, one going up and one going down, each by more
    than ``Z_BREACH`` MCSEs; None when the measure is monotone within its
    Monte Carlo error."""
    ordered = sorted(points, key=lambda p: p.level)
    up = down = None
    best_up = best_down = Z_BREACH
    for i, p in enumerate(ordered):
        for r in ordered[i + 1 :]:
            se = math.hypot(p.mcse, r.mcse)
            if se <= 0:
                se = 1e-12
            z = (r.value - p.value) / se
            if z > best_up:
                up, best_up = (p, r), z
            if -z > best_down:
                down, best_down = (p, r), -z
    if up is None or down is None:
        return None
    return (*up, *down)
