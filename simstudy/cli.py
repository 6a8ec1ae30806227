"""Command line: argparse, one-line errors with a hint, exit codes, progress.

Exit codes: 0 all tasks ok; 3 finished with failed tasks; 2 bad input
(nothing written); 130 interrupted (store consistent, resumable).

Layers: imports ``runner, loader, store, errors``.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
import traceback
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn, TextIO

from simstudy.errors import SimstudyError, UsageError
from simstudy.executors import SCHEDULERS
from simstudy.runner import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK

__all__ = ["main"]


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{self.prog}: {message}.", hint=f"see `{self.prog} --help`")


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a whole number, got {text!r}"
        ) from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a number >= 1, got {value}")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a number of seconds, got {text!r}"
        ) from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected seconds > 0, got {text}")
    return value


def _targets(text: str) -> dict[str, float]:
    """``bias=0.005`` or ``bias=0.005,coverage=0.01``."""
    out: dict[str, float] = {}
    for part in text.split(","):
        name, sep, value = part.partition("=")
        try:
            goal = float(value)
        except ValueError:
            goal = float("nan")
        if not sep or not name.strip() or not (0 < goal < float("inf")):
            raise argparse.ArgumentTypeError(
                f"expected MEASURE=MCSE with MCSE > 0 (e.g. bias=0.005), got {part!r}"
            )
        out[name.strip()] = goal
    return out


def _parser() -> argparse.ArgumentParser:
    top = _Parser(
        prog="python -m simstudy",
        description="Run simulation studies with reproducible streams.",
    )
    top.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = top.add_subparsers(dest="command", required=True, parser_class=_Parser)
    run = sub.add_parser("run", help="run or resume a study")
    run.add_argument("study", help="the study file (.py)")
    run.add_argument("--store", help="zarr store (default ./<study-stem>.zarr)")
    where = run.add_mutually_exclusive_group()
    where.add_argument(
        "--scheduler",
        default=None,
        choices=SCHEDULERS,
        help="where tasks run (default: processes, one worker process per core; "
        "jax, in this process, for backend='jax' studies)",
    )
    where.add_argument(
        "--address", help="tcp://HOST:PORT or tls://HOST:PORT of a Dask scheduler"
    )
    where.add_argument(
        "--cluster",
        choices=["slurm"],
        help="start a cluster: slurm (dask-jobqueue; settings in --cluster-config)",
    )
    run.add_argument(
        "--cluster-config",
        metavar="FILE",
        help="TOML settings for --cluster (default ./simstudy-cluster.toml)",
    )
    run.add_argument("--tls-ca-file", metavar="PEM", help="CA file for tls://")
    run.add_argument("--tls-cert", metavar="PEM", help="client certificate for tls://")
    run.add_argument("--tls-key", metavar="PEM", help="client private key for tls://")
    run.add_argument(
        "--insecure",
        action="store_true",
        help="allow plain tcp:// to a non-loopback scheduler",
    )
    run.add_argument(
        "--workers", type=_positive, help="worker processes (default: cores)"
    )
    run.add_argument(
        "--rng",
        choices=["spawn", "pcg64-jump", "mt19937-jump"],
        help="override the study's stream scheme",
    )
    run.add_argument("--batch-size", type=_positive, help="replicates per batch")
    run.add_argument(
        "--device",
        choices=["cpu", "gpu"],
        help="backend='jax' studies: the JAX device (default: JAX's, a GPU if any)",
    )
    run.add_argument(
        "--max-errors", type=_positive, help="stop cleanly after N failed tasks"
    )
    run.add_argument(
        "--replicates",
        type=_positive,
        metavar="N",
        help="override the study's replicate count (more extends the store)",
    )
    run.add_argument(
        "--target-mcse",
        type=_targets,
        action="append",
        metavar="MEASURE=MCSE",
        help="run replicates in rounds (the first: the study's count) until "
        "every method's Monte Carlo SE of MEASURE is <= MCSE at each design "
        "point, e.g. bias=0.005; repeat or comma-separate for several",
    )
    run.add_argument(
        "--max-replicates",
        type=_positive,
        metavar="M",
        help="with --target-mcse: stop a design point at M replicates "
        "(default 100 x the first round)",
    )
    run.add_argument(
        "--warnings-as-errors",
        action="store_true",
        help="a task that emits a warning is a failed task",
    )
    run.add_argument(
        "--accept-version-change",
        action="store_true",
        help="go on although numpy/jax changed and finished tasks recompute "
        "differently (the cube then mixes both versions)",
    )
    run.add_argument(
        "--task-timeout",
        type=_seconds,
        metavar="SECONDS",
        help="record a data/method call running longer as a failed task "
        "(processes and synchronous schedulers)",
    )
    run.add_argument("--retry-failed", action="store_true", help="rerun failed tasks")
    run.add_argument(
        "--recompute",
        action="append",
        default=[],
        metavar="METHOD",
        help="discard METHOD's stored results and compute them again (after "
        "its code changed); repeat for several methods",
    )
    run.add_argument(
        "--prune",
        action="store_true",
        help="delete stored levels and methods the study no longer has "
        "(default: kept, hidden from status/summarize/report)",
    )
    run.add_argument(
        "--restart",
        action="store_true",
        help="discard the store's contents and start over",
    )
    run.add_argument("--no-progress", action="store_true", help="no progress output")
    run.add_argument("--debug", action="store_true", help="show tracebacks")
    status = sub.add_parser("status", help="show a store's progress")
    status.add_argument("target", help="a study file (.py) or a store (.zarr)")
    status.add_argument("--store", help="the store, when TARGET is a study file")
    status.add_argument("--debug", action="store_true", help="show tracebacks")
    summ = sub.add_parser("summarize", help="performance measures with Monte Carlo SEs")
    summ.add_argument("store", help="the store (.zarr)")
    summ.add_argument(
        "--format",
        choices=["table", "csv", "json", "netcdf"],
        default=None,
        help="default: table, or from the -o file's suffix",
    )
    summ.add_argument("-o", "--output", help="write to this file (netcdf needs it)")
    summ.add_argument("--reference", help="method for relative precision")
    summ.add_argument(
        "--alpha", type=float, default=0.05, help="test level for power (0.05)"
    )
    summ.add_argument("--debug", action="store_true", help="show tracebacks")
    rpl = sub.add_parser("replay", help="rerun one task here, with its streams")
    rpl.add_argument("study", help="the study file (.py)")
    rpl.add_argument(
        "--task",
        required=True,
        help="every factor, the replicate and the method: "
        "n=100,eps=0.1,replicate=17,method=median",
    )
    rpl.add_argument("--store", help="compare with this store (default ./<stem>.zarr)")
    rpl.add_argument("--pdb", action="store_true", help="debug the task's exception")
    rpl.add_argument("--debug", action="store_true", help="show tracebacks")
    err_p = sub.add_parser("errors", help="failed tasks, grouped, with replay commands")
    err_p.add_argument("store", help="the store (.zarr)")
    err_p.add_argument("--debug", action="store_true", help="show tracebacks")
    ver = sub.add_parser("verify", help="recompute finished tasks, compare bit for bit")
    ver.add_argument("store", help="the store (.zarr)")
    ver.add_argument(
        "--study", help="the study file (default: the one that made the store)"
    )
    ver.add_argument("--sample", type=_positive, default=20, help="replicates (20)")
    ver.add_argument(
        "--scheduler", choices=SCHEDULERS, default="synchronous", help="(synchronous)"
    )
    ver.add_argument("--workers", type=_positive, help="worker processes")
    ver.add_argument("--debug", action="store_true", help="show tracebacks")
    pln = sub.add_parser("plan", help="what a run would do: tasks, size, time")
    pln.add_argument("study", help="the study file (.py)")
    pln.add_argument("--store", help="the store (default ./<stem>.zarr)")
    pln.add_argument("--replicates", type=_positive, metavar="N", help="as for run")
    pln.add_argument("--workers", type=_positive, help="worker processes (cores)")
    pln.add_argument("--debug", action="store_true", help="show tracebacks")
    rep = sub.add_parser("report", help="write a self-contained HTML report")
    rep.add_argument("store", help="the store (.zarr)")
    rep.add_argument(
        "-o", "--output", default="report.html", help="the HTML file (report.html)"
    )
    rep.add_argument("--debug", action="store_true", help="show tracebacks")
    return top


class _ProgressPrinter:
    """A live line on a terminal, a plain line every 10 s otherwise."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.tty = out.isatty()
        self.last = 0.0
        self.first: tuple[float, int] | None = None  # (time, done) at the first event

    def __call__(self, ev: Any) -> None:
        now = time.monotonic()
        if self.first is None:
            self.first = (now, ev.done)
        final = ev.done >= ev.total
        if not final and now - self.last < (0.2 if self.tty else 10.0):
            return
        self.last = now
        # rate and ETA from the first result on: start-up and the small
        # pilot batches would make the first ETA absurd; "--" until 1 s of data
        t1, d1 = self.first
        span = now - t1
        if final or span < 1.0 or ev.done <= d1:
            rate = ev.done / ev.elapsed if ev.elapsed > 0 else 0.0
            eta = 0.0 if final else float("nan")
        else:
            rate = (ev.done - d1) / span
            eta = (ev.total - ev.done) / rate
        line = (
            f"{ev.done:,}/{ev.total:,} tasks  {100 * ev.done / ev.total:5.1f}%  "
            f"{rate:,.0f}/s  ETA {_duration(eta)}  failed {ev.failed:,}"
        )
        if ev.stopping:
            line += "  (stopping after batches in flight; Ctrl-C again to stop now)"
        if self.tty:
            filled = int(24 * ev.done / max(ev.total, 1))
            bar = "[" + "#" * filled + "-" * (24 - filled) + "] "
            self.out.write("\r\x1b[2K" + bar + line)
            if final:
                self.out.write("\n")
        else:
            self.out.write(line + "\n")
        self.out.flush()

    def close(self) -> None:
        if self.tty and self.last:
            self.out.write("\n")
            self.out.flush()


