"""A full disk at every step that writes a store (issue 19.2): a clear error
with its own exit code (4), never an internal error, and once there is
space the same command finishes with the cube an uninterrupted run gives.

The disk fills on purpose, not by chance: ``SIMSTUDY_DISK_FULL_AT`` makes
the write after a named step fail with ENOSPC (simstudy/store/crash.py);
one test fills a real file size limit (EFBIG) in a real process."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from simstudy.cli import main
from simstudy.errors import EXIT_DISK_FULL
from simstudy.store.crash import DISK_FULL_AT, POINTS
from tests.helpers import assert_store_consistent, cube_digest
from tests.studies import write_study_file
from tests.test_crash_points import FORMAT1, SCENARIOS

RUN = ("--scheduler", "synchronous", "--no-progress")


def _cli(folder: Path, store: Path, *args: str) -> int:
    cwd = Path.cwd()
    os.chdir(folder)
    try:
        return main(["run", "study.py", "--store", str(store), *RUN, *args])
    finally:
        os.chdir(cwd)


def test_every_step_is_covered() -> None:
    assert set(SCENARIOS) | {"migrate:arrays"} == set(POINTS)


@pytest.mark.parametrize("point", list(SCENARIOS), ids=list(SCENARIOS))
def test_a_full_disk_at_each_step_is_exit_4_and_the_run_resumes(
    tmp_path, reference_digest, monkeypatch, capsys, point
):
    monkeypatch.setenv("SIMSTUDY_FLUSH_SECONDS", "0.1")
    first, source, args = SCENARIOS[point]
    folder = tmp_path / "run"
    store = folder / "s.zarr"
    if first is not None:
        write_study_file(folder, first)
        assert _cli(folder, store) == 0
    write_study_file(folder, source)
    capsys.readouterr()
    monkeypatch.setenv(DISK_FULL_AT, point)
    assert _cli(folder, store, *args) == EXIT_DISK_FULL
    err = capsys.readouterr().err
    assert f"error: cannot write the store {store.resolve()}: No space left" in err
    assert "(ENOSPC); what was written is consistent." in err
    assert "hint: free disk space" in err
    assert "internal error" not in err
    monkeypatch.delenv(DISK_FULL_AT)
    # in between, status reads the store, or says clearly why it cannot
    assert main(["status", str(store)]) in (0, 2)
    err = capsys.readouterr().err
    assert "internal error" not in err
    assert not err or "stopped while growing" in err or "no zarr.json" in err, err
    assert _cli(folder, store, *args) == 0
    # a full disk is no damage: nothing to repair
    assert "damaged or missing" not in capsys.readouterr().err
    assert_store_consistent(store)
    assert cube_digest(store) == reference_digest(source)


def test_a_full_disk_while_migrating_an_old_store(
    tmp_path, reference_digest, monkeypatch
):
    folder = tmp_path / "run"
    folder.mkdir()
    store = folder / "s.zarr"
    shutil.copytree(FORMAT1 / "store.zarr", store)
    shutil.copy(FORMAT1 / "study.py", folder / "study.py")
    monkeypatch.setenv(DISK_FULL_AT, "migrate:arrays")
    assert _cli(folder, store) == EXIT_DISK_FULL
    monkeypatch.delenv(DISK_FULL_AT)
    assert _cli(folder, store) == 0
    assert cube_digest(store) == reference_digest((FORMAT1 / "study.py").read_text())


# the child limits its own file size, then runs `python -m simstudy` (a
# preexec_fn would fork this process, which may hold threads, e.g. jax's)
LIMITED = (
    "import resource, runpy; "
    "resource.setrlimit(resource.RLIMIT_FSIZE, (1500, 1500)); "
    "runpy.run_module('simstudy', run_name='__main__', alter_sys=True)"
)


def test_a_real_file_size_limit_while_creating_the_store(tmp_path, reference_digest):
    """A real process whose files may not grow past 1.5 kB: the store's root
    metadata cannot be written (EFBIG, as a full disk would refuse it)."""
    folder = tmp_path / "run"
    source = SCENARIOS["create:built"][1]
    write_study_file(folder, source)
    store = folder / "s.zarr"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    args = ["run", "study.py", "--store", str(store), *RUN]
    full = subprocess.run(
        [sys.executable, "-c", LIMITED, *args],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert full.returncode == EXIT_DISK_FULL, full.stderr
    assert "File too large (EFBIG); what was written is consistent." in full.stderr
    assert "internal error" not in full.stderr
    again = subprocess.run(
        [sys.executable, "-m", "simstudy", *args],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert again.returncode == 0, again.stderr
    assert_store_consistent(store)
    assert cube_digest(store) == reference_digest(source)
