"""Stores that are not ours, or handed over by someone else (issue 24: 2, 4, 6, 7).

Each test plants one attack in a real store on disk and checks what the
commands do: a clear one-line error (exit 2) naming the path, nothing of the
user's deleted, nothing outside the store read or written (files' bytes and
mtimes compared), and where a run goes on, a cube equal to an undisturbed
run's. Nothing here waits on a clock: a FIFO test that regressed would hang,
so it runs under a pytest-timeout guard and fails instead.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import google_crc32c
import pytest

import simstudy
from simstudy.cli import main
from simstudy.cube import MAX_REPLICATES
from simstudy.errors import StoreError, StudyError
from simstudy.store import read_failures
from simstudy.system import _state, pid_alive
from tests.helpers import assert_store_consistent, cube_digest, reseal, wait_for

STUDY = """
import numpy as np
from simstudy import Study

study = Study("hostile", factors={"n": [5, 10]}, replicates=REPS, seed=3)

@study.data
def gen(rng, n):
    return rng.standard_normal(n)

@study.method
def mean(x):
    return {"estimate": float(np.mean(x))}

@study.method
def picky(x):
    if x[0] > 0.3:
        raise ValueError("too big")
    return {"estimate": float(np.median(x))}
"""


def _study(write_study: Any, reps: int = 4, name: str = "study.py") -> Path:
    path: Path = write_study(STUDY.replace("REPS", str(reps)), name=name)
    return path


def _run(study: Path, store: Path, *extra: str) -> int:
    argv = ["run", str(study), "--store", str(store), "--scheduler", "synchronous"]
    return int(main([*argv, "--no-fail-fast", *extra]))


def _tree(root: Path) -> dict[str, tuple[int, int, bytes]]:
    """Every entry under ``root`` (links not followed): mode, mtime, bytes."""
    out = {}
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            p = Path(folder) / name
            st = p.lstat()
            blob = p.read_bytes() if p.is_file() and not p.is_symlink() else b""
            out[str(p.relative_to(root))] = (st.st_mode, st.st_mtime_ns, blob)
    return out


def _one_error(err: str, *needles: str) -> None:
    lines = err.strip().splitlines()
    assert len(lines) == 2, err
    assert lines[0].startswith("error: "), err
    assert lines[1].startswith("hint: "), err
    assert "internal error" not in err
    for needle in needles:
        assert needle in lines[0], (needle, err)


@pytest.fixture
def ran(tmp_path, write_study):
    """(study file, a finished store with failures, an undisturbed copy)."""
    study = _study(write_study)
    store = tmp_path / "s.zarr"
    assert _run(study, store) == 3
    reference = tmp_path / "ref.zarr"
    shutil.copytree(store, reference)
    return study, store, reference


def _readers(store: Path, tmp_path: Path) -> list[list[str]]:
    return [
        ["status", str(store)],
        ["summarize", str(store)],
        ["report", str(store), "-o", str(tmp_path / "r.html")],
        ["errors", str(store)],
    ]


# ---- 2. a zarr store that is not simstudy's ---------------------------------
def _foreign_store(folder: Path) -> None:
    """Someone's zarr store: an array, a README, a thesis."""
    import zarr

    root = zarr.open_group(str(folder), mode="w", zarr_format=3)
    root.create_array("data", shape=(3,), dtype="f8")[:] = [1.0, 2.0, 3.0]
    (folder / "README").write_text("my measurements\n")
    (folder / "thesis.tex").write_text("\\documentclass{article}\n")


@pytest.mark.parametrize("restart", [False, True], ids=["resume", "restart"])
def test_run_refuses_a_zarr_store_that_is_not_simstudys_and_leaves_it_alone(
    tmp_path, write_study, capsys, restart
):
    study = _study(write_study)
    store = tmp_path / "mydata.zarr"
    _foreign_store(store)
    before = _tree(store)
    assert _run(study, store, *(["--restart"] if restart else [])) == 2
    _one_error(capsys.readouterr().err, "is a zarr store but not simstudy's")
    assert _tree(store) == before


