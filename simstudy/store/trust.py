"""Whether a folder is a simstudy store, and whether its metadata can be trusted.

simstudy deletes and rewrites only what it wrote. A folder is a simstudy
store when its root ``zarr.json`` carries simstudy's marker, the
``attributes.simstudy`` object every store gets when it is made (or, while
a run makes it, a ``.simstudy`` folder and no root ``zarr.json`` yet). A
zarr store without the marker - someone's ``mydata.zarr`` - is refused by
every command, with or without ``--restart``, and nothing in it is touched
(``check_owned``).

Inside a store only the root ``zarr.json``, the ``.simstudy`` folder and
array folders (an array's ``zarr.json`` beside chunk files, nothing else)
are simstudy's (``ours``): a README or a thesis a user put beside them is
never deleted: ``--restart``, ``--prune``, a repair and a migration keep it.

The metadata is checked before anything is written (``check_sizes``): well
formed, within the cube's limits (``cube.MAX_*``) and no larger than the
store's own ``status`` array. A store whose metadata declares 10^11
replicates is refused rather than grown into: coordinates are written
again only from metadata that the arrays confirm.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from simstudy.cube import (
    MAX_LEVELS,
    MAX_METHODS,
    MAX_REPLICATES,
    MAX_TASKS,
    METHOD,
    REPLICATE,
)
from simstudy.errors import StoreError
from simstudy.store.files import read_bytes
from simstudy.store.health import read_json
from simstudy.store.meta import META

__all__ = ["MAX_CHUNK_ITEMS", "check_owned", "check_sizes", "foreign", "ours"]

MAX_CHUNK_ITEMS = 2**25  # values in one chunk (simstudy's stay under 2^20)
_NOT_OURS_HINT = (
    "use a store simstudy made (for a run: a new --store path); simstudy "
    "never writes into, or deletes, a folder it did not make"
)


def check_owned(p: Path) -> None:
    """Refuse a folder whose root ``zarr.json`` is not simstudy's."""
    f = p / "zarr.json"
    if not os.path.lexists(f):
        return
    try:
        data = json.loads(read_bytes(f))
    except (ValueError, UnicodeDecodeError):
        if (p / META).is_dir():
            return  # ours, damaged: readers say so; --restart makes it again
        raise StoreError(
            f"{p} is not a simstudy store (its zarr.json is not valid JSON and "
            "it has no .simstudy folder); refusing to touch it.",
            hint=_NOT_OURS_HINT,
        ) from None
    attrs = data.get("attributes") if isinstance(data, dict) else None
    if not isinstance(attrs, dict) or not isinstance(attrs.get("simstudy"), dict):
        raise StoreError(
            f"{p} is a zarr store but not simstudy's (its zarr.json has no "
            "simstudy metadata); refusing to touch it.",
            hint=_NOT_OURS_HINT,
        )


def _array_meta(d: Path) -> dict[str, Any] | None:
    """An array folder's own metadata; None if ``d`` is not an array folder."""
    try:
        if d.is_symlink() or not d.is_dir():
            return None
        data = json.loads(read_bytes(d / "zarr.json"))
        names = [c.name for c in d.iterdir()]
    except (OSError, ValueError, UnicodeDecodeError, StoreError):
        return None
    if not isinstance(data, dict) or data.get("node_type") != "array":
        return None
    for name in names:
        if not (name in ("zarr.json", "c") or name.startswith(("c.", "zarr."))):
            return None  # a file simstudy never writes in an array folder
    return data


def ours(child: Path) -> bool:
    """Whether an entry of a store's folder is one simstudy writes."""
    return child.name in ("zarr.json", META) or _array_meta(child) is not None


def foreign(p: Path) -> list[Path]:
    """The entries of a store's folder that simstudy did not write."""
    return sorted(c for c in p.iterdir() if not ours(c))


def _damaged(p: Path, why: str) -> StoreError:
    return StoreError(
        f"store {p}: its metadata is damaged or not simstudy's ({why}).",
        hint="restore the store's zarr.json from a backup, or run with "
        "--restart to compute everything again",
    )


