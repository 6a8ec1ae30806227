"""Damaged or missing chunks, metadata, records and coordinates (issue 19.4,
19.5, 19.6): every reading command names the file and variable and says
that a run recomputes them (exit 2, never an internal error); the run
repairs the store, and the cube equals an undamaged run's, bit for bit."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import simstudy
import simstudy.store.layout
from simstudy.cli import main
from simstudy.errors import StoreError
from tests.helpers import assert_store_consistent, cube_digest

STUDY = """
import numpy as np
from simstudy import Study

study = Study("dmg", factors={"n": [5, 10], "eps": [0.0, 0.5]}, replicates=4, seed=1)

@study.data
def gen(rng, n, eps):
    return rng.standard_normal(n) + eps

@study.method
def mean(x):
    return {"estimate": float(np.mean(x))}

@study.method
def picky(x, n):
    if x[0] > 0.5:
        raise ValueError("too big")
    return {"estimate": float(np.median(x))}
"""


@pytest.fixture
def stores(tmp_path, write_study, monkeypatch):
    """(study file, reference store, store to damage): 2 replicate chunks a point."""
    monkeypatch.setattr(simstudy.store.layout, "CHUNK_REPLICATES", 2)
    path = write_study(STUDY)
    reference, store = tmp_path / "ref.zarr", tmp_path / "s.zarr"
    simstudy.run(path, store=reference, scheduler="synchronous", fail_fast=False)
    simstudy.run(path, store=store, scheduler="synchronous", fail_fast=False)
    return path, reference, store


def _flip(f: Path, at: int = 0) -> None:
    blob = bytearray(f.read_bytes())
    blob[at] ^= 0x01
    f.write_bytes(bytes(blob))


def _failures_file(store: Path) -> Path:
    return min((store / ".simstudy" / "failures").glob("*.json"))


def _differing_pair(store: Path, name: str) -> tuple[Path, Path]:
    """Two chunk files of one variable with different bytes."""
    files = sorted(f for f in (store / name).glob("c.*"))
    for a in files:
        for b in files:
            if a.read_bytes() != b.read_bytes():
                return a, b
    raise AssertionError(f"all chunks of {name} are alike")


def _swap(store: Path, name: str) -> None:
    a, b = _differing_pair(store, name)
    blob = a.read_bytes()
    a.write_bytes(b.read_bytes())
    b.write_bytes(blob)


def _copy_over(store: Path, name: str) -> None:
    a, b = _differing_pair(store, name)
    shutil.copyfile(a, b)


def _coordinate_chunk(store: Path, name: str) -> Path:
    return next(
        f for f in (store / name).rglob("*") if f.is_file() and f.name != "zarr.json"
    )


DAMAGE = {
    # name -> (how to damage the store, what the error must name)
    "flipped-output-chunk": (
        lambda s: _flip(s / "estimate" / "c.0.1.1.0", 3),
        r"estimate/c\.0\.1\.1\.0 \(variable 'estimate': fails its crc32c checksum\)",
    ),
    "flipped-status-chunk": (
        lambda s: _flip(s / "status" / "c.1.0.0.0", 3),
        r"status/c\.1\.0\.0\.0 \(variable 'status': fails its crc32c checksum\)",
    ),
    # each passes its crc32c; the seals tie a checksum to its position
    "swapped-output-chunks": (
        lambda s: _swap(s, "estimate"),
        (
            r"estimate/c\.[0-9.]+ \(variable 'estimate': holds the chunk written "
            r"at c\.[0-9.]+: swapped or copied chunk files\)"
        ),
    ),
    "swapped-status-chunks": (
        lambda s: _swap(s, "status"),
        r"status/c\.[0-9.]+ \(variable 'status': holds the chunk written at c\.",
    ),
    "copied-seconds-chunk": (
        lambda s: _copy_over(s, "seconds"),
        r"seconds/c\.[0-9.]+ \(variable 'seconds': holds the chunk written at c\.",
    ),
    "deleted-output-chunk": (
        lambda s: (s / "estimate" / "c.1.1.0.0").unlink(),
        (
            r"estimate/c\.1\.1\.0\.0 \(variable 'estimate': missing, but the status "
            "says its tasks finished\\)"
        ),
    ),
    "deleted-seconds-chunk": (
        lambda s: (s / "seconds" / "c.0.0.1.0").unlink(),
        r"seconds/c\.0\.0\.1\.0 \(variable 'seconds': missing",
    ),
    "broken-array-metadata": (
        lambda s: (s / "estimate" / "zarr.json").write_text("{not json"),
        r"estimate/zarr\.json: the store's metadata file is damaged \(not valid JSON",
    ),
    "broken-failure-records": (
        lambda s: _failures_file(s).write_text('[{"replicate": 1, '),
        r"\.simstudy/failures/.*\.json \(records: not valid JSON",
    ),
    "flipped-level": (
        lambda s: _flip(_coordinate_chunk(s, "eps"), -3),
        r"eps/ \(coordinate 'eps': not the levels the metadata records\)",
    ),
}


@pytest.mark.parametrize("case", list(DAMAGE), ids=list(DAMAGE))
def test_reading_commands_name_the_damage_and_a_run_repairs_it(
    stores, tmp_path, capsys, case
):
    path, reference, store = stores
    damage, named = DAMAGE[case]
    damage(store)
    with pytest.raises(StoreError, match=named):
        simstudy.open_results(store)
    for argv in (
        ["status", str(store)],
        ["summarize", str(store)],
        ["report", str(store), "-o", str(tmp_path / "r.html")],
        ["verify", str(store), "--study", str(path), "--sample", "2"],
        ["errors", str(store)],
    ):
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert err.startswith("error: "), (argv, err)
        assert "internal error" not in err
        assert "hint: run python -m simstudy run STUDY.py --store" in err, err
    report = simstudy.run(path, store=store, scheduler="synchronous", fail_fast=False)
    assert report.repaired, case
    assert_store_consistent(store)
    assert cube_digest(store) == cube_digest(reference)
    assert simstudy.run(path, store=store, scheduler="synchronous").repaired == ()


def test_a_damaged_root_metadata_is_a_clear_error(stores, capsys):
    path, _, store = stores
    (store / "zarr.json").write_bytes(b"\x00garbage")
    assert main(["status", str(store)]) == 2
    err = capsys.readouterr().err
    assert "zarr.json: the store's metadata file is damaged" in err
    assert "--restart" in err
    with pytest.raises(StoreError, match="metadata file is damaged"):
        simstudy.run(path, store=store, scheduler="synchronous")
    simstudy.run(path, store=store, scheduler="synchronous", restart=True)
    assert_store_consistent(store)


def test_a_swapped_in_level_coordinate_is_rewritten_by_a_run(stores):
    """A coordinate that reads fine but holds other values (2.1e-314 for 0.0)."""
    path, reference, store = stores
    other = store.parent / "other.zarr"
    shutil.copytree(store, other)
    root = json.loads((store / "zarr.json").read_text())
    levels = root["attributes"]["simstudy"]["fingerprint"]["factors"]["eps"]
    import zarr

    eps: Any = zarr.open_group(str(other), mode="r+")["eps"]
    eps[:] = np.array([2.1e-314, 0.5])
    for f in _coordinate_chunk(other, "eps").parent.iterdir():
        shutil.copy(f, _coordinate_chunk(store, "eps").parent / f.name)
    assert levels == [0.0, 0.5]
    with pytest.raises(StoreError, match="coordinate 'eps'"):
        simstudy.open_results(store)
    simstudy.run(path, store=store, scheduler="synchronous", fail_fast=False)
    assert cube_digest(store) == cube_digest(reference)