def test_readers_refuse_a_zarr_store_that_is_not_simstudys(
    tmp_path, write_study, capsys
):
    study = _study(write_study)
    store = tmp_path / "mydata.zarr"
    _foreign_store(store)
    before = _tree(store)
    for argv in [
        *_readers(store, tmp_path),
        ["verify", str(store), "--study", str(study), "--sample", "2"],
        ["plan", str(study), "--store", str(store)],
    ]:
        assert main(argv) == 2, argv
        _one_error(capsys.readouterr().err, "not simstudy's")
    with pytest.raises(StoreError, match="is a zarr store but not simstudy's"):
        simstudy.open_results(store)
    assert _tree(store) == before


def test_restart_and_prune_keep_the_files_a_user_put_in_a_store(
    ran, tmp_path, write_study
):
    study, store, reference = ran
    (store / "README").write_text("notes on this run\n")
    (store / "plots").mkdir()
    (store / "plots" / "draft.partial").write_text("a user's file, not ours\n")
    assert _run(study, store, "--restart") == 3
    assert (store / "README").read_text() == "notes on this run\n"
    assert (store / "plots" / "draft.partial").is_file()
    assert cube_digest(store) == cube_digest(reference)
    # the study drops a method; --prune swaps in a copy without it
    fewer = write_study(
        _study(write_study)
        .read_text()
        .replace("@study.method\ndef picky", "def picky"),
        name="fewer.py",
    )
    assert _run(fewer, store, "--prune") == 0
    assert (store / "README").read_text() == "notes on this run\n"
    assert (store / "plots" / "draft.partial").is_file()
    assert not store.with_name("s.zarr.pruned-old").exists()
    shutil.rmtree(store / "plots")  # the checker counts any *.partial as ours
    assert_store_consistent(store)


class _Killed(BaseException):
    """A kill -9 stand-in: nothing below catches it."""


def test_a_prune_killed_while_deleting_the_old_store_loses_no_user_file(
    ran, write_study, monkeypatch
):
    """Killed halfway through deleting ``<store>.pruned-old`` (the user's files
    already moved into the pruned store): the next run finishes the job."""
    from simstudy.store import reconcile

    study, store, reference = ran
    (store / "README").write_text("notes\n")
    fewer = write_study(
        study.read_text().replace("@study.method\ndef picky", "def picky"),
        name="fewer.py",
    )
    real = reconcile._discard

    def killed_halfway(folder: Path) -> None:
        if not folder.name.endswith(".pruned-old"):
            real(folder)
            return
        assert (folder / ".simstudy" / "discard").is_file()
        shutil.rmtree(folder / "estimate")
        raise _Killed

    monkeypatch.setattr(reconcile, "_discard", killed_halfway)
    with pytest.raises(_Killed):
        _run(fewer, store, "--prune")
    monkeypatch.undo()
    old = store.with_name("s.zarr.pruned-old")
    assert old.is_dir()
    assert (store / "README").read_text() == "notes\n"
    assert _run(fewer, store, "--prune") == 0
    assert not old.exists()
    assert (store / "README").read_text() == "notes\n"
    assert _run(fewer, reference, "--prune") == 0
    assert cube_digest(store) == cube_digest(reference)


# ---- 4. links, FIFOs and devices inside a store ---------------------------
def _outside(tmp_path: Path) -> Path:
    victim = tmp_path / "outside" / "victim.txt"
    victim.parent.mkdir()
    victim.write_text("the user's file\n")
    return victim


def test_a_seal_log_linked_outside_gets_no_line_appended(
    ran, tmp_path, write_study, capsys
):
    _, store, _ = ran
    victim = _outside(tmp_path)
    log = store / ".simstudy" / "seals" / "status.log"
    log.unlink()
    log.symlink_to(victim)
    before = _tree(victim.parent)
    more = _study(write_study, reps=8, name="more.py")  # a run that writes
    assert _run(more, store) == 2
    _one_error(capsys.readouterr().err, str(log), "symbolic link")
    assert _tree(victim.parent) == before


