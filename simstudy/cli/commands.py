"""The commands of ``python -m simstudy``: one function each, args -> exit code.

Each command imports what it needs inside itself, so ``--help`` and
``status`` stay quick.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import Any

from simstudy.cli.share import (
    cmd_bundle,
    cmd_protocol,
    protocol_note,
    run_bundle,
    verify_bundle,
)
from simstudy.cli.solve import cmd_solve
from simstudy.errors import EXIT_FAILED, EXIT_OK, UsageError
from simstudy.progress import ProgressPrinter, duration, percent
from simstudy.running.options import FAIL_FAST
from simstudy.shell import command, quote

__all__ = ["COMMANDS"]


def cmd_run(args: argparse.Namespace) -> int:
    from simstudy.declare.loader import load_study, study_imports
    from simstudy.executors import SCHEDULERS, prestart
    from simstudy.running.options import RunKwargs
    from simstudy.running.runner import run

    if args.add_method is not None or Path(args.study).suffix == ".tar":
        return run_bundle(args)  # docs/share.md: a method added to a bundle
    modules = study_imports(args.study)
    store = args.store or Path.cwd() / f"{Path(args.study).stem}.zarr"
    fresh = args.restart or not Path(store).exists()  # a new store has work
    remote = args.address is not None or args.cluster is not None
    jax = any(m.split(".")[0] == "jax" for m in modules)  # runs in this process
    if fresh and not remote and not jax:
        # the workers' start overlaps the study's load; a resume starts them
        # once it knows there is work
        prestart(args.scheduler, modules)
    # where workers run the tasks, the study's libraries load lazily here
    lazy = SCHEDULERS[args.scheduler or "processes"].elsewhere and not jax
    study = load_study(args.study, lazy=lazy)
    if args.rng is not None and args.rng != study.scheme:
        study = study.derive(scheme=args.rng)
    err = sys.stderr
    printer = None if args.no_progress else ProgressPrinter(err)

    def started(description: str) -> None:
        if not args.no_progress:
            err.write(f"simstudy: running on {description}\n")

    # every option of run() is a flag of the same (kebab-case) name
    options: Any = {k: getattr(args, k) for k in RunKwargs.__annotations__}
    if args.target_mcse:
        options["target_mcse"] = {k: v for d in args.target_mcse for k, v in d.items()}
    try:
        report = run(
            study,
            replicates=args.replicates,
            on_progress=printer,
            on_start=started,
            **options,
        )
    finally:
        if printer is not None:
            printer.close()
    _print_report(report, args.max_errors)
    if args.protocol is not None:
        protocol_note(study, args.protocol)
    return report.exit_code


def _print_report(report: Any, max_errors: int | None) -> None:
    """The run's last line on stdout; warnings, notes and hints on stderr."""
    err = sys.stderr
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
        shown = "; ".join(report.repaired[:3]) + (
            " ..." if len(report.repaired) > 3 else ""
        )
        print(
            f"warning: {len(report.repaired)} damaged or missing file(s) in the "
            f"store ({shown}); repaired, and their tasks computed again.",
            file=err,
        )
    if report.interrupted:
        print(
            "interrupted: the store is consistent; run the same command to resume.",
            file=err,
        )
    elif report.failing is not None:
        method, error = report.failing
        print(
            f"stopped: method {method!r} failed its first {FAIL_FAST} tasks "
            f"({error[:300]}); the batches in flight were finished.",
            file=err,
        )
        print(
            "hint: fix the method and run again (it resumes); --no-fail-fast "
            "runs every task anyway",
            file=err,
        )
        return
    elif report.stopped_on_errors:
        print(f"stopped after {max_errors} failed tasks (--max-errors).", file=err)
    if report.failed and not report.interrupted:
        print(
            f"hint: some tasks failed; {command('errors', report.store)} groups "
            "them, with replay commands. "
            "--retry-failed reruns them; after editing the study use --restart.",
            file=err,
        )
    if report.exit_code == EXIT_OK and not report.interrupted:
        print(f"next: {command('summarize', report.store)}", file=err)


