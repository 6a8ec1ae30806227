"""The zarr result cube: create, open, extend, write a batch, lock, fingerprint.

The only module that writes a store. A batch's outputs are written before
its status: status is the commit mark. Failure details live in
``<store>/.simstudy/failures/*.json``; the lock is ``<store>/.simstudy/lock``.

Layers: imports ``study, grid, batch, errors`` (and xarray, zarr, numpy).
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import socket
import threading
import time
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import zarr
from zarr.codecs import Crc32cCodec, ZstdCodec

from simstudy.batch import FAILED, OK, BatchResult, Specs, keys_spec
from simstudy.chunkio import ChunkCache, ChunkedArray
from simstudy.errors import FingerprintMismatch, StoreError, UsageError
from simstudy.grid import CHUNK_METHODS, CHUNK_REPLICATES, chunk_replicates, points
from simstudy.study import Level, Study

if TYPE_CHECKING:
    import xarray as xr

__all__ = ["Store", "open_results"]

FIXED_VARS = {
    "status": ("int8", 0),
    "seconds": ("float32", np.nan),
    "started": ("float64", np.nan),
    "worker": ("int16", -1),
    "warnings": ("int16", 0),  # warnings the task emitted
}
RECORD_KINDS = ("failures", "warnings")  # JSON records under <store>/.simstudy/
META = ".simstudy"
# buffered results reach the disk within this time (a kill -9 loses at most
# that much work); the SIMSTUDY_FLUSH_SECONDS environment variable overrides it
FLUSH_SECONDS = 5.0


def _flush_seconds() -> float:
    text = os.environ.get("SIMSTUDY_FLUSH_SECONDS")
    if text is None:
        return FLUSH_SECONDS
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0 < value < float("inf"):
        raise UsageError(
            f"SIMSTUDY_FLUSH_SECONDS must be a number of seconds > 0, got {text!r}.",
            hint="unset it for the default (5 s)",
        )
    return value


Group = tuple[tuple[int, ...], int]  # (point index, status chunk)


def _installed(package: str) -> bool:
    from importlib.metadata import PackageNotFoundError, version

    try:
        version(package)
    except PackageNotFoundError:
        return False
    return True


def _versions() -> dict[str, str]:
    from importlib.metadata import version

    return {  # from package metadata: importing xarray and dask costs ~0.4 s
        "simstudy": version("simstudy"),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "zarr": zarr.__version__,
        "xarray": version("xarray"),
        "dask": version("dask"),
        **({"jax": version("jax")} if _installed("jax") else {}),
        **({"jaxlib": version("jaxlib")} if _installed("jaxlib") else {}),
        "platform": platform.platform(),
    }


# recorded versions and settings that can change numbers: a change since the
# store was made makes a run recompute a few finished tasks and compare
NUMBER_MAKERS = ("numpy", "jax", "jaxlib", "jax-device", "jax-x64")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class _Lock:
    """An exclusive lock file; a lock of a dead process on this host is stale."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.held = False

    def acquire(self, store: Path) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        me = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.time()}
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                try:
                    other = json.loads(self.path.read_text() or "{}")
                except (OSError, ValueError):
                    other = {}
                stale = other.get("host") == me["host"] and not _pid_alive(
                    int(other.get("pid", 0))
                )
                if stale or not other:
                    self.path.unlink(missing_ok=True)
                    continue
                raise StoreError(
                    f"store {store} is in use by process {other.get('pid')} on "
                    f"{other.get('host')}; two runs cannot write one store.",
                    hint="wait for that run to finish, or use another --store",
                ) from None
            with os.fdopen(fd, "w") as f:
                json.dump(me, f)
            self.held = True
            return
        raise StoreError(f"could not take the lock {self.path}.")  # pragma: no cover

    def release(self) -> None:
        if self.held:
            self.path.unlink(missing_ok=True)
            self.held = False


def _compare(
    old: dict[str, Any], new: dict[str, Any], *, ignore_methods: set[str] | None = None
) -> list[str]:
    """Return the changes between fingerprints that would change numbers
    (leaving out changed methods in ``ignore_methods``)."""
    changes = []
    backends = [fp.get("backend", {"name": "numpy"}) for fp in (old, new)]
    if backends[0] != backends[1]:
        changes.append(f"backend changed ({backends[0]!r} -> {backends[1]!r})")
    for part, label in [
        ("seed", "seed"),
        ("scheme", "rng scheme"),
        ("data", "data function"),
    ]:
        if old[part] != new[part]:
            changes.append(f"{label} changed ({old[part]!r} -> {new[part]!r})")
    if old["fixed"] != new["fixed"]:
        changes.append("fixed inputs changed")
    if set(old["factors"]) != set(new["factors"]):
        changes.append(
            f"factor names changed ({list(old['factors'])} -> {list(new['factors'])})"
        )
    for name, h in new["methods"].items():
        if (
            name in old["methods"]
            and old["methods"][name] != h
            and name not in (ignore_methods or ())
        ):
            changes.append(f"method {name!r} changed")
    if new["scheme"] != "spawn" and not changes:
        same = (
            old["factors"] == new["factors"]
            and old["replicates"] == new["replicates"]
            and list(old["methods"]) == list(new["methods"])
        )
        if not same:
            changes.append(
                f"the design changed under the positional {new['scheme']!r} scheme, "
                "which renumbers every stream"
            )
    return changes


