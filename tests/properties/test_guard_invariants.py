"""What a method receives equals the data, and changing it changes nothing else."""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from simstudy.backends.guard import Guard

leaves = st.one_of(
    st.integers(-5, 5),
    st.floats(allow_nan=False),
    st.text(max_size=3),
    st.none(),
    st.lists(st.floats(allow_nan=False), max_size=4).map(np.array),
)
data = st.recursive(
    leaves,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.tuples(inner, inner),
        st.dictionaries(st.text(max_size=2), inner, max_size=3),
    ),
    max_leaves=12,
)


def _equal(a: Any, b: Any) -> bool:
    if isinstance(a, np.ndarray):
        return isinstance(b, np.ndarray) and np.array_equal(a, b)
    if isinstance(a, dict):
        return (
            type(b) is dict
            and a.keys() == b.keys()
            and all(_equal(a[k], b[k]) for k in a)
        )
    if isinstance(a, list | tuple):
        return (
            type(a) is type(b)
            and len(a) == len(b)
            and all(_equal(x, y) for x, y in zip(a, b, strict=True))
        )
    return bool(a == b)


def _vandalise(x: Any) -> None:
    """Change everything a method could change in place, where it can."""
    if isinstance(x, np.ndarray):
        if x.flags.writeable and x.size:
            x[...] = 99
    elif isinstance(x, list):
        for v in x:
            _vandalise(v)
        x.append("new")
    elif isinstance(x, dict):
        for v in x.values():
            _vandalise(v)
        x["new"] = 1
    elif isinstance(x, tuple):
        for v in x:
            _vandalise(v)


@given(data)
def test_each_method_gets_the_data_and_cannot_change_it_for_another(value):
    before = copy.deepcopy(value)
    guard = Guard(value)
    first = guard.get()
    assert _equal(first, before)
    _vandalise(first)
    assert _equal(guard.get(), before)  # the next method sees the data as made
    assert _equal(value, before)  # and the data function's object is untouched