def cmd_status(args: argparse.Namespace) -> int:
    from simstudy.store.reading import status_counts

    target = Path(args.target)
    if target.suffix == ".py":
        from simstudy.declare.loader import load_study
        from simstudy.running.options import default_store

        store = Path(args.store) if args.store else default_store(load_study(target))
    else:
        store = target
    # counted from the status chunk files: a 10^9-task store in seconds
    points, record = status_counts(store)
    ok = sum(c.ok for c in points)
    failed = sum(c.failed for c in points)
    pending = sum(c.pending for c in points)
    total = ok + failed + pending
    # the share never rounds failures away: 99.98% ok, 9 failed
    share = f"{percent(ok, total)} ok" + (f", {failed:,} failed" if failed else "")
    print(
        f"{store}: {ok:,} ok, {failed:,} failed, {pending:,} pending "
        f"of {total:,} tasks ({share})"
    )
    if record:
        goals = ", ".join(f"{k} <= {v:g}" for k, v in record["targets"].items())
        print(f"  target MCSE: {goals} (max {record['max_replicates']:,} replicates)")
    for c in points:
        label = ", ".join(f"{f}={v}" for f, v in c.point.items())
        line = (
            f"  {label or 'all'}: {c.ok:,} ok, {c.failed:,} failed, "
            f"{c.pending:,} pending"
        )
        if record:
            line += _target_state(c.target)
        print(line)
    from simstudy.store.versionlog import read_notes

    for note in read_notes(store):  # more than one set of library versions
        print(f"  versions: {note}")
    return EXIT_OK


def _target_state(entry: dict[str, Any] | None) -> str:
    """Where a design point stands with its --target-mcse rule."""
    if entry is None:
        return ""
    n, state = int(entry["replicates"]), entry["state"]
    if state == "met":
        return f"; target met at {n:,} replicates"
    if state == "max":
        return f"; target not met at the cap, {n:,} replicates"
    if state == "running":
        return f"; target not met yet: next round to {n:,} replicates"
    return ""


def cmd_replay(args: argparse.Namespace) -> int:
    import numpy as np

    from simstudy.declare.loader import load_study
    from simstudy.declare.results import user_traceback
    from simstudy.running.debugging import replay
    from simstudy.running.options import default_store

    study = load_study(args.study)
    store = Path(args.store) if args.store else default_store(study)
    if args.store and not store.exists():
        raise UsageError(f"--store {store}: no such store.", hint="check the path")
    result = replay(
        study, args.task, store=store if store.exists() else None, debugger=args.pdb
    )
    print(f"task {args.task}")
    if result.error is not None:
        print(user_traceback(result.error, study.source_file), end="")
        from simstudy.backends.guard import read_only_advice

        advice = read_only_advice(result.error)
        print(f"the task raises {type(result.error).__name__}: {result.error}{advice}")
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


def cmd_errors(args: argparse.Namespace) -> int:
    from simstudy.running.debugging import error_groups, task_spec
    from simstudy.store import open_results

    groups = error_groups(args.store)
    if not groups:
        print(f"{args.store}: no failed task.")
        return EXIT_OK
    meta = open_results(args.store).attrs["simstudy"]
    # shown, never run; quoted, so a copied command runs no text from the store
    source = str(meta.get("source_file") or "STUDY.py")
    total = sum(g.count for g in groups)
    print(f"{args.store}: {total:,} failed task(s) in {len(groups)} group(s)")
    for g in groups:
        cell = ", ".join(f"{k}={v}" for k, v in g.point.items())
        shown = ", ".join(map(str, g.replicates[:5])) + (" ..." if g.count > 5 else "")
        print(f"\n{g.count:,} x {g.type} in method {g.method!r} at {cell}")
        print(f"  first: {g.message[:300]}")
        print(f"  replicates: {shown}")
        spec = task_spec(g.point, g.replicates[0], g.method)
        print(f"  replay: {command('replay', source, '--task', spec, '--pdb')}")
    return EXIT_OK


