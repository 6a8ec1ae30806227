"""The fingerprint covers the user's code a function reaches (issue 16.1):
helpers, module constants, classes, local modules, defaults and closures;
comments, blank lines and docstrings change nothing."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import simstudy
from simstudy.declare import fingerprint
from simstudy.errors import FingerprintMismatch
from tests.conftest import WriteStudy
from tests.helpers import assert_store_consistent, cube_digest

STUDY = '''
import numpy as np
from scipy.stats import norm
from simstudy import Study
import helpers

Z = norm.ppf(0.975)
SHIFT = 0.0


class Scaler:
    factor = 1.0

    def apply(self, x):
        return x * self.factor


def interval(x):
    """The Wald interval of a mean."""
    s = x.std(ddof=1) / np.sqrt(len(x))
    return x.mean() - Z * s, x.mean() + Z * s


def noise(rng, n):
    return rng.standard_normal(n) + SHIFT


study = Study("fp", factors={"n": [8, 16]}, replicates=12, seed=3)


@study.data
def gen(rng, n):
    return noise(rng, n)


@study.method(ci=("lo", "hi"))
def wald(x):
    lo, hi = interval(x)  # the interval
    return {"estimate": x.mean(), "lo": lo, "hi": hi}


@study.method
def scaled(x, k=2.0):
    return {"estimate": float(Scaler().apply(np.median(x))) * k}


@study.method
def local(x):
    return {"estimate": helpers.centre(x)}
'''

HELPERS = """
import numpy as np


def centre(x):
    return float(np.mean(x))
"""


@pytest.fixture
def folder(tmp_path: Path, write_study: WriteStudy) -> Path:
    write_study(STUDY)
    write_study(HELPERS, "helpers.py")
    return tmp_path


def _edit(folder: Path, old: str, new: str, name: str = "study.py") -> None:
    path = folder / name
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new))


def _run(folder: Path, **options: Any) -> simstudy.running.runner.RunReport:
    import sys

    sys.modules.pop("helpers", None)  # the study file imports it afresh
    return simstudy.run(
        folder / "study.py", store=folder / "s.zarr", scheduler="synchronous", **options
    )


def _fresh(folder: Path, tmp_path: Path) -> str:
    """The digest of the edited study run from scratch."""
    import shutil
    import sys

    other = tmp_path / "fresh"
    shutil.copytree(folder, other, ignore=shutil.ignore_patterns("*.zarr"))
    sys.modules.pop("helpers", None)
    simstudy.run(other / "study.py", store=other / "f.zarr", scheduler="synchronous")
    return cube_digest(other / "f.zarr")


EDITS = {
    "constant": (
        "Z = norm.ppf(0.975)",
        "Z = norm.ppf(0.995)",
        "global 'Z' used by method 'wald' changed",
        "wald",
    ),
    "helper": (
        "s = x.std(ddof=1)",
        "s = x.std(ddof=0)",
        "function 'interval' used by method 'wald' changed",
        "wald",
    ),
    "class": (
        "factor = 1.0",
        "factor = 3.0",
        "class 'Scaler' used by method 'scaled' changed",
        "scaled",
    ),
    "default": ("k=2.0", "k=2.5", "method 'scaled' changed", "scaled"),
    "own-body": (
        'return {"estimate": helpers.centre(x)}',
        'return {"estimate": helpers.centre(x) + 1}',
        "method 'local' changed",
        "local",
    ),
}


@pytest.mark.parametrize("case", list(EDITS), ids=list(EDITS))
def test_an_edit_a_method_reaches_is_named_and_recompute_fixes_it(
    folder: Path, tmp_path: Path, case: str
) -> None:
    old, new, message, method = EDITS[case]
    _run(folder)
    _edit(folder, old, new)
    with pytest.raises(FingerprintMismatch, match=re.escape(message)) as info:
        _run(folder)
    # from Python the hint names run()'s keyword (the CLI's: --recompute)
    assert f'recompute="{method}"' in (info.value.hint or "")
    report = _run(folder, recompute=[method])
    assert report.computed == 2 * 12  # that method's column only
    assert_store_consistent(folder / "s.zarr")
    assert cube_digest(folder / "s.zarr") == _fresh(folder, tmp_path)


def test_a_local_module_a_method_uses_is_covered(folder: Path, tmp_path: Path) -> None:
    _run(folder)
    _edit(folder, "float(np.mean(x))", "float(np.mean(x)) * 2", name="helpers.py")
    with pytest.raises(
        FingerprintMismatch, match=re.escape("module 'helpers' used by method 'local'")
    ):
        _run(folder)
    _run(folder, recompute=["local"])
    assert cube_digest(folder / "s.zarr") == _fresh(folder, tmp_path)


def test_a_change_the_data_function_reaches_invalidates_everything(
    folder: Path,
) -> None:
    _run(folder)
    _edit(folder, "SHIFT = 0.0", "SHIFT = 0.5")
    message = "global 'SHIFT' used by the data function changed (every result"
    with pytest.raises(FingerprintMismatch, match=re.escape(message)) as info:
        _run(folder)
    assert "restart=True" in (info.value.hint or "")
    assert "recompute" not in (info.value.hint or "")


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("# the interval", "# the Wald interval, twice as well commented"),
        ('"""The Wald interval of a mean."""', '"""Another docstring."""'),
        ("    lo, hi = interval(x)", "\n\n    lo, hi = interval(x)   "),
        ('@study.method(ci=("lo", "hi"))', '@study.method(ci=("lo", "hi"), se=None)'),
    ],
    ids=["comment", "docstring", "blank-lines-and-spaces", "decorator-only"],
)
def test_comments_whitespace_docstrings_change_nothing(
    folder: Path, old: str, new: str
) -> None:
    first = _run(folder)
    assert first.computed == 3 * 2 * 12
    _edit(folder, old, new)
    again = _run(folder)
    assert again.computed == 0
    assert again.exit_code == 0


def test_reach_lists_what_a_method_uses() -> None:
    scale = 3.0

    def helper(x: float) -> float:
        return x * scale

    def method(x: float) -> float:
        return helper(x) + float(np.sqrt(x))

    parts = fingerprint.reach(method)
    assert set(parts) == {
        "itself",
        "function 'test_reach_lists_what_a_method_uses.<locals>.helper'",
        "global 'scale'",
    }
    # a library function (np.sqrt) is not followed: its version is recorded apart
    assert not any("sqrt" in p for p in parts)


def test_explain_says_what_changed() -> None:
    old = {"itself": "a", "global 'Z'": "b", "function 'f'": "c"}
    new = {"itself": "a", "global 'Z'": "x", "global 'K'": "k"}
    assert fingerprint.explain(old, new) == [
        ("function 'f'", "is no longer used"),
        ("global 'K'", "is new"),
        ("global 'Z'", "changed"),
    ]
