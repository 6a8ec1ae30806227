"""load_study: study file -> validated Study, with file:line in every error."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from simstudy import Study, StudyError, load_study
from tests.conftest import WriteStudy
from tests.studies import GOOD_STUDY

HEAD = """
import numpy as np
from simstudy import Study
"""

BODY = """
@study.data
def gen(rng, n):
    return rng.standard_normal(n)

@study.method
def mean(x):
    return {"estimate": float(np.mean(x))}
"""


def _study(factors: str = '{"n": [5, 10]}', extra: str = "") -> str:
    return (
        HEAD
        + f'study = Study("s", factors={factors}, replicates=2, seed=1{extra})\n'
        + BODY
    )


BAD_FILES = [
    (HEAD + "study = Study(\n", "study.py:4: syntax error"),
    (HEAD + "x = 1\n", "study.py: no Study found"),
    (
        HEAD
        + 'a = Study("a", replicates=1, seed=1)\n'
        + 'b = Study("b", replicates=1, seed=1)\n',
        "study.py: 2 Studies found (a, b)",
    ),
    (_study('{"n": []}'), "study.py:4: factor 'n' has no levels"),
    (_study('{"n": [5, 5]}'), "study.py:4: factor 'n' has duplicate levels"),
    (_study('{"replicate": [1]}'), "factor 'replicate' clashes with a reserved"),
    (_study('{"method": [1]}'), "factor 'method' clashes with a reserved"),
    (_study('{"rng": [1]}'), "factor 'rng' clashes with a reserved"),
    (_study('{"n": [[1, 2]]}'), "levels must be int, float, str or bool"),
    (_study('{"n": [float("nan")]}'), "factor 'n' has a non-finite level"),
    (_study('{"n": [1, "a"]}'), "factor 'n' mixes level types"),
    (
        _study().replace("def gen(rng, n)", "def gen(rng, n, sigma)"),
        "study.py: data function 'gen' asks for parameter 'sigma'",
    ),
    (
        _study().replace("def mean(x)", "def mean(x, alpha)"),
        "study.py: method 'mean' asks for parameter 'alpha'",
    ),
    (
        HEAD + 'study = Study("s", factors={"n": [5]}, replicates=2, seed=1)\n'
        "@study.method\ndef mean(x):\n    return {}\n",
        "study.py: study 's' has no data function",
    ),
    (_study().split("@study.method")[0], "study.py: study 's' has no method"),
    (
        _study() + '@study.method(name="mean")\ndef mean2(x):\n    return {}\n',
        "study.py:13: method 'mean' is declared twice",
    ),
    (
        _study() + "@study.method\ndef const():\n    return {}\n",
        "study.py:13: method 'const' must take the data as its first parameter",
    ),
    (_study().replace("replicates=2", "replicates=0"), "replicates must be >= 1"),
    (_study().replace("replicates=2", "replicates=2.5"), "an integer >= 1, got 2.5"),
    (_study().replace("replicates=2", "replicates=True"), "an integer >= 1, got True"),
    (_study().replace("seed=1", "seed=-1"), "seed must be a non-negative integer"),
    (_study().replace("seed=1", 'seed="x"'), "non-negative integer, got 'x'"),
    (_study().replace("seed=1", "seed=1.5"), "non-negative integer, got 1.5"),
    (_study(extra=', rng="bogus"'), "study.py:4: rng scheme 'bogus' is unknown"),
    (
        HEAD + "x = 1\nraise RuntimeError('boom')\n",
        "study.py:5: importing the study file raised RuntimeError: boom",
    ),
    (
        HEAD + "import simstudy_no_such_module_xyz\n",
        "study.py:4: importing the study file raised ModuleNotFoundError",
    ),
]

BAD_IDS = [
    "syntax-error",
    "no-study",
    "two-studies",
    "empty-factor",
    "duplicate-levels",
    "reserved-replicate",
    "reserved-method",
    "reserved-rng",
    "list-level",
    "nan-level",
    "mixed-str-int",
    "unknown-data-param",
    "unknown-method-param",
    "no-data",
    "no-method",
    "duplicate-method",
    "method-without-data-param",
    "replicates-zero",
    "replicates-float",
    "replicates-bool",
    "seed-negative",
    "seed-str",
    "seed-float",
    "unknown-scheme",
    "import-raises",
    "import-missing-module",
]


@pytest.mark.parametrize(("source", "message"), BAD_FILES, ids=BAD_IDS)
def test_bad_study_files_raise(
    write_study: WriteStudy, source: str, message: str
) -> None:
    path = write_study(source)
    with pytest.raises(StudyError, match=re.escape(message)) as info:
        load_study(path)
    assert info.value.hint


@pytest.mark.parametrize(
    ("module", "hint"),
    [
        (
            "simstudy_no_such_module_xyz.sub",
            (
                "simstudy_no_such_module_xyz is not installed here: pip install "
                "simstudy_no_such_module_xyz (the package's name may differ"
            ),
        ),
        (
            "jax",
            (
                "jax is not installed here: pip install jax (simstudy's extra: pip "
                'install "simstudy[jax]")'
            ),
        ),
    ],
)
def test_a_missing_library_says_what_to_install(
    write_study: WriteStudy, monkeypatch: pytest.MonkeyPatch, module: str, hint: str
) -> None:
    """A newcomer runs studies/location_jax.py in a venv without the extra."""
    import sys

    monkeypatch.setitem(sys.modules, "jax", None)  # None: "not installed"
    path = write_study(HEAD + f"import {module}\n" + _study().replace(HEAD, ""))
    with pytest.raises(StudyError, match="ModuleNotFoundError") as info:
        load_study(path)
    assert (info.value.hint or "").startswith(hint), info.value.hint


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(StudyError, match="no such study file"):
        load_study(tmp_path / "nope.py")


def test_not_a_python_file(write_study: WriteStudy) -> None:
    path = write_study(GOOD_STUDY, name="study.txt")
    with pytest.raises(StudyError, match=r"must be a Python file ending in \.py"):
        load_study(path)


def test_directory_is_not_a_study_file(tmp_path: Path) -> None:
    (tmp_path / "s.zarr").mkdir()
    with pytest.raises(StudyError, match=r"s\.zarr is a directory, not a study file"):
        load_study(tmp_path / "s.zarr")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"x = 1\n\x00\x01 binary", "binary.py: not a readable Python source file"),
        (b"\xff\xfe bad", "binary.py:1: syntax error"),
    ],
    ids=["null-bytes", "not-utf8"],
)
def test_a_binary_file_is_named_without_a_bogus_line(
    tmp_path: Path, content: bytes, message: str
) -> None:
    path = tmp_path / "binary.py"
    path.write_bytes(content)
    with pytest.raises(StudyError, match=re.escape(message)) as info:
        load_study(path)
    assert "None" not in info.value.message


def test_good_study_loads(write_study: WriteStudy) -> None:
    path = write_study(GOOD_STUDY)
    study = load_study(path)
    assert isinstance(study, Study)
    assert study.name == "good"
    assert study.factors == {"n": (5, 10), "eps": (0.0, 0.5)}
    assert study.method_names == ["mean", "median"]
    assert study.n_tasks == 4 * 4 * 2
    assert study.source_file == str(path.resolve())


def test_a_second_study_is_refused_even_beside_study(
    write_study: WriteStudy,
) -> None:
    """One of them named ``study`` used to be taken silently."""
    path = write_study(
        GOOD_STUDY + '\nother = Study("other", factors={"k": [1]}, replicates=1, '
        "seed=2)\n"
    )
    with pytest.raises(StudyError, match=re.escape("2 Studies found (good, other)")):
        load_study(path)


def test_single_study_under_another_name(write_study: WriteStudy) -> None:
    source = GOOD_STUDY.replace("study =", "s =").replace("@study.", "@s.")
    path = write_study(source)
    assert load_study(path).name == "good"


def test_int_and_float_levels_become_floats(write_study: WriteStudy) -> None:
    path = write_study(_study('{"n": [5, 10], "eps": [0, 0.5]}'))
    assert load_study(path).factors["eps"] == (0.0, 0.5)


def test_method_name_override_and_truth(write_study: WriteStudy) -> None:
    path = write_study(
        _study('{"n": [5, 10], "eps": [0.0, 1.0]}').replace(
            "def gen(rng, n)", "def gen(rng, n, eps)"
        )
        + '\n@study.method(name="x")\ndef other(x):\n    return {"estimate": 0.0}\n'
        + '\n@study.truth\ndef truth(eps):\n    return {"estimate": eps}\n'
    )
    study = load_study(path)
    assert study.method_names == ["mean", "x"]
    assert study.truth_for({"n": 5, "eps": 1.0}) == {"estimate": 1.0}


def test_truth_keywords_in_file(write_study: WriteStudy) -> None:
    path = write_study(GOOD_STUDY + "\nstudy.truth(estimate=0)\n")
    assert load_study(path).truth_for({"n": 5, "eps": 0.0}) == {"estimate": 0.0}
