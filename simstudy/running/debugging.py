"""Debug one task: replay it with exactly its streams; group failures; verify.

``replay`` reruns a single (design point, replicate, method) in this
process, as the worker ran it, and compares with the store. ``errors``
groups a store's failures and prints the replay command of each group.
``verify`` recomputes a sample of finished tasks, each alone, and names any
method that does not give the same numbers twice.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from simstudy.backends import backend_of
from simstudy.cube import FAILED, FIXED_VARS, METHOD, OK, REPLICATE
from simstudy.declare.grid import points
from simstudy.declare.loader import load_study
from simstudy.declare.outputs import OutputSpecs
from simstudy.declare.study import Level, Study
from simstudy.errors import FingerprintMismatch, StoreError, UsageError
from simstudy.running.recompute import differing, task_batch
from simstudy.shell import command, quote

__all__ = [
    "Replay",
    "error_groups",
    "parse_task",
    "replay",
    "task_spec",
    "verify",
]
# simstudy.replay / simstudy.verify are these functions (the package exports them)


@dataclass
class Replay:
    """What replaying one task gave."""

    point: dict[str, Level]
    replicate: int
    method: str
    data: Any = None
    outputs: dict[str, np.ndarray[Any, Any]] | None = None
    error: BaseException | None = None
    stored: dict[str, np.ndarray[Any, Any]] | None = None  # None: not in a store
    stored_status: int | None = None
    same: bool | None = (
        None  # outputs == stored, bit for bit (None: nothing to compare)
    )
    differing: list[str] = field(default_factory=list)
    # jax studies: the largest difference between the engine's vmapped kernel
    # and the cell computed eagerly, unvectorised (float tolerance, not bits)
    eager_difference: float | None = None


def task_spec(point: dict[str, Any], replicate: int, method: str) -> str:
    """The ``--task`` text of a task: ``n=100,eps=0.1,replicate=17,method=median``.

    A level or method name that this form cannot carry (a ``,`` or ``=`` in
    it, spaces at its ends, a newline or tab, empty) gives the JSON form:
    ``{"lab": "a,b", "replicate": 3, "method": "m"}``. Either is one shell
    argument once quoted (:func:`simstudy.shell.quote`).
    """
    fields = {**point, "replicate": replicate, "method": method}
    if all(_plain(v) for v in fields.values()):
        return ",".join(f"{k}={v}" for k, v in fields.items())
    return json.dumps(fields, ensure_ascii=False)


def _plain(value: Any) -> bool:
    """Whether ``NAME=VALUE,...`` carries ``value`` unchanged."""
    text = str(value)
    return (
        bool(text)
        and text == text.strip()
        and text.isprintable()  # a newline or tab: JSON escapes it
        and not set(text) & {",", "="}
    )


def _task_fields(text: str) -> dict[str, Any]:
    """``--task`` text -> name -> value (text, or JSON values for the JSON form)."""
    if text.lstrip().startswith("{"):
        try:
            given = json.loads(text)
        except ValueError as exc:
            raise UsageError(
                f"--task {text!r}: not a JSON object ({exc}).",
                hint='write e.g. --task \'{"n": 100, "replicate": 17, "method": '
                '"median"}\'',
            ) from None
        if not isinstance(given, dict):
            raise UsageError(
                f"--task {text!r}: not a JSON object.",
                hint='write e.g. --task \'{"n": 100, "replicate": 17, "method": '
                '"median"}\'',
            )
        return given
    fields: dict[str, Any] = {}
    for part in text.split(","):
        key, sep, value = part.partition("=")
        if not sep or not key.strip():
            raise UsageError(
                f"--task {text!r}: {part!r} is not NAME=VALUE.",
                hint="write e.g. --task n=100,eps=0.1,replicate=17,method=median, "
                "or the JSON form for levels with ',' or '=' (see docs/cli.md)",
            )
        fields[key.strip()] = value.strip()
    return fields


def parse_task(study: Study, text: str) -> tuple[int, dict[str, Level], int, int]:
    """Parse ``--task`` text into (point index, point, replicate, method index).

    Two forms: ``n=100,eps=0.1,replicate=17,method=median`` and a JSON object
    ``{"n": 100, "eps": 0.1, "replicate": 17, "method": "median"}`` (for
    levels or method names containing ``,`` or ``=``).
    """
    given = _task_fields(text)
    names = [*study.factors, "replicate", "method"]
    missing = [n for n in names if n not in given]
    unknown = [k for k in given if k not in names]
    if missing or unknown:
        raise UsageError(
            f"--task {text!r}: "
            + (f"missing {missing}" if missing else f"unknown names {unknown}")
            + f"; a task names {names}.",
            hint="write every factor, replicate and method, e.g. --task "
            + quote(task_spec(study.first_point, 0, study.method_names[0])),
        )
    point: dict[str, Level] = {}
    for f, levels in study.factors.items():
        match = [lv for lv in levels if _matches(lv, given[f])]
        if not match:
            raise UsageError(
                f"--task: {f}={given[f]} is not a level of factor {f!r}.",
                hint=f"levels of {f}: {', '.join(map(repr, levels))}",
            )
        point[f] = match[0]
    asked = given["replicate"]
    try:
        replicate = (
            int(asked)
            if isinstance(asked, str | int) and not isinstance(asked, bool)
            else -1
        )
    except (TypeError, ValueError):
        replicate = -1
    if not 0 <= replicate < study.replicates:
        raise UsageError(
            f"--task: replicate={asked} is not in 0..{study.replicates - 1}.",
            hint="replicates are numbered from 0",
        )
    if given["method"] not in study.method_names:
        raise UsageError(
            f"--task: method={given['method']} is not a method of the study.",
            hint=f"methods: {', '.join(map(repr, study.method_names))}",
        )
    grid = points(study)
    if point not in grid:
        raise UsageError(
            f"--task: {task_spec(point, replicate, given['method'])} is outside the "
            "study's design (where=, or factors that vary together, leave it out).",
            hint="replay a design point, e.g. "
            + task_spec(study.first_point, replicate, given["method"]),
        )
    return (
        grid.index(point),
        point,
        replicate,
        study.method_names.index(given["method"]),
    )


def _matches(level: Level, given: Any) -> bool:
    """Whether ``given`` (text, or a JSON value) names ``level``."""
    if isinstance(given, str):
        return str(level) == given or _same(level, given)
    if isinstance(level, bool) or isinstance(given, bool):
        return level is given
    if isinstance(level, int | float) and isinstance(given, int | float):
        return float(level) == float(given)
    return False


def _same(level: Level, text: str) -> bool:
    if isinstance(level, bool) or not isinstance(level, int | float):
        return False
    try:
        return float(text) == float(level)
    except ValueError:
        return False


def replay(
    study: Study | str | os.PathLike[str],
    task: str,
    *,
    store: str | os.PathLike[str] | None = None,
    debugger: bool = False,
) -> Replay:
    """Run one task here, with exactly the streams the engine gives it.

    Parameters
    ----------
    study : Study or path
        The study (file).
    task : str
        ``n=100,eps=0.1,replicate=17,method=median``: every factor, the
        replicate and the method; or the same as a JSON object,
        ``{"lab": "a,b", "replicate": 17, "method": "median"}``, for levels
        or method names with ``,`` or ``=``.
    store : path, optional
        A store to compare with (bit for bit).
    debugger : bool
        Stop in ``pdb`` at an exception the task raises.

    Returns
    -------
    Replay
        The data object, the outputs (or the exception), the stored outputs
        and whether they are identical.
    """
    if not isinstance(study, Study):
        study = load_study(study)
    p, point, r, m = parse_task(study, task)
    where = Path(store) if store is not None else None
    out = Replay(point, r, study.methods[m].name)
    specs = OutputSpecs()
    if where is not None:
        _load_stored(out, where)
        specs = _stored_specs(where)
    batch = task_batch(study, p, point, r, (m,))
    cell = backend_of(study).cell(study, batch, specs, debugger=debugger)
    out.data, out.outputs, out.error = cell.data, cell.outputs, cell.error
    out.eager_difference = cell.eager_difference
    if out.stored is not None and out.outputs is not None:
        out.differing = differing(out.outputs, out.stored)
        out.same = not out.differing
    return out


def _stored_specs(store: Path) -> OutputSpecs:
    """What the store knows of the outputs (per-task shapes, method names)."""
    from simstudy.store import open_results

    ds = open_results(store)
    meta = ds.attrs["simstudy"]
    n = len(meta["factor_order"]) + 2
    specs = OutputSpecs(
        {str(v): tuple(ds[v].shape[n:]) for v in ds.data_vars if v not in FIXED_VARS},
        {m: tuple(names) for m, names in meta.get("outputs", {}).items()},
    )
    ds.close()
    return specs


def _load_stored(out: Replay, store: Path) -> None:
    from simstudy.store import open_results

    ds = open_results(store)
    try:
        where = {**out.point, REPLICATE: out.replicate, METHOD: out.method}
        try:
            out.stored_status = int(ds["status"].sel(where))
        except KeyError:
            raise StoreError(
                f"{store} has no task {task_spec(out.point, out.replicate, out.method)}.",
                hint="is this the store of that study file?",
            ) from None
        if out.stored_status == OK:
            names = ds.attrs["simstudy"].get("outputs", {}).get(out.method)
            out.stored = {
                str(v): np.asarray(ds[v].sel(where).values)
                for v in ds.data_vars
                if v not in FIXED_VARS and (names is None or v in names)
            }
    finally:
        ds.close()


# ---- errors ------------------------------------------------------------------
@dataclass
class ErrorGroup:
    """Failed tasks sharing a design point, method and exception type."""

    point: dict[str, Any]
    method: str
    type: str
    count: int
    message: str
    replicates: list[int]


def error_groups(store: str | os.PathLike[str]) -> list[ErrorGroup]:
    """Group a store's failed tasks by design point, method and exception type."""
    from simstudy.store import open_results, read_failures

    ds = open_results(store)
    factors = list(ds.attrs["simstudy"]["factor_order"])
    status = ds["status"].values  # one read, then plain indexing per record
    index = {
        name: {
            v.item() if hasattr(v, "item") else v: i
            for i, v in enumerate(ds[name].values)
        }
        for name in (*factors, METHOD)
    }
    groups: dict[tuple[Any, ...], ErrorGroup] = {}
    for record in sorted(read_failures(store), key=lambda r: r["replicate"]):
        point = {k: record[k] for k in factors}
        try:
            at = (
                *(index[k][record[k]] for k in factors),
                int(record["replicate"]),
                index[METHOD][record["method"]],
            )
        except (KeyError, IndexError):
            continue
        if status[at] != FAILED:
            continue  # a record not committed (the run stopped before its status)
        key = (*point.values(), record["method"], record["type"])
        group = groups.get(key)
        if group is None:
            group = groups[key] = ErrorGroup(
                point, record["method"], record["type"], 0, record["message"], []
            )
        group.count += 1
        group.replicates.append(int(record["replicate"]))
    ds.close()
    return sorted(groups.values(), key=lambda g: -g.count)