def test_a_seal_log_hard_linked_outside_is_copied_before_appending(
    ran, tmp_path, write_study
):
    """A hard link passes the scan (it is a regular file): the run appends to
    a copy of its own, and the other path keeps its bytes."""
    _, store, _ = ran
    log = store / ".simstudy" / "seals" / "status.log"
    other = tmp_path / "backup-status.log"
    os.link(log, other)
    before = other.read_bytes()
    more = _study(write_study, reps=8, name="more.py")
    assert _run(more, store) == 3
    assert other.read_bytes() == before
    assert log.read_bytes().startswith(before)
    assert len(log.read_bytes()) > len(before)
    assert os.stat(log).st_nlink == 1


def test_a_failures_folder_linked_outside_receives_no_record(
    ran, tmp_path, write_study, capsys
):
    _, store, _ = ran
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    failures = store / ".simstudy" / "failures"
    shutil.rmtree(failures)
    failures.symlink_to(elsewhere, target_is_directory=True)
    more = _study(write_study, reps=8, name="more.py")
    assert _run(more, store, "--retry-failed") == 2
    _one_error(capsys.readouterr().err, str(failures))
    assert list(elsewhere.iterdir()) == []


def test_a_failure_record_linked_to_an_outside_file_is_not_shown(ran, tmp_path, capsys):
    _, store, _ = ran
    secret = tmp_path / "outside.json"
    secret.write_text(
        json.dumps(
            [
                {
                    "n": 5,
                    "replicate": 0,
                    "method": "picky",
                    "type": "X",
                    "message": "SECRET",
                    "traceback": "SECRET",
                }
            ]
        )
    )
    record = min((store / ".simstudy" / "failures").glob("*.json"))
    record.unlink()
    record.symlink_to(secret)
    assert main(["errors", str(store)]) == 2
    captured = capsys.readouterr()
    assert "SECRET" not in captured.out + captured.err
    _one_error(captured.err, str(record), "symbolic link")
    with pytest.raises(StoreError, match="symbolic link"):
        read_failures(store)


@pytest.mark.timeout(60)  # a regression blocks on the FIFO: fail, do not hang
def test_a_fifo_chunk_is_refused_at_once(ran, tmp_path, capsys):
    study, store, reference = ran
    chunk = store / "status" / "c.0.0.0"
    chunk.unlink()
    os.mkfifo(chunk)
    for argv in [
        *_readers(store, tmp_path),
        ["run", str(study), "--store", str(store)],
    ]:
        assert main(argv) == 2, argv
        _one_error(capsys.readouterr().err, str(chunk), "FIFO")
    chunk.unlink()
    assert _run(study, store) == 3
    assert cube_digest(store) == cube_digest(reference)


def test_a_chunk_linked_to_dev_zero_is_refused(ran, tmp_path, capsys):
    study, store, reference = ran
    chunk = store / "estimate" / "c.0.0.0"
    chunk.unlink()
    chunk.symlink_to("/dev/zero")
    for argv in [
        *_readers(store, tmp_path),
        ["run", str(study), "--store", str(store)],
    ]:
        assert main(argv) == 2, argv
        _one_error(capsys.readouterr().err, str(chunk), "symbolic link")
    with pytest.raises(StoreError, match="symbolic link"):
        simstudy.open_results(store)
    chunk.unlink()  # what the hint says: the run recomputes what it held
    assert _run(study, store) == 3
    assert cube_digest(store) == cube_digest(reference)


def test_a_chunk_declaring_a_huge_size_is_refused_before_decoding(ran, capsys):
    """A zstd frame header saying 2^40 bytes, with a valid crc32c and seal:
    the chunk is read into a buffer of its array's chunk size, never grown."""
    _, store, _ = ran
    chunk = store / "status" / "c.0.0.0"
    # magic, descriptor (8-byte content size, single segment), size, a raw block
    body = b"\x28\xb5\x2f\xfd" + bytes([0xE0]) + (2**40).to_bytes(8, "little")
    body += bytes([0x01, 0x00, 0x00])  # last block, raw, 0 bytes
    chunk.write_bytes(body + int(google_crc32c.value(body)).to_bytes(4, "little"))
    reseal(store)
    assert main(["status", str(store)]) == 2
    _one_error(capsys.readouterr().err, "declares 1099511627776 bytes")


