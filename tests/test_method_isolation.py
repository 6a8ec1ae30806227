"""A method that changes its data in place cannot change another method's numbers."""

from __future__ import annotations

import collections
import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import simstudy
from simstudy.backends.guard import Guard
from simstudy.cli import main
from simstudy.running.debugging import replay, verify
from simstudy.store import read_failures
from tests.helpers import assert_store_consistent, cube_digest

HEAD = """
import numpy as np
from simstudy import Study

study = Study("iso", factors={"n": [5, 8]}, replicates=3, seed=11)
"""

ARRAY_DATA = """
@study.data
def gen(rng, n):
    return rng.standard_normal(n)
"""

HONEST = """
@study.method
def first(x):
    return {"estimate": float(x[0])}


@study.method
def middle(x, rng):
    return {"estimate": float(np.asarray(x).mean() + rng.normal())}
"""

MUTATORS = """
@study.method
def sorter(x):
    x.sort()
    return {"estimate": float(x[0])}


@study.method
def zeroer(x):
    x[:] = 0
    return {"estimate": 0.0}
"""


def _numbers(store: Path, methods: list[str]) -> dict[str, np.ndarray]:
    ds = simstudy.open_results(store)
    sel = ds.sel(method_name=methods)
    return {v: sel[v].values for v in ("status", "estimate")}


def _run(path: Path, store: Path, **kw: Any) -> Any:
    return simstudy.run(path, store=store, scheduler="synchronous", **kw)


def test_a_method_writing_into_its_array_fails_and_others_keep_their_numbers(
    tmp_path, write_study
):
    with_mutators = write_study(HEAD + ARRAY_DATA + MUTATORS + HONEST, "a.py")
    without = write_study(HEAD + ARRAY_DATA + HONEST, "b.py")
    report = _run(with_mutators, tmp_path / "a.zarr")
    _run(without, tmp_path / "b.zarr")
    assert report.failed == 2 * 3 * 2  # sorter and zeroer, every task
    assert_store_consistent(tmp_path / "a.zarr")
    messages = {f["method"]: f["message"] for f in read_failures(tmp_path / "a.zarr")}
    assert set(messages) == {"sorter", "zeroer"}
    for name, message in messages.items():
        assert message.startswith(f"method {name!r}: ")
        assert "read-only" in message
        assert "x = x.copy()" in message
    got = _numbers(tmp_path / "a.zarr", ["first", "middle"])
    want = _numbers(tmp_path / "b.zarr", ["first", "middle"])
    for v in got:  # bit for bit, as if the mutators had never run
        assert np.array_equal(got[v], want[v], equal_nan=True), v


DICT_DATA = """
@study.data
def gen(rng, n):
    return {"x": [float(v) for v in rng.standard_normal(n)], "n": n}
"""

DICT_MUTATOR = """
@study.method
def popper(d):
    d["x"].sort()
    d["x"].pop()
    d["n"] = 0
    return {"estimate": float(len(d["x"]))}
"""

DICT_HONEST = """
@study.method
def first(d):
    return {"estimate": d["x"][0] + d["n"]}
"""


def test_a_method_changing_a_dict_of_lists_leaves_other_methods_unaffected(
    tmp_path, write_study
):
    with_mutator = write_study(HEAD + DICT_DATA + DICT_MUTATOR + DICT_HONEST, "a.py")
    without = write_study(HEAD + DICT_DATA + DICT_HONEST, "b.py")
    assert _run(with_mutator, tmp_path / "a.zarr").failed == 0  # it got a copy
    _run(without, tmp_path / "b.zarr")
    got = _numbers(tmp_path / "a.zarr", ["first"])
    want = _numbers(tmp_path / "b.zarr", ["first"])
    assert np.array_equal(got["estimate"], want["estimate"])
    popped = _numbers(tmp_path / "a.zarr", ["popper"])["estimate"]
    assert (popped == np.array([4.0, 7.0])[:, None, None]).all()  # n - 1


def test_replay_and_recompute_of_one_method_agree_with_the_stored_cube(
    tmp_path, write_study
):
    path = write_study(HEAD + DICT_DATA + DICT_MUTATOR + DICT_HONEST)
    store = tmp_path / "s.zarr"
    _run(path, store)
    before = cube_digest(store)
    for method in ("popper", "first"):
        for r in range(3):
            got = replay(path, f"n=8,replicate={r},method={method}", store=store)
            assert got.same is True, (method, r, got.differing)
    _run(path, store, recompute=("first",))
    assert cube_digest(store) == before


def test_replay_of_a_method_writing_into_its_array_says_to_copy(
    tmp_path, write_study, capsys
):
    path = write_study(HEAD + ARRAY_DATA + MUTATORS + HONEST)
    code = main(["replay", str(path), "--task", "n=5,replicate=1,method=zeroer"])
    assert code == 3
    out = capsys.readouterr().out
    assert "the task raises ValueError: assignment destination is read-only" in out
    assert "x = x.copy()" in out