def cmd_verify(args: argparse.Namespace) -> int:
    from simstudy.running.debugging import verify
    from simstudy.sharing.bundle import is_bundle

    if is_bundle(args.store):
        return verify_bundle(args)
    store, study_file = _verify_target(args)
    result = verify(
        study_file,
        store,
        sample=args.sample,
        scheduler=args.scheduler,
        workers=args.workers,
    )
    if not result.differ:
        print(f"{store}: {result.tasks:,} finished task(s) recomputed: identical")
        return EXIT_OK
    for method, tasks in result.differ.items():
        print(
            f"method {method!r} is not reproducible: {len(tasks)} recomputed "
            f"task(s) differ, e.g. --task {quote(tasks[0])}"
        )
    print(
        "hint: use the rng argument for every random draw (not np.random.* or "
        "random.*, not a generator you seed yourself), and no clock or thread order",
        file=sys.stderr,
    )
    return EXIT_FAILED


def _verify_target(args: argparse.Namespace) -> tuple[Path, Path]:
    """The store and the study file to verify: never a file the store names.

    Whoever can write a store could name any Python file in its metadata;
    running it would run their code as whoever verifies. So the study file
    is always one the user gives: ``verify STUDY.py`` (store ``--store`` or
    the default) or ``verify STORE --study STUDY.py``.
    """
    from simstudy.declare.loader import load_study
    from simstudy.running.options import default_store

    target = Path(args.store)
    if target.suffix == ".py":
        if args.study is not None:
            raise UsageError(
                f"verify {target} --study {args.study}: two study files.",
                hint="write verify STUDY.py [--store STORE] or verify STORE "
                "--study STUDY.py",
            )
        store = Path(args.to) if args.to else default_store(load_study(target))
        return store, target
    if args.study is None:
        raise UsageError(
            f"verify {target}: which study file? verify recomputes tasks with the "
            "study file you name; it never runs the file a store's metadata names.",
            hint=f"write {command('verify', target, '--study', 'STUDY.py')}",
        )
    return target, Path(args.study)


def cmd_plan(args: argparse.Namespace) -> int:
    from simstudy.declare.lint import lint_study
    from simstudy.declare.loader import load_study
    from simstudy.running.options import default_store
    from simstudy.running.pilot import estimate

    study = load_study(args.study)
    if args.replicates:
        study = study.derive(replicates=args.replicates)
    for message in lint_study(study):
        print(f"warning: {message}", file=sys.stderr)
    store = Path(args.store) if args.store else default_store(study)
    p = estimate(
        study, store=store, workers=args.workers, retry_failed=args.retry_failed
    )
    levels = " x ".join(f"{f}: {len(v)}" for f, v in study.factors.items())
    print(f"study {study.name!r} ({args.study})")
    cross = math.prod(len(v) for v in study.factors.values())
    grid = f"{study.n_points} design point(s)"
    if not study.design.full:  # where=, or factors that vary together
        grid = f"{cross:,} point(s) in the cross, {study.n_points:,} in the design"
    print(
        f"  grid: {levels} = {grid}; "
        f"{study.replicates:,} replicates; {len(study.methods)} method(s)"
    )
    where = f"done in {store}" if store.exists() else f"done: {store} not created yet"
    left = ""
    if p.failed:
        left = (
            f", {p.failed:,} failed (rerun: --retry-failed)"
            if not args.retry_failed
            else f", {p.failed:,} failed to rerun"
        )
    print(f"  tasks: {p.tasks:,} ({p.done:,} {where}{left}; {p.to_run:,} to run)")
    print(
        f"  cube: {p.shape}, {p.values_per_task} output value(s) a task: about "
        f"{p.bytes / 2**20:,.1f} MB before compression"
    )
    per = p.pilot_seconds / max(p.pilot_tasks, 1)
    if study.vmap_width:  # a jax study: kernel time, the compile apart
        per = sum(p.seconds_per_task.values()) / max(len(p.seconds_per_task), 1)
        print(
            f"  pilot: {p.pilot_tasks:,} task(s) here in {p.pilot_seconds:.2f} s, "
            f"compiling included ({per * 1e6:.3g} µs a task once compiled); the "
            f"rest would take about {duration(p.estimate)} on {p.workers} "
            "thread(s), plus ~1 s to start and the compiles"
        )
    else:
        print(
            f"  pilot: {p.pilot_tasks} task(s) here in {p.pilot_seconds:.2f} s "
            f"({per * 1e3:.3g} ms a task); the rest would take about "
            f"{duration(p.estimate)} on {p.workers} worker(s), plus ~1 s to start"
        )
    _print_pilot_findings(p, args.study)
    print("nothing was written.")
    return EXIT_OK


