"""The fitted root: exact on a noise-free line, inside its interval, the
same whatever order the levels come in, and its interval widens with noise."""

from __future__ import annotations

import math

from hypothesis import assume, given
from hypothesis import strategies as st
from scipy.special import ndtr

from simstudy.solving.rootfit import Point, Scale, fit_root

PROBIT_SQRT = Scale(sqrt_factor=True, probit=True)


def _power(c: float, n: float) -> float:
    return float(ndtr(c * math.sqrt(n) - 1.96))


@given(
    c=st.floats(0.1, 0.6),
    levels=st.lists(st.integers(4, 400), min_size=3, max_size=8, unique=True),
    mcse=st.floats(0.002, 0.02),
    target=st.floats(0.3, 0.9),
)
def test_a_noise_free_probit_line_gives_its_exact_root(c, levels, mcse, target):
    pts = [Point(n, _power(c, n), mcse, 10**7) for n in levels]
    # the curve's informative stretch (a proportion of 1 - 1e-9 is not data)
    pts = [p for p in pts if 0.01 < p.value < 0.99]
    assume(len(pts) >= 3)
    fit = fit_root(pts, target, PROBIT_SQRT)
    exact = ((float(ndtr_inv(target)) + 1.96) / c) ** 2
    assert fit is not None
    assert fit.lower <= fit.root <= fit.upper
    assert math.isclose(fit.root, exact, rel_tol=1e-3)
    again = fit_root(list(reversed(pts)), target, PROBIT_SQRT)
    assert again is not None
    assert math.isclose(again.root, fit.root, rel_tol=1e-9)


@given(mcse=st.floats(0.002, 0.01), factor=st.floats(1.5, 4.0))
def test_more_monte_carlo_error_widens_the_interval(mcse, factor):
    pts = [Point(n, _power(0.35, n), mcse, 10**7) for n in (20, 40, 60, 80)]
    noisy = [Point(p.level, p.value, p.mcse * factor, 10**7) for p in pts]
    a = fit_root(pts, 0.8, PROBIT_SQRT)
    b = fit_root(noisy, 0.8, PROBIT_SQRT)
    assert a is not None
    assert b is not None
    assert b.width > a.width


def ndtr_inv(p: float) -> float:
    from scipy.special import ndtri

    return float(ndtri(p))