def _duration(seconds: float) -> str:
    if math.isnan(seconds):
        return "--"
    s = round(seconds)
    return (
        f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"
        if s >= 3600
        else f"{s // 60}:{s % 60:02d}"
    )


def _cmd_run(args: argparse.Namespace) -> int:
    from simstudy.loader import load_study
    from simstudy.runner import run

    study = load_study(args.study)
    if args.rng is not None and args.rng != study.scheme:
        study.scheme = args.rng
    err = sys.stderr
    printer = None if args.no_progress else _ProgressPrinter(err)

    def started(description: str) -> None:
        if not args.no_progress:
            err.write(f"simstudy: running on {description}\n")

    try:
        report = run(
            study,
            store=args.store,
            scheduler=args.scheduler,
            workers=args.workers,
            address=args.address,
            insecure=args.insecure,
            tls_ca_file=args.tls_ca_file,
            tls_cert=args.tls_cert,
            tls_key=args.tls_key,
            cluster=args.cluster,
            cluster_config=args.cluster_config,
            batch_size=args.batch_size,
            max_errors=args.max_errors,
            task_timeout=args.task_timeout,
            accept_version_change=args.accept_version_change,
            warnings_as_errors=args.warnings_as_errors,
            replicates=args.replicates,
            retry_failed=args.retry_failed,
            restart=args.restart,
            recompute=args.recompute,
            prune=args.prune,
            target_mcse=(
                {k: v for d in args.target_mcse for k, v in d.items()}
                if args.target_mcse
                else None
            ),
            max_replicates=args.max_replicates,
            device=args.device,
            on_progress=printer,
            on_start=started,
        )
    finally:
        if printer is not None:
            printer.close()
    print(
        f"{report.store}: {report.ok:,} ok, {report.failed:,} failed, "
        f"{report.pending:,} pending of {report.tasks:,} tasks; "
        f"computed {report.computed:,} in {report.seconds:.1f} s"
        + (
            f" ({report.startup:.1f} s to start the workers, then "
            f"{report.tasks_per_second:,.0f} tasks/s)"
            if report.computed
            else ""
        )
    )
    for warning in report.warnings:
        print(f"warning: {warning}", file=err)
    for note in report.notes:
        print(f"note: {note}", file=err)
    if report.repaired:
        shown = ", ".join(report.repaired[:5]) + (
            " ..." if len(report.repaired) > 5 else ""
        )
        print(
            f"warning: {len(report.repaired)} damaged chunk file(s) in the store "
            f"(checksum mismatch: {shown}); their tasks were computed again.",
            file=err,
        )
    if report.interrupted:
        print(
            "interrupted: the store is consistent; run the same command to resume.",
            file=err,
        )
    elif report.stopped_on_errors:
        print(f"stopped after {args.max_errors} failed tasks (--max-errors).", file=err)
    if report.failed and not report.interrupted:
        print(
            f"hint: some tasks failed; python -m simstudy errors {report.store} groups "
            "them, with replay commands. "
            "--retry-failed reruns them; after editing the study use --restart.",
            file=err,
        )
    return report.exit_code


