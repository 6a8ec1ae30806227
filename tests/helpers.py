"""Shared test helpers: the store invariant checker and cube digests."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import xarray as xr
from numpy.random import MT19937, PCG64, Generator, SeedSequence

from simstudy.store import open_results
from simstudy.store.crash import KILL_AT

FIXED = ("status", "seconds", "started", "worker", "warnings")


def wait_for(what: str, cond: Callable[[], bool], timeout: float = 60) -> None:
    """Poll ``cond`` until it holds; fail naming ``what`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.02)


def data_generator(seed: int, pkey: int, replicate: int) -> Generator:
    """The data stream of (point, replicate) under the spawn scheme, the plain
    numpy way (docs/streams.md)."""
    return Generator(PCG64(SeedSequence(seed, spawn_key=(pkey, replicate))))


def method_generator(seed: int, pkey: int, replicate: int, mkey: int) -> Generator:
    """The method stream of (point, replicate, method) under spawn."""
    return Generator(PCG64(SeedSequence(seed, spawn_key=(pkey, replicate, mkey))))


def pcg64_jumped(seed: int, k: int) -> Generator:
    """Stream k of the pcg64-jump scheme, the plain numpy way."""
    return Generator(PCG64(seed).jumped(k))


def mt_generator(row: np.ndarray) -> Generator:
    """A Generator on an MT19937 state row (624 key words + position)."""
    bg = MT19937(0)
    bg.state = {
        "bit_generator": "MT19937",
        "state": {"key": row[:624].astype(np.uint32), "pos": int(row[624])},
    }
    return Generator(bg)


def assert_store_consistent(path: str | Path, *, killed: bool = False) -> xr.Dataset:
    """Check dims, dtypes, status codes, and that status is the commit mark.

    A failed task has no outputs and has a failure record; an ok task has
    no failure record. A pending task may hold outputs or a record written
    before its status by a run that was killed or hit a full disk: they are
    not committed, and a resume writes them again, identically. ``killed``:
    the store of a run just killed with ``kill -9``, which may have left a
    chunk's ``*.partial`` file mid-write (the next run sweeps them).
    """
    ds = open_results(path, include_hidden=True).load()
    meta = ds.attrs["simstudy"]
    factors = meta["factor_order"]
    cube_dims = (*factors, "replicate", "method_name")
    assert ds["status"].dims == cube_dims
    assert ds["status"].dtype == np.int8
    assert ds["seconds"].dtype == np.float32
    assert ds["worker"].dtype == np.int16
    status = ds["status"].values
    assert set(np.unique(status)) <= {0, 1, 2}
    done = status != 0
    assert not np.isnan(ds["seconds"].values[status == 1]).any()
    assert (ds["worker"].values[done] >= 0).all()
    assert (ds["worker"].values[done] < len(meta["workers"])).all()
    for name in ds.data_vars:
        if name in FIXED or "replicate" not in ds[name].dims:
            continue
        values = ds[name].values
        assert ds[name].dims[: len(cube_dims)] == cube_dims
        extra = tuple(range(len(cube_dims), values.ndim))
        set_any = ~np.isnan(values).all(axis=extra) if extra else ~np.isnan(values)
        assert not (set_any & (status == 2)).any(), f"{name} set for a failed task"
    if not killed:  # a kill -9 mid-write may leave some; the next run sweeps them
        assert not list(Path(path).rglob("*.partial")), "leftover partial files"
    records = []
    for f in (Path(path) / ".simstudy" / "failures").glob("*.json"):
        records += json.loads(f.read_text())
    keys = {(*(r[k] for k in factors), r["replicate"], r["method"]) for r in records}
    assert len(keys) == len(records), "a task has two failure records"
    failed = set()
    for idx in zip(*np.nonzero(status != 0), strict=True):
        # tolist(): plain values for numeric and string (object) levels alike
        levels = [
            ds[f].values[i : i + 1].tolist()[0]
            for f, i in zip(factors, idx, strict=False)
        ]
        key = (*levels, int(idx[-2]), str(ds["method_name"].values[idx[-1]]))
        if status[idx] == 2:
            failed.add(key)
        else:
            assert key not in keys, f"an ok task has a failure record: {key}"
    assert failed <= keys, "a failed task has no failure record"
    return ds


def cube_digest(path: str | Path, *, include_hidden: bool = False) -> str:
    """Hash the numbers of a cube (outputs and status) by coordinate label.

    Timings and worker names differ between runs by nature; the numbers
    (outputs, status) must not.
    """
    ds = open_results(path, include_hidden=include_hidden)
    factors = ds.attrs["simstudy"]["factor_order"]
    ds = ds.sortby([*factors, "method_name"])
    h = hashlib.sha256()
    for name in sorted(str(v) for v in ds.data_vars):
        if name in ("seconds", "started", "worker"):
            continue
        h.update(name.encode())
        h.update(np.ascontiguousarray(ds[name].values).tobytes())
    for c in [*factors, "method_name"]:
        h.update(repr(ds[c].values.tolist()).encode())
    return h.hexdigest()


def reseal(store: str | Path) -> None:
    """Seal every chunk of a store as it is now (``simstudy.store.seals``).

    For tests that edit a store's chunks by hand with zarr, to make a state a
    run would reach otherwise (tasks left pending, a number an older numpy
    drew): without it, the hand-written chunks are rightly reported as not
    the chunks simstudy wrote there.
    """
    from simstudy.store.seals import seal_folder

    for array_dir in sorted(Path(store).iterdir()):
        if (array_dir / "zarr.json").is_file():
            seal_folder(array_dir)


def pretend_versions(store: str | Path, **versions: str) -> None:
    """Rewrite recorded library versions (e.g. ``numpy="1.0.0"``), as if an
    older install had made the store; the root metadata only."""
    import warnings

    import zarr

    group = zarr.open_group(store, mode="r+")
    meta = json.loads((Path(store) / "zarr.json").read_text())["attributes"]["simstudy"]
    meta["versions"] = {**meta["versions"], **versions}
    group.attrs["simstudy"] = meta
    with warnings.catch_warnings():  # .simstudy/ is not a zarr node
        warnings.simplefilter("ignore")
        zarr.consolidate_metadata(store)


def run_study_cli(
    folder: Path,
    store: Path,
    *args: str,
    kill: str | None = None,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """``simstudy run study.py`` in ``folder`` in a fresh process (synchronous,
    no progress); ``kill``: the crash point where the driver SIGKILLs itself."""
    environ = {**os.environ, **(env or {})}
    environ["PYTHONPATH"] = str(Path(__file__).resolve().parents[1])
    environ.pop(KILL_AT, None)
    if kill is not None:
        environ[KILL_AT] = kill
    cmd = [sys.executable, "-m", "simstudy", "run", "study.py", "--store", str(store)]
    return subprocess.run(
        [*cmd, "--scheduler", "synchronous", "--no-progress", *args],
        cwd=folder,
        env=environ,
        capture_output=True,
        text=True,
        timeout=120,
    )
