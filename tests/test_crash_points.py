"""kill -9 at every named step of creating, growing, migrating, recomputing,
pruning and writing a store: the next run finishes with the cube an
uninterrupted run gives (issue 19). The kills land on purpose, not by timing:
``SIMSTUDY_KILL_AT`` makes the driver SIGKILL itself at that step
(simstudy/store/crash.py)."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from simstudy.store.crash import POINTS
from tests.helpers import assert_store_consistent, cube_digest, run_study_cli
from tests.studies import write_study_file

STUDY = """
import numpy as np
from simstudy import Study

study = Study("crash", factors={{"n": {levels}}}, replicates={replicates}, seed=4)

@study.data
def gen(rng, n):
    return rng.standard_normal(n)

@study.method
def mean(x):
    return {{"estimate": float(np.mean(x)){bump}}}
{extra}
"""

EXTRA_METHOD = """
@study.method
def spread(x):
    return {"sd": float(np.std(x)), "range": float(np.ptp(x))}
"""

FORMAT1 = Path(__file__).parent / "data" / "format1"


def _source(
    levels: tuple[int, ...] = (5, 10),
    replicates: int = 6,
    extra: str = "",
    bump: str = "",
) -> str:
    return STUDY.format(
        levels=list(levels), replicates=replicates, extra=extra, bump=bump
    )


def _run(
    folder: Path, store: Path, *args: str, kill: str | None = None
) -> subprocess.CompletedProcess[str]:
    return run_study_cli(
        folder, store, *args, kill=kill, env={"SIMSTUDY_FLUSH_SECONDS": "0.1"}
    )


# point -> (source of the first, uninterrupted run or None, source of the
# killed run, arguments of the killed run and of the resume)
EDITED = _source(levels=(5, 10, 20), replicates=9)
SCENARIOS: dict[str, tuple[str | None, str, tuple[str, ...]]] = {
    "create:built": (None, _source(), ()),
    "create:moved": (None, _source(), ()),
    "flush:outputs": (None, _source(), ()),
    # the grown run rewrites chunks the first run wrote: sealed, not replaced
    "flush:sealed": (_source(), EDITED, ()),
    "output:created": (None, _source(), ()),
    "grow:coords": (_source(), EDITED, ()),
    "grow:resized": (_source(), EDITED, ()),
    "recompute:status": (_source(), _source(bump=" + 1.0"), ("--recompute", "mean")),
    "prune:copied": (_source(), _source(levels=(10,)), ("--prune",)),
}


def test_every_crash_point_has_a_scenario() -> None:
    assert set(SCENARIOS) | {"migrate:arrays"} == set(POINTS)


@pytest.mark.parametrize("point", list(SCENARIOS), ids=list(SCENARIOS))
def test_a_kill_at_each_step_leaves_a_store_the_next_run_finishes(
    tmp_path: Path, reference_digest: Callable[[str], str], point: str
) -> None:
    first, killed, args = SCENARIOS[point]
    folder = tmp_path / "run"
    store = folder / "s.zarr"
    if first is not None:
        write_study_file(folder, first)
        assert _run(folder, store).returncode == 0
    write_study_file(folder, killed)
    dead = _run(folder, store, *args, kill=point)
    assert dead.returncode == -9, f"{point} was not reached: {dead.stderr}"
    again = _run(folder, store, *args)
    assert again.returncode == 0, again.stderr
    # a kill is no damage: nothing to repair (a seal or checksum false alarm
    # would recompute tasks and still end in the same cube)
    assert "damaged or missing" not in again.stderr, again.stderr
    assert_store_consistent(store)
    assert cube_digest(store) == reference_digest(killed)


def test_a_kill_while_migrating_an_old_store_is_finished_by_the_next_run(
    tmp_path: Path, reference_digest: Callable[[str], str]
) -> None:
    folder = tmp_path / "run"
    folder.mkdir()
    store = folder / "s.zarr"
    shutil.copytree(FORMAT1 / "store.zarr", store)
    shutil.copy(FORMAT1 / "study.py", folder / "study.py")
    dead = _run(folder, store, kill="migrate:arrays")
    assert dead.returncode == -9, dead.stderr
    assert_store_consistent(store)  # readable in between, as format 1
    again = _run(folder, store)
    assert again.returncode == 0, again.stderr
    ds = assert_store_consistent(store)
    assert ds.attrs["simstudy"]["format"] == 2
    assert not (store / "method").exists()
    assert cube_digest(store) == reference_digest((FORMAT1 / "study.py").read_text())


def test_a_kill_when_a_grown_study_creates_a_new_output(
    tmp_path: Path, reference_digest: Callable[[str], str]
) -> None:
    """The issue's case: a finished store grows a method with a new output and
    the run is killed right after the new array is created."""
    folder = tmp_path / "run"
    store = folder / "s.zarr"
    write_study_file(folder, _source())
    assert _run(folder, store).returncode == 0
    grown = _source(extra=EXTRA_METHOD)
    write_study_file(folder, grown)
    dead = _run(folder, store, kill="output:created")
    assert dead.returncode == -9, dead.stderr
    assert_store_consistent(store)
    again = _run(folder, store)
    assert again.returncode == 0, again.stderr
    assert_store_consistent(store)
    assert cube_digest(store) == reference_digest(grown)