def _cmd_status(args: argparse.Namespace) -> int:
    import numpy as np

    from simstudy.store import open_results

    target = Path(args.target)
    if target.suffix == ".py":
        from simstudy.loader import load_study
        from simstudy.runner import default_store

        store = Path(args.store) if args.store else default_store(load_study(target))
    else:
        store = target
    ds = open_results(store)
    from simstudy.summary import planned

    status = ds["status"].values
    factors = [d for d in ds["status"].dims if d not in ("replicate", "method")]
    # pending = planned and not done (a --target-mcse run plans per point)
    dims = ds["status"].dims
    wanted = planned(ds).broadcast_like(ds["status"]).transpose(*dims).values
    total = int(((status != 0) | wanted).sum())
    counts = [int((status == 1).sum()), int((status == 2).sum())]
    counts.append(int(((status == 0) & wanted).sum()))
    print(
        f"{store}: {counts[0]:,} ok, {counts[1]:,} failed, {counts[2]:,} pending "
        f"of {total:,} tasks ({100 * counts[0] / max(total, 1):.1f}% ok)"
    )
    target = ds.attrs["simstudy"].get("target_mcse")
    if target:
        goals = ", ".join(f"{k} <= {v:g}" for k, v in target["targets"].items())
        print(f"  target MCSE: {goals} (max {target['max_replicates']:,} replicates)")
    for idx in np.ndindex(*status.shape[: len(factors)]):
        cell, want = status[idx], wanted[idx]
        label = ", ".join(
            f"{f}={ds[f].values[i]}" for f, i in zip(factors, idx, strict=True)
        )
        line = (
            f"  {label or 'all'}: {int((cell == 1).sum()):,} ok, "
            f"{int((cell == 2).sum()):,} failed, "
            f"{int(((cell == 0) & want).sum()):,} pending"
        )
        if target:
            n = int(ds["target_replicates"].values[idx])
            point = {
                f: ds[f].values[i].item() for f, i in zip(factors, idx, strict=True)
            }
            state = next(
                (e["state"] for e in target["points"] if e["point"] == point), None
            )
            if state == "met":
                line += f"; target met at {n:,} replicates"
            elif state == "max":
                line += f"; target not met at the cap, {n:,} replicates"
            elif state == "running":
                line += f"; target not met yet: next round to {n:,} replicates"
        print(line)
    ds.close()
    return EXIT_OK