def test_verify_catches_a_method_that_changes_what_the_next_method_sees(
    tmp_path, write_study
):
    """A method that turns the guard off (``writeable = True``) and sorts its
    data gives the next method in the batch sorted data: the run stores
    that; verify recomputes each task alone and names the method whose
    numbers depended on the batch."""
    bypass = """
    @study.method
    def sneaky(x):
        x.flags.writeable = True  # defeats the guard on purpose
        x.sort()
        return {"estimate": float(x[0])}
    """
    path = write_study(HEAD + ARRAY_DATA + bypass.replace("\n    ", "\n") + HONEST)
    store = tmp_path / "s.zarr"
    assert _run(path, store).failed == 0
    result = verify(path, store, sample=4, seed=0)
    assert result.tasks == 4 * 3
    # the run gave them sorted data; alone they get it as generated
    assert "first" in result.differ
    assert "sneaky" not in result.differ
    assert set(result.differ) <= {"first", "middle"}


# ---- the guard itself ---------------------------------------------------------
Pair = collections.namedtuple("Pair", "a b")


@dataclasses.dataclass(frozen=True)
class Frozen:
    x: np.ndarray
    tags: list[str]


def test_arrays_are_shared_read_only_and_the_original_stays_writable():
    a = np.arange(4.0)
    g = Guard(a)
    x, y = g.get(), g.get()
    assert x is y
    assert not x.flags.writeable
    assert np.shares_memory(x, a)
    with pytest.raises(ValueError, match="read-only"):
        x[0] = 1.0
    a[0] = 9.0  # the data function's own array is untouched
    assert x[0] == 9.0


@pytest.mark.parametrize(
    "data",
    [
        (np.zeros(3), 2, "s"),
        Pair(np.zeros(3), np.ones(2)),
        {"x": np.zeros(3), "rows": [np.ones(2), 1.5]},
        [np.zeros(3), (np.ones(2),)],
        Frozen(np.zeros(3), ["a"]),
    ],
    ids=["tuple", "namedtuple", "dict-with-list", "list-with-tuple", "dataclass"],
)
def test_arrays_inside_containers_come_read_only_and_shells_fresh(data):
    g = Guard(data)
    got, again = g.get(), g.get()
    assert type(got) is type(data)
    arrays = [v for v in _leaves(got) if isinstance(v, np.ndarray)]
    assert arrays
    assert not any(v.flags.writeable for v in arrays)
    if isinstance(data, list | dict):
        assert got is not again  # a new shell per method
    if isinstance(data, Frozen):
        got.tags.append("b")
        assert again.tags == ["a"] == data.tags


def test_other_objects_are_deep_copied_per_method():
    import pandas as pd  # type: ignore[import-untyped]

    frame = pd.DataFrame({"x": [1.0, 2.0]})
    g = Guard(frame)
    first = g.get()
    first.loc[0, "x"] = 99.0
    assert g.get().loc[0, "x"] == 1.0 == frame.loc[0, "x"]
    objects = np.empty(2, dtype=object)
    objects[0], objects[1] = [1], [2]  # an array of lists: its items can change
    copied = Guard(objects).get()
    copied[0].append(5)
    assert objects[0] == [1]


def _leaves(x: object) -> list[object]:
    if isinstance(x, dict):
        return [v for item in x.values() for v in _leaves(item)]
    if isinstance(x, list | tuple):
        return [v for item in x for v in _leaves(item)]
    if dataclasses.is_dataclass(x):
        return [v for f in dataclasses.fields(x) for v in _leaves(getattr(x, f.name))]
    return [x]


def test_a_fixed_input_array_is_read_only_for_every_call(tmp_path, write_study):
    source = (
        HEAD
        + ARRAY_DATA
        + HONEST
        + """
study.fixed(W=np.arange(4.0))


@study.method
def reweigh(x, W):
    W *= 2  # would change W for every later task
    return {"estimate": float(W.sum())}


@study.method
def weighed(x, W):
    return {"estimate": float(W.sum())}
"""
    )
    store = tmp_path / "s.zarr"
    report = _run(write_study(source), store)
    assert report.failed == 2 * 3
    (message,) = {f["message"] for f in read_failures(store)}
    assert message.startswith("method 'reweigh': output array is read-only")
    assert "x = x.copy()" in message
    assert (_numbers(store, ["weighed"])["estimate"] == 6.0).all()


def test_data_that_cannot_be_copied_fails_each_method_saying_so():
    import threading

    g = Guard({"lock": threading.Lock(), "x": np.zeros(2)})
    with pytest.raises(TypeError, match=r"its data could not be copied for it \("):
        g.get()
