"""Bring a store made by an older simstudy to this version's format.

``STEPS`` is the chain: ``STEPS[k - 1]`` takes format ``k`` to ``k + 1``, so
``FORMAT == len(STEPS) + 1``. Each step rewrites a store on disk (under its
lock, repeatable: a kill at any point leaves a store whose consolidated
metadata, what readers open, is either the old or the new one, and the next
run finishes the job) and says how a reader sees an unmigrated store in
memory (``as_current``, the one place old formats are read). A format change
is one new step here, one fixture store in ``tests/data/format<k>/``, and
``FORMAT`` in ``store.meta``.

1 -> 2: format 1 named the method dimension ``method``, which xarray's own
``sel(method=...)`` keyword shadows (``ds.sel(method="wald")`` silently
selected nothing). Format 2 names it ``cube.METHOD``. Migrating rewrites
metadata only, never a chunk of results.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import zarr

from simstudy.cube import METHOD
from simstudy.store.crash import crash_point
from simstudy.store.files import read_bytes, write_atomic
from simstudy.store.layout import coord
from simstudy.store.meta import FORMAT
from simstudy.store.trust import ours

if TYPE_CHECKING:
    import xarray as xr

__all__ = [
    "STEPS",
    "Step",
    "as_current",
    "migrate",
    "needs_migration",
    "stored_format",
]

OLD_METHOD = "method"  # format 1's method dimension


@dataclass(frozen=True, slots=True)
class Step:
    """One migration: a store of format ``to - 1`` becomes format ``to``."""

    to: int
    what: str
    unfinished: Callable[[Path], bool]  # a killed earlier migration left work
    on_disk: Callable[[Path], None]  # rewrite the store (repeatable)
    in_memory: Callable[[xr.Dataset], xr.Dataset]  # how readers see it unmigrated


def stored_format(path: Path) -> int:
    """The format the store at ``p`` says it has (1 before formats were kept)."""
    root = json.loads(read_bytes(path / "zarr.json"))
    meta: dict[str, Any] = root.get("attributes", {}).get("simstudy", {})
    return int(meta.get("format", 1))


def needs_migration(path: Path) -> bool:
    """Whether the store at ``p`` is older than this version's format."""
    return stored_format(path) < FORMAT or any(step.unfinished(path) for step in STEPS)


def migrate(path: Path) -> bool:
    """Migrate the store at ``p`` (held under its lock) step by step to
    ``FORMAT``; True if it did anything."""
    done = False
    for step in STEPS:
        if stored_format(path) < step.to or step.unfinished(path):
            step.on_disk(path)
            done = True
    return done


def as_current(ds: xr.Dataset) -> xr.Dataset:
    """A store's dataset as this version's format shows it (an unmigrated
    store is read through each missing step's in-memory view)."""
    meta = ds.attrs.get("simstudy", {})
    found = int(meta.get("format", 1))
    for step in STEPS:
        if found < step.to:
            ds = step.in_memory(ds)
    return ds


def _write_json(path: Path, data: Any) -> None:
    write_atomic(path, json.dumps(data, indent=2).encode())


def _consolidate(path: Path, to: int, *, leave_out: str = "") -> None:
    """Replace the root's consolidated metadata (what readers open) by the
    members' own, in one atomic write, and record format ``to``."""
    top = json.loads(read_bytes(path / "zarr.json"))
    members = {
        f.parent.name: json.loads(read_bytes(f))
        for f in path.glob("*/zarr.json")
        if f.parent.name != leave_out and ours(f.parent)
    }
    consolidated = dict(top.get("consolidated_metadata") or {"kind": "inline"})
    consolidated["metadata"] = dict(sorted(members.items()))
    consolidated.setdefault("must_understand", False)
    top["consolidated_metadata"] = consolidated
    top["attributes"]["simstudy"]["format"] = to
    _write_json(path / "zarr.json", top)


# ---- 1 -> 2: the method dimension renamed --------------------------------


def _renamed(meta: dict[str, Any]) -> dict[str, Any]:
    dims = meta.get("dimension_names") or []
    if OLD_METHOD in dims:
        meta = {
            **meta,
            "dimension_names": [METHOD if d == OLD_METHOD else d for d in dims],
        }
    return meta


def _old_method_left(path: Path) -> bool:
    return (path / OLD_METHOD / "zarr.json").exists()


def _rename_method(path: Path) -> None:
    """Order: the method coordinate is written under its new name; each
    array's own metadata is renamed; then the root's consolidated metadata
    is replaced in one atomic write; last the old coordinate is deleted."""
    old = path / OLD_METHOD / "zarr.json"
    if old.exists():  # the method coordinate under its new name, values kept
        methods = np.asarray(zarr.open_array(str(path / OLD_METHOD), mode="r")[:])
        root = zarr.open_group(str(path), mode="r+", use_consolidated=False)
        coord(root, METHOD, [str(m) for m in methods.tolist()], overwrite=True)
    for meta_file in path.glob("*/zarr.json"):
        if meta_file.parent.name == OLD_METHOD or not ours(meta_file.parent):
            continue  # a folder of the user's is never rewritten
        meta = json.loads(read_bytes(meta_file))
        renamed = _renamed(meta)
        if renamed is not meta:
            _write_json(meta_file, renamed)
    crash_point("migrate:arrays")
    _consolidate(path, 2, leave_out=OLD_METHOD)
    if old.exists() and ours(path / OLD_METHOD):
        shutil.rmtree(path / OLD_METHOD)


def _method_renamed_in_memory(ds: xr.Dataset) -> xr.Dataset:
    if OLD_METHOD in ds.dims and METHOD not in ds.dims:
        ds = ds.rename({OLD_METHOD: METHOD})
    return ds


STEPS: list[Step] = [
    Step(
        2,
        "the method dimension is cube.METHOD",
        _old_method_left,
        _rename_method,
        _method_renamed_in_memory,
    ),
]
