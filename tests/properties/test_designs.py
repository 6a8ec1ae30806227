"""A design that is not a full cross is the full cross filtered: the same
points in the same order, whichever predicate or pairing chose them."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from simstudy import Study
from simstudy.declare.grid import points
from simstudy.rng.streams import point_key

LEVELS: dict[str, list[Any]] = {"a": [1, 2, 3], "b": [0.5, 1.5], "c": ["x", "y", "z"]}
CROSS = Study("p", factors=LEVELS, replicates=1, seed=1)
GRID = points(CROSS)


@given(st.sets(st.integers(0, len(GRID) - 1), min_size=1))
def test_where_keeps_a_subsequence_of_the_cross_with_the_same_keys(kept):
    chosen = {tuple(GRID[i].values()) for i in kept}
    study = Study(
        "p",
        factors=LEVELS,
        replicates=1,
        seed=1,
        where=lambda a, b, c: (a, b, c) in chosen,
    )
    got = points(study)
    assert got == [p for p in GRID if tuple(p.values()) in chosen]
    assert [point_key(p) for p in got] == [point_key(GRID[i]) for i in sorted(kept)]
    assert study.n_points == len(kept)
    assert study.design.full == (len(kept) == len(GRID))


@given(
    st.lists(
        st.tuples(st.sampled_from(LEVELS["a"]), st.sampled_from(LEVELS["b"])),
        min_size=1,
        unique=True,
    )
)
def test_factors_varying_together_are_the_cross_of_their_pairs(pairs):
    study = Study(
        "p",
        factors={("a", "b"): pairs, "c": LEVELS["c"]},
        replicates=1,
        seed=1,
    )
    got = [tuple(p.values()) for p in points(study)]
    expected = {(a, b, c) for a, b in pairs for c in LEVELS["c"]}
    assert set(got) == expected
    assert len(got) == len(expected)
    order = {f: list(study.factors[f]) for f in study.factors}
    index = [
        tuple(order[f].index(v) for f, v in zip("abc", p, strict=True)) for p in got
    ]
    assert index == sorted(index)  # the cross's order, first factor slowest
