"""Debug one task: replay it with exactly its streams; group failures; verify.

``replay`` reruns a single (design point, replicate, method) in this
process, as the worker ran it, and compares with the store. ``errors``
groups a store's failures and prints the replay command of each group.
``verify`` recomputes a sample of finished tasks and names any method that
does not give the same numbers twice.

Layers: imports ``executors, store, batch, grid, streams, loader, study``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from simstudy import streams
from simstudy.batch import OK, _kwargs, _Streams, _to_outputs, keys_spec
from simstudy.errors import StoreError, UsageError
from simstudy.grid import Batch, points
from simstudy.loader import load_study
from simstudy.study import Level, Study

__all__ = [
    "Plan",
    "Replay",
    "error_groups",
    "parse_task",
    "plan",
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
    """The ``--task`` text of a task: ``n=100,eps=0.1,replicate=17,method=median``."""
    levels = ",".join(f"{k}={v}" for k, v in point.items())
    return f"{levels},replicate={replicate},method={method}"


def parse_task(study: Study, text: str) -> tuple[int, dict[str, Level], int, int]:
    """Parse ``--task`` text into (point index, point, replicate, method index)."""
    given: dict[str, str] = {}
    for part in text.split(","):
        key, sep, value = part.partition("=")
        if not sep or not key.strip():
            raise UsageError(
                f"--task {text!r}: {part!r} is not NAME=VALUE.",
                hint="write e.g. --task n=100,eps=0.1,replicate=17,method=median",
            )
        given[key.strip()] = value.strip()
    names = [*study.factors, "replicate", "method"]
    missing = [n for n in names if n not in given]
    unknown = [k for k in given if k not in names]
    if missing or unknown:
        raise UsageError(
            f"--task {text!r}: "
            + (f"missing {missing}" if missing else f"unknown names {unknown}")
            + f"; a task names {names}.",
            hint="write every factor, replicate and method, e.g. "
            + task_spec(
                {f: lv[0] for f, lv in study.factors.items()}, 0, study.method_names[0]
            ),
        )
    point: dict[str, Level] = {}
    for f, levels in study.factors.items():
        match = [lv for lv in levels if str(lv) == given[f] or _same(lv, given[f])]
        if not match:
            raise UsageError(
                f"--task: {f}={given[f]} is not a level of factor {f!r}.",
                hint=f"levels of {f}: {', '.join(map(str, levels))}",
            )
        point[f] = match[0]
    try:
        r = int(given["replicate"])
    except ValueError:
        r = -1
    if not 0 <= r < study.replicates:
        raise UsageError(
            f"--task: replicate={given['replicate']} is not in 0..{study.replicates - 1}.",
            hint="replicates are numbered from 0",
        )
    if given["method"] not in study.method_names:
        raise UsageError(
            f"--task: method={given['method']} is not a method of the study.",
            hint=f"methods: {', '.join(study.method_names)}",
        )
    p = points(study).index(point)
    return p, point, r, study.method_names.index(given["method"])


def _same(level: Level, text: str) -> bool:
    if isinstance(level, bool) or not isinstance(level, int | float):
        return False
    try:
        return float(text) == float(level)
    except ValueError:
        return False


def _mt_states(
    study: Study, p: int, r: int, store: Path | None
) -> np.ndarray[Any, Any] | None:
    if study.scheme != "mt19937-jump":
        return None
    from simstudy.store import read_mt_checkpoints

    nm = len(study.methods)
    ks = [
        streams.jump_index(p, r, s, replicates=study.replicates, methods=nm)
        for s in range(nm + 1)
    ]
    chain = streams.MTChain(study.seed)
    saved = read_mt_checkpoints(store, study.seed) if store is not None else {}
    usable = [k for k in saved if k <= ks[0]]
    if usable:
        chain.seek(max(usable), saved[max(usable)])
    return chain.states(ks)


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
        replicate and the method.
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
    if study.backend == "jax":
        return _replay_jax(study, p, point, r, m, store, debugger)
    method = study.methods[m]
    where = Path(store) if store is not None else None
    batch = Batch(
        p, tuple(point.items()), r, r + 1, (m,), _mt_states(study, p, r, where)
    )
    src = _Streams(study, batch)
    values = {**point, **study.fixed_inputs}
    out = Replay(point, r, method.name)
    specs: dict[str, tuple[Any, ...]] = {}
    if where is not None:
        _load_stored(out, where, study)
        specs = _stored_specs(where)
    try:
        data_rng = src.data(0) if "rng" in study.data_params else None
        out.data = study.data_func(**_kwargs(study.data_params, values, data_rng))  # type: ignore[misc]
        rng = src.method(0, m) if method.takes_rng else None
        value = method.func(out.data, **_kwargs(method.params, values, rng))
        out.outputs = _to_outputs(method.name, value, specs, point)
    except Exception as exc:
        out.error = exc
        if debugger:
            import pdb  # noqa: T100  (--pdb asks for the debugger)

            pdb.post_mortem(exc.__traceback__)
    _compare_stored(out)
    return out


def _compare_stored(out: Replay) -> None:
    """Compare the replayed outputs with the stored ones, bit for bit."""
    if out.stored is None or out.outputs is None:
        return
    for name in sorted(set(out.outputs) | set(out.stored)):
        a, b = out.outputs.get(name), out.stored.get(name)
        if a is None or b is None or not np.array_equal(a, b, equal_nan=True):
            out.differing.append(name)
    out.same = not out.differing


def _replay_jax(
    study: Study,
    p: int,
    point: dict[str, Level],
    r: int,
    m: int,
    store: str | os.PathLike[str] | None,
    debugger: bool,
) -> Replay:
    """Replay a jax task: eagerly, unvectorised (where prints and ``--pdb``
    work), then through the engine's kernel, whose outputs are compared with
    the store bit for bit."""
    from simstudy.executors.jax import replay_cell, run_jax_batch

    out = Replay(point, r, study.methods[m].name)
    where = Path(store) if store is not None else None
    specs: dict[str, tuple[Any, ...]] = {}
    if where is not None:
        _load_stored(out, where, study)
        specs = _stored_specs(where)
    try:
        out.data, eager = replay_cell(study, point, r, m)
    except Exception as exc:
        out.error = exc
        if debugger:
            import pdb  # noqa: T100  (--pdb asks for the debugger)

            pdb.post_mortem(exc.__traceback__)
        return out
    result = run_jax_batch(study, Batch(p, tuple(point.items()), r, r + 1, (m,)), specs)
    if result.status[0, 0] != OK:
        failure = result.failures[0]
        out.error = RuntimeError(f"{failure['type']}: {failure['message']}")
        return out
    out.outputs = {name: values[0, 0] for name, values in result.outputs.items()}
    out.eager_difference = max(
        (
            float(np.max(np.abs(np.asarray(eager[n], np.float64) - v), initial=0.0))
            for n, v in out.outputs.items()
            if n in eager
        ),
        default=0.0,
    )
    _compare_stored(out)
    return out


def _stored_specs(store: Path) -> dict[str, tuple[Any, ...]]:
    from simstudy.store import FIXED_VARS, open_results

    ds = open_results(store)
    meta = ds.attrs["simstudy"]
    n = len(meta["factor_order"]) + 2
    specs: dict[str, tuple[Any, ...]] = {
        str(v): tuple(ds[v].shape[n:]) for v in ds.data_vars if v not in FIXED_VARS
    }
    for method, names in meta.get("outputs", {}).items():
        specs[keys_spec(method)] = tuple(names)
    ds.close()
    return specs


def _load_stored(out: Replay, store: Path, study: Study) -> None:
    from simstudy.store import FIXED_VARS, open_results

    ds = open_results(store)
    try:
        where = {**out.point, "replicate": out.replicate, "method": out.method}
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
        for name in (*factors, "method")
    }
    groups: dict[tuple[Any, ...], ErrorGroup] = {}
    for f in sorted(read_failures(store), key=lambda f: f["replicate"]):
        point = {k: f[k] for k in factors}
        try:
            at = (
                *(index[k][f[k]] for k in factors),
                int(f["replicate"]),
                index["method"][f["method"]],
            )
        except (KeyError, IndexError):
            continue
        if status[at] != 2:
            continue  # a record not committed (the run stopped before its status)
        key = (*point.values(), f["method"], f["type"])
        group = groups.get(key)
        if group is None:
            group = groups[key] = ErrorGroup(
                point, f["method"], f["type"], 0, f["message"], []
            )
        group.count += 1
        group.replicates.append(int(f["replicate"]))
    ds.close()
    return sorted(groups.values(), key=lambda g: -g.count)


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
    scheduler: str = "synchronous",
    workers: int | None = None,
    seed: int | None = None,
) -> Verification:
    """Recompute a random sample of finished replicates; compare bit for bit.

    A method that uses global random state, the clock or unordered threads
    gives other numbers the second time; it is named in ``differ``.
    """
    from simstudy.executors import SCHEDULERS, make_executor, study_payload
    from simstudy.store import open_results

    if not isinstance(study, Study):
        study = load_study(study)
    if study.backend == "jax" and scheduler == "synchronous":
        scheduler = "jax"  # in this process, like synchronous for numpy
    if scheduler not in SCHEDULERS:
        raise UsageError(
            f"unknown scheduler {scheduler!r}; expected one of {list(SCHEDULERS)}.",
            hint="use --scheduler synchronous (the default for verify)",
        )
    if sample < 1:
        raise UsageError(
            f"--sample must be >= 1, got {sample}.", hint="write --sample 20"
        )
    ds = open_results(store)
    grid = points(study)
    status = ds["status"]
    rows = []  # (point index, replicate) with at least one ok task
    for p, point in enumerate(grid):
        try:
            st = status.sel(point).values  # (replicate, method) in store order
        except KeyError:
            continue
        done = np.flatnonzero((st[: study.replicates] == OK).any(axis=1))
        rows += [(p, int(r)) for r in done]
    if not rows:
        raise StoreError(
            f"{store} has no finished task to verify.", hint="run it first"
        )
    rng = np.random.default_rng(seed)
    chosen = sorted(rng.choice(len(rows), size=min(sample, len(rows)), replace=False))
    batches = [
        Batch(
            p,
            tuple(grid[p].items()),
            r,
            r + 1,
            tuple(range(len(study.methods))),
            _mt_states(study, p, r, Path(store)),
        )
        for p, r in (rows[i] for i in chosen)
    ]
    specs = _stored_specs(Path(store))
    differ: dict[str, list[str]] = {}
    tasks = 0
    executor = make_executor(
        scheduler, study=study, workers=workers or 2, payload=study_payload(study)
    )
    try:
        executor.wait()
        results: Iterator[Any] = executor.results(iter(batches), lambda: specs)
        for result in results:
            b = result.batch
            point = grid[b.point]
            for j, m in enumerate(b.methods):
                name = study.methods[m].name
                where = {**point, "replicate": b.start, "method": name}
                if int(status.sel(where)) != OK:
                    continue
                tasks += 1
                same = result.status[0, j] == OK and all(
                    np.array_equal(
                        result.outputs[v][0, j],
                        np.asarray(ds[v].sel(where).values),
                        equal_nan=True,
                    )
                    for v in result.outputs
                )
                if not same:
                    differ.setdefault(name, []).append(task_spec(point, b.start, name))
    finally:
        executor.close()
        ds.close()
    return Verification(tasks, differ)


# ---- plan --------------------------------------------------------------------
@dataclass
class Plan:
    """What a run of a study would do, measured without writing anything."""

    tasks: int
    done: int  # ok in the store already
    shape: tuple[int, ...]
    values_per_task: int  # output values per task, from the pilot
    bytes: int  # uncompressed size of the cube
    pilot_tasks: int
    pilot_seconds: float
    seconds_per_task: dict[int, float]  # per design point
    estimate: float  # seconds of work, spread over ``workers``
    workers: int


def plan(
    study: Study | str | os.PathLike[str],
    *,
    store: str | os.PathLike[str] | None = None,
    workers: int | None = None,
    pilot_seconds: float = 2.0,
) -> Plan:
    """Count tasks (new vs done), size the cube and time a short pilot here.

    The pilot runs a few replicates of every design point in this process
    (their numbers are the real ones, but nothing is stored).
    """
    import time

    from simstudy.executors import batch_runner

    if not isinstance(study, Study):
        study = load_study(study)
    run = batch_runner(study)
    grid = points(study)
    nm = len(study.methods)
    done_at = [0] * len(grid)
    if store is not None and Path(store).exists():
        from simstudy.store import open_results

        ds = open_results(store)
        names = [m for m in study.method_names if m in ds["method"].values]
        for p, point in enumerate(grid):
            try:
                st = ds["status"].sel({**point, "method": names}).values
            except KeyError:
                continue
            done_at[p] = int((st[: study.replicates] == OK).sum())
        ds.close()
    spent = [0.0] * len(grid)
    ran = [0] * len(grid)
    values = 0
    t0 = time.perf_counter()
    r = 0
    # a jax kernel computes a whole block whatever the batch: pilot one block
    # per point (its kernel time per task excludes the compile)
    width = study.vmap_width or 1
    rounds = 1 if study.backend == "jax" else min(3, study.replicates)
    while r < rounds and (r == 0 or time.perf_counter() - t0 < pilot_seconds):
        for p, point in enumerate(grid):
            far = streams.jump_index(p, r, nm, replicates=study.replicates, methods=nm)
            if study.scheme == "mt19937-jump" and far > 2000:
                continue  # its chain is too long to walk for a pilot
            states = _mt_states(study, p, r, None)
            stop = min(width, study.replicates) if width > 1 else r + 1
            batch = Batch(p, tuple(point.items()), r, stop, tuple(range(nm)), states)
            result = run(study, batch, None)
            if study.backend == "jax":  # time the second call: the first warms up
                result = run(study, batch, None)
            spent[p] += float(np.nansum(result.seconds))
            ran[p] += nm * (stop - r)
            values = max(
                values,
                sum(
                    int(np.prod(a.shape[2:], dtype=np.int64))
                    for a in result.outputs.values()
                ),
            )
        r += 1
    per_task = {p: spent[p] / ran[p] for p in range(len(grid)) if ran[p]}
    typical = sum(spent) / max(sum(ran), 1)  # for points the pilot skipped
    n_workers = workers or os.cpu_count() or 1  # processes, or jax threads
    todo = [study.replicates * nm - done_at[p] for p in range(len(grid))]
    work = sum(per_task.get(p, typical) * todo[p] for p in range(len(grid)))
    shape = (*(len(v) for v in study.factors.values()), study.replicates, nm)
    per_task_bytes = (
        1 + 4 + 8 + 2 + 2 + 8 * max(values, 1)
    )  # status..warnings + outputs
    return Plan(
        tasks=study.n_tasks,
        done=sum(done_at),
        shape=shape,
        values_per_task=values,
        bytes=study.n_tasks * per_task_bytes,
        pilot_tasks=sum(ran),
        pilot_seconds=time.perf_counter() - t0,
        seconds_per_task=per_task,
        estimate=work / n_workers,
        workers=n_workers,
    )