def _cmd_replay(args: argparse.Namespace) -> int:
    import numpy as np

    from simstudy.batch import _user_traceback
    from simstudy.debugging import replay
    from simstudy.loader import load_study
    from simstudy.runner import default_store

    study = load_study(args.study)
    store = Path(args.store) if args.store else default_store(study)
    if args.store and not store.exists():
        raise UsageError(f"--store {store}: no such store.", hint="check the path")
    result = replay(
        study, args.task, store=store if store.exists() else None, debugger=args.pdb
    )
    print(f"task {args.task}")
    if result.error is not None:
        print(_user_traceback(result.error, study.source_file), end="")
        print(f"the task raises {type(result.error).__name__}: {result.error}")
        return EXIT_FAILED
    print(f"data: {type(result.data).__name__} {np.shape(result.data)}")
    assert result.outputs is not None
    for name, value in result.outputs.items():
        print(f"  {name} = {value.tolist()!r}")
    if result.eager_difference is not None:
        print(
            "jax: the engine's vmapped kernel gave these; computed eagerly, "
            f"unvectorised, they differ by at most {result.eager_difference:.3g}"
        )
    if result.same is None:
        where = "no store" if not store.exists() else f"status {result.stored_status}"
        print(f"stored: nothing to compare ({where})")
        return EXIT_OK
    if result.same:
        print(f"stored in {store}: identical, bit for bit")
        return EXIT_OK
    assert result.stored is not None
    for name in result.differing:
        stored = result.stored.get(name)
        shown = "missing" if stored is None else repr(stored.tolist())
        print(f"  stored {name} = {shown}")
    print(f"stored in {store}: DIFFERENT ({', '.join(result.differing)})")
    return EXIT_FAILED