class Store:
    """An open, locked result cube on disk."""

    def __init__(
        self,
        path: Path,
        root: zarr.Group,
        lock: _Lock,
        provenance: Mapping[str, str] | None = None,
    ) -> None:
        self.path = path
        self.root = root
        self.lock = lock
        meta: dict[str, Any] = dict(root.attrs.asdict()["simstudy"])  # type: ignore[arg-type]
        self.meta = meta
        self.factor_names: list[str] = list(meta["factor_order"])
        self.levels: dict[str, list[Level]] = {
            f: list(meta["fingerprint"]["factors"][f]) for f in self.factor_names
        }
        self.methods: list[str] = list(meta["fingerprint"]["methods"])
        self.replicates: int = int(meta["fingerprint"]["replicates"])
        self.workers: list[str] = list(meta.get("workers", []))
        self._arrays: dict[str, Any] = {}
        self._cache = ChunkCache()
        # buffered writes: per group (point index, status chunk), the tasks
        # still expected this run and the failure updates; a timer flushes
        # whatever waits longer than FLUSH_SECONDS, under the lock
        self._expected: dict[Group, int] = {}
        # per kind of record file ("failures", "warnings"): buffered updates
        # and the files that exist
        self._record_updates: dict[str, dict[Group, list[Any]]] = {
            kind: {} for kind in RECORD_KINDS
        }
        self._record_files = {
            kind: {f.name for f in (path / META / kind).glob("*.json")}
            for kind in RECORD_KINDS
        }
        self._group_rows: int | None = None
        self._timer: threading.Timer | None = None
        self.repaired: list[str] = []  # damaged chunks found on open (dropped)
        # levels and methods in the store that the current study does not have
        self.hidden: dict[str, Any] = {"levels": {}, "methods": []}
        self.flush_seconds = _flush_seconds()
        self._lock = threading.RLock()
        self._vars: list[str] | None = None
        self._specs: Specs | None = None
        # joins _versions() where versions are recorded and compared
        self.provenance: dict[str, str] = dict(provenance or {})

    # ---- opening -----------------------------------------------------
    @classmethod
    def open_for_run(
        cls,
        path: str | os.PathLike[str],
        study: Study,
        *,
        restart: bool = False,
        recompute: tuple[str, ...] = (),
        prune: bool = False,
        provenance: Mapping[str, str] | None = None,
    ) -> Store:
        """Create or reopen the store for a study; lock it; extend if needed.

        ``recompute`` names methods whose stored results are discarded (their
        column made pending), e.g. after their code changed. ``prune`` deletes
        the levels and methods the study no longer has (else they are hidden).
        ``provenance`` joins the recorded library versions (for jax studies:
        the device kind and x64 setting), compared like them on resume.
        """
        _flush_seconds()  # a bad setting fails before anything is written
        p = Path(path).resolve()
        if not p.parent.is_dir():
            raise StoreError(
                f"cannot create store {p}: directory {p.parent} does not exist.",
                hint="create the directory first or choose another --store",
            )
        if p.exists() and not p.is_dir():
            raise StoreError(
                f"{p} is a file, not a store (a store is a directory).",
                hint="choose another --store path, e.g. results.zarr",
            )
        if (
            p.exists()
            and not (p / "zarr.json").exists()
            and any(p.iterdir())
            and not (p / META).exists()
        ):
            raise StoreError(
                f"{p} exists and is not a simstudy store; refusing to touch it.",
                hint="choose another --store path",
            )
        _finish_prune(p)
        lock = _Lock(p / META / "lock")
        try:
            p.mkdir(exist_ok=True)
            lock.acquire(p)
        except PermissionError:
            raise StoreError(
                f"cannot write store {p}: permission denied.",
                hint="choose a writable --store path",
            ) from None
        try:
            if restart and (p / "zarr.json").exists():
                _wipe(p)
            for leftover in p.rglob("*.partial"):
                leftover.unlink(missing_ok=True)
            if (p / "zarr.json").exists():
                _check_codecs(p)
                store = cls(p, zarr.open_group(str(p), mode="r+"), lock, provenance)
                store._reconcile(study, recompute)
                store.repaired = store._drop_damaged_chunks()
            else:
                store = cls._create(p, study, lock, dict(provenance or {}))
            store._save_truth(study)
            store._set_active(study)
            if prune and (store.hidden["levels"] or store.hidden["methods"]):
                store._prune(study)
                store = cls(p, zarr.open_group(str(p), mode="r+"), lock, provenance)
                store._set_active(study)
            return store
        except BaseException:
            lock.release()
            raise

    @classmethod
    def _create(
        cls, p: Path, study: Study, lock: _Lock, provenance: dict[str, str]
    ) -> Store:
        fp = study.fingerprint()
        root = zarr.open_group(str(p), mode="a", zarr_format=3)
        (p / META).mkdir(exist_ok=True)
        factor_order = list(study.factors)
        meta: dict[str, Any] = {
            "format": 1,
            "study": study.name,
            "factor_order": factor_order,
            "fingerprint": fp,
            "workers": [],
            "versions": {**_versions(), **provenance},
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        root.attrs.update(
            {
                "simstudy": meta,
                "study": study.name,
                "seed": study.seed,
                "rng": study.scheme,
                "simstudy_version": meta["versions"]["simstudy"],
            }
        )
        for f in factor_order:
            _coord(root, f, list(study.factors[f]))
        _coord(root, "replicate", list(range(study.replicates)))
        _coord(root, "method", study.method_names)
        store = cls(p, root, lock, provenance)
        for name, (dtype, fill) in FIXED_VARS.items():
            store._new_var(name, dtype, fill, ())
        store._consolidate()
        return store

    def _reconcile(self, study: Study, recompute: tuple[str, ...] = ()) -> None:
        """Compare fingerprints; extend the cube with new levels/methods/replicates;
        discard the results of the ``recompute`` methods."""
        old = self.meta["fingerprint"]
        new = study.fingerprint()
        unknown = [m for m in recompute if m not in study.method_names]
        if unknown:
            raise UsageError(
                f"--recompute {unknown[0]}: the study has no method {unknown[0]!r}.",
                hint=f"methods: {', '.join(study.method_names)}",
            )
        changed = [
            m
            for m, h in new["methods"].items()
            if m in old["methods"] and old["methods"][m] != h
        ]
        changes = _compare(old, new, ignore_methods=set(recompute))
        if changes:
            only_methods = all(c.startswith("method ") for c in changes)
            names = " ".join(f"--recompute {m}" for m in changed)
            raise FingerprintMismatch(
                f"store {self.path} was made by a different study: "
                + "; ".join(changes)
                + ".",
                hint=(
                    f"run with {names} to recompute only that method's results "
                    "(the rest is kept), or --restart to discard everything"
                    if only_methods
                    else "run with --restart to discard it, or choose a new --store"
                ),
            )
        reset = [m for m in recompute if m in self.methods]
        if reset:
            self._reset_methods(reset)
            old = self.meta["fingerprint"]
            old["methods"] = {**old["methods"], **{m: new["methods"][m] for m in reset}}
            self._save_meta()  # the new code's hash: only after the reset is on disk
        grew = False
        for f in self.factor_names:
            extra = [lv for lv in study.factors[f] if lv not in self.levels[f]]
            if extra:
                self.levels[f] += extra
                grew = True
        extra_m = [m for m in study.method_names if m not in self.methods]
        self.methods += extra_m
        methods_fp = {**old["methods"], **new["methods"]}
        replicates = max(self.replicates, study.replicates)
        grew = grew or bool(extra_m) or replicates > self.replicates
        if not grew:
            return
        self.replicates = replicates
        for f in self.factor_names:
            _coord(self.root, f, self.levels[f], overwrite=True)
        _coord(self.root, "replicate", list(range(replicates)), overwrite=True)
        _coord(self.root, "method", self.methods, overwrite=True)
        for name in self._var_names():
            arr = self.root[name]
            arr.resize((*self.cube_shape, *arr.shape[len(self.cube_shape) :]))  # type: ignore[union-attr]
        fp = dict(old)
        fp["factors"] = self.levels
        fp["methods"] = methods_fp
        fp["replicates"] = replicates
        self.meta["fingerprint"] = fp
        self._save_meta()
        # the group was opened from consolidated metadata: reopen after resizing
        self.root = zarr.open_group(str(self.path), mode="r+")
        self._arrays.clear()

    def extend_replicates(self, replicates: int) -> None:
        """Grow the replicate dimension (mid-run, between rounds)."""
        with self._lock:
            if replicates <= self.replicates:
                return
            self._flush(None)
            self.replicates = replicates
            _coord(self.root, "replicate", list(range(replicates)), overwrite=True)
            for name in self._var_names():
                arr = self._array(name)
                arr.resize((*self.cube_shape, *arr.shape[len(self.cube_shape) :]))
            self.meta["fingerprint"]["replicates"] = replicates
            self._save_meta()
            self.root = zarr.open_group(str(self.path), mode="r+")
            self._arrays.clear()
            self._cache = ChunkCache()

    def record_target(self, record: dict[str, Any] | None) -> None:
        """Keep what a --target-mcse run decided, per design point (None:
        forget it, when a plain run gives every point more replicates)."""
        if record is None:
            self.meta.pop("target_mcse", None)
        else:
            self.meta["target_mcse"] = record
        self._save_meta()

    def _reset_methods(self, names: list[str]) -> None:
        """Make every task of these methods pending and forget their results.

        Order matters for a crash in between: status first (the tasks become
        pending), then outputs, records and the methods' output names; the
        caller saves the methods' new fingerprint last.
        """
        cols = sorted(self.methods.index(m) for m in names)
        nf = len(self.factor_names)
        order = ["status"] + [v for v in self._var_names() if v != "status"]
        for var in order:
            arr = self._array(var)
            fill = FIXED_VARS[var][1] if var in FIXED_VARS else np.nan
            for c in cols:
                arr[(*([slice(None)] * (nf + 1)), c)] = fill
        for kind in RECORD_KINDS:
            for f in (self.path / META / kind).glob("*.json"):
                records = json.loads(f.read_text())
                kept = [r for r in records if r["method"] not in names]
                if len(kept) != len(records):
                    tmp = f.with_suffix(".json.partial")
                    tmp.write_text(json.dumps(kept))
                    tmp.replace(f)
        outputs = self.meta.get("outputs", {})
        for m in names:
            outputs.pop(m, None)
        self._specs = None
        self._save_meta()

    def _set_active(self, study: Study) -> None:
        """Record which levels and methods the current study has: the others
        stay in the store but are hidden from summaries (``open_results``)."""
        hidden_levels = {
            f: [lv for lv in self.levels[f] if lv not in study.factors[f]]
            for f in self.factor_names
        }
        hidden_levels = {f: v for f, v in hidden_levels.items() if v}
        hidden_methods = [m for m in self.methods if m not in study.method_names]
        self.hidden = {
            "levels": hidden_levels,
            "methods": hidden_methods,
        }
        active = None
        if hidden_levels or hidden_methods:
            active = {
                "factors": {f: list(study.factors[f]) for f in self.factor_names},
                "methods": list(study.method_names),
            }
        if active != self.meta.get("active"):
            if active is None:
                self.meta.pop("active")
            else:
                self.meta["active"] = active
            self._save_meta()

    def _prune(self, study: Study) -> None:
        """Rewrite the store without the levels and methods the study dropped.

        The pruned copy is built beside the store (``<store>.pruning``),
        marked complete, then swapped in; ``_finish_prune`` completes or
        discards a swap a crash interrupted, so the store is never half pruned.
        """
        import shutil

        self.flush()
        keep = {
            f: [i for i, lv in enumerate(self.levels[f]) if lv in study.factors[f]]
            for f in self.factor_names
        }
        methods = [i for i, m in enumerate(self.methods) if m in study.method_names]
        tmp = self.path.with_name(self.path.name + ".pruning")
        if tmp.exists():
            shutil.rmtree(tmp)
        root = zarr.open_group(str(tmp), mode="w", zarr_format=3)
        meta = json.loads(json.dumps(self.meta))
        levels = {f: [self.levels[f][i] for i in keep[f]] for f in self.factor_names}
        names = [self.methods[i] for i in methods]
        fp = meta["fingerprint"]
        fp["factors"] = levels
        fp["methods"] = {m: fp["methods"][m] for m in names}
        meta["outputs"] = {
            m: v for m, v in meta.get("outputs", {}).items() if m in names
        }
        meta.pop("active", None)
        attrs = dict(self.root.attrs.asdict())
        attrs["simstudy"] = meta
        root.attrs.update(attrs)
        for f in self.factor_names:
            _coord(root, f, levels[f])
        _coord(root, "replicate", list(range(self.replicates)))
        _coord(root, "method", names)
        nf = len(self.factor_names)
        old_points = list(np.ndindex(*(len(keep[f]) for f in self.factor_names)))
        for var in self._var_names():
            src = self._array(var)
            extra = tuple(src.shape[nf + 2 :])
            dest = root.create_array(
                var,
                shape=(
                    *(len(levels[f]) for f in self.factor_names),
                    self.replicates,
                    len(names),
                    *extra,
                ),
                chunks=src.chunks,
                dtype=src.dtype,
                fill_value=src.fill_value,
                dimension_names=src.metadata.dimension_names,
                compressors=[ZstdCodec(level=1), Crc32cCodec()],
                chunk_key_encoding={"name": "default", "separator": "."},
            )
            for new in old_points:
                old = tuple(
                    keep[f][i] for f, i in zip(self.factor_names, new, strict=True)
                )
                block = src.get_orthogonal_selection(
                    (
                        *old,
                        slice(None),
                        np.array(methods, dtype=np.intp),
                        *(slice(None),) * len(extra),
                    )
                )
                dest[(*new, slice(None), slice(None))] = block
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            zarr.consolidate_metadata(str(tmp))
        for kind in RECORD_KINDS:
            grouped: dict[str, list[Any]] = {}
            for rf in sorted((self.path / META / kind).glob("*.json")):
                for r in json.loads(rf.read_text()):
                    if r["method"] not in names or any(
                        r[k] not in levels[k] for k in self.factor_names
                    ):
                        continue
                    pidx = tuple(levels[k].index(r[k]) for k in self.factor_names)
                    group = (pidx, r["replicate"] // self.group_rows)
                    grouped.setdefault(_records_name(group), []).append(r)
            if grouped:
                (tmp / META / kind).mkdir(parents=True)
                for name, records in grouped.items():
                    (tmp / META / kind / name).write_text(json.dumps(records))
        (tmp / META).mkdir(exist_ok=True)
        shutil.copy(self.lock.path, tmp / META / "lock")
        (tmp / META / "pruned").write_text("complete\n")
        _finish_prune(self.path)

    # ---- layout ------------------------------------------------------
    @property
    def cube_shape(self) -> tuple[int, ...]:
        return (
            *(len(self.levels[f]) for f in self.factor_names),
            self.replicates,
            len(self.methods),
        )

    def _var_names(self) -> list[str]:
        if self._vars is None:
            skip = {*self.factor_names, "replicate", "method"}
            with warnings.catch_warnings():
                # our .simstudy folder (lock, failures) is not a zarr node
                warnings.simplefilter("ignore")
                self._vars = [k for k in self.root.array_keys() if k not in skip]
        return self._vars

    def _new_var(
        self, name: str, dtype: str, fill: Any, shape: tuple[int, ...]
    ) -> None:
        dims = [*self.factor_names, "replicate", "method"]
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
            compressors=[ZstdCodec(level=1), Crc32cCodec()],
            # "c.0.3.0" files side by side: a new chunk costs no mkdir
            chunk_key_encoding={"name": "default", "separator": "."},
        )
        if self._vars is not None:
            self._vars.append(name)

    @property
    def group_rows(self) -> int:
        """Replicates per status chunk: the unit of buffering and of failures files."""
        if self._group_rows is None:
            if "status" not in self._var_names():
                return CHUNK_REPLICATES  # creating the store
            n = len(self.factor_names)
            self._group_rows = int(self._array("status").chunks[n])
        return self._group_rows

    def _array(self, name: str) -> Any:
        arr = self._arrays.get(name)
        if arr is None:
            arr = self._arrays[name] = self.root[name]
        return arr

    def output_specs(self) -> Specs:
        """Return output name -> per-task shape of the outputs seen so far,
        and each method's output names (``keys_spec(method)``)."""
        n = len(self.cube_shape)
        if self._specs is not None:
            return dict(self._specs)
        self._specs = {
            k: tuple(self._array(k).shape[n:])
            for k in self._var_names()
            if k not in FIXED_VARS
        }
        for method, names in self.meta.get("outputs", {}).items():
            self._specs[keys_spec(method)] = tuple(names)
        return dict(self._specs)

    def point_index(self, point: dict[str, Level]) -> tuple[int, ...]:
        """Return the store index of a design point."""
        return tuple(self.levels[f].index(point[f]) for f in self.factor_names)

    def method_index(self, names: list[str]) -> np.ndarray[Any, Any]:
        return np.array([self.methods.index(n) for n in names], dtype=np.intp)

    # ---- reading -----------------------------------------------------
    def status_of(
        self, pidx: tuple[int, ...], replicates: int, methods: np.ndarray[Any, Any]
    ) -> np.ndarray[Any, Any]:
        """Return the status (replicates x methods) of one point."""
        arr = self._array("status")
        out: np.ndarray[Any, Any] = arr.get_orthogonal_selection(
            (*pidx, slice(0, replicates), methods)
        )
        return out

    # ---- writing -----------------------------------------------------
    def write(
        self, result: BatchResult, pidx: tuple[int, ...], midx: np.ndarray[Any, Any]
    ) -> BatchResult:
        """Take a finished batch into the buffer (see ``flush`` for the order)."""
        with self._lock:
            return self._write(result, pidx, midx)

    def _write(
        self, result: BatchResult, pidx: tuple[int, ...], midx: np.ndarray[Any, Any]
    ) -> BatchResult:
        b = result.batch
        status = result.status.copy()
        specs = self.output_specs()
        n = len(self.cube_shape)
        failures = list(result.failures)
        names = [self.methods[i] for i in midx]
        outputs = self.meta.setdefault("outputs", {})
        for j, method in enumerate(names):
            keys = result.keys.get(method)
            if keys is None:
                continue
            if method not in outputs:
                outputs[method] = list(keys)
                self._specs = None
                self._save_meta()
            elif tuple(outputs[method]) != keys:
                for i in np.flatnonzero(status[:, j] == OK):
                    status[i, j] = FAILED
                    failures.append(
                        {
                            "replicate": b.start + int(i),
                            "method": method,
                            "type": "OutputKeysError",
                            "message": f"method {method!r} returned outputs "
                            f"{list(keys)}; expected {outputs[method]} (from the "
                            "store).",
                            "traceback": "",
                        }
                    )
        for name, values in result.outputs.items():
            shape = values.shape[2:]
            if name in specs and specs[name] != shape:
                bad = np.argwhere(
                    (status == OK)
                    & ~np.isnan(values).all(axis=tuple(range(2, values.ndim)))
                )
                for i, j in bad:
                    status[i, j] = FAILED
                    failures.append(
                        {
                            "replicate": b.start + int(i),
                            "method": names[j],
                            "type": "OutputShapeError",
                            "message": f"method {names[j]!r} output {name!r} has shape "
                            f"{shape}; expected {specs[name]} (from the store).",
                            "traceback": "",
                        }
                    )
        for name, values in result.outputs.items():
            shape = values.shape[2:]
            if name not in specs:
                self._new_var(name, "float64", np.nan, shape)
                self._consolidate()
                specs[name] = shape
                self._specs = dict(specs)
            if specs[name] != shape:
                continue
            values = np.where(
                (status == OK).reshape(status.shape + (1,) * len(shape)), values, np.nan
            )
            self._put(name, pidx, b.start, b.stop, midx, values)
        assert n == len(pidx) + 2
        if result.worker not in self.workers:
            self.workers.append(result.worker)
            self._save_meta()
        wid = self.workers.index(result.worker)
        self._put("seconds", pidx, b.start, b.stop, midx, result.seconds)
        self._put("started", pidx, b.start, b.stop, midx, result.started)
        worker = np.full(status.shape, wid, np.int16)
        self._put("worker", pidx, b.start, b.stop, midx, worker)
        if "warnings" not in self._var_names():  # stores made before warnings
            self._new_var("warnings", *FIXED_VARS["warnings"], ())
            self._consolidate()
        counts = result.warnings
        if counts is None:  # a batch whose worker failed emitted none
            counts = np.zeros(status.shape, np.int16)
        self._put("warnings", pidx, b.start, b.stop, midx, counts)
        self._put("status", pidx, b.start, b.stop, midx, status)
        group = (pidx, b.start // self.group_rows)
        for kind, records in (("failures", failures), ("warnings", result.warned)):
            if (
                records
                or self._records_file(kind, group).name in self._record_files[kind]
            ):
                self._record_updates[kind].setdefault(group, []).append(
                    (b.start, b.stop, names, records)
                )
        left = self._expected.get(group)
        if left is not None:
            left -= status.size
            self._expected[group] = left
            if left <= 0:
                del self._expected[group]
                self.flush({group})
        if self._cache.over_budget:
            self.flush()
        elif self._cache.dirty and self._timer is None:
            self._timer = threading.Timer(self.flush_seconds, self._flush_on_timer)
            self._timer.daemon = True
            self._timer.start()
        result.status = status
        result.failures = failures
        return result

    def expect(self, point: tuple[int, ...], pending: np.ndarray[Any, Any]) -> None:
        """Note the tasks this run will compute at a point (replicates x methods),
        so each status chunk is written once, when its last batch arrives."""
        rows = self.group_rows
        counts = np.add.reduceat(pending.sum(axis=1), np.arange(0, len(pending), rows))
        for c, count in enumerate(counts.tolist()):
            if count:
                self._expected[(point, c)] = count

    def _flush_on_timer(self) -> None:
        with self._lock:
            self._timer = None
            self.flush()

    def flush(self, groups: set[Group] | None = None) -> None:
        """Write buffered chunks: outputs and timings, failures, then status.

        Status goes last, so on disk a task is never marked ok before its
        outputs are there, however the process dies.
        """
        with self._lock:
            self._flush(groups)

    def _flush(self, groups: set[Group] | None) -> None:
        try:
            self._flush_unguarded(groups)
        except OSError as exc:
            raise StoreError(
                f"cannot write the store {self.path}: {exc.strerror or exc}.",
                hint="free disk space or fix the permissions (or choose another "
                "--store), then run the same command: it resumes where it stopped",
            ) from exc

    def _flush_unguarded(self, groups: set[Group] | None) -> None:
        n = len(self.factor_names)
        rows = self.group_rows
        keys = [
            k
            for k in self._cache.dirty
            if groups is None
            or (k[1][:n], k[1][n] * self._cache.arrays[k[0]].chunks[n] // rows)
            in groups
        ]
        self._cache.flush([k for k in keys if k[0] != "status"])
        for kind, updates in self._record_updates.items():
            for group in list(updates):
                if groups is None or group in groups:
                    self._write_records(kind, group, updates.pop(group))
        self._cache.flush([k for k in keys if k[0] == "status"])

    def _put(
        self,
        name: str,
        pidx: tuple[int, ...],
        start: int,
        stop: int,
        midx: np.ndarray[Any, Any],
        values: np.ndarray[Any, Any],
    ) -> None:
        """Set a (replicates x methods x ...) block in the chunk buffer."""
        array = self._cache.arrays.get(name)
        if array is None:
            array = ChunkedArray(self.path, name, self._array(name))
        self._cache.put(array, pidx, start, stop, midx, values)

    def _records_file(self, kind: str, group: Group) -> Path:
        return self.path / META / kind / _records_name(group)

    def _write_records(self, kind: str, group: Group, updates: list[Any]) -> None:
        """Apply (start, stop, methods, records) updates to a group's file of
        failures or warnings: a rerun task's old records are replaced."""
        f = self._records_file(kind, group)
        known = f.name in self._record_files[kind]
        records = json.loads(f.read_text()) if known else []
        point = {
            k: self.levels[k][i]
            for k, i in zip(self.factor_names, group[0], strict=True)
        }
        for start, stop, names, failures in updates:
            records = [
                e
                for e in records
                if not (start <= e["replicate"] < stop and e["method"] in names)
            ]
            records += [{**point, **e} for e in failures]
        if not records and not known:
            return
        f.parent.mkdir(parents=True, exist_ok=True)
        tmp = f.with_suffix(".json.partial")
        tmp.write_text(json.dumps(records))
        tmp.replace(f)
        self._record_files[kind].add(f.name)

    # ---- mt19937-jump chain checkpoints ---------------------------------
    def _mt_folder(self, seed: int) -> Path:
        return _mt_folder(self.path, seed)

    def mt_checkpoints(self, seed: int) -> dict[int, np.ndarray[Any, Any]]:
        """Return the saved states of ``MT19937(seed).jumped(k)``, by k."""
        return read_mt_checkpoints(self.path, seed)

    def save_mt_checkpoint(self, seed: int, k: int, row: np.ndarray[Any, Any]) -> None:
        """Save the state of ``MT19937(seed).jumped(k)`` (atomically)."""
        folder = self._mt_folder(seed)
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f"{k}.npy.partial"
        with open(tmp, "wb") as f:
            np.save(f, np.asarray(row, dtype=np.int64), allow_pickle=False)
        tmp.replace(folder / f"{k}.npy")

    def _save_truth(self, study: Study) -> None:
        truths = {}
        for point in points(study):
            t = study.truth_for(point)
            if t:
                truths[json.dumps(point, sort_keys=True)] = t
        # what summaries read, per method (not part of the fingerprint: it
        # changes no number)
        measures = {m.name: m.measures for m in study.methods if m.measures}
        source = study.source_file
        if (
            truths != self.meta.get("truth")
            or measures != self.meta.get("measures")
            or source != self.meta.get("source_file")
        ):
            self.meta["truth"] = truths
            self.meta["measures"] = measures
            self.meta["source_file"] = source  # for `errors`' replay commands
            self._save_meta()

    def read_task_outputs(
        self, pidx: tuple[int, ...], replicate: int
    ) -> dict[str, np.ndarray[Any, Any]]:
        """Return each output's stored values at one (point, replicate):
        arrays (methods, *output shape)."""
        return {
            name: np.asarray(self._array(name)[(*pidx, replicate)])
            for name in self._var_names()
            if name not in FIXED_VARS
        }

    def version_changes(self) -> dict[str, tuple[str, str]]:
        """Libraries whose version differs from the one that made the store
        (or last accepted a change): name -> (then, now). Only the ones that
        make numbers (``NUMBER_MAKERS``): numpy, jax and jaxlib, and for jax
        studies the device kind and x64 setting."""
        now = {**_versions(), **self.provenance}
        then = self.meta.get("versions", {})
        return {
            k: (then[k], now[k])
            for k in NUMBER_MAKERS
            if k in then and k in now and then[k] != now[k]
        }

    def accept_versions(self) -> None:
        """Record the current versions, keeping the old ones in a history."""
        history = self.meta.setdefault("versions_history", [])
        history.append(self.meta.get("versions", {}))
        self.meta["versions"] = {**_versions(), **self.provenance}
        self._save_meta()

    def _save_meta(self) -> None:
        self.meta["workers"] = self.workers
        self.root.attrs["simstudy"] = self.meta
        self._consolidate()

    def _consolidate(self) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            zarr.consolidate_metadata(str(self.path))

    def close(self) -> None:
        """Write what is buffered, then release the lock.

        If writing fails (disk full), the error is raised once; what was not
        written is simply computed again by the next run.
        """
        try:
            with self._lock:
                if self._timer is not None:
                    self._timer.cancel()
                    self._timer = None
                self._flush(None)
        finally:
            self._cache.dirty.clear()  # never retried: status stays the commit mark
            self.lock.release()

    def _drop_damaged_chunks(self) -> list[str]:
        """Check every chunk's crc32c; make the tasks of a damaged one pending.

        The status of the tasks a damaged chunk covers is set to 0 first, then
        the chunk file is removed, so a resume recomputes exactly those tasks.
        Returns the damaged chunk files, relative to the store.
        """
        n = len(self.factor_names)
        damaged: list[tuple[str, tuple[int, ...]]] = []
        for name in self._var_names():
            array = ChunkedArray(self.path, name, self._array(name))
            self._cache.arrays.setdefault(name, array)
            damaged += [
                (name, array.coords_of(f))
                for f in array.chunk_files()
                if not array.intact(f)
            ]
        if not damaged:
            return []
        status = self._cache.arrays["status"]
        for name, coords in damaged:  # a missing status chunk reads as pending
            if name == "status":
                status.path(coords).unlink(missing_ok=True)
        for name, coords in damaged:
            array = self._cache.arrays[name]
            rows, cols = array.chunks[n], array.chunks[n + 1]
            start = coords[n] * rows
            stop = min(start + rows, self.replicates)
            methods = np.arange(coords[n + 1] * cols, (coords[n + 1] + 1) * cols)
            methods = methods[methods < len(self.methods)]
            if name != "status" and start < stop and len(methods):
                pending = np.zeros((stop - start, len(methods)), np.int8)
                self._cache.put(status, coords[:n], start, stop, methods, pending)
        self._flush(None)
        for name, coords in damaged:
            self._cache.arrays[name].path(coords).unlink(missing_ok=True)
            self._cache.chunks.pop((name, coords), None)
        return [
            str(self._cache.arrays[name].path(coords).relative_to(self.path))
            for name, coords in damaged
        ]


def _coord(
    root: zarr.Group, name: str, values: list[Any], *, overwrite: bool = False
) -> None:
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


def _records_name(group: Group) -> str:
    pidx, chunk = group
    return f"{'-'.join(map(str, pidx)) or 'p'}_c{chunk}.json"


def _finish_prune(p: Path) -> None:
    """Swap in a complete pruned copy (``<store>.pruning``); drop leftovers.

    Crash-safe order: the store moves to ``<store>.pruned-old``, the copy
    takes its place, the old one is deleted. At any point either the old or
    the new store is complete under one of these names.
    """
    import shutil

    tmp = p.with_name(p.name + ".pruning")
    old = p.with_name(p.name + ".pruned-old")
    complete = (tmp / META / "pruned").is_file()
    if complete:
        if p.exists() and not old.exists():
            p.rename(old)
        if not p.exists():
            tmp.rename(p)
            (p / META / "pruned").unlink()
    if tmp.exists():
        shutil.rmtree(tmp)  # incomplete: the store itself is untouched
    if old.exists() and p.exists():
        shutil.rmtree(old)


def _wipe(p: Path) -> None:
    import shutil

    for child in p.iterdir():
        if child.name == META:
            for sub in child.iterdir():
                if sub.name != "lock":
                    shutil.rmtree(sub) if sub.is_dir() else sub.unlink()
        elif child.is_dir():
            shutil.rmtree(child)
        else:
            child.unlink()


def read_failures(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Return the failure records of a store: point levels, replicate, method,
    type, message, traceback (plain JSON; nothing is unpickled)."""
    return _read_records(path, "failures")


def read_warnings(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Return the warning records of a store: point levels, replicate, method,
    category, message (the first) and count of each task that warned."""
    return _read_records(path, "warnings")


def _read_records(path: str | os.PathLike[str], kind: str) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    folder = Path(path) / META / kind
    for f in sorted(folder.glob("*.json")) if folder.exists() else []:
        out.extend(json.loads(f.read_text()))
    return out


SAFE_CODECS = {"bytes", "zstd", "crc32c", "vlen-utf8"}  # all simstudy writes


def _check_codecs(p: Path) -> None:
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


def _mt_folder(path: Path, seed: int) -> Path:
    tag = hashlib.blake2b(str(seed).encode(), digest_size=8).hexdigest()
    return path / META / "mt19937" / tag


def read_mt_checkpoints(
    path: str | os.PathLike[str], seed: int
) -> dict[int, np.ndarray[Any, Any]]:
    """Return the saved states of ``MT19937(seed).jumped(k)`` in a store, by k.

    They depend on the seed and k only, so they stay valid whatever the
    design; files that do not load as a (625,) int64 array are ignored, and
    nothing is ever unpickled.
    """
    out = {}
    folder = _mt_folder(Path(path), seed)
    for f in folder.glob("*.npy") if folder.exists() else []:
        try:
            row = np.load(f, allow_pickle=False)
            k = int(f.stem)
        except (OSError, ValueError):
            continue
        if row.shape == (625,) and row.dtype == np.int64:
            out[k] = row
    return out


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
    _check_codecs(p)
    # NB: select methods with ds.sel({"method": "median"}): xarray's own
    # ``sel(method=...)`` keyword (nearest-neighbour lookup) shadows the dim.
    ds: xr.Dataset = xr.open_zarr(str(p), consolidated=True)
    meta = ds.attrs.get("simstudy", {})
    active = meta.get("active")
    if active and not include_hidden:
        ds = ds.sel({**active["factors"], "method": active["methods"]})
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
