"""A store meets a study: compare fingerprints, grow, reset, hide, prune.

On open, the study's fingerprint is compared with the store's: a change
that would change numbers is refused (``FingerprintMismatch``, saying
what); added replicates, levels and methods grow the cube; ``--recompute``
methods are made pending; levels and methods the study dropped are hidden
(``active`` in the metadata) or, with ``--prune``, deleted by rewriting the
store beside itself and swapping it in.
"""

from __future__ import annotations

import itertools
import json
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from simstudy.cube import FIXED_VARS, METHOD, REPLICATE
from simstudy.declare import fingerprint
from simstudy.declare.study import Study
from simstudy.errors import FingerprintMismatch, StoreError
from simstudy.shell import FROM_CLI, option
from simstudy.store import seals
from simstudy.store.chunks import ChunkedArray
from simstudy.store.crash import crash_point
from simstudy.store.files import read_bytes
from simstudy.store.layout import CHUNK_KEYS, COMPRESSORS, Layout, coord
from simstudy.store.meta import META
from simstudy.store.records import KINDS, Records, records_name
from simstudy.store.seals import Seals
from simstudy.store.trust import foreign

__all__ = ["compare", "finish_prune", "prune", "reconcile", "set_active", "wipe"]


@dataclass(frozen=True, slots=True)
class Change:
    """One difference between a store's fingerprint and a study's."""

    text: str
    method: str | None = None  # the method it is confined to (--recompute can)


def _code_changes(
    what: str, old: dict[str, Any], new: dict[str, Any], method: str | None
) -> list[Change]:
    """Say what changed in a function's reach: its own code or what it uses."""
    if old.get("reach_of") is None or new.get("reach_of") is None:
        return [Change(f"{what} changed", method)]  # a format-1 store: no detail
    out = []
    for label, verb in fingerprint.explain(old["reach_of"], new["reach_of"]):
        if label == "itself":
            out.append(Change(f"{what} changed", method))
        else:
            out.append(Change(f"{label} used by {what} {verb}", method))
    return out or [Change(f"{what} changed", method)]


def _reach(fp: dict[str, Any], name: str | None) -> dict[str, Any]:
    reach = fp.get("reach") or {}
    if name is None:
        return {"reach_of": reach.get("data")}
    return {"reach_of": (reach.get("methods") or {}).get(name)}


def compare(
    old: dict[str, Any], new: dict[str, Any], *, ignore_methods: set[str] | None = None
) -> list[Change]:
    """Return the changes between fingerprints that would change numbers
    (leaving out changed methods in ``ignore_methods``)."""
    changes = []
    backends = [fp.get("backend", {"name": "numpy"}) for fp in (old, new)]
    if backends[0] != backends[1]:
        changes.append(Change(f"backend changed ({backends[0]!r} -> {backends[1]!r})"))
    for part, label in [("seed", "seed"), ("scheme", "rng scheme")]:
        if old[part] != new[part]:
            changes.append(Change(f"{label} changed ({old[part]!r} -> {new[part]!r})"))
    if old["data"] != new["data"]:
        what = "the data function"
        changes += [
            Change(c.text + " (every result depends on it)")
            for c in _code_changes(what, _reach(old, None), _reach(new, None), None)
        ]
    if old["fixed"] != new["fixed"]:
        changes.append(Change("fixed inputs changed"))
    if set(old["factors"]) != set(new["factors"]):
        changes.append(
            Change(
                f"factor names changed ({list(old['factors'])} -> "
                f"{list(new['factors'])})"
            )
        )
    for name, h in new["methods"].items():
        if (
            name in old["methods"]
            and old["methods"][name] != h
            and name not in (ignore_methods or ())
        ):
            what = f"method {name!r}"
            changes += _code_changes(what, _reach(old, name), _reach(new, name), name)
    if new["scheme"] != "spawn" and not changes:
        same = (
            old["factors"] == new["factors"]
            and old.get("design") == new.get("design")
            and old["replicates"] == new["replicates"]
            and list(old["methods"]) == list(new["methods"])
        )
        if not same:
            changes.append(
                Change(
                    f"the design changed under the positional {new['scheme']!r} "
                    "scheme, which renumbers every stream"
                )
            )
    return changes


