"""Reading a store: the cube as xarray, and its records. Never writes.

Layers: imports ``store.integrity``, ``store.records``, ``store.meta``,
``errors`` (xarray inside functions).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from simstudy.cube import METHOD
from simstudy.errors import StoreError
from simstudy.store.health import check_readable
from simstudy.store.integrity import check_codecs
from simstudy.store.migrations import OLD_METHOD
from simstudy.store.records import read_records

if TYPE_CHECKING:
    import xarray as xr

__all__ = ["open_results", "read_failures", "read_warnings"]


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

    Raises
    ------
    StoreError
        If ``path`` is not a simstudy store.
    """
    import xarray as xr

    p = Path(path)
    if not (p / "zarr.json").is_file():
        raise StoreError(
            f"{path} is not a simstudy store (no zarr.json).",
            hint="pass the .zarr directory that `simstudy run` wrote",
        )
    check_codecs(p)
    check_readable(p)  # damaged or missing chunks, coordinates, records
    ds: xr.Dataset = xr.open_zarr(str(p), consolidated=True)
    if OLD_METHOD in ds.dims and METHOD not in ds.dims:  # a format-1 store
        ds = ds.rename({OLD_METHOD: METHOD})
    meta = ds.attrs.get("simstudy", {})
    active = meta.get("active")
    if active and not include_hidden:
        ds = ds.sel({**active["factors"], METHOD: active["methods"]})
    if meta.get("target_mcse"):
        ds = _with_target_counts(ds, meta["factor_order"], meta["target_mcse"])
    return ds


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
