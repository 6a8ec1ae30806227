"""An open, locked store for a run: the one place a run writes through.

``Store.open_for_run`` creates or reopens the store of a study, takes the
lock, reconciles the fingerprint (growing or refusing), checks every
chunk's checksum, and hands back a ``Store`` whose ``write`` takes finished
batches (see ``store.writer`` for the order on disk).

Layers: imports ``results, outputs, grid, study, cube, errors`` and the
other ``store`` modules.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from simstudy.cube import REPLICATE
from simstudy.errors import StoreError
from simstudy.grid import points
from simstudy.outputs import OutputSpecs
from simstudy.results import BatchResult
from simstudy.store import migrations, reconcile
from simstudy.store.files import scan
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
from simstudy.study import Level, Study

__all__ = ["Store"]


def _check_path(p: Path, *, restart: bool = False) -> None:
    """Refuse a store path that cannot be, or is not, a simstudy store, and
    a store with links or special files, or metadata that cannot be trusted
    (``store.trust``); nothing is written before."""
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
    if p.is_dir():
        check_owned(p)
        scan(p)
        if not restart and (p / "zarr.json").exists():
            check_sizes(p)


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
        self.hidden: dict[str, Any] = {"levels": {}, "methods": []}
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
        p = Path(path).resolve()
        _check_path(p, restart=restart)
        reconcile.finish_prune(p)
        lock = Lock(p / META / "lock")
        try:
            p.mkdir(exist_ok=True)
            with writing(p):
                lock.acquire(p)
        except PermissionError:
            raise StoreError(
                f"cannot write store {p}: permission denied.",
                hint="choose a writable --store path",
            ) from None
        try:
            with writing(p):
                return cls._open_locked(
                    p, study, lock, restart, recompute, prune, provenance
                )
        except BaseException:
            lock.release()
            raise

    @classmethod
    def _open_locked(
        cls,
        p: Path,
        study: Study,
        lock: Lock,
        restart: bool,
        recompute: tuple[str, ...],
        prune: bool,
        provenance: Mapping[str, str] | None,
    ) -> Store:
        if restart and (p / "zarr.json").exists():
            reconcile.wipe(p)
        for leftover in p.rglob("*.partial"):
            top = leftover.relative_to(p).parts
            if ours(p / top[0]) or (len(top) == 1 and top[0].startswith("zarr.")):
                leftover.unlink(missing_ok=True)  # never a partial of the user's
        if (p / "zarr.json").exists():
            restored = restore_array_metadata(p)
            check_codecs(p)
            migrations.migrate(p)
            drop_orphan_arrays(p)
            store = cls(Layout.open(p), lock, provenance)
            reconcile.reconcile(store.layout, store.records, study, recompute)
            store.repaired = restored + drop_damaged_chunks(store.layout, store.writer)
        else:
            declared = _declared(study)
            layout = Layout.create(p, study, dict(provenance or {}), declared)
            store = cls(layout, lock, provenance)
        store.save_truth(study)
        store.hidden = reconcile.set_active(store.layout, study)
        if prune and (store.hidden["levels"] or store.hidden["methods"]):
            store.flush()
            reconcile.prune(store.layout, study, lock.path)
            store = cls(Layout.open(p), lock, provenance)
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
            (mc, np.flatnonzero(methods // cols == mc)) for mc in set(methods // cols)
        ]
        for p, pidx in enumerate(points):
            for rc in sorted(written.get(pidx, ())):
                stop = min(rows, counts[p] - rc * rows)
                if stop <= 0:
                    continue
                block = np.zeros((stop, len(methods)), np.int8)
                for mc, js in groups:
                    coords = (*pidx, rc, int(mc))
                    chunk = self.writer.cache.chunks.get(("status", coords))
                    if chunk is None:
                        chunk = status.read(coords)
                    block[:, js] = chunk[(0,) * n][:stop, methods[js] % cols]
                yield p, rc, block

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

    def save_truth(self, study: Study) -> None:
        """Record the truth and measure declarations summaries read (not part
        of the fingerprint: they change no number) and the study file."""
        declared = _declared(study)
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

    def accept_versions(self) -> None:
        """Record the current versions, keeping the old ones in a history."""
        meta = self.layout.meta
        meta.versions_history.append(meta.versions)
        meta.versions = {**versions(), **self.provenance}
        self.layout.save_meta()

    def close(self) -> None:
        """Write what is buffered, then release the lock."""
        try:
            self.writer.close()
        finally:
            self.lock.release()


def _declared(study: Study) -> dict[str, Any]:
    """What the metadata keeps of the declaration: truth per design point,
    each method's measure outputs, the study file."""
    truths = {}
    for point in points(study):
        t = study.truth_for(point)
        if t:
            truths[json_key(point)] = t
    measures = {m.name: m.measures for m in study.methods if m.measures}
    return {"truth": truths, "measures": measures, "source_file": study.source_file}


def json_key(point: Mapping[str, Any]) -> str:
    """The key of a design point in the stored truth: sorted-key JSON."""
    import json

    return json.dumps(dict(point), sort_keys=True)