def upgrade(old: dict[str, Any], study: Study, new: dict[str, Any]) -> dict[str, Any]:
    """A format-1 fingerprint hashed each function's raw source: where that
    hash still matches the study's, take the new (reach) hash instead, so an
    old store is not refused for a change of hashing."""
    if old.get("version", 1) >= 2:
        return old
    legacy = study.legacy_hashes()
    upgraded = dict(old)
    if old["data"] == legacy["data"]:
        upgraded["data"] = new["data"]
    upgraded["methods"] = {
        m: new["methods"][m]
        if m in new["methods"] and h == legacy["methods"].get(m)
        else h
        for m, h in old["methods"].items()
    }
    return upgraded


def reconcile(
    layout: Layout, records: Records, study: Study, recompute: tuple[str, ...] = ()
) -> None:
    """Compare fingerprints; extend the cube with new levels/methods/replicates;
    discard the results of the ``recompute`` methods."""
    new = study.fingerprint()
    old = upgrade(layout.meta.fingerprint, study, new)
    changes = compare(old, new, ignore_methods=set(recompute))
    if changes:
        raise _mismatch(layout, changes)
    _check_level_types(layout, study)
    reset = [m for m in recompute if m in layout.methods]
    if reset:
        _reset_methods(layout, records, reset)
    _adopt(layout, old, new)
    _grow(layout, study, layout.meta.fingerprint["methods"])


def _check_level_types(layout: Layout, study: Study) -> None:
    """Refuse levels equal to stored ones but of another type (20.0 for 20):
    they would match the stored points, and every task would get a float
    (or an int, or a bool) where the stored results got the other type."""
    for f in layout.factor_names:
        stored = {repr(lv): lv for lv in layout.levels[f]}
        for lv in study.factors[f]:
            twin = next(
                (s for s in layout.levels[f] if s == lv and type(s) is not type(lv)),
                None,
            )
            if twin is None or repr(lv) in stored:
                continue
            raise FingerprintMismatch(
                f"store {layout.path}: factor {f!r} has levels "
                f"{layout.levels[f]!r} ({type(twin).__name__}), the study "
                f"{list(study.factors[f])!r} ({type(lv).__name__}); the study's "
                f"tasks would get {f}={lv!r} where the stored ones got {twin!r}.",
                hint=f"write the levels as the store has them ({f}: "
                f"{layout.levels[f]!r}), or choose a new --store",
            )


def _mismatch(layout: Layout, changes: list[Change]) -> FingerprintMismatch:
    methods = sorted({c.method for c in changes if c.method is not None})
    message = (
        f"store {layout.path} was made by a different study: "
        + "; ".join(c.text for c in changes)
        + "."
    )
    if all(c.method is not None for c in changes):
        which = methods[0] if len(methods) == 1 else methods
        hint = (
            f"run with {option('recompute', which)} to recompute only that "
            f"method's results (the rest is kept), or {option('restart')} to "
            "discard everything"
        )
    else:
        hint = (
            f"run with {option('restart')} to discard it, or choose a new "
            f"{option('store', 'PATH') if FROM_CLI.get() else 'store='}"
        )
    return FingerprintMismatch(message, hint=hint)


def _adopt(layout: Layout, old: dict[str, Any], new: dict[str, Any]) -> None:
    """Keep the study's hashes and reach (they match, or were recomputed);
    methods the study dropped keep theirs."""
    fingerprint = dict(layout.meta.fingerprint)
    reach = dict(fingerprint.get("reach") or {})
    kept = dict(reach.get("methods") or {})
    kept.update(new["reach"]["methods"])
    fingerprint["methods"] = {**old["methods"], **new["methods"]}
    fingerprint["data"] = new["data"]
    fingerprint["reach"] = {"data": new["reach"]["data"], "methods": kept}
    fingerprint["version"] = new["version"]
    fingerprint.pop("design", None)  # what the positional schemes compare (hashed)
    if new.get("design"):
        fingerprint["design"] = new["design"]
    if fingerprint != layout.meta.fingerprint:
        layout.meta.fingerprint = fingerprint
        layout.save_meta()  # after a reset: only once it is on disk


