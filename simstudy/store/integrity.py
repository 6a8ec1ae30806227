"""What a store's files may hold, and what to do when one is damaged.

``check_codecs`` refuses metadata naming a codec simstudy never writes
(some, a pickle codec, would run code from the store) before anything
reads a chunk. ``drop_damaged_chunks`` finds chunk files whose checksum
fails and makes the tasks they cover pending, so a run recomputes them.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from simstudy.cube import METHOD, REPLICATE
from simstudy.errors import StoreError
from simstudy.store.files import read_bytes, write_atomic
from simstudy.store.health import read_json, survey
from simstudy.store.layout import Layout, coord
from simstudy.store.trust import ours
from simstudy.store.writer import Writer

__all__ = [
    "SAFE_CODECS",
    "check_codecs",
    "drop_damaged_chunks",
    "drop_orphan_arrays",
    "restore_array_metadata",
]

SAFE_CODECS = {"bytes", "zstd", "crc32c", "vlen-utf8"}  # all simstudy writes


def check_codecs(p: Path) -> None:
    """Refuse a store whose metadata names a codec simstudy never writes.

    Reading runs every codec an array declares; some (a pickle codec) would
    execute code from the store. So the metadata - plain JSON - is checked
    first, and only bytes, zstd, crc32c and vlen-utf8 are read.
    """
    metas: list[tuple[str, Any]] = []
    root = read_json(p / "zarr.json", p)
    consolidated = (root.get("consolidated_metadata") or {}).get("metadata") or {}
    metas += list(consolidated.items())
    metas += [(f.parent.name, read_json(f, p)) for f in p.glob("*/zarr.json")]
    for name, meta in metas:
        codecs = meta.get("codecs") or []
        for codec in codecs:
            if not isinstance(codec, dict) or codec.get("name") not in SAFE_CODECS:
                raise StoreError(
                    f"{p}: array {name!r} declares codec {codec!r}, which simstudy "
                    "never writes; refusing to read it (codecs such as pickle run "
                    "code from the store).",
                    hint="only open stores written by simstudy, or inspect this "
                    "one by hand",
                )


def drop_orphan_arrays(p: Path) -> list[str]:
    """Delete arrays the consolidated metadata does not know.

    A run killed right after creating an output's array (before the store's
    consolidated metadata names it) leaves one behind: it holds no result
    (those are written only after), and creating it again would collide.
    """
    root = read_json(p / "zarr.json", p)
    known = set((root.get("consolidated_metadata") or {}).get("metadata") or {})
    orphans = [
        f.parent
        for f in p.glob("*/zarr.json")
        if f.parent.name not in known and ours(f.parent)  # never a user's folder
    ]
    for folder in orphans:
        shutil.rmtree(folder)
    return [f.name for f in orphans]


def restore_array_metadata(p: Path) -> list[str]:
    """Rewrite damaged ``<array>/zarr.json`` files from the root's copy.

    The root ``zarr.json`` keeps every array's metadata (consolidated), so
    an array's own file that no longer parses is simply written again.
    Returns the files restored, relative to the store.
    """
    root = read_json(p / "zarr.json", p)
    consolidated = (root.get("consolidated_metadata") or {}).get("metadata") or {}
    restored = []
    for f in sorted(p.glob("*/zarr.json")):
        try:
            json.loads(read_bytes(f))
        except (ValueError, UnicodeDecodeError):
            entry = consolidated.get(f.parent.name)
            if entry is None:
                continue  # an orphan: drop_orphan_arrays deletes it
            write_atomic(f, json.dumps(entry, indent=2).encode())
            restored.append(str(f.relative_to(p)))
    return restored


def drop_damaged_chunks(layout: Layout, writer: Writer) -> list[str]:
    """Find what is damaged or missing (``store.health.survey``); make the
    tasks concerned pending so the run recomputes them.

    Status goes first: the status of the tasks a damaged or missing chunk
    covers is set to 0 (a damaged status chunk is removed: a missing status
    chunk reads as pending; a damaged records file makes its whole group
    pending), then the damaged files are removed. Coordinates that disagree
    with the metadata are written again from it. Returns one line per
    problem (file, variable, what is wrong).
    """
    problems = survey(layout.path, layout.root, layout.meta.to_json())
    if not problems:
        return []
    lines = problems.lines(layout.path)
    n = len(layout.factor_names)
    status = writer.chunked("status")
    damaged = [(writer.chunked(a.name), c) for a, c, _ in problems.chunks]
    for array, coords in damaged:  # a missing status chunk reads as pending
        if array is status:
            status.path(coords).unlink(missing_ok=True)
    for f in problems.records:
        pidx, chunk = _group_of(f.name)
        for s in status.chunk_files():
            at = status.coords_of(s)
            if at[:n] == pidx and at[n] == chunk:
                s.unlink()
    for array, coords in damaged:
        rows, cols = array.chunks[n], array.chunks[n + 1]
        start = coords[n] * rows
        stop = min(start + rows, layout.replicates)
        methods = np.arange(coords[n + 1] * cols, (coords[n + 1] + 1) * cols)
        methods = methods[methods < len(layout.methods)]
        if array is not status and start < stop and len(methods):
            pending = np.zeros((stop - start, len(methods)), np.int8)
            writer.cache.put(status, coords[:n], start, stop, methods, pending)
    writer.flush()
    for array, coords in damaged:
        array.path(coords).unlink(missing_ok=True)
        writer.cache.chunks.pop((array.name, coords), None)
    for f in problems.records:
        f.unlink()
        writer.records.files[f.parent.name].discard(f.name)
    if problems.coords:
        _rewrite_coordinates(layout, problems.coords)
    return lines


def _group_of(name: str) -> tuple[tuple[int, ...], int]:
    """The (point index, status chunk) of a records file name."""
    head, _, chunk = name.removesuffix(".json").rpartition("_c")
    pidx = () if head == "p" else tuple(int(i) for i in head.split("-"))
    return pidx, int(chunk)


def _rewrite_coordinates(layout: Layout, names: list[str]) -> None:
    """Write coordinates again from the levels the metadata records, once
    the store's arrays confirm their lengths (never from metadata alone)."""
    held = tuple(layout.array("status").shape[: len(layout.cube_shape)])
    if any(n > h for n, h in zip(layout.cube_shape, held, strict=True)):
        raise StoreError(
            f"store {layout.path}: its metadata says the cube is "
            f"{layout.cube_shape}, its status array holds {held}; refusing to "
            "write coordinates of that length.",
            hint="restore the store's zarr.json from a backup, or run with "
            "--restart to compute everything again",
        )
    values: dict[str, list[Any] | range] = {
        f: layout.levels[f] for f in layout.factor_names
    }
    values[REPLICATE] = range(layout.replicates)
    values[METHOD] = layout.methods
    for name in names:
        if name in values:
            coord(layout.root, name, values[name], overwrite=True)
    layout.consolidate()
    layout.reopen()