def _counts(p: Path, meta: Any) -> dict[str, int]:
    """Levels per factor, replicates and methods the metadata declares."""
    if not isinstance(meta, dict):
        raise _damaged(p, "attributes.simstudy is not an object")
    order, fingerprint = meta.get("factor_order"), meta.get("fingerprint")
    if not isinstance(order, list) or not isinstance(fingerprint, dict):
        raise _damaged(p, "no factor_order or fingerprint")
    factors, methods = fingerprint.get("factors"), fingerprint.get("methods")
    reps = fingerprint.get("replicates")
    if (
        not isinstance(factors, dict)
        or sorted(map(str, factors)) != sorted(map(str, order))
        or not all(isinstance(factors[f], list) for f in order)
    ):
        raise _damaged(p, "the fingerprint's factors are not the factor order's")
    if not isinstance(methods, dict | list) or type(reps) is not int or reps < 1:
        raise _damaged(p, "no methods, or replicates not an integer >= 1")
    counts = {str(f): len(factors[f]) for f in order}
    counts[REPLICATE], counts[METHOD] = reps, len(methods)
    limits = {REPLICATE: MAX_REPLICATES, METHOD: MAX_METHODS}
    for dim, n in counts.items():
        limit = limits.get(dim, MAX_LEVELS)
        if n > limit:
            raise _damaged(
                p, f"it declares {n:,} {_noun(dim)}, above the {limit:,} simstudy makes"
            )
    tasks = math.prod(counts.values())
    if tasks > MAX_TASKS:
        raise _damaged(
            p, f"it declares {tasks:,} tasks, above the {MAX_TASKS:,} simstudy makes"
        )
    return counts


def _noun(dim: str) -> str:
    if dim == REPLICATE:
        return "replicates"
    return "methods" if dim == METHOD else f"levels of factor {dim!r}"


def check_sizes(p: Path) -> None:
    """Refuse a store whose metadata is malformed, beyond the cube's limits,
    or larger than its ``status`` array (or whose chunks are oversized)."""
    root = read_json(p / "zarr.json", p)
    attrs = root.get("attributes") if isinstance(root, dict) else None
    counts = _counts(p, (attrs or {}).get("simstudy"))
    known = (root.get("consolidated_metadata") or {}).get("metadata") or {}
    if not isinstance(known, dict):
        raise _damaged(p, "its consolidated metadata is not an object")
    shapes = [
        entry["shape"]
        for entry in (known.get("status"), _array_meta(p / "status"))
        if isinstance(entry, dict) and isinstance(entry.get("shape"), list)
    ]
    if not shapes:
        raise _damaged(p, "it has no status array")
    for i, (dim, n) in enumerate(counts.items()):
        held = max(
            (s[i] for s in shapes if i < len(s) and type(s[i]) is int), default=0
        )
        if n > held:
            raise _damaged(
                p, f"it declares {n:,} {_noun(dim)}, its status array holds {held:,}"
            )
    limits = dict.fromkeys(counts, MAX_LEVELS)
    limits.update(
        {REPLICATE: MAX_REPLICATES, METHOD: MAX_METHODS, "method": MAX_METHODS}
    )
    for name, entry in known.items():
        _check_array(p, name, entry, limits)


def _check_array(p: Path, name: str, entry: Any, limits: dict[str, int]) -> None:
    """Refuse an array whose chunks would not fit in memory one at a time,
    or whose shape is beyond the cube's limits (an output's own dimensions:
    its values per task must fit in one chunk)."""
    try:
        chunk = entry["chunk_grid"]["configuration"]["chunk_shape"]
        items = math.prod(int(c) for c in chunk)
        shape = [int(n) for n in entry["shape"]]
        dims = list(entry.get("dimension_names") or [])
    except (TypeError, KeyError, ValueError, AttributeError):
        return  # not an array of ours; zarr or health reports what is wrong
    if items > MAX_CHUNK_ITEMS:
        raise _damaged(
            p,
            f"array {name!r} has chunks of {items:,} values, above {MAX_CHUNK_ITEMS:,}",
        )
    own = [n for d, n in zip(dims, shape, strict=False) if d not in limits]
    for d, n in zip(dims, shape, strict=False):
        if n > limits.get(d, n):
            raise _damaged(p, f"array {name!r} has {n:,} {_noun(d)}")
    if dims and (len(dims) != len(shape) or math.prod(own) > MAX_CHUNK_ITEMS):
        raise _damaged(
            p, f"array {name!r} has shape {shape}, beyond what a task returns"
        )