def _grow(layout: Layout, study: Study, methods_fp: dict[str, Any]) -> None:
    """Add the study's new levels, methods and replicates to the cube."""
    grew = False
    for f in layout.factor_names:
        extra = [lv for lv in study.factors[f] if lv not in layout.levels[f]]
        if extra:
            layout.levels[f] += extra
            grew = True
    extra_m = [m for m in study.method_names if m not in layout.methods]
    layout.methods += extra_m
    replicates = max(layout.replicates, study.replicates)
    grew = grew or bool(extra_m) or replicates > layout.replicates
    if not grew:
        return
    layout.replicates = replicates
    for f in layout.factor_names:
        coord(layout.root, f, layout.levels[f], overwrite=True)
    coord(layout.root, REPLICATE, range(replicates), overwrite=True)
    coord(layout.root, METHOD, layout.methods, overwrite=True)
    crash_point("grow:coords")
    layout.resize()
    crash_point("grow:resized")
    fingerprint = dict(layout.meta.fingerprint)
    fingerprint["factors"] = layout.levels
    fingerprint["methods"] = methods_fp
    fingerprint["replicates"] = replicates
    layout.meta.fingerprint = fingerprint
    layout.save_meta()
    layout.reopen()


def _reset_methods(layout: Layout, records: Records, names: list[str]) -> None:
    """Make every task of these methods pending and forget their results.

    Order matters for a crash in between: status first (the tasks become
    pending), then outputs, records and the methods' output names; the
    caller saves the methods' new fingerprint last.
    """
    cols = np.array(sorted(layout.methods.index(m) for m in names))
    order = ["status"] + [v for v in layout.var_names() if v != "status"]
    for var in order:
        fill = FIXED_VARS[var][1] if var in FIXED_VARS else np.nan
        array = ChunkedArray(layout.path, var, layout.array(var))
        _fill_columns(array, len(layout.factor_names) + 1, cols, fill)
        if var == "status":
            crash_point("recompute:status")
    records.drop_methods(names)
    for m in names:
        layout.meta.outputs.pop(m, None)
    layout.forget_specs()
    layout.save_meta()