def test_an_oversized_chunk_file_is_damage_a_run_repairs(ran, capsys):
    study, store, reference = ran
    chunk = store / "estimate" / "c.1.0.0"
    chunk.write_bytes(b"\x00" * (8 * 2**20))  # far more than its chunk allows
    assert main(["status", str(store)]) == 2
    _one_error(capsys.readouterr().err, "not a chunk file: larger than")
    assert _run(study, store) == 3
    assert cube_digest(store) == cube_digest(reference)


# ---- 6. metadata sizes ---------------------------------------------------
def _declare(store: Path, replicates: int, *, arrays: bool) -> None:
    """Make the store's metadata (and maybe its arrays' shapes) say more."""
    f = store / "zarr.json"
    root = json.loads(f.read_text())
    root["attributes"]["simstudy"]["fingerprint"]["replicates"] = replicates
    if arrays:
        for entry in root["consolidated_metadata"]["metadata"].values():
            if "replicate" in (entry.get("dimension_names") or []):
                at = entry["dimension_names"].index("replicate")
                entry["shape"][at] = replicates
        for own in store.glob("*/zarr.json"):
            meta = json.loads(own.read_text())
            if "replicate" in (meta.get("dimension_names") or []):
                meta["shape"][meta["dimension_names"].index("replicate")] = replicates
                own.write_text(json.dumps(meta))
    f.write_text(json.dumps(root))


@pytest.mark.parametrize(
    ("replicates", "arrays", "said"),
    [
        (10**11, False, "above the 1,000,000,000 simstudy makes"),
        (10**11, True, "above the 1,000,000,000 simstudy makes"),
        (10**8, False, "its status array holds 4"),
    ],
    ids=["1e11-metadata", "1e11-metadata-and-arrays", "1e8-metadata-only"],
)
def test_a_store_declaring_huge_sizes_is_refused_before_writing(
    ran, tmp_path, capsys, replicates, arrays, said
):
    study, store, _ = ran
    _declare(store, replicates, arrays=arrays)
    before = _tree(store)
    assert _run(study, store) == 2
    _one_error(capsys.readouterr().err, f"{replicates:,} replicates", said)
    assert _tree(store) == before  # not even a lock file
    for argv in _readers(store, tmp_path):
        assert main(argv) == 2, argv
        _one_error(capsys.readouterr().err, f"{replicates:,} replicates")


MALFORMED = {
    "no-fingerprint": lambda m: m.pop("fingerprint"),
    "replicates-text": lambda m: m["fingerprint"].update(replicates="4"),
    "factors-not-the-order": lambda m: m.update(factor_order=["n", "k"]),
    "too-many-methods": lambda m: m["fingerprint"].update(
        methods={f"m{i}": "" for i in range(10**4 + 1)}
    ),
}


@pytest.mark.parametrize("case", list(MALFORMED), ids=list(MALFORMED))
def test_malformed_metadata_is_refused_not_an_internal_error(
    ran, tmp_path, capsys, case
):
    study, store, _ = ran
    f = store / "zarr.json"
    root = json.loads(f.read_text())
    MALFORMED[case](root["attributes"]["simstudy"])
    f.write_text(json.dumps(root))
    before = _tree(store)
    assert _run(study, store) == 2
    _one_error(capsys.readouterr().err, "its metadata is damaged or not simstudy's")
    assert _tree(store) == before
    assert main(["status", str(store)]) == 2
    _one_error(capsys.readouterr().err, "its metadata is damaged or not simstudy's")


