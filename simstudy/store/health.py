"""Find what is damaged or missing in a store, by file and variable.

A store's numbers live in chunk files (checked by crc32c), its metadata in
JSON (``zarr.json`` files, failure and warning records) and its labels in
coordinate arrays (checked against the levels the metadata records). Bit
rot, a copy that skipped files or a hand edit can damage any of them.

``survey`` lists every problem: damaged chunks, chunks swapped or copied
to another position (``store.seals``), chunks that tasks whose
status is set need but that are gone (a deleted ``estimate`` chunk would
otherwise read as NaN for status-ok tasks), coordinates that disagree with
the metadata, records that are not JSON. Reading commands refuse a store
with problems (``check_readable``, a ``StoreError`` naming the files); a run
repairs them (``store.integrity``): it recomputes the tasks concerned.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from simstudy.cube import FIXED_VARS, METHOD, OK, PENDING, REPLICATE
from simstudy.errors import StoreError
from simstudy.shell import command
from simstudy.store.chunks import ChunkedArray, CorruptChunk
from simstudy.store.files import read_bytes
from simstudy.store.meta import META
from simstudy.store.seals import Seals

__all__ = [
    "Problems",
    "check_readable",
    "read_json",
    "record_problem",
    "run_hint",
    "survey",
]

# per-task variables a finished task always has a chunk of (``warnings`` is
# left out: stores made before it existed have none for older tasks)
NEEDED = ("seconds", "started", "worker")
SHOWN = 4  # files named in a message


def run_hint(store: Path) -> str:
    return (
        f"run {command('run', 'STUDY.py', '--store', store)}: it recomputes "
        "what those files held (the rest of the store is kept)"
    )


def read_json(path: Path, store: Path) -> Any:
    """Load a JSON file of a store; a damaged one is a ``StoreError`` naming it."""
    try:
        return json.loads(read_bytes(path))
    except (ValueError, UnicodeDecodeError) as exc:
        what = "metadata" if path.name == "zarr.json" else "records"
        raise StoreError(
            f"{path}: the store's {what} file is damaged (not valid JSON: {exc}).",
            hint=_json_hint(path, store),
        ) from None


# what every record of a kind holds besides the levels of its design point
RECORD_KEYS: dict[str, dict[str, type]] = {
    "failures": {"replicate": int, "method": str, "type": str, "message": str},
    "warnings": {
        "replicate": int,
        "method": str,
        "category": str,
        "message": str,
        "count": int,
    },
}


def record_problem(data: Any, kind: str, factors: list[str]) -> str | None:
    """What makes a record file's JSON not records of ``kind``, or None."""
    if not isinstance(data, list):
        return f"a list of records expected, got {type(data).__name__}"
    need = RECORD_KEYS[kind]
    for i, record in enumerate(data):
        if not isinstance(record, dict):
            return f"record {i} is {type(record).__name__}, not an object"
        missing = [k for k in (*factors, *need) if k not in record]
        if missing:
            return f"record {i} has no {', '.join(map(repr, missing))}"
        for key, kind_of in need.items():
            value = record[key]
            if not isinstance(value, kind_of) or isinstance(value, bool):
                return f"record {i}: {key} is {value!r}, not {kind_of.__name__}"
    return None


def _json_hint(path: Path, store: Path) -> str:
    if path.name == "zarr.json" and path.parent == store:
        return (
            "the root metadata (fingerprint, levels) cannot be rebuilt: restore "
            "the file from a backup, or run with --restart to compute everything "
            "again"
        )
    return run_hint(store)