def _fill_columns(
    array: ChunkedArray, at_dim: int, cols: np.ndarray[Any, Any], fill: Any
) -> None:
    """Set the given method columns (dimension ``at_dim``) of every chunk of
    one variable to ``fill``, through sealed writes (``store.seals``). A
    chunk that is damaged or not the one written at its position is left as
    it is: the repair that follows (``store.integrity``) recomputes all its
    tasks."""
    sealed = Seals(array.dir)
    width = array.chunks[at_dim]
    for file in array.chunk_files():
        coords = array.coords_of(file)
        hit = cols[cols // width == coords[at_dim]]
        if not len(hit) or array.problem(file, sealed) is not None:
            continue
        chunk = array.read(coords)
        chunk[(*([slice(None)] * at_dim), hit % width)] = fill
        array.write(coords, chunk)


def set_active(layout: Layout, study: Study) -> dict[str, Any]:
    """Record which levels and methods the current study has: the others
    stay in the store but are hidden from summaries (``open_results``).
    Returns the hidden ones: ``{"levels": {factor: [...]}, "methods": [...]}``."""
    hidden_levels = {
        f: [lv for lv in layout.levels[f] if lv not in study.factors[f]]
        for f in layout.factor_names
    }
    hidden_levels = {f: v for f, v in hidden_levels.items() if v}
    hidden_methods = [m for m in layout.methods if m not in study.method_names]
    active = None
    if hidden_levels or hidden_methods:
        active = {
            "factors": {f: list(study.factors[f]) for f in layout.factor_names},
            "methods": list(study.method_names),
        }
    design = _design(layout, study)
    if active != layout.meta.active or design != layout.meta.design:
        layout.meta.active = active
        layout.meta.design = design
        layout.save_meta()
    points = _hidden_points(layout, study) if design is not None else 0
    return {"levels": hidden_levels, "methods": hidden_methods, "points": points}


def _design(layout: Layout, study: Study) -> list[list[Any]] | None:
    """The study's design points as the metadata keeps them (levels in the
    store's factor order), or None for the full cross of its levels."""
    if study.design.full:
        return None
    names = list(study.factors)
    at = [names.index(f) for f in layout.factor_names]
    return [[row[i] for i in at] for row in study.design.points]


def _out_of_design(layout: Layout, study: Study) -> set[tuple[int, ...]]:
    """Store indices of the points within the study's levels that its
    design leaves out."""
    kept = {layout.point_index(p) for p in _points(layout, study)}
    axes = [
        [i for i, lv in enumerate(layout.levels[f]) if lv in study.factors[f]]
        for f in layout.factor_names
    ]
    return {tuple(ix) for ix in itertools.product(*axes)} - kept


def _points(layout: Layout, study: Study) -> list[dict[str, Any]]:
    names = list(study.factors)
    return [dict(zip(names, row, strict=True)) for row in study.design.points]


def _hidden_points(layout: Layout, study: Study) -> int:
    """Points outside the design that have stored tasks (hidden, or deleted
    by --prune)."""
    out = _out_of_design(layout, study)
    status = ChunkedArray(layout.path, "status", layout.array("status"))
    n = len(layout.factor_names)
    written = {status.coords_of(f)[:n] for f in status.chunk_files()}
    return len(out & written)


def prune(layout: Layout, study: Study, lock_file: Path) -> None:
    """Rewrite the store without the levels and methods the study dropped.

    The pruned copy is built beside the store (``<store>.pruning``),
    marked complete, then swapped in; ``finish_prune`` completes or
    discards a swap a crash interrupted, so the store is never half pruned.
    """
    keep = {
        f: [i for i, lv in enumerate(layout.levels[f]) if lv in study.factors[f]]
        for f in layout.factor_names
    }
    methods = [i for i, m in enumerate(layout.methods) if m in study.method_names]
    tmp = layout.path.with_name(layout.path.name + ".pruning")
    if tmp.exists():
        _discard(tmp)
    (tmp / META).mkdir(parents=True)  # marks the copy as ours from the start
    root = zarr.open_group(str(tmp), mode="w-", zarr_format=3)
    levels = {f: [layout.levels[f][i] for i in keep[f]] for f in layout.factor_names}
    names = [layout.methods[i] for i in methods]
    meta = json.loads(json.dumps(layout.meta.to_json()))
    fingerprint = meta["fingerprint"]
    fingerprint["factors"] = levels
    fingerprint["methods"] = {m: fingerprint["methods"][m] for m in names}
    meta["outputs"] = {m: v for m, v in meta.get("outputs", {}).items() if m in names}
    meta.pop("active", None)
    attrs = dict(layout.root.attrs.asdict())
    attrs["simstudy"] = meta
    root.attrs.update(attrs)
    for f in layout.factor_names:
        coord(root, f, levels[f])
    coord(root, REPLICATE, range(layout.replicates))
    coord(root, METHOD, names)
    dropped = _out_of_design(layout, study) if not study.design.full else set()
    for var in layout.var_names():
        _copy_kept(layout, root, var, keep, levels, methods, dropped)
        seals.seal_folder(tmp / var)  # zarr wrote the copy
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        zarr.consolidate_metadata(str(tmp))
    _copy_records(layout, tmp, levels, names, study)
    (tmp / META).mkdir(exist_ok=True)
    shutil.copy(lock_file, tmp / META / "lock")
    (tmp / META / "pruned").write_text("complete\n")
    crash_point("prune:copied")
    finish_prune(layout.path)


def _copy_kept(
    layout: Layout,
    root: zarr.Group,
    var: str,
    keep: dict[str, list[int]],
    levels: dict[str, list[Any]],
    methods: list[int],
    dropped: set[tuple[int, ...]],
) -> None:
    """Copy the kept levels and methods of one variable into the pruned copy."""
    factors = layout.factor_names
    n_factors = len(factors)
    src = layout.array(var)
    extra = tuple(src.shape[n_factors + 2 :])
    dest = root.create_array(
        var,
        shape=(
            *(len(levels[f]) for f in factors),
            layout.replicates,
            len(methods),
            *extra,
        ),
        chunks=src.chunks,
        dtype=src.dtype,
        fill_value=src.fill_value,
        dimension_names=src.metadata.dimension_names,
        compressors=list(COMPRESSORS),
        chunk_key_encoding=CHUNK_KEYS,  # type: ignore[arg-type]
    )
    for new in np.ndindex(*(len(keep[f]) for f in factors)):
        old = tuple(keep[f][i] for f, i in zip(factors, new, strict=True))
        if old in dropped:  # outside the design: left pending, never copied
            continue
        block = src.get_orthogonal_selection(
            (
                *old,
                slice(None),
                np.array(methods, dtype=np.intp),
                *(slice(None),) * len(extra),
            )
        )
        dest[(*new, slice(None), slice(None))] = block


def _copy_records(
    layout: Layout,
    tmp: Path,
    levels: dict[str, list[Any]],
    names: list[str],
    study: Study,
) -> None:
    """Copy the records of kept tasks, regrouped by their new point index."""
    factors = layout.factor_names
    design = {tuple(p[f] for f in factors) for p in _points(layout, study)}
    for kind in KINDS:
        grouped: dict[str, list[Any]] = {}
        for rf in sorted((layout.path / META / kind).glob("*.json")):
            for r in json.loads(read_bytes(rf)):
                if (
                    r["method"] not in names
                    or any(r[k] not in levels[k] for k in factors)
                    or tuple(r[k] for k in factors) not in design
                ):
                    continue
                pidx = tuple(levels[k].index(r[k]) for k in factors)
                group = (pidx, r["replicate"] // layout.group_rows)
                grouped.setdefault(records_name(group), []).append(r)
        if grouped:
            (tmp / META / kind).mkdir(parents=True)
            for name, records in grouped.items():
                (tmp / META / kind / name).write_text(json.dumps(records))


def finish_prune(path: Path) -> None:
    """Swap in a complete pruned copy (``<store>.pruning``); drop leftovers.

    Crash-safe order: the store moves to ``<store>.pruned-old``, the copy
    takes its place, the files a user put in the store move into it, the old
    one is deleted. At any point either the old or the new store is complete
    under one of these names, and each file of the user's is in one of them.
    """
    tmp = path.with_name(path.name + ".pruning")
    old = path.with_name(path.name + ".pruned-old")
    complete = (tmp / META / "pruned").is_file()
    if complete:
        if path.exists() and not old.exists():
            path.rename(old)
        if not path.exists():
            tmp.rename(path)
            (path / META / "pruned").unlink()
    if tmp.exists():
        _discard(tmp)  # incomplete: the store itself is untouched
    if old.exists() and path.exists():
        mark = old / META / "discard"
        if not mark.exists():  # first, the user's files move to the new store
            for child in foreign(old):
                if (path / child.name).exists():
                    return  # its name is taken there: leave the old store
                child.rename(path / child.name)
            mark.touch()
        _discard(old)


def _discard(folder: Path) -> None:
    """Delete a store copy of ours (it has a ``.simstudy`` folder), that
    folder last: a kill halfway leaves it recognisable; refuse to delete
    anything else."""
    meta = folder / META
    if folder.is_symlink() or meta.is_symlink() or not meta.is_dir():
        raise StoreError(
            f"{folder} exists and is not a copy simstudy made; refusing to delete it.",
            hint=f"move {folder.name} away, then run again",
        )
    for child in folder.iterdir():
        if child.name != META:
            real_dir = child.is_dir() and not child.is_symlink()
            shutil.rmtree(child) if real_dir else child.unlink()
    shutil.rmtree(meta)
    folder.rmdir()


def wipe(p: Path) -> None:
    """Delete what simstudy wrote in a store but its lock (``--restart``):
    the root ``zarr.json`` first, so a kill halfway leaves no store, not half
    of one. Files it did not write (``trust.foreign``) stay."""
    keep = set(foreign(p))
    (p / "zarr.json").unlink(missing_ok=True)
    for child in p.iterdir():
        if child in keep:
            continue
        if child.name == META:
            for sub in child.iterdir():
                if sub.name != "lock":
                    shutil.rmtree(sub) if sub.is_dir() else sub.unlink()
        elif child.is_dir():
            shutil.rmtree(child)
        else:
            child.unlink()