def _reshape(store: Path, name: str, at: int, size: int) -> None:
    """Give array ``name`` another length along dimension ``at``, in the
    root's consolidated metadata and in its own."""
    f = store / "zarr.json"
    root = json.loads(f.read_text())
    root["consolidated_metadata"]["metadata"][name]["shape"][at] = size
    f.write_text(json.dumps(root))
    own = store / name / "zarr.json"
    meta = json.loads(own.read_text())
    meta["shape"][at] = size
    own.write_text(json.dumps(meta))


@pytest.mark.parametrize(
    ("name", "at", "size", "said"),
    [
        ("replicate", 0, 10**11, "array 'replicate' has 100,000,000,000 replicates"),
        ("estimate", 1, 10**11, "array 'estimate' has 100,000,000,000 replicates"),
        ("method_name", 0, 10**5, "array 'method_name' has 100,000 methods"),
    ],
    ids=["replicate-coordinate", "output-array", "method-coordinate"],
)
def test_an_array_shape_beyond_the_limits_is_refused(ran, capsys, name, at, size, said):
    study, store, _ = ran
    _reshape(store, name, at, size)
    before = _tree(store)
    assert _run(study, store) == 2
    _one_error(capsys.readouterr().err, said)
    assert _tree(store) == before
    assert main(["status", str(store)]) == 2
    _one_error(capsys.readouterr().err, said)


def test_a_study_may_not_declare_more_replicates_than_a_store_holds(
    write_study, capsys
):
    with pytest.raises(StudyError, match="replicates must be <= 1,000,000,000"):
        simstudy.Study("big", factors={"n": [1]}, replicates=MAX_REPLICATES + 1, seed=1)
    study = _study(write_study)
    argv = ["run", str(study), "--target-mcse", "mean=0.1", "--max-replicates"]
    assert main([*argv, str(MAX_REPLICATES + 1)]) == 2
    _one_error(capsys.readouterr().err, "above the 1,000,000,000 a store holds")
    assert not study.with_suffix(".zarr").exists()


# ---- 7. a zombie holding the lock ----------------------------------------
SLOW = """
import os
import time
from simstudy import Study

study = Study("slow", factors={"n": [5]}, replicates=100, seed=1)

@study.data
def gen(rng, n):
    return rng.standard_normal(n)

@study.method
def mean(x):
    time.sleep(float(os.environ.get("HOSTILE_SLEEP", "0")))  # slow in the child
    return {"estimate": float(x.mean())}
"""


def test_a_zombie_is_not_alive():
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        assert pid_alive(child.pid)
        os.kill(child.pid, signal.SIGKILL)  # not child.kill(): no wait() here
        wait_for("the child to be a zombie", lambda: _state(child.pid) == "Z", 30)
        assert _state(child.pid) == "Z"
        assert not pid_alive(child.pid)
    finally:
        child.wait()


def _lock_pid(lock: Path) -> int | None:
    """The pid a lock file names (None while it is absent or half written)."""
    try:
        return int(json.loads(lock.read_text())["pid"])
    except (OSError, ValueError, KeyError):
        return None


def test_a_run_takes_over_the_lock_of_a_killed_unreaped_run(tmp_path, write_study):
    study = write_study(SLOW, name="slow.py")
    store = tmp_path / "slow.zarr"
    lock = store / ".simstudy" / "lock"
    child = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "simstudy",
            "run",
            str(study),
            "--store",
            str(store),
            "--scheduler",
            "synchronous",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "HOSTILE_SLEEP": "0.2"},
    )
    try:
        wait_for(
            "the child to hold the lock",
            lambda: _lock_pid(lock) == child.pid or child.poll() is not None,
            120,
        )
        assert json.loads(lock.read_text())["pid"] == child.pid
        child.kill()  # and no wait(): the child stays a zombie
        wait_for("the child to be a zombie", lambda: _state(child.pid) == "Z", 30)
        assert _state(child.pid) == "Z"
        report = simstudy.run(study, store=store, scheduler="synchronous")
        assert report.exit_code == 0
    finally:
        child.wait()
    reference = tmp_path / "ref.zarr"
    simstudy.run(study, store=reference, scheduler="synchronous")
    assert cube_digest(store) == cube_digest(reference)
    assert_store_consistent(store)
