"""jax backend: the same cube for any batch size and interruption point."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import simstudy
from tests.helpers import assert_store_consistent, cube_digest

pytest.importorskip("jax")
pytestmark = pytest.mark.jax

SOURCE = """
import jax
import jax.numpy as jnp
from simstudy import Study

study = Study("propjax", factors={{"a": {levels}, "s": [0.5, 2.0]}},
              replicates={replicates}, seed={seed}, backend="jax", vmap_width=8)

@study.data
def gen(key, a, s):
    return jax.random.normal(key, (a,)) * s

@study.method
def spread(x):
    return {{"estimate": x.std(), "m": jnp.stack([x.min(), x.max()])}}

@study.method
def noisy(x, key):
    return x.sum() + jax.random.uniform(key)
"""

studies = st.fixed_dictionaries(
    {
        "levels": st.lists(st.integers(1, 6), min_size=1, max_size=2, unique=True),
        "replicates": st.integers(1, 30),
        "seed": st.integers(0, 2**40),
    }
)


@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    spec=studies,
    sizes=st.tuples(st.integers(1, 40), st.integers(1, 40)),
    stop_after=st.integers(1, 6),
)
def test_batch_size_and_interruption_change_no_number(
    tmp_path: Path, spec: dict[str, object], sizes: tuple[int, int], stop_after: int
) -> None:
    key = abs(hash((repr(spec), sizes, stop_after)))
    path = tmp_path / f"propjax_{key}.py"
    path.write_text(textwrap.dedent(SOURCE.format(**spec)))
    whole, cut = tmp_path / f"a{key}.zarr", tmp_path / f"b{key}.zarr"
    simstudy.run(path, store=whole, batch_size=sizes[0], restart=True)
    seen = []

    def interrupt(ev: object) -> None:
        seen.append(ev)
        if len(seen) == stop_after:
            raise KeyboardInterrupt

    simstudy.run(
        path, store=cut, batch_size=sizes[1], restart=True, on_progress=interrupt
    )
    assert simstudy.run(path, store=cut).exit_code == 0  # resumed, automatic size
    assert_store_consistent(cut)
    assert cube_digest(whole) == cube_digest(cut)
