"""run_batch: the vectorised collection of return values keeps the per-task rules."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from simstudy.backends.numpy import run_batch
from simstudy.cube import FAILED, OK
from simstudy.declare.grid import Batch
from simstudy.declare.outputs import OutputSpecs, to_outputs
from simstudy.declare.study import Study
from simstudy.rng.streams import key, point_key
from tests.helpers import data_generator, method_generator


def _study(returns: list[Any]) -> Study:
    """A study whose method returns ``returns[replicate]``."""
    study = Study("b", factors={"n": [3]}, replicates=len(returns), seed=5)

    @study.data
    def gen(rng: Any, n: int) -> Any:
        return rng.standard_normal(n)

    calls = iter(returns)  # one call per replicate, in replicate order

    @study.method
    def table(x: Any) -> Any:
        return next(calls)

    study.validate()
    return study


def _run(returns: list[Any]) -> Any:
    study = _study(returns)
    return run_batch(study, Batch(0, (("n", 3),), 0, len(returns), (0,)))


def _per_value(returns: list[Any]) -> list[dict[str, np.ndarray[Any, Any]] | str]:
    """The slow path's verdict for each value on its own, in order."""
    specs = OutputSpecs()
    out: list[dict[str, np.ndarray[Any, Any]] | str] = []
    for v in returns:
        try:
            out.append(to_outputs("table", v, specs, {"n": 3}))
        except Exception as exc:
            out.append(str(exc))
    return out


CASES = {
    "floats": [1.5, 2.0, -3.25],
    "mixed scalars": [1.5, np.float64(2), 3, np.int32(4), np.array(5.0), True],
    "dicts": [{"a": 1.0, "b": np.arange(2.0)}, {"a": 2, "b": [3, 4]}],
    "dicts with other key order": [{"a": 1.0, "b": 2.0}, {"b": 3.0, "a": 4.0}],
    "a string among floats": [1.0, "2.5", 3.0],
    "a shape change": [{"v": np.zeros(2)}, {"v": np.zeros(3)}, {"v": np.ones(2)}],
    "a None": [1.0, None, 2.0],
    "a complex": [1.0, 2 + 1j],
    "a reserved name": [{"method": 1.0}],
    "a NaN": [1.0, float("nan"), 2.0],
    "an inf in an array": [{"v": np.ones(2)}, {"v": np.array([1.0, np.inf])}],
    "a huge array": [{"v": np.zeros(3)}, {"v": np.zeros(2_000_000)}],
    "keys that change": [{"a": 1.0, "b": 2.0}, {"a": 1.0}, {"b": 2.0, "a": 3.0}],
    "a number, then a dict": [1.0, {"value": 2.0, "extra": 3.0}],
    "a factor name": [{"n": 1.0}],
}


@pytest.mark.parametrize("returns", list(CASES.values()), ids=list(CASES))
def test_batch_outputs_equal_the_per_value_rules(returns: list[Any]) -> None:
    result = _run(returns)
    expected = _per_value(returns)
    messages = iter(f.message for f in result.failures)
    for i, verdict in enumerate(expected):
        if isinstance(verdict, str):
            assert result.status[i, 0] == FAILED
            assert next(messages) == verdict
            for arr in result.outputs.values():
                assert np.isnan(arr[i, 0]).all()
        else:
            assert result.status[i, 0] == OK
            for name, value in verdict.items():
                np.testing.assert_array_equal(result.outputs[name][i, 0], value)
                assert result.outputs[name].dtype == np.float64
    assert next(messages, None) is None


def test_batch_streams_are_the_documented_ones() -> None:
    study = Study("s", factors={"n": [4]}, replicates=9, seed=11)

    @study.data
    def gen(rng: Any, n: int) -> Any:
        return rng.standard_normal(n)

    @study.method
    def first(x: Any) -> Any:
        return {"x0": x[0]}

    @study.method
    def noisy(x: Any, rng: Any) -> Any:
        return {"x0": rng.random()}

    study.validate()
    result = run_batch(study, Batch(0, (("n", 4),), 2, 9, (0, 1)))
    pk, mk = point_key({"n": 4}), key("noisy")
    for i, r in enumerate(range(2, 9)):
        x0 = data_generator(11, pk, r).standard_normal(4)[0]
        assert result.outputs["x0"][i, 0] == x0
        assert result.outputs["x0"][i, 1] == method_generator(11, pk, r, mk).random()
    assert (result.seconds >= 0).all()
    assert (np.diff(result.started.ravel()) >= 0).all()
