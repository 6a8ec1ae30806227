"""Paired contrasts: the jackknife MCSE of a difference of means is the
paired-differences SE exactly, and a method against itself is 0 with MCSE 0."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from simstudy.analysis.contrasts import _TRANSFORMS, _jackknife

values = arrays(
    np.float64,
    st.integers(3, 40),
    elements=st.floats(-1e3, 1e3, allow_nan=False, allow_subnormal=False),
)


@settings(deadline=None, max_examples=50)
@given(a=values, data=st.data())
def test_difference_of_means_has_the_paired_se(a, data):
    b = data.draw(
        arrays(
            np.float64,
            a.shape,
            elements=st.floats(-1e3, 1e3, allow_nan=False, allow_subnormal=False),
        )
    )
    drop = data.draw(arrays(np.bool_, a.shape))
    drop[:3] = False  # at least three pairs
    a, b = np.where(drop, np.nan, a), np.where(drop, np.nan, b)
    value, err, n = _jackknife(a[None], b[None], _TRANSFORMS["bias"], False)
    d = (a - b)[~drop]
    assert int(n[0]) == len(d)
    np.testing.assert_allclose(value[0], d.mean(), rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(
        err[0], d.std(ddof=1) / np.sqrt(len(d)), rtol=1e-7, atol=1e-9
    )


@settings(deadline=None, max_examples=25)
@given(a=values)
def test_a_method_against_itself_is_zero(a):
    a = np.abs(a)  # squared errors, for rmse and mse
    for measure in ("rmse", "empse", "mse"):
        value, err, _ = _jackknife(a[None], a[None], _TRANSFORMS[measure], False)
        assert value[0] == 0
        assert err[0] == 0