@dataclass
class Problems:
    """What is wrong with a store; empty when nothing is."""

    # (array, chunk coords, why): damaged chunks, and chunks tasks need but
    # that are missing
    chunks: list[tuple[ChunkedArray, tuple[int, ...], str]] = field(
        default_factory=list
    )
    coords: list[str] = field(default_factory=list)  # coordinate names
    records: list[Path] = field(default_factory=list)  # damaged record files

    def __bool__(self) -> bool:
        return bool(self.chunks or self.coords or self.records)

    def lines(self, store: Path) -> list[str]:
        out = [
            f"{array.path(c).relative_to(store)} (variable {array.name!r}: {why})"
            for array, c, why in self.chunks
        ]
        out += [
            f"{name}/ (coordinate {name!r}: not the levels the metadata records)"
            for name in self.coords
        ]
        out += [
            f"{f.relative_to(store)} (records: not valid JSON, or not records)"
            for f in self.records
        ]
        return out


def survey(store: Path, root: Any, meta: dict[str, Any]) -> Problems:
    """Every damaged or missing chunk, coordinate and record file of a store.

    ``root`` is the store's zarr group; ``meta`` its ``attrs["simstudy"]``.
    """
    factors: list[str] = list(meta["factor_order"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # our .simstudy folder is no zarr node
        names = list(root.array_keys())
    coords = {*factors, REPLICATE, METHOD, "method"}
    arrays = {
        k: ChunkedArray(store, k, root[k]) for k in sorted(names) if k not in coords
    }
    problems = Problems()
    for array in arrays.values():
        sealed = Seals(array.dir)
        for f in array.chunk_files():
            why = array.problem(f, sealed)
            if why is not None:
                problems.chunks.append((array, array.coords_of(f), why))
    bad = {(a.name, c) for a, c, _ in problems.chunks}
    if "status" in arrays:
        problems.chunks += _missing(arrays, len(factors), meta, bad)
    problems.coords = _coordinate_problems(root, meta, names)
    for kind in ("failures", "warnings"):
        for f in sorted((store / META / kind).glob("*.json")):
            try:
                data = json.loads(read_bytes(f))
            except (ValueError, UnicodeDecodeError):
                problems.records.append(f)
                continue
            if record_problem(data, kind, factors) is not None:
                problems.records.append(f)  # valid JSON, but not records
    return problems


def _missing(
    arrays: dict[str, ChunkedArray],
    n: int,
    meta: dict[str, Any],
    bad: set[tuple[str, tuple[int, ...]]],
) -> list[tuple[ChunkedArray, tuple[int, ...], str]]:
    """Chunks that finished tasks need (per the status) but that are gone."""
    status = arrays["status"]
    methods = list(meta["fingerprint"]["methods"])
    outputs = meta.get("outputs") or {}
    width = status.chunks[n + 1] * (status.shape[n + 1] // status.chunks[n + 1] + 1)
    has = {  # output -> which method columns return it
        name: np.array(
            [
                i < len(methods) and name in outputs.get(methods[i], ())
                for i in range(width)
            ]
        )
        for name in arrays
        if name not in FIXED_VARS
    }
    out, seen = [], set(bad)
    for f in status.chunk_files():
        coords = status.coords_of(f)
        if ("status", coords) in bad:
            continue
        try:
            chunk = status.read(coords)[(0,) * n]  # (replicates, methods)
        except CorruptChunk:
            continue
        rows, cols = np.nonzero(chunk != PENDING)
        if not len(rows):
            continue
        reps = rows + coords[n] * status.chunks[n]
        meths = cols + coords[n + 1] * status.chunks[n + 1]
        ok = chunk[rows, cols] == OK
        for name, array in arrays.items():
            if name == "status" or (name in FIXED_VARS and name not in NEEDED):
                continue
            need = (
                np.ones(len(rows), bool)
                if name in FIXED_VARS
                else ok & has[name][meths]
            )
            r_at = reps[need] // array.chunks[n]
            m_at = meths[need] // array.chunks[n + 1]
            tail = (0,) * (len(array.chunks) - n - 2)
            if not len(r_at):
                continue
            # the (replicate, method) chunks these tasks fall in: one int code
            # each (np.unique along an axis sorts rows, ~10x slower)
            wide = int(m_at.max()) + 1
            for code in np.unique(r_at.astype(np.int64) * wide + m_at):
                r_chunk, m_chunk = divmod(int(code), wide)
                key = (*coords[:n], r_chunk, m_chunk, *tail)
                if (name, key) not in seen and not array.path(key).exists():
                    seen.add((name, key))
                    why = "missing, but the status says its tasks finished"
                    out.append((array, key, why))
    return out


def _coordinate_problems(
    root: Any, meta: dict[str, Any], names: list[str]
) -> list[str]:
    """Coordinates whose values are not the ones the metadata records.

    A coordinate may be longer than the metadata says (a run stopped while
    growing the store); only the recorded part is compared.
    """
    fingerprint = meta["fingerprint"]
    method = METHOD if METHOD in names else "method"  # a format-1 store
    expected: dict[str, list[Any]] = {
        f: list(fingerprint["factors"][f]) for f in meta["factor_order"]
    }
    expected[method] = list(fingerprint["methods"])
    out = []
    for name, levels in expected.items():
        want = repr(np.array(levels).tolist())
        try:
            have = repr(np.asarray(root[name][: len(levels)]).tolist())
        except Exception:  # a chunk that does not decode, or a missing array
            have = None
        if have != want:
            out.append(name)
    if not _replicates_intact(root, int(fingerprint["replicates"])):
        out.append(REPLICATE)
    return out


def _replicates_intact(root: Any, replicates: int) -> bool:
    """Whether the replicate coordinate is 0..R-1, read a slice at a time."""
    step = 2**20
    try:
        arr = root[REPLICATE]
        for start in range(0, replicates, step):
            stop = min(start + step, replicates)
            got = np.asarray(arr[start:stop])
            if not np.array_equal(got, np.arange(start, stop)):
                return False
    except Exception:  # a chunk that does not decode, or a missing array
        return False
    return True


def check_readable(store: Path) -> None:
    """Refuse to read a store with damaged or missing files, naming them."""
    import zarr

    root_meta = read_json(store / "zarr.json", store)
    meta = (root_meta.get("attributes") or {}).get("simstudy")
    if not isinstance(meta, dict) or "fingerprint" not in meta:
        raise StoreError(
            f"{store}/zarr.json holds no simstudy metadata; this is not a simstudy "
            "store, or its metadata is damaged.",
            hint="pass the .zarr directory that `simstudy run` wrote",
        )
    _check_growth(store, root_meta)
    try:
        root = zarr.open_group(str(store), mode="r")
    except Exception as exc:  # any complaint of zarr here is damage
        raise StoreError(
            f"{store}: zarr cannot open the store ({type(exc).__name__}: {exc}).",
            hint=run_hint(store),
        ) from None
    problems = survey(store, root, meta)
    if problems:
        lines = problems.lines(store)
        more = f" and {len(lines) - SHOWN} more" if len(lines) > SHOWN else ""
        raise StoreError(
            f"store {store} has {len(lines)} damaged or missing file(s): "
            + "; ".join(lines[:SHOWN])
            + more
            + ".",
            hint=run_hint(store),
        )


def _check_growth(store: Path, root_meta: dict[str, Any]) -> None:
    """Refuse a store a run left half grown: an array's own metadata has
    another shape than the root's (consolidated) copy says."""
    known = (root_meta.get("consolidated_metadata") or {}).get("metadata") or {}
    for name, entry in sorted(known.items()):
        own = store / name / "zarr.json"
        if not own.is_file():
            continue
        shape = read_json(own, store).get("shape")
        if shape is not None and shape != entry.get("shape"):
            raise StoreError(
                f"store {store}: a run stopped while growing the store "
                f"({name!r} has shape {shape}, the store's metadata says "
                f"{entry.get('shape')}).",
                hint=f"run {command('run', 'STUDY.py', '--store', store)}: it "
                "finishes growing the store",
            )