def _print_pilot_findings(p: Any, study_file: str) -> None:
    """Pilot failures per method (grouped by message) and each distinct
    warning once, with a count: what the run would meet, said up front."""
    for method in dict.fromkeys(f.method for f in p.failures):
        mine = [f for f in p.failures if f.method == method]
        n, of = sum(f.count for f in mine), p.pilot_per_method.get(method, 0)
        every = " (every one: a run would likely fail them all)" if n >= of else ""
        print(f"  pilot: method {method!r}: {n} of {of} task(s) failed{every}")
        for f in mine:
            print(f"    {f.count} x {f.type}: {_one_line(f.message)}")
    for w in p.warnings:
        print(
            f"  pilot warning ({w.count} x, method {w.method!r}): {w.type}: "
            f"{_one_line(w.message)}"
        )
    if p.failures:
        print(
            f"  hint: {command('replay', study_file)} --task ... reruns one task "
            "here, with its traceback"
        )


def _one_line(text: str, most: int = 200) -> str:
    line = " ".join(text.split())
    return line if len(line) <= most else line[: most - 3] + "..."


def cmd_report(args: argparse.Namespace) -> int:
    from simstudy.atomic import check_target
    from simstudy.report import write_report

    target = check_target(args.output)
    options = summary_options(args)
    path = write_report(
        args.store,
        target,
        split=args.split,
        methods=_names(args.methods),
        points=_points(args.points),
        **options,
    )
    print(f"wrote {path} ({path.stat().st_size / 1024:,.0f} kB); open it in a browser")
    return EXIT_OK


SUFFIX_FORMATS = {
    ".csv": "csv",
    ".json": "json",
    ".nc": "netcdf",
    ".txt": "table",
    ".tex": "latex",
    ".md": "markdown",
}


def cmd_summarize(args: argparse.Namespace) -> int:
    import json

    from simstudy.analysis.records import to_records
    from simstudy.analysis.summary import summarize
    from simstudy.atomic import replacing, write_text
    from simstudy.cli import tables
    from simstudy.store import open_results

    fmt = _summary_format(args)
    options = summary_options(args)
    result = summarize(
        open_results(args.store),
        methods=_names(args.methods),
        points=_points(args.points),
        **options,
    )
    if fmt == "netcdf":
        out = result.copy()
        out.attrs = {k: json.dumps(v) for k, v in result.attrs.items()}
        with replacing(args.output) as tmp:  # whole or not at all
            out.to_netcdf(tmp)
        print(f"wrote {args.output}")
        return EXIT_OK
    records = to_records(result)
    if fmt == "json":
        text = json.dumps(
            {
                "measures": records,
                "skipped": result.attrs["skipped"],
                "outputs": result.attrs["outputs"],
                "cases": result.attrs["cases"],
            },
            indent=1,
        )
    elif fmt == "csv":
        text = tables.csv_text(records, wide=args.wide)
    elif fmt in ("latex", "markdown"):
        text = tables.footnoted_table(
            fmt,
            records,
            wide=args.wide,
            skipped=result.attrs["skipped"],
            methods=[str(m) for m in result["method_name"].values],
        )
    elif args.wide:
        skipped = tables.skipped_lines(result.attrs["skipped"])
        methods = [str(m) for m in result["method_name"].values]
        text = tables.wide_table(records, methods=methods)
        text += "\n".join(skipped).lstrip("\n")
    else:
        text = tables.text_table(records, result.attrs["skipped"])
    if args.output:
        write_text(args.output, text)  # whole or not at all
        print(f"wrote {args.output}")
    else:
        print(text, end="" if text.endswith("\n") else "\n")
    return EXIT_OK


