"""The cube on disk: its zarr group, coordinates, arrays and metadata.

``Layout`` knows the store's shape (factor levels in store order,
replicates, methods), creates arrays and coordinates, and reads and writes
the metadata; the writer, the records and the integrity checks work
through it.
"""

from __future__ import annotations

import shutil
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import zarr
from zarr.codecs import Crc32cCodec, ZstdCodec

from simstudy.cube import FIXED_VARS, METHOD, REPLICATE
from simstudy.declare.grid import CHUNK_METHODS, CHUNK_REPLICATES, chunk_replicates
from simstudy.declare.outputs import OutputSpecs
from simstudy.declare.study import Level, Study
from simstudy.store.crash import crash_point
from simstudy.store.meta import META, StoreMeta, versions
from simstudy.store.trust import foreign

__all__ = ["Layout", "coord"]

COMPRESSORS = (ZstdCodec(level=1), Crc32cCodec())
# "c.0.3.0" files side by side: a new chunk costs no mkdir
CHUNK_KEYS = {"name": "default", "separator": "."}


def coord(
    root: zarr.Group,
    name: str,
    values: list[Any] | range,
    *,
    overwrite: bool = False,
) -> None:
    """Write a coordinate array (a factor's levels, replicates, methods).

    A ``range`` (the replicates) is written a slice at a time: 10^8
    replicates never become a list or one 800 MB array in memory.
    """
    if isinstance(values, range):
        # int32 while it fits: half the bytes to compress (10^8 replicates:
        # ~3 s instead of ~6 s here); xarray reads either as the same labels
        wide = values.stop > np.iinfo(np.int32).max
        arr = root.create_array(
            name,
            shape=(len(values),),
            dtype="int64" if wide else "int32",
            dimension_names=[name],
            overwrite=overwrite,
        )
        step = 2**22
        for start in range(0, len(values), step):
            stop = min(start + step, len(values))
            arr[start:stop] = np.arange(values.start + start, values.start + stop)
        return
    data = np.array(values)
    if data.dtype.kind == "U":
        arr = root.create_array(
            name,
            shape=data.shape,
            dtype=str,
            dimension_names=[name],
            overwrite=overwrite,
        )
        arr[:] = data
    else:
        root.create_array(name, data=data, dimension_names=[name], overwrite=overwrite)