def _cmd_errors(args: argparse.Namespace) -> int:
    from simstudy.debugging import error_groups, task_spec
    from simstudy.store import open_results

    groups = error_groups(args.store)
    if not groups:
        print(f"{args.store}: no failed task.")
        return EXIT_OK
    meta = open_results(args.store).attrs["simstudy"]
    source = meta.get("source_file") or "STUDY.py"
    total = sum(g.count for g in groups)
    print(f"{args.store}: {total:,} failed task(s) in {len(groups)} group(s)")
    for g in groups:
        cell = ", ".join(f"{k}={v}" for k, v in g.point.items())
        shown = ", ".join(map(str, g.replicates[:5])) + (" ..." if g.count > 5 else "")
        print(f"\n{g.count:,} x {g.type} in method {g.method!r} at {cell}")
        print(f"  first: {g.message[:300]}")
        print(f"  replicates: {shown}")
        spec = task_spec(g.point, g.replicates[0], g.method)
        print(f"  replay: python -m simstudy replay {source} --task {spec} --pdb")
    return EXIT_OK


def _cmd_verify(args: argparse.Namespace) -> int:
    from simstudy.debugging import verify
    from simstudy.store import open_results

    study_file = args.study
    if study_file is None:
        study_file = open_results(args.store).attrs["simstudy"].get("source_file")
        if not study_file or not Path(study_file).is_file():
            raise UsageError(
                f"{args.store} does not say which study file made it.",
                hint="pass --study STUDY.py",
            )
    result = verify(
        study_file,
        args.store,
        sample=args.sample,
        scheduler=args.scheduler,
        workers=args.workers,
    )
    if not result.differ:
        print(f"{args.store}: {result.tasks:,} finished task(s) recomputed: identical")
        return EXIT_OK
    for method, tasks in result.differ.items():
        print(
            f"method {method!r} is not reproducible: {len(tasks)} recomputed "
            f"task(s) differ, e.g. --task {tasks[0]}"
        )
    print(
        "hint: use the rng argument for every random draw (not np.random.* or "
        "random.*, not a generator you seed yourself), and no clock or thread order",
        file=sys.stderr,
    )
    return EXIT_FAILED


def _cmd_plan(args: argparse.Namespace) -> int:
    from simstudy.debugging import plan
    from simstudy.lint import lint_study
    from simstudy.loader import load_study
    from simstudy.runner import default_store

    study = load_study(args.study)
    if args.replicates:
        study.replicates = args.replicates
    for message in lint_study(study):
        print(f"warning: {message}", file=sys.stderr)
    store = Path(args.store) if args.store else default_store(study)
    p = plan(study, store=store, workers=args.workers)
    levels = " x ".join(f"{f}: {len(v)}" for f, v in study.factors.items())
    print(f"study {study.name!r} ({args.study})")
    print(
        f"  grid: {levels} = {study.n_points} design point(s); "
        f"{study.replicates:,} replicates; {len(study.methods)} method(s)"
    )
    where = f"done in {store}" if store.exists() else f"done: {store} not created yet"
    print(f"  tasks: {p.tasks:,} ({p.done:,} {where}; {p.tasks - p.done:,} to run)")
    print(
        f"  cube: {p.shape}, {p.values_per_task} output value(s) a task: about "
        f"{p.bytes / 2**20:,.1f} MB before compression"
    )
    per = p.pilot_seconds / max(p.pilot_tasks, 1)
    if study.backend == "jax":
        per = sum(p.seconds_per_task.values()) / max(len(p.seconds_per_task), 1)
        print(
            f"  pilot: {p.pilot_tasks:,} task(s) here in {p.pilot_seconds:.2f} s, "
            f"compiling included ({per * 1e6:.3g} µs a task once compiled); the "
            f"rest would take about {_duration(p.estimate)} on {p.workers} "
            "thread(s), plus ~1 s to start and the compiles"
        )
    else:
        print(
            f"  pilot: {p.pilot_tasks} task(s) here in {p.pilot_seconds:.2f} s "
            f"({per * 1e3:.3g} ms a task); the rest would take about "
            f"{_duration(p.estimate)} on {p.workers} worker(s), plus ~1 s to start"
        )
    print("nothing was written.")
    return EXIT_OK


def _cmd_report(args: argparse.Namespace) -> int:
    from simstudy.report import write_report

    target = Path(args.output)
    if not target.parent.is_dir():
        raise UsageError(
            f"cannot write {target}: directory {target.parent} does not exist.",
            hint="create it first or choose another -o",
        )
    path = write_report(args.store, target)
    print(f"wrote {path} ({path.stat().st_size / 1024:,.0f} kB); open it in a browser")
    return EXIT_OK


SUFFIX_FORMATS = {".csv": "csv", ".json": "json", ".nc": "netcdf", ".txt": "table"}


