"""Smaller faults of issue 19.9: a stalled run says so; levels of another
type than the store's are refused."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import simstudy
from simstudy.errors import FingerprintMismatch
from tests.helpers import assert_store_consistent

LEVELS = """
import numpy as np
from simstudy import Study

study = Study("lv", factors={{"n": {levels}}}, replicates=3, seed=1)

@study.data
def gen(rng, n):
    return rng.standard_normal(n)

@study.method
def mean(x):
    return {{"estimate": float(np.mean(x))}}
"""


@pytest.mark.parametrize(
    ("stored", "given", "said"),
    [
        ("[20, 100, 500]", "[20.0, 100, 500]", "n=20.0 where the stored ones got 20"),
        ("[0.0, 0.5]", "[0, 1]", "levels [0.0, 0.5] (float), the study [0, 1] (int)"),
    ],
    ids=["float-for-int", "int-for-float"],
)
def test_levels_of_another_type_than_the_store_are_refused(
    write_study, tmp_path, stored, given, said
):
    path = write_study(LEVELS.format(levels=stored), "lv.py")
    store = tmp_path / "lv.zarr"
    simstudy.run(path, store=store, scheduler="synchronous")
    write_study(LEVELS.format(levels=given), "lv.py")
    with pytest.raises(FingerprintMismatch, match=r"factor 'n' has levels") as info:
        simstudy.run(path, store=store, scheduler="synchronous")
    assert said in str(info.value)
    assert "write the levels as the store has them" in (info.value.hint or "")
    assert_store_consistent(store)


HANG = """
import time
import numpy as np
from simstudy import Study

study = Study("hang", factors={"n": [5]}, replicates=2, seed=1)

@study.data
def gen(rng, n):
    return rng.standard_normal(n)

@study.method
def mean(x):
    time.sleep(1.5)
    return {"estimate": float(np.mean(x))}
"""


def test_a_run_with_no_finished_task_for_long_says_a_task_may_hang(
    write_study, tmp_path
):
    path = write_study(HANG, "hang.py")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    env["SIMSTUDY_STALL_SECONDS"] = "0.5"
    done = subprocess.run(
        [sys.executable, "-m", "simstudy", "run", str(path), "--no-progress"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert (
        "warning: no task finished for 1 s; a task may hang: use --task-timeout "
        "SECONDS to record a hung task as failed and go on" in done.stderr
    ) or "warning: no task finished for 0 s" in done.stderr, done.stderr