def consolidate(path: Path) -> None:
    """Rewrite the consolidated metadata (xarray opens the store from it)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # our .simstudy folder is not a zarr node
        zarr.consolidate_metadata(str(path))


class Layout:
    """The zarr group of a store and what it holds."""

    def __init__(self, path: Path, root: zarr.Group) -> None:
        self.path = path
        self.root = root
        raw: dict[str, Any] = dict(root.attrs.asdict()["simstudy"])  # type: ignore[arg-type]
        self.meta = StoreMeta.from_json(raw)
        self.factor_names: list[str] = list(self.meta.factor_order)
        fingerprint = self.meta.fingerprint
        self.levels: dict[str, list[Level]] = {
            f: list(fingerprint["factors"][f]) for f in self.factor_names
        }
        self.methods: list[str] = list(fingerprint["methods"])
        self.replicates: int = int(fingerprint["replicates"])
        self._arrays: dict[str, Any] = {}
        self._vars: list[str] | None = None
        self._group_rows: int | None = None
        self._specs: OutputSpecs | None = None

    @classmethod
    def open(cls, path: Path) -> Layout:
        return cls(path, zarr.open_group(str(path), mode="r+"))

    @classmethod
    def create(
        cls,
        path: Path,
        study: Study,
        provenance: dict[str, str],
        declared: dict[str, Any],
    ) -> Layout:
        """Make a new, empty cube for ``study`` at ``path``, all or nothing.

        The cube is built in ``<store>/.simstudy/creating`` and moved in, the
        root ``zarr.json`` last: until that rename the store has no root and
        is no store (readers say so; the next run builds it again), after it
        the store is complete. ``declared`` (truth, measures, study file)
        joins the metadata from the start.
        """
        scratch = path / META / "creating"
        keep = {c.name for c in foreign(path)}  # the user's files stay
        if scratch.exists():
            shutil.rmtree(scratch)
        for child in path.iterdir():  # what a killed creation left behind
            if child.name != META and child.name not in keep:
                shutil.rmtree(child) if child.is_dir() else child.unlink()
        root = zarr.open_group(str(scratch), mode="w", zarr_format=3)
        meta = StoreMeta(
            study=study.name,
            factor_order=list(study.factors),
            fingerprint=study.fingerprint(),
            versions={**versions(), **provenance},
            created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            **declared,
        )
        root.attrs.update(
            {
                "simstudy": meta.to_json(),
                "study": study.name,
                "seed": study.seed,
                "rng": study.scheme,
                "simstudy_version": meta.versions["simstudy"],
            }
        )
        for f in meta.factor_order:
            coord(root, f, list(study.factors[f]))
        coord(root, REPLICATE, range(study.replicates))
        coord(root, METHOD, study.method_names)
        built = cls(scratch, root)
        for name, (dtype, fill) in FIXED_VARS.items():
            built.new_var(name, dtype, fill, ())
        built.consolidate()
        crash_point("create:built")
        for child in scratch.iterdir():
            if child.name != "zarr.json":
                child.rename(path / child.name)
        crash_point("create:moved")
        (scratch / "zarr.json").replace(path / "zarr.json")  # now it is a store
        shutil.rmtree(scratch)
        return cls.open(path)

    def reopen(self) -> None:
        """Open the group again (after resizing: it was read from consolidated
        metadata) and forget the arrays opened so far."""
        self.root = zarr.open_group(str(self.path), mode="r+")
        self._arrays.clear()

    # ---- shape -------------------------------------------------------
    @property
    def cube_shape(self) -> tuple[int, ...]:
        return (
            *(len(self.levels[f]) for f in self.factor_names),
            self.replicates,
            len(self.methods),
        )

    def point_index(self, point: dict[str, Level]) -> tuple[int, ...]:
        """Return the store index of a design point."""
        return tuple(self.levels[f].index(point[f]) for f in self.factor_names)

    def method_index(self, names: list[str]) -> np.ndarray[Any, Any]:
        return np.array([self.methods.index(n) for n in names], dtype=np.intp)

    def point_of(self, pidx: tuple[int, ...]) -> dict[str, Level]:
        """Return the levels of the design point at a store index."""
        return {
            k: self.levels[k][i] for k, i in zip(self.factor_names, pidx, strict=True)
        }

    @property
    def group_rows(self) -> int:
        """Replicates per status chunk: the unit of buffering and of records files."""
        if self._group_rows is None:
            if "status" not in self.var_names():
                return CHUNK_REPLICATES  # creating the store
            n = len(self.factor_names)
            self._group_rows = int(self.array("status").chunks[n])
        return self._group_rows

    # ---- arrays ------------------------------------------------------
    def var_names(self) -> list[str]:
        """The data variables: outputs and the per-task fixed variables."""
        if self._vars is None:
            skip = {*self.factor_names, REPLICATE, METHOD}
            with warnings.catch_warnings():
                # our .simstudy folder (lock, failures) is not a zarr node
                warnings.simplefilter("ignore")
                self._vars = [k for k in self.root.array_keys() if k not in skip]
        return self._vars

    def output_names(self) -> list[str]:
        return [v for v in self.var_names() if v not in FIXED_VARS]

    def array(self, name: str) -> Any:
        arr = self._arrays.get(name)
        if arr is None:
            arr = self._arrays[name] = self.root[name]
        return arr

    def new_var(self, name: str, dtype: str, fill: Any, shape: tuple[int, ...]) -> None:
        """Create a data variable spanning the cube (+ an output's own dims)."""
        dims = [*self.factor_names, REPLICATE, METHOD]
        dims += [f"{name}_dim_{i}" for i in range(len(shape))]
        rows = CHUNK_REPLICATES if name in FIXED_VARS else chunk_replicates(shape)
        chunks = (
            *([1] * len(self.factor_names)),
            min(rows, self.group_rows),
            CHUNK_METHODS,
            *shape,
        )
        self._arrays[name] = self.root.create_array(
            name,
            shape=(*self.cube_shape, *shape),
            chunks=tuple(max(1, c) for c in chunks),
            dtype=dtype,
            fill_value=fill,
            dimension_names=dims,
            compressors=list(COMPRESSORS),
            chunk_key_encoding=CHUNK_KEYS,  # type: ignore[arg-type]
        )
        if self._vars is not None:
            self._vars.append(name)

    def resize(self) -> None:
        """Give every data variable the current cube shape (after growing)."""
        for name in self.var_names():
            arr = self.array(name)
            arr.resize((*self.cube_shape, *arr.shape[len(self.cube_shape) :]))

    def output_specs(self) -> OutputSpecs:
        """The outputs seen so far: per-task shapes and each method's names."""
        if self._specs is None:
            n = len(self.cube_shape)
            self._specs = OutputSpecs(
                {k: tuple(self.array(k).shape[n:]) for k in self.output_names()},
                {m: tuple(names) for m, names in self.meta.outputs.items()},
            )
        return self._specs.copy()

    def forget_specs(self) -> None:
        self._specs = None

    # ---- reading -----------------------------------------------------
    def status_of(
        self, pidx: tuple[int, ...], replicates: int, methods: np.ndarray[Any, Any]
    ) -> np.ndarray[Any, Any]:
        """Return the status (replicates x methods) of one point."""
        out: np.ndarray[Any, Any] = self.array("status").get_orthogonal_selection(
            (*pidx, slice(0, replicates), methods)
        )
        return out

    def read_task_outputs(
        self, pidx: tuple[int, ...], replicate: int
    ) -> dict[str, np.ndarray[Any, Any]]:
        """Each output's stored values at one (point, replicate): arrays
        (methods, *output shape)."""
        return {
            name: np.asarray(self.array(name)[(*pidx, replicate)])
            for name in self.output_names()
        }

    # ---- metadata ----------------------------------------------------
    def save_meta(self) -> None:
        self.root.attrs["simstudy"] = self.meta.to_json()
        self.consolidate()

    def consolidate(self) -> None:
        consolidate(self.path)
