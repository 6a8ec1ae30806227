"""Study declaration: validation of factors, replicates, seed, data and methods."""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import pytest

from simstudy import Study, StudyError


def _gen(rng: np.random.Generator, n: int) -> Any:
    return rng.standard_normal(n)


def _mean(x: Any) -> dict[str, float]:
    return {"estimate": float(np.mean(x))}


def _make(**overrides: Any) -> Study:
    kwargs: dict[str, Any] = {
        "factors": {"n": [5, 10]},
        "replicates": 4,
        "seed": 1,
    }
    kwargs.update(overrides)
    return Study("demo", **kwargs)


BAD_ARGS = [
    ({"factors": {"n": []}}, "factor 'n' has no levels"),
    ({"factors": {"n": [1, 2, 1]}}, "factor 'n' has duplicate levels"),
    ({"factors": {"replicate": [1]}}, "factor 'replicate' clashes with a reserved"),
    ({"factors": {"method": [1]}}, "factor 'method' clashes with a reserved"),
    ({"factors": {"rng": [1]}}, "factor 'rng' clashes with a reserved"),
    ({"factors": {"method_name": [1]}}, "factor 'method_name' clashes with a reserved"),
    ({"factors": {"tolerance": [1]}}, "factor 'tolerance' is also a keyword of xarray"),
    ({"factors": {"drop": [1]}}, "factor 'drop' is also a keyword of xarray"),
    ({"factors": {"indexers": [1]}}, "factor 'indexers' is also a keyword of xarray"),
    ({"factors": {"n": [[1, 2]]}}, "levels must be int, float, str or bool"),
    ({"factors": {"n": [1.0, float("nan")]}}, "factor 'n' has a non-finite level"),
    ({"factors": {"n": [1, "a"]}}, "factor 'n' mixes level types"),
    ({"factors": {"n": 5}}, "factor 'n' must be a list of levels"),
    ({"replicates": 0}, "replicates must be >= 1, got 0"),
    ({"replicates": 2.5}, "replicates must be an integer >= 1, got 2.5"),
    ({"replicates": True}, "replicates must be an integer >= 1, got True"),
    ({"seed": -1}, "seed must be a non-negative integer, got -1"),
    ({"seed": "x"}, "seed must be a non-negative integer, got 'x'"),
    ({"seed": 1.5}, "seed must be a non-negative integer, got 1.5"),
    ({"rng": "bogus"}, "rng scheme 'bogus' is unknown"),
]


@pytest.mark.parametrize(
    ("overrides", "message"),
    BAD_ARGS,
    ids=[
        "empty-factor",
        "duplicate-levels",
        "reserved-replicate",
        "reserved-method",
        "reserved-rng",
        "reserved-method-name",
        "xarray-tolerance-issue-16",
        "xarray-drop-issue-16",
        "xarray-indexers-issue-16",
        "list-level",
        "nan-level",
        "mixed-str-int",
        "scalar-not-list",
        "replicates-zero",
        "replicates-float",
        "replicates-bool",
        "seed-negative",
        "seed-str",
        "seed-float",
        "unknown-scheme",
    ],
)
def test_bad_arguments_raise(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(StudyError, match=re.escape(message)) as info:
        _make(**overrides)
    assert info.value.hint


def _unknown_data_param(study: Study) -> None:
    @study.data
    def gen(rng: np.random.Generator, n: int, sigma: float) -> Any:
        return rng.standard_normal(n) * sigma

    study.method(_mean)


def _unknown_method_param(study: Study) -> None:
    study.data(_gen)

    @study.method
    def trimmed(x: Any, alpha: float) -> dict[str, float]:
        return {"estimate": float(np.mean(x)) * alpha}


def _no_data(study: Study) -> None:
    study.method(_mean)


def _no_method(study: Study) -> None:
    study.data(_gen)


def _duplicate_methods(study: Study) -> None:
    study.data(_gen)
    study.method(_mean)
    study.method(name="_mean")(_mean)


def _method_without_data(study: Study) -> None:
    study.data(_gen)

    @study.method
    def constant() -> dict[str, float]:
        return {"estimate": 0.0}


def _two_data(study: Study) -> None:
    study.data(_gen)
    study.data(_gen)


BAD_DECLARATIONS = [
    (_unknown_data_param, "data function 'gen' asks for parameter 'sigma'"),
    (_unknown_method_param, "method 'trimmed' asks for parameter 'alpha'"),
    (_no_data, "study 'demo' has no data function"),
    (_no_method, "study 'demo' has no method"),
    (_duplicate_methods, "method '_mean' is declared twice"),
    (_method_without_data, "must take the data as its first parameter"),
    (_two_data, "a second data function '_gen' was declared"),
]


@pytest.mark.parametrize(
    ("declare", "message"),
    BAD_DECLARATIONS,
    ids=[
        "unknown-data-param",
        "unknown-method-param",
        "no-data",
        "no-method",
        "duplicate-method",
        "method-without-data-param",
        "two-data-functions",
    ],
)
def test_bad_declarations_raise(declare: Any, message: str) -> None:
    study = _make()

    def declare_and_validate() -> None:
        declare(study)
        study.validate()

    with pytest.raises(StudyError, match=re.escape(message)):
        declare_and_validate()


def test_int_and_float_levels_become_floats() -> None:
    study = _make(factors={"eps": [0, 0.5, np.int64(2)]})
    assert study.factors["eps"] == (0.0, 0.5, 2.0)
    assert all(type(v) is float for v in study.factors["eps"])


def test_numpy_array_levels_are_accepted() -> None:
    study = _make(factors={"n": np.array([5, 10])})
    assert study.factors["n"] == (5, 10)
    assert all(type(v) is int for v in study.factors["n"])


def test_n_tasks_is_points_times_replicates_times_methods() -> None:
    study = _make(factors={"n": [5, 10], "eps": [0.0, 0.5, 1.0]}, replicates=4)
    study.data(_gen)
    study.method(_mean)
    study.method(name="mean2")(_mean)
    assert study.n_points == 6
    assert study.n_tasks == 6 * 4 * 2


def test_method_name_override() -> None:
    study = _make()
    study.data(_gen)

    @study.method(name="x")
    def mean(x: Any) -> dict[str, float]:
        return {"estimate": float(np.mean(x))}

    study.validate()
    assert study.method_names == ["x"]
    assert study.methods[0].func is mean


def test_method_params_and_rng_are_recorded() -> None:
    study = _make()
    study.data(_gen)

    @study.method
    def noisy(x: Any, rng: np.random.Generator, n: int) -> dict[str, float]:
        return {"estimate": float(np.mean(x)) + rng.standard_normal() / n}

    study.validate()
    assert study.methods[0].params == ("rng", "n")
    assert study.methods[0].takes_rng


def test_truth_as_keywords() -> None:
    study = _make()
    study.truth(estimate=0)
    assert study.truth_for({"n": 5}) == {"estimate": 0.0}


def test_truth_as_decorator() -> None:
    study = _make(factors={"n": [5, 10], "eps": [0.0, 0.5]})
    study.data(_gen)
    study.method(_mean)

    @study.truth
    def truth(eps: float) -> dict[str, float]:
        return {"estimate": eps}

    study.validate()
    assert study.truth_for({"n": 5, "eps": 0.5}) == {"estimate": 0.5}


def test_truth_rejects_non_numbers() -> None:
    study = _make()
    with pytest.raises(StudyError, match=re.escape("truth estimate='a' is not a")):
        study.truth(estimate="a")


def test_no_truth_gives_empty_dict() -> None:
    assert _make().truth_for({"n": 5}) == {}
