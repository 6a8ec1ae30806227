"""Bring a store made by an older simstudy to this version's format.

Format 1 named the method dimension ``method``, which xarray's own
``sel(method=...)`` keyword shadows (``ds.sel(method="wald")`` silently
selected nothing). Format 2 names it ``cube.METHOD``. Migrating rewrites
metadata only, never a chunk of results, and every step can be repeated: a
kill at any point leaves a store whose consolidated metadata (what readers
open) is either the old or the new one, and the next run finishes the job.
``open_results`` reads an unmigrated store as before, renaming the
dimension in memory.

Layers: imports ``cube`` and ``store.layout``, ``store.meta`` (and zarr).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from simstudy.cube import METHOD
from simstudy.store.crash import crash_point
from simstudy.store.files import read_bytes, write_atomic
from simstudy.store.layout import coord
from simstudy.store.meta import FORMAT
from simstudy.store.trust import ours

__all__ = ["OLD_METHOD", "migrate", "needs_migration"]

OLD_METHOD = "method"  # format 1's method dimension


def _format(p: Path) -> int:
    root = json.loads(read_bytes(p / "zarr.json"))
    meta: dict[str, Any] = root.get("attributes", {}).get("simstudy", {})
    return int(meta.get("format", 1))


def needs_migration(p: Path) -> bool:
    """Whether the store at ``p`` is older than this version's format."""
    return _format(p) < FORMAT or (p / OLD_METHOD / "zarr.json").exists()


def _write_json(path: Path, data: Any) -> None:
    write_atomic(path, json.dumps(data, indent=2).encode())


def _renamed(meta: dict[str, Any]) -> dict[str, Any]:
    dims = meta.get("dimension_names") or []
    if OLD_METHOD in dims:
        meta = {
            **meta,
            "dimension_names": [METHOD if d == OLD_METHOD else d for d in dims],
        }
    return meta


def migrate(p: Path) -> bool:
    """Migrate the store at ``p`` (held under its lock); True if it did.

    Order: the method coordinate is written under its new name; each array's
    own metadata is renamed; then the root's consolidated metadata, which
    readers open, is replaced in one atomic write; last the old coordinate
    is deleted.
    """
    if not needs_migration(p):
        return False
    old = p / OLD_METHOD / "zarr.json"
    if old.exists():  # the method coordinate under its new name, values kept
        methods = np.asarray(zarr.open_array(str(p / OLD_METHOD), mode="r")[:])
        root = zarr.open_group(str(p), mode="r+", use_consolidated=False)
        coord(root, METHOD, [str(m) for m in methods.tolist()], overwrite=True)
    for meta_file in p.glob("*/zarr.json"):
        if meta_file.parent.name == OLD_METHOD or not ours(meta_file.parent):
            continue  # a folder of the user's is never rewritten
        meta = json.loads(read_bytes(meta_file))
        renamed = _renamed(meta)
        if renamed is not meta:
            _write_json(meta_file, renamed)
    crash_point("migrate:arrays")
    top = json.loads(read_bytes(p / "zarr.json"))
    members = {
        f.parent.name: json.loads(read_bytes(f))
        for f in p.glob("*/zarr.json")
        if f.parent.name != OLD_METHOD and ours(f.parent)
    }
    consolidated = dict(top.get("consolidated_metadata") or {"kind": "inline"})
    consolidated["metadata"] = dict(sorted(members.items()))
    consolidated.setdefault("must_understand", False)
    top["consolidated_metadata"] = consolidated
    top["attributes"]["simstudy"]["format"] = FORMAT
    _write_json(p / "zarr.json", top)
    if old.exists() and ours(p / OLD_METHOD):
        shutil.rmtree(p / OLD_METHOD)
    return True