def _summary_format(args: argparse.Namespace) -> str:
    """The output format (from --format or -o's suffix), arguments checked."""
    fmt: str | None = args.format
    if fmt is None:
        suffix = Path(args.output).suffix if args.output else ""
        fmt = SUFFIX_FORMATS.get(suffix, "table")
    if fmt == "netcdf" and not args.output:
        raise UsageError(
            "--format netcdf writes a binary file; give it a name with -o.",
            hint="write -o summary.nc",
        )
    if args.wide and fmt in ("json", "netcdf"):
        raise UsageError(
            f"--wide lays out a table; --format {fmt} keeps one record per measure.",
            hint="use --wide with --format table, csv, latex or markdown",
        )
    return fmt


def summary_options(args: argparse.Namespace) -> dict[str, Any]:
    """The keyword options of ``summarize`` from the flags that
    ``parser.add_summary_options`` adds (`summarize` and `report`), checked."""
    for flag, value, example in (
        ("alpha", args.alpha, "0.05"),
        ("level", args.level, "0.95"),
    ):
        if not 0 < value < 1:
            raise UsageError(
                f"--{flag} must be between 0 and 1, got {value}.",
                hint=f"write --{flag} {example}",
            )
    return {
        "reference": args.reference,
        "alpha": args.alpha,
        "level": args.level,
        "df": _df(args.df),
        "null": args.null,
        "cases": args.cases,
        "winsorize": args.winsorize,
        "measures": args.measures,  # "bias, coverage": summarize splits it
    }


def _names(text: str | None) -> list[str] | None:
    """--methods a,b: the names (None: all)."""
    if text is None:
        return None
    return [t.strip() for t in text.split(",") if t.strip()]


def _points(texts: list[str] | None) -> dict[str, list[str]] | None:
    """--points n=20,50 (repeated): levels by factor, as text (the plots'
    selection matches them to the levels)."""
    if not texts:
        return None
    out: dict[str, list[str]] = {}
    for text in texts:
        factor, sep, levels = text.partition("=")
        if not sep or not factor.strip() or not levels.strip():
            raise UsageError(
                f"--points expects FACTOR=LEVEL[,LEVEL...], got {text!r}.",
                hint="write e.g. --points n=20,50",
            )
        out.setdefault(factor.strip(), []).extend(
            t.strip() for t in levels.split(",") if t.strip()
        )
    return out


def _df(text: str | None) -> float | str | None:
    """--df: a number of degrees of freedom, or the output holding them."""
    if text is None:
        return None
    try:
        return float(text)
    except ValueError:
        return text


COMMANDS = {
    "run": cmd_run,
    "status": cmd_status,
    "summarize": cmd_summarize,
    "report": cmd_report,
    "replay": cmd_replay,
    "errors": cmd_errors,
    "verify": cmd_verify,
    "plan": cmd_plan,
    "solve": cmd_solve,
    "protocol": cmd_protocol,
    "bundle": cmd_bundle,
}
