"""An open, locked store for a run: the one place a run writes through.

``Store.open_for_run`` creates or reopens the store of a study, takes the
lock, reconciles the fingerprint (growing or refusing), checks every
chunk's checksum, and hands back a ``Store`` whose ``write`` takes finished
batches (see ``store.writer`` for the order on disk).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from simstudy.cube import REPLICATE, point_json
from simstudy.declare.grid import points
from simstudy.declare.outputs import OutputSpecs
from simstudy.declare.results import BatchResult
from simstudy.declare.study import Level, Study
from simstudy.errors import StoreError
from simstudy.store import migrations, reconcile
from simstudy.store.files import read_meta, scan
from simstudy.store.integrity import (
    check_codecs,
    drop_damaged_chunks,
    drop_orphan_arrays,
    restore_array_metadata,
)
from simstudy.store.layout import Layout, coord
from simstudy.store.lock import Lock
from simstudy.store.meta import META, NUMBER_MAKERS, versions
from simstudy.store.records import Group, Records
from simstudy.store.space import writing
from simstudy.store.trust import check_owned, check_sizes, ours
from simstudy.store.writer import Writer, flush_seconds

__all__ = ["Store"]


def _check_path(path: Path, *, restart: bool = False) -> None:
    """Refuse a store path that cannot be, or is not, a simstudy store, and
    a store with links or special files, or metadata that cannot be trusted
    (``store.trust``); nothing is written before."""
    if not path.parent.is_dir():
        raise StoreError(
            f"cannot create store {path}: directory {path.parent} does not exist.",
            hint="create the directory first or choose another --store",
        )
    if path.exists() and not path.is_dir():
        raise StoreError(
            f"{path} is a file, not a store (a store is a directory).",
            hint="choose another --store path, e.g. results.zarr",
        )
    if (
        path.exists()
        and not (path / "zarr.json").exists()
        and any(path.iterdir())
        and not (path / META).exists()
    ):
        raise StoreError(
            f"{path} exists and is not a simstudy store; refusing to touch it.",
            hint="choose another --store path",
        )
    if path.is_dir():
        check_owned(path)
        scan(path)
        if not restart and (path / "zarr.json").exists():
            check_sizes(path)


class Store:
    """An open, locked result cube on disk."""

    def __init__(
        self, layout: Layout, lock: Lock, provenance: Mapping[str, str] | None = None
    ) -> None:
        self.layout = layout
        self.path = layout.path
        self.lock = lock
        self.records = Records(layout)
        self.writer = Writer(layout, self.records)
        self.writer.guard = lock.check  # a run that lost its lock writes nothing
        self.repaired: list[str] = []  # damaged chunks found on open (dropped)
        # levels and methods in the store that the current study does not have
        self.hidden: dict[str, Any] = {"levels": {}, "methods": [], "points": 0}
        # joins versions() where versions are recorded and compared
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
        flush_seconds()  # a bad setting fails before anything is written
        folder = Path(path).resolve()
        _check_path(folder, restart=restart)
        reconcile.finish_prune(folder)
        lock = Lock(folder / META / "lock")
        # a read-only folder or file system: a clear error, not an OSError
        with writing(folder):
            folder.mkdir(exist_ok=True)
            lock.acquire(folder)
        try:
            with writing(folder):
                return cls._open_locked(
                    folder, study, lock, restart, recompute, prune, provenance
                )
        except BaseException:
            lock.release()
            raise

    @classmethod
    def _open_locked(
        cls,
        folder: Path,
        study: Study,
        lock: Lock,
        restart: bool,
        recompute: tuple[str, ...],
        prune: bool,
        provenance: Mapping[str, str] | None,
    ) -> Store:
        registered = None
        if restart and (folder / "zarr.json").exists():
            registered = _registered_protocol(folder)  # a restart keeps it
            reconcile.wipe(folder)
        for leftover in folder.rglob("*.partial"):
            top = leftover.relative_to(folder).parts
            if ours(folder / top[0]) or (len(top) == 1 and top[0].startswith("zarr.")):
                leftover.unlink(missing_ok=True)  # never a partial of the user's
        if (folder / "zarr.json").exists():
            restored = restore_array_metadata(folder)
            check_codecs(folder)
            migrations.migrate(folder)
            drop_orphan_arrays(folder)
            store = cls(Layout.open(folder), lock, provenance)
            reconcile.reconcile(store.layout, store.records, study, recompute)
            store.repaired = restored + drop_damaged_chunks(store.layout, store.writer)
        else:
            declared = declared_of(study)
            layout = Layout.create(folder, study, dict(provenance or {}), declared)
            store = cls(layout, lock, provenance)
        store.save_truth(study)
        if registered is not None:
            store.record_protocol(registered)
        store.hidden = reconcile.set_active(store.layout, study)
        if prune and any(store.hidden.values()):
            store.flush()
            reconcile.prune(store.layout, study, lock.path)
            store = cls(Layout.open(folder), lock, provenance)
            store.hidden = reconcile.set_active(store.layout, study)
        return store

    # ---- what a run asks -----------------------------------------------
    @property
    def meta(self) -> Any:
        return self.layout.meta

    @property
    def group_rows(self) -> int:
        return self.layout.group_rows

    def point_index(self, point: dict[str, Level]) -> tuple[int, ...]:
        return self.layout.point_index(point)

    def method_index(self, names: list[str]) -> np.ndarray[Any, Any]:
        return self.layout.method_index(names)

    def status_of(
        self, pidx: tuple[int, ...], replicates: int, methods: np.ndarray[Any, Any]
    ) -> np.ndarray[Any, Any]:
        return self.layout.status_of(pidx, replicates, methods)

    def read_task_outputs(
        self, pidx: tuple[int, ...], replicate: int
    ) -> dict[str, np.ndarray[Any, Any]]:
        return self.layout.read_task_outputs(pidx, replicate)

    def output_specs(self) -> OutputSpecs:
        return self.layout.output_specs()

    # ---- writing -------------------------------------------------------
    def write(
        self, result: BatchResult, pidx: tuple[int, ...], midx: np.ndarray[Any, Any]
    ) -> BatchResult:
        return self.writer.write(result, pidx, midx)

    def expect(self, point: tuple[int, ...], counts: dict[int, int]) -> None:
        """Note the tasks this run will compute at a point, per status chunk."""
        self.writer.expect(point, counts)

    def status_chunks(
        self,
        points: list[tuple[int, ...]],
        counts: list[int],
        methods: np.ndarray[Any, Any],
    ) -> Iterator[tuple[int, int, np.ndarray[Any, Any]]]:
        """The status of each point's first ``counts[p]`` replicates, status
        chunk by status chunk: ``(p, chunk, replicates x methods)`` for the
        chunks with a file (or buffered); the others are all pending.

        Memory and time follow the chunks written, not the replicates: one
        listing of the status folder, then one chunk at a time.
        """
        status = self.writer.chunked("status")
        n = len(self.layout.factor_names)
        rows, cols = status.chunks[n], status.chunks[n + 1]
        written: dict[tuple[int, ...], set[int]] = {}
        keys = [c for name, c in self.writer.cache.chunks if name == "status"]
        for at in [status.coords_of(f) for f in status.chunk_files()] + keys:
            written.setdefault(at[:n], set()).add(at[n])
        groups = [
            (method_chunk, np.flatnonzero(methods // cols == method_chunk))
            for method_chunk in set(methods // cols)
        ]
        for index, pidx in enumerate(points):
            for row_chunk in sorted(written.get(pidx, ())):
                stop = min(rows, counts[index] - row_chunk * rows)
                if stop <= 0:
                    continue
                block = np.zeros((stop, len(methods)), np.int8)
                for method_chunk, columns in groups:
                    coords = (*pidx, row_chunk, int(method_chunk))
                    chunk = self.writer.cache.chunks.get(("status", coords))
                    if chunk is None:
                        chunk = status.read(coords)
                    block[:, columns] = chunk[(0,) * n][:stop, methods[columns] % cols]
                yield index, row_chunk, block

    def flush(self, groups: set[Group] | None = None) -> None:
        self.writer.flush(groups)

    def extend_replicates(self, replicates: int) -> None:
        """Grow the replicate dimension (mid-run, between rounds)."""
        lay = self.layout
        with self.writer.lock, writing(self.path):
            if replicates <= lay.replicates:
                return
            self.writer.flush()
            lay.replicates = replicates
            coord(lay.root, REPLICATE, range(replicates), overwrite=True)
            lay.resize()
            lay.meta.fingerprint["replicates"] = replicates
            lay.save_meta()
            lay.reopen()
            self.writer.reset()

    def record_target(self, record: dict[str, Any] | None) -> None:
        """Keep what a --target-mcse run decided, per design point (None:
        forget it, when a plain run gives every point more replicates)."""
        self.layout.meta.target_mcse = record
        with writing(self.path):
            self.layout.save_meta()

    def record_solve(self, record: list[dict[str, Any]]) -> None:
        """Keep a solve's solutions (``simstudy solve``) for the report."""
        self.layout.meta.extra["solve"] = record
        with writing(self.path):
            self.layout.save_meta()

    def record_protocol(self, registration: dict[str, Any]) -> None:
        """Keep a registered protocol (``run --protocol``): its file name,
        sha256, record and text; the report compares the store with it."""
        if self.layout.meta.extra.get("protocol") != registration:
            self.layout.meta.extra["protocol"] = registration
            with writing(self.path):
                self.layout.save_meta()

    def save_truth(self, study: Study) -> None:
        """Record the truth and measure declarations summaries read (not part
        of the fingerprint: they change no number) and the study file."""
        declared = declared_of(study)
        meta = self.layout.meta
        new = (declared["truth"], declared["measures"], declared["source_file"])
        if new != (meta.truth, meta.measures, meta.source_file):
            meta.truth, meta.measures, meta.source_file = new
            self.layout.save_meta()

    # ---- versions ------------------------------------------------------
    def version_changes(self) -> dict[str, tuple[str, str]]:
        """Libraries whose version differs from the one that made the store
        (or last accepted a change): name -> (then, now). Only the ones that
        make numbers (``NUMBER_MAKERS``): numpy, jax and jaxlib, and for jax
        studies the device kind and x64 setting."""
        now = {**versions(), **self.provenance}
        then = self.layout.meta.versions
        return {
            k: (then[k], now[k])
            for k in NUMBER_MAKERS
            if k in then and k in now and then[k] != now[k]
        }

    def accept_versions(self, log: dict[str, Any] | None = None) -> None:
        """Record the current versions, keeping the old ones in a history,
        and ``log`` (a ``versionlog.entry``) in the version log."""
        meta = self.layout.meta
        meta.versions_history.append(meta.versions)
        meta.versions = {**versions(), **self.provenance}
        if log is not None:
            meta.version_log.append(log)
        with writing(self.path):
            self.layout.save_meta()

    def close(self) -> None:
        """Write what is buffered, then release the lock."""
        try:
            self.writer.close()
        finally:
            self.lock.release()


def _registered_protocol(p: Path) -> dict[str, Any] | None:
    """The protocol ``run --protocol`` recorded in a store, if any."""
    found: dict[str, Any] | None = (read_meta(p) or {}).get("protocol")
    return found


def declared_of(study: Study) -> dict[str, Any]:
    """What the metadata keeps of the declaration: truth per design point,
    each method's measure outputs, the study file."""
    truths = {}
    for point in points(study):
        t = study.truth_for(point)
        if t:
            truths[point_json(point)] = t
    measures = {m.name: m.measures for m in study.methods if m.measures}
    return {"truth": truths, "measures": measures, "source_file": study.source_file}