def _same_study(
    study: Study, stored: dict[str, Any], store: str | os.PathLike[str]
) -> None:
    """Refuse to verify a store against a study that has changed since: its
    numbers would differ for that reason, not for randomness."""
    from simstudy.store.reconcile import compare, upgrade

    new = study.fingerprint()
    changes = compare(upgrade(stored, study, new), new)
    if changes:
        raise FingerprintMismatch(
            f"{store} was made by another version of the study: "
            + "; ".join(c.text for c in changes)
            + "; verify compares a store with the study that made it.",
            hint=f"run the study first ({command('run', 'STUDY.py')}, with "
            "--recompute METHOD for a changed method), then verify",
        )


# ---- verify ------------------------------------------------------------------
@dataclass
class Verification:
    """Finished tasks recomputed, and the methods whose numbers changed."""

    tasks: int
    differ: dict[str, list[str]]  # method -> tasks (task specs) that differ


def verify(
    study: Study | str | os.PathLike[str],
    store: str | os.PathLike[str],
    *,
    sample: int = 20,
    scheduler: str | None = None,
    workers: int | None = None,
    seed: int | None = None,
) -> Verification:
    """Recompute a random sample of finished replicates; compare bit for bit.

    Each finished task of a sampled replicate is recomputed alone (its own
    one-task batch, as ``replay`` does), not in the batch order of the run.
    A method that uses global random state, the clock or unordered threads,
    or whose numbers depend on the methods run before it, gives other
    numbers the second time; it is named in ``differ``. Runs
    in this process unless ``scheduler`` says otherwise.
    """
    from simstudy.executors import make_executor, study_payload
    from simstudy.running.options import RunOptions
    from simstudy.store import open_results

    if not isinstance(study, Study):
        study = load_study(study)
    options = RunOptions.build(  # checked as a run's are (scheduler, backend)
        study,
        store=Path(store),
        scheduler=scheduler or backend_of(study).local_scheduler,
        workers=workers or 2,
    )
    if sample < 1:
        raise UsageError(
            f"--sample must be >= 1, got {sample}.", hint="write --sample 20"
        )
    ds = open_results(store)
    _same_study(study, ds.attrs["simstudy"]["fingerprint"], store)
    grid = points(study)
    status = ds["status"]
    rows = _finished(study, grid, status)
    if not rows:
        raise StoreError(
            f"{store} has no finished task to verify.", hint="run it first"
        )
    rng = np.random.default_rng(seed)
    chosen = sorted(rng.choice(len(rows), size=min(sample, len(rows)), replace=False))
    # each method of a sampled replicate alone, as replay computes it: a
    # number that depends on the methods run before it in a batch differs
    batches = [
        task_batch(study, p, grid[p], r, (m,))
        for p, r, methods in (rows[i] for i in chosen)
        for m in methods
    ]
    specs = _stored_specs(Path(store))
    differ: dict[str, list[str]] = {}
    tasks = 0
    executor = make_executor(study, options, payload=study_payload(study))
    try:
        executor.wait()
        for result in executor.results(iter(batches), lambda: specs):
            batch = result.batch
            point = grid[batch.point]
            for j, m in enumerate(batch.methods):
                name = study.methods[m].name
                where = {**point, REPLICATE: batch.start, METHOD: name}
                tasks += 1
                new = {v: result.outputs[v][0, j] for v in result.outputs}
                old = {v: np.asarray(ds[v].sel(where).values) for v in result.outputs}
                if result.status[0, j] != OK or differing(new, old):
                    task = task_spec(point, batch.start, name)
                    differ.setdefault(name, []).append(task)
    finally:
        executor.close()
        ds.close()
    return Verification(tasks, differ)


def _finished(
    study: Study, grid: list[dict[str, Level]], status: Any
) -> list[tuple[int, int, tuple[int, ...]]]:
    """(point index, replicate, the study's methods ok there) of every
    replicate with at least one ok task."""
    stored = [str(name) for name in status[METHOD].values]
    columns = {
        m: stored.index(meth.name)
        for m, meth in enumerate(study.methods)
        if meth.name in stored
    }
    rows = []
    for p, point in enumerate(grid):
        try:
            codes = status.sel(point).values  # (replicate, method) in store order
        except KeyError:
            continue
        ok = codes[: study.replicates] == OK
        for r in np.flatnonzero(ok.any(axis=1)):
            methods = tuple(m for m, col in columns.items() if ok[r, col])
            rows.append((p, int(r), methods))
    return rows
