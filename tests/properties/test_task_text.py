"""Any task, whatever its levels and method name, survives being printed as a
shell-quoted --task and parsed back."""

from __future__ import annotations

import shlex
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from simstudy import Study
from simstudy.declare.grid import points
from simstudy.running.debugging import parse_task, task_spec
from simstudy.shell import command

text = st.text(st.characters(codec="utf-8"), min_size=0, max_size=12)
levels = st.one_of(
    st.lists(text, min_size=1, max_size=3, unique=True),
    st.lists(st.integers(-(10**6), 10**6), min_size=1, max_size=3, unique=True),
    st.lists(
        st.floats(allow_nan=False, allow_infinity=False),
        min_size=1,
        max_size=3,
        unique=True,
    ),
    st.just([True, False]),
)


def _study(factors: dict[str, list[Any]], names: list[str]) -> Study:
    study = Study("t", factors=factors, replicates=3, seed=1)
    study.data(lambda rng: 0.0)
    for name in names:
        study.method(name=name)(lambda x: {"estimate": x})
    return study


@given(
    a=levels,
    b=levels,
    names=st.lists(text.filter(bool), min_size=1, max_size=2, unique=True),
)
def test_printed_task_parses_back_to_the_same_task(a, b, names):
    study = _study({"a": a, "b": b}, names)
    for p, point in enumerate(points(study)):
        for m, name in enumerate(study.method_names):
            spec = task_spec(point, 2, name)
            line = command("replay", "s.py", "--task", spec)
            argv = shlex.split(line)
            assert argv[-1] == spec  # one literal argument in a POSIX shell
            assert parse_task(study, argv[-1]) == (p, point, 2, m)
