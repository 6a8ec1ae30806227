"""What a store's files may hold, and what to do when one is damaged.

``check_codecs`` refuses metadata naming a codec simstudy never writes
(some, a pickle codec, would run code from the store) before anything
reads a chunk. ``drop_damaged_chunks`` finds chunk files whose checksum
fails and makes the tasks they cover pending, so a run recomputes them.

Layers: imports ``errors`` and ``store.chunks``, ``store.layout``,
``store.writer`` (and numpy).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from simstudy.errors import StoreError
from simstudy.store.chunks import ChunkedArray
from simstudy.store.layout import Layout
from simstudy.store.writer import Writer

__all__ = ["SAFE_CODECS", "check_codecs", "drop_damaged_chunks", "drop_orphan_arrays"]

SAFE_CODECS = {"bytes", "zstd", "crc32c", "vlen-utf8"}  # all simstudy writes


def check_codecs(p: Path) -> None:
    """Refuse a store whose metadata names a codec simstudy never writes.

    Reading runs every codec an array declares; some (a pickle codec) would
    execute code from the store. So the metadata - plain JSON - is checked
    first, and only bytes, zstd, crc32c and vlen-utf8 are read.
    """
    metas: list[tuple[str, Any]] = []
    root = json.loads((p / "zarr.json").read_text())
    consolidated = (root.get("consolidated_metadata") or {}).get("metadata") or {}
    metas += list(consolidated.items())
    metas += [(f.parent.name, json.loads(f.read_text())) for f in p.glob("*/zarr.json")]
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
    root = json.loads((p / "zarr.json").read_text())
    known = set((root.get("consolidated_metadata") or {}).get("metadata") or {})
    orphans = [f.parent for f in p.glob("*/zarr.json") if f.parent.name not in known]
    for folder in orphans:
        shutil.rmtree(folder)
    return [f.name for f in orphans]


def drop_damaged_chunks(layout: Layout, writer: Writer) -> list[str]:
    """Check every chunk's crc32c; make the tasks of a damaged one pending.

    The status of the tasks a damaged chunk covers is set to 0 first, then
    the chunk file is removed, so a resume recomputes exactly those tasks.
    Returns the damaged chunk files, relative to the store.
    """
    n = len(layout.factor_names)
    damaged: list[tuple[ChunkedArray, tuple[int, ...]]] = []
    for name in layout.var_names():
        array = writer.chunked(name)
        damaged += [
            (array, array.coords_of(f))
            for f in array.chunk_files()
            if not array.intact(f)
        ]
    if not damaged:
        return []
    status = writer.chunked("status")
    for array, coords in damaged:  # a missing status chunk reads as pending
        if array is status:
            status.path(coords).unlink(missing_ok=True)
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
    return [
        str(array.path(coords).relative_to(layout.path)) for array, coords in damaged
    ]
