"""Same numbers for any worker count, scheduler, batch size and interruption."""

from __future__ import annotations

import textwrap
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import simstudy
from simstudy.backends.numpy import run_batch
from simstudy.running.plan import BatchSizer, Plan
from tests.helpers import assert_store_consistent, cube_digest

SOURCE = """
import numpy as np
from simstudy import Study

study = Study("prop", factors={{"a": {levels}}}, replicates={replicates}, seed={seed},
              rng={scheme!r})

@study.data
def gen(rng, a):
    return rng.standard_normal(3) * a

@study.method
def first(x):
    return {{"estimate": x[0]}}

@study.method
def noisy(x, rng):
    return {{"estimate": x.sum() + rng.random()}}
"""

studies = st.fixed_dictionaries(
    {
        "levels": st.lists(st.integers(1, 9), min_size=1, max_size=3, unique=True),
        "replicates": st.integers(1, 12),
        "seed": st.integers(0, 2**32),
        "scheme": st.sampled_from(["spawn", "pcg64-jump", "mt19937-jump"]),
    }
)


def _write(folder: Path, spec: dict[str, object]) -> Path:
    path = folder / f"prop_{abs(hash(repr(spec)))}.py"
    path.write_text(textwrap.dedent(SOURCE.format(**spec)))
    return path


@settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    spec=studies,
    sizes=st.lists(st.integers(1, 13), min_size=2, max_size=2),
    stop_after=st.integers(0, 5),
)
def test_batch_size_and_interruption_change_no_number(
    tmp_path, spec, sizes, stop_after
):
    path = _write(tmp_path, spec)
    key = abs(hash((repr(spec), tuple(sizes), stop_after)))
    a, b = tmp_path / f"a{key}.zarr", tmp_path / f"b{key}.zarr"
    simstudy.run(
        path, store=a, scheduler="synchronous", batch_size=sizes[0], restart=True
    )
    # b: interrupted after `stop_after` batches (as --max-errors would), resumed
    # with another batch size on another scheduler
    study = simstudy.load_study(path)
    store = simstudy.store.Store.open_for_run(b, study, restart=True)
    try:
        plan = Plan(study, store)
        work = plan.round([study.replicates] * len(plan.grid), retry_failed=False)
        # a fresh store: every task pending, and no mask held for it
        assert all(not p.done and not p.partial for p in work.pending)
        assert work.total == study.replicates * len(plan.grid) * len(study.methods)
        sizer = BatchSizer(
            fixed=sizes[1], workers=1, rows=study.replicates, chunk=store.group_rows
        )
        batches = plan.batches(work, sizer, timeout=None, warnings=None, device=None)
        for _, batch in zip(range(stop_after), batches, strict=False):
            result = run_batch(study, batch)
            store.write(result, plan.pidx[batch.point], plan.midx[list(batch.methods)])
    finally:
        store.close()
    simstudy.run(path, store=b, scheduler="threads", workers=2, batch_size=sizes[1])
    assert_store_consistent(b)
    assert cube_digest(a) == cube_digest(b)


GROW = """
import numpy as np
from simstudy import Study

study = Study("grow", factors={{"a": {levels}}}, replicates={replicates}, seed=11)

@study.data
def gen(rng, a):
    return rng.standard_normal(3) * a

@study.method
def first(x):
    return {{"estimate": x[0]}}
{extra}"""

EXTRA = """
@study.method
def noisy(x, rng):
    return {"estimate": x.sum() + rng.random()}
"""

steps = st.lists(
    st.tuples(
        st.lists(st.integers(1, 9), min_size=1, max_size=4, unique=True),
        st.integers(1, 10),
        st.booleans(),
    ),
    min_size=1,
    max_size=3,
)


@settings(
    max_examples=10,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(history=steps)
def test_growing_a_study_step_by_step_equals_running_the_final_study(tmp_path, history):
    """Levels only added, replicates only raised, a method added at some step:
    the store grown run by run is the from-scratch store of the final study."""
    levels: list[int] = []
    replicates, extra = 0, False
    key = abs(hash(repr(history)))
    grown, scratch = tmp_path / f"g{key}.zarr", tmp_path / f"s{key}.zarr"
    for new_levels, more, add_method in history:
        levels += [lv for lv in new_levels if lv not in levels]
        replicates += more
        extra = extra or add_method
        source = GROW.format(levels=levels, replicates=replicates, extra=EXTRA * extra)
        path = tmp_path / f"grow_{key}.py"
        path.write_text(textwrap.dedent(source))
        before = simstudy.run(path, store=grown, scheduler="synchronous")
        assert before.computed == before.tasks - before.already_done
    assert_store_consistent(grown)
    simstudy.run(path, store=scratch, scheduler="synchronous", restart=True)
    assert cube_digest(grown) == cube_digest(scratch)


edits = st.lists(
    st.tuples(
        st.lists(st.integers(1, 6), min_size=1, max_size=4, unique=True),
        st.integers(1, 8),
        st.booleans(),  # the study has the extra method
        st.booleans(),  # run with --prune
    ),
    min_size=2,
    max_size=4,
)


@settings(
    max_examples=10,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(history=edits)
def test_any_sequence_of_edits_shows_the_final_studys_cube(tmp_path, history):
    """Levels added and removed, replicates raised, the extra method added and
    dropped, sometimes --prune: each run computes exactly the tasks the store
    does not hold, and the store as shown equals the final study run from
    scratch."""
    key = abs(hash(repr(history)))
    grown, scratch = tmp_path / f"e{key}.zarr", tmp_path / f"f{key}.zarr"
    held: set[tuple[int, int, str]] = set()  # (level, replicate, method) stored
    replicates = 0
    for levels, more, extra, prune in history:
        replicates = max(replicates, more)
        methods = ["first", "noisy"] if extra else ["first"]
        source = GROW.format(levels=levels, replicates=replicates, extra=EXTRA * extra)
        path = tmp_path / f"edit_{key}.py"
        path.write_text(textwrap.dedent(source))
        report = simstudy.run(path, store=grown, scheduler="synchronous", prune=prune)
        tasks = {(a, r, m) for a in levels for r in range(replicates) for m in methods}
        assert report.computed == len(tasks - held)
        held = tasks if prune else held | tasks
        hidden = simstudy.open_results(grown, include_hidden=True)
        assert set(hidden["a"].values.tolist()) == {a for a, _, _ in held}
    assert_store_consistent(grown)
    simstudy.run(path, store=scratch, scheduler="synchronous", restart=True)
    assert cube_digest(grown) == cube_digest(scratch)
