"""Failure and warning records: JSON files beside the cube.

``<store>/.simstudy/failures/<point>_c<chunk>.json`` (and ``warnings/``)
hold, per design point and status chunk (a *group*), one record per task
that failed (or warned): the point's levels, replicate, method, then the
details. Plain JSON: reading a store never unpickles anything.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from simstudy.declare.results import Failure, Warned
from simstudy.errors import StoreError
from simstudy.store.files import scan, write_atomic
from simstudy.store.health import read_json, record_problem, run_hint
from simstudy.store.layout import Layout
from simstudy.store.meta import META

__all__ = ["KINDS", "Group", "Records", "read_records", "records_name"]

KINDS = ("failures", "warnings")
Group = tuple[tuple[int, ...], int]  # (point index, status chunk)
# one buffered update: (start, stop, method names, records) of a batch
Update = tuple[int, int, list[str], list[Failure] | list[Warned]]


def records_name(group: Group) -> str:
    pidx, chunk = group
    return f"{'-'.join(map(str, pidx)) or 'p'}_c{chunk}.json"


def write_json(path: Path, data: Any) -> None:
    """Replace a JSON file atomically (a temporary file, then rename)."""
    write_atomic(path, json.dumps(data).encode())


def read_records(path: str | os.PathLike[str], kind: str) -> list[dict[str, Any]]:
    """All records of one kind in a store, file by file; a file that is not
    such records (valid JSON or not) is a ``StoreError`` naming it."""
    store = Path(path)
    out: list[dict[str, Any]] = []
    scan(store, META)  # a linked records folder or file is refused
    folder = store / META / kind
    factors = _factor_order(store)
    for f in sorted(folder.glob("*.json")) if folder.exists() else []:
        data = read_json(f, store)
        problem = record_problem(data, kind, factors)
        if problem is not None:
            raise StoreError(
                f"{f}: the store's records file is damaged ({problem}).",
                hint=run_hint(store),
            )
        out.extend(data)
    return out


def _factor_order(store: Path) -> list[str]:
    """The factors every record names (none if the metadata does not say)."""
    try:
        meta = read_json(store / "zarr.json", store)["attributes"]["simstudy"]
        return [str(f) for f in meta["factor_order"]]
    except (OSError, KeyError, TypeError):
        return []


class Records:
    """The record files of an open store, with updates buffered per group."""

    def __init__(self, layout: Layout) -> None:
        self.layout = layout
        self.updates: dict[str, dict[Group, list[Update]]] = {k: {} for k in KINDS}
        self.files = {
            kind: {f.name for f in (layout.path / META / kind).glob("*.json")}
            for kind in KINDS
        }

    def file(self, kind: str, group: Group) -> Path:
        return self.layout.path / META / kind / records_name(group)

    def add(self, kind: str, group: Group, update: Update) -> None:
        """Buffer a batch's records (its old ones are replaced on ``flush``)."""
        if update[3] or self.file(kind, group).name in self.files[kind]:
            self.updates[kind].setdefault(group, []).append(update)

    def flush(self, groups: set[Group] | None) -> None:
        """Write the buffered updates of ``groups`` (None: all)."""
        for kind, updates in self.updates.items():
            for group in list(updates):
                if groups is None or group in groups:
                    self._write(kind, group, updates.pop(group))

    def _write(self, kind: str, group: Group, updates: list[Update]) -> None:
        """Apply updates to a group's file: a rerun task's old records go."""
        path = self.file(kind, group)
        known = path.name in self.files[kind]
        records = read_json(path, self.layout.path) if known else []
        point = self.layout.point_of(group[0])
        for start, stop, names, new in updates:
            records = [
                e
                for e in records
                if not (start <= e["replicate"] < stop and e["method"] in names)
            ]
            records += [r.record(point) for r in new]
        if not records and not known:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json(path, records)
        self.files[kind].add(path.name)

    def drop_methods(self, names: list[str]) -> None:
        """Forget every record of these methods (they are computed again)."""
        for kind in KINDS:
            for f in (self.layout.path / META / kind).glob("*.json"):
                records = read_json(f, self.layout.path)
                kept = [r for r in records if r["method"] not in names]
                if len(kept) != len(records):
                    write_json(f, kept)
