"""Reading a store: the cube as xarray, and its records. Never writes.

A store of an older format reads as this version's through
``store.migrations.as_current`` (old formats are read there, nowhere else).
"""

from __future__ import annotations

import itertools
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from simstudy.analysis.ledger import compact_records
from simstudy.cube import METHOD, point_json
from simstudy.errors import StoreError
from simstudy.store.chunks import ChunkedArray
from simstudy.store.files import scan
from simstudy.store.health import check_readable
from simstudy.store.integrity import check_codecs
from simstudy.store.migrations import as_current
from simstudy.store.records import read_records
from simstudy.store.trust import check_owned, check_sizes

if TYPE_CHECKING:
    import xarray as xr

__all__ = [
    "PointCounts",
    "open_results",
    "read_failures",
    "read_warnings",
    "status_counts",
]


def read_failures(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Return the failure records of a store: point levels, replicate, method,
    type, message, traceback (plain JSON; nothing is unpickled)."""
    return read_records(path, "failures")


def read_warnings(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Return the warning records of a store: point levels, replicate, method,
    category, message (the first) and count of each task that warned."""
    return read_records(path, "warnings")


def open_results(
    path: str | os.PathLike[str], *, include_hidden: bool = False
) -> xr.Dataset:
    """Open a result cube as an ``xarray.Dataset`` (lazy, read-only).

    Parameters
    ----------
    path : str or PathLike
        The store directory (``<study>.zarr``).
    include_hidden : bool
        Also show the levels and methods the study no longer has (removed
        from the study file after they ran; kept in the store, hidden by
        default, in the study's order otherwise).

    Returns
    -------
    xr.Dataset
        One dimension per factor, then ``replicate`` and ``method``. The
        boolean coordinate ``in_design`` (over the factor dims) is True at
        the study's design points: everywhere for a full cross; with
        ``where=`` or factors that vary together, the other points of the
        cross were never computed (status pending, outputs NaN) and
        ``summarize``, plots and ``status`` leave them out. The design
        points alone: ``cells = ds.stack(point=[*factors])``, then
        ``cells.isel(point=cells.in_design.values)``.

    Raises
    ------
    StoreError
        If ``path`` is not a simstudy store.
    """
    import xarray as xr

    store = _checked(path)
    ds = as_current(xr.open_zarr(str(store), consolidated=True))
    meta = ds.attrs.get("simstudy", {})
    active = meta.get("active")
    if active and not include_hidden:
        ds = ds.sel({**active["factors"], METHOD: active["methods"]})
    ds = _with_design(ds, meta["factor_order"], meta.get("design"), include_hidden)
    if meta.get("target_mcse"):
        ds = _with_target_counts(ds, meta["factor_order"], meta["target_mcse"])
    # the failure ledger's kinds and warning categories (simstudy.analysis.ledger)
    ds.attrs["records"] = compact_records(
        read_failures(store), read_warnings(store), list(meta.get("factor_order", []))
    )
    return ds


def _with_design(
    ds: xr.Dataset,
    factors: list[str],
    design: list[list[Any]] | None,
    include_hidden: bool,
) -> xr.Dataset:
    """Add the coordinate ``in_design`` over the factor dims: True at the
    study's design points. Without ``where=`` or factors that vary together
    it is True everywhere; levels only ``include_hidden`` shows count as in
    (they are shown as they ran)."""
    import xarray as xr

    shape = tuple(ds.sizes[f] for f in factors)
    index = {f: {v: i for i, v in enumerate(ds[f].values.tolist())} for f in factors}
    mask = np.ones(shape, bool)
    if design is not None:
        mask[...] = False
        for point in design:
            if all(v in index[f] for f, v in zip(factors, point, strict=True)):
                at = tuple(index[f][v] for f, v in zip(factors, point, strict=True))
                mask[at] = True
        active = ds.attrs.get("simstudy", {}).get("active") or {}
        for axis, f in enumerate(factors):  # hidden levels: shown as they ran
            shown = (active.get("factors") or {}).get(f)
            if include_hidden and shown is not None:
                hidden = ~np.isin(ds[f].values, np.asarray(shown))
                mask[(slice(None),) * axis + (hidden,)] = True
    coords = {f: ds[f] for f in factors}
    return ds.assign_coords(in_design=xr.DataArray(mask, coords=coords, dims=factors))


def _with_target_counts(
    ds: xr.Dataset, factors: list[str], record: dict[str, Any]
) -> xr.Dataset:
    """Add ``target_replicates`` (replicates the --target-mcse rule gave each
    design point; 0 where it did not run) and ``target_met`` (the target was
    met there, as opposed to stopping at --max-replicates)."""
    import xarray as xr

    shape = tuple(ds.sizes[f] for f in factors)
    reps = np.zeros(shape, np.int64)
    met = np.zeros(shape, bool)
    index = {f: {v: i for i, v in enumerate(ds[f].values.tolist())} for f in factors}
    for entry in record["points"]:
        point = entry["point"]
        if all(point[f] in index[f] for f in factors):
            at = tuple(index[f][point[f]] for f in factors)
            reps[at] = entry["replicates"]
            met[at] = entry["state"] == "met"
    coords = {f: ds[f] for f in factors}
    return ds.assign(
        target_replicates=xr.DataArray(reps, coords=coords, dims=factors),
        target_met=xr.DataArray(met, coords=coords, dims=factors),
    )


@dataclass
class PointCounts:
    """Tasks of one design point: ok, failed, pending (planned, not done)."""

    point: dict[str, Any]
    ok: int = 0
    failed: int = 0
    pending: int = 0
    target: dict[str, Any] | None = None  # its --target-mcse entry, if any


def status_counts(
    path: str | os.PathLike[str],
) -> tuple[list[PointCounts], dict[str, Any] | None]:
    """Count each shown design point's tasks from the status chunk files.

    What ``status`` prints, without building the cube: memory and time
    follow the status chunks written, not the replicates (a 10^9-task
    store counts in seconds). Hidden levels and methods are left out, as
    ``open_results`` does; after a ``--target-mcse`` run, replicates past a
    point's count are not pending. Returns the counts per design point and
    the ``--target-mcse`` record (None without one).
    """
    import zarr

    store = _checked(path)
    root = zarr.open_group(str(store), mode="r")
    meta: dict[str, Any] = dict(root.attrs.asdict()["simstudy"])  # type: ignore[arg-type]
    fingerprint, factors = meta["fingerprint"], list(meta["factor_order"])
    levels = {f: list(fingerprint["factors"][f]) for f in factors}
    methods = list(fingerprint["methods"])
    active = meta.get("active") or {}
    shown = {f: list((active.get("factors") or levels)[f]) for f in factors}
    midx = np.array([methods.index(m) for m in active.get("methods") or methods])
    record = meta.get("target_mcse") or {}
    targets = {point_json(e["point"]): e for e in record.get("points", [])}
    status = ChunkedArray(store, "status", root["status"])
    n = len(factors)
    rows, cols = status.chunks[n], status.chunks[n + 1]
    written: dict[tuple[int, ...], set[int]] = {}
    for f in status.chunk_files():
        at = status.coords_of(f)
        written.setdefault(at[:n], set()).add(at[n])
    replicates = int(fingerprint["replicates"])
    design = meta.get("design")
    kept = None if design is None else {tuple(p) for p in design}
    out = []
    for combo in itertools.product(*(shown[f] for f in factors)):
        if kept is not None and tuple(combo) not in kept:
            continue  # outside the design: never a task, never counted
        point = dict(zip(factors, combo, strict=True))
        pidx = tuple(levels[f].index(v) for f, v in point.items())
        entry = targets.get(point_json(point))
        want = replicates
        if entry is not None and entry["replicates"]:
            want = min(replicates, int(entry["replicates"]))
        counts = PointCounts(point, target=entry)
        unseen = want  # planned replicates in chunks never written
        for row_chunk in sorted(written.get(pidx, ())):
            block = _status_block(status, pidx, row_chunk, midx, cols)
            block = block[: max(0, min(rows, replicates - row_chunk * rows))]
            planned = max(0, min(len(block), want - row_chunk * rows))
            counts.ok += int((block == 1).sum())
            counts.failed += int((block == 2).sum())
            counts.pending += int((block[:planned] == 0).sum())
            unseen -= planned
        counts.pending += unseen * len(midx)
        out.append(counts)
    return out, meta.get("target_mcse")


def _status_block(
    status: ChunkedArray,
    pidx: tuple[int, ...],
    row_chunk: int,
    midx: np.ndarray[Any, Any],
    cols: int,
) -> np.ndarray[Any, Any]:
    """One replicate chunk of a point's status: (replicates, shown methods)."""
    n = len(pidx)
    block = np.zeros((status.chunks[n], len(midx)), np.int8)
    for method_chunk in set((midx // cols).tolist()):
        columns = np.flatnonzero(midx // cols == method_chunk)
        chunk = status.read((*pidx, row_chunk, int(method_chunk)))[(0,) * n]
        block[:, columns] = chunk[:, midx[columns] % cols]
    return block


def _checked(path: str | os.PathLike[str]) -> Path:
    """A store's path, once it is known to be one and readable: no damaged
    or missing chunks, coordinates or records, no link or special file, and
    metadata within limits (StoreError naming what is wrong)."""
    store = Path(path)
    if not (store / "zarr.json").is_file():
        raise StoreError(
            f"{path} is not a simstudy store (no zarr.json).",
            hint="pass the .zarr directory that `simstudy run` wrote",
        )
    check_owned(store)  # someone's zarr store: not ours to read as a cube
    scan(store)  # links, FIFOs, devices: refused before any file is opened
    check_codecs(store)
    check_sizes(store)
    check_readable(store)
    return store
