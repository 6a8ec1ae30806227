"""grid.batch_runs: the batches cover exactly the pending tasks, within chunks."""

from __future__ import annotations

from typing import Any

import numpy as np
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from simstudy.declare.grid import batch_runs


def _reference(pending: np.ndarray[Any, Any], size: int, chunk: int) -> list[Any]:
    """The plain loop: grow a run while the row repeats, the chunk and size allow."""
    out = []
    n = pending.shape[0]
    for c0 in range(0, n, chunk):
        c1 = min(c0 + chunk, n)
        r = c0
        while r < c1:
            if not pending[r].any():
                r += 1
                continue
            s = r
            while r < c1 and r - s < size and np.array_equal(pending[r], pending[s]):
                r += 1
            out.append((s, r, tuple(int(i) for i in np.flatnonzero(pending[s]))))
    return out


@given(
    pending=st.one_of(st.integers(1, 4), st.just(70)).flatmap(  # 70: > 62 methods
        lambda m: arrays(bool, st.tuples(st.integers(0, 60), st.just(m)))
    ),
    size=st.integers(1, 9),
    chunk=st.integers(1, 16),
)
def test_batch_runs_equal_the_plain_loop(
    pending: np.ndarray[Any, Any], size: int, chunk: int
) -> None:
    ours = list(batch_runs(pending, size=size, chunk=chunk))
    assert ours == _reference(pending, size, chunk)
    covered = np.zeros_like(pending)
    for s, e, methods in ours:
        assert 0 < e - s <= size
        assert s // chunk == (e - 1) // chunk
        covered[s:e, list(methods)] = True
    assert (covered == pending).all()


def test_batch_runs_cover_a_large_point() -> None:
    pending = np.ones((1_000_000, 1), bool)
    pending[::7] = False
    runs = list(batch_runs(pending, size=1024, chunk=1024))
    assert sum(e - s for s, e, _ in runs) == int(pending.sum())