def _cmd_summarize(args: argparse.Namespace) -> int:
    import json

    from simstudy.store import open_results
    from simstudy.summary import summarize, to_records

    fmt = args.format
    if fmt is None:
        suffix = Path(args.output).suffix if args.output else ""
        fmt = SUFFIX_FORMATS.get(suffix, "table")
    if fmt == "netcdf" and not args.output:
        raise UsageError(
            "--format netcdf writes a binary file; give it a name with -o.",
            hint="write -o summary.nc",
        )
    if not 0 < args.alpha < 1:
        raise UsageError(
            f"--alpha must be between 0 and 1, got {args.alpha}.",
            hint="write --alpha 0.05",
        )
    cube = open_results(args.store)
    result = summarize(cube, reference=args.reference, alpha=args.alpha)
    records = to_records(result)
    if fmt == "netcdf":
        out = result.copy()
        out.attrs = {k: json.dumps(v) for k, v in result.attrs.items()}
        out.to_netcdf(args.output)
        print(f"wrote {args.output}")
        return EXIT_OK
    if fmt == "json":
        text = json.dumps(
            {
                "measures": records,
                "skipped": result.attrs["skipped"],
                "outputs": result.attrs["outputs"],
            },
            indent=1,
        )
    elif fmt == "csv":
        import csv
        import io

        buf = io.StringIO()
        if records:
            writer = csv.DictWriter(buf, fieldnames=list(records[0]))
            writer.writeheader()
            writer.writerows(records)
        text = buf.getvalue()
    else:
        text = _table(records, result.attrs["skipped"])
    if args.output:
        Path(args.output).write_text(text)
        print(f"wrote {args.output}")
    else:
        print(text, end="" if text.endswith("\n") else "\n")
    return EXIT_OK


def _table(records: list[dict[str, Any]], skipped: dict[str, Any]) -> str:
    """Records as an aligned text table, one block per design point."""
    lines: list[str] = []
    last = None
    fixed = {"method", "n_ok", "n_failed", "n_pending", "measure", "value", "mcse"}
    for r in records:
        point = ", ".join(f"{k}={v}" for k, v in r.items() if k not in fixed)
        if point != last:
            lines += ["", point or "all"]
            lines.append(
                f"  {'method':<14} {'measure':<15} {'value':>12} {'MCSE':>10}  n_ok"
            )
            last = point
        mcse = "" if r["mcse"] is None else f"{r['mcse']:10.4g}"
        pending = r["n_failed"] + r["n_pending"]
        note = (
            f"  ({r['n_failed']:,} failed, {r['n_pending']:,} pending)"
            if pending
            else ""
        )
        lines.append(
            f"  {r['method']:<14} {r['measure']:<15} {r['value']:12.5g} "
            f"{mcse:>10}  {r['n_ok']:,}{note}"
        )
    if skipped:
        lines += ["", "not computed:"]
        for measure, why in skipped.items():
            text = (
                why
                if isinstance(why, str)
                else "; ".join(f"{m}: {w}" for m, w in why.items())
            )
            lines.append(f"  {measure}: {text}")
    return "\n".join(lines).lstrip("\n") + "\n"


def _show_warning(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: TextIO | None = None,
    line: str | None = None,
) -> None:
    """Print a warning as the CLI's one ``warning:`` line."""
    print(f"warning: {message}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    warnings.showwarning = _show_warning
    try:
        args = _parser().parse_args(argv)
        command = {
            "run": _cmd_run,
            "status": _cmd_status,
            "summarize": _cmd_summarize,
            "report": _cmd_report,
            "replay": _cmd_replay,
            "errors": _cmd_errors,
            "verify": _cmd_verify,
            "plan": _cmd_plan,
        }[args.command]
        return command(args)
    except SimstudyError as exc:
        if debug:
            traceback.print_exc()
        print(f"error: {exc.message}", file=sys.stderr)
        if exc.hint:
            print(f"hint: {exc.hint}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("interrupted.", file=sys.stderr)
        return EXIT_INTERRUPTED
    except SystemExit as exc:  # --help
        return int(exc.code or 0)
    except BrokenPipeError:
        # the reader went away (`simstudy status S | head`): stop quietly; point
        # stdout at devnull so the interpreter's final flush does not complain
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return 0
    except Exception as exc:
        if debug:
            raise
        print(f"error: internal error: {type(exc).__name__}: {exc}", file=sys.stderr)
        print(
            "hint: rerun with --debug for the traceback and report it", file=sys.stderr
        )
        return 1
