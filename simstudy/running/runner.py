"""Run a study: options, store, plan, executor, and the loop that joins them.

``run`` builds the run's options once (``options.RunOptions``), opens and
locks the store (``store.Store``), and hands rounds of work (``plan.Plan``)
to an executor (``executors``), writing each finished batch to the store as
it arrives. Progress goes to ``on_progress``; Ctrl-C or SIGTERM once lets
the batches in flight finish, twice stops at once; either way the store is
consistent and a second run resumes. The study is never changed by a run.
"""

from __future__ import annotations

import html
import os
import shutil
import signal
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any, Unpack

import numpy as np

from simstudy.backends import Placement, backend_of
from simstudy.cube import FAILED, OK
from simstudy.declare.lint import lint_study
from simstudy.declare.loader import load_study
from simstudy.declare.results import BatchResult
from simstudy.declare.study import Study
from simstudy.errors import (
    EXIT_BAD_INPUT,
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_TARGET_MISSED,
    ReproducibilityWarning,
    SimstudyError,
    StudyError,
    UsageError,
)
from simstudy.executors import SCHEDULERS, Executor, make_executor, study_payload
from simstudy.progress import NotebookProgress, ProgressPrinter, in_notebook
from simstudy.running.options import FAIL_FAST, RunKwargs, RunOptions, default_store
from simstudy.running.plan import BatchSizer, Plan, Round
from simstudy.running.recompute import recheck_versions, task_batch
from simstudy.running.stall import Watchdog
from simstudy.running.target import TargetRule

if TYPE_CHECKING:
    from simstudy.store import Store

__all__ = [
    "EXIT_BAD_INPUT",
    "EXIT_FAILED",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "Progress",
    "RunReport",
    "default_store",
    "run",
]


@dataclass(slots=True)
class Progress:
    """A progress event: tasks done of total this run, failures, elapsed time."""

    done: int
    total: int
    failed: int
    elapsed: float
    stopping: bool = False


@dataclass(slots=True, kw_only=True)
class RunReport:
    """What a run did; ``exit_code`` follows the CLI contract."""

    store: Path
    tasks: int = 0  # tasks of the study
    already_done: int = 0  # ok before this run
    computed: int = 0  # tasks run now
    ok: int = 0  # ok in the study after this run
    failed: int = 0
    pending: int = 0
    interrupted: bool = False
    stopped_on_errors: bool = False  # by --max-errors or by fail-fast
    # fail-fast: the method whose first tasks all failed, and its first error
    failing: tuple[str, str] | None = None
    seconds: float = 0.0
    executor: str = "nothing to run"
    startup: float = 0.0  # seconds until the workers were ready
    repaired: tuple[str, ...] = ()  # damaged chunks found on open, recomputed
    warnings: tuple[str, ...] = ()  # said once, e.g. a library version changed
    notes: tuple[str, ...] = ()  # e.g. results hidden because the study dropped them
    nonfinite: int = 0  # ok tasks of this run with a NaN or inf output
    target_missed: bool = False  # --target-mcse: a point stopped short of it
    strict: bool = False  # --strict: a missed target is exit code 6

    @property
    def tasks_per_second(self) -> float:
        """Tasks computed per second once the workers were ready."""
        busy = self.seconds - self.startup
        return self.computed / busy if busy > 0 else 0.0

    @property
    def exit_code(self) -> int:
        if self.interrupted:
            return EXIT_INTERRUPTED
        if self.failed or self.stopped_on_errors:
            return EXIT_FAILED
        return EXIT_TARGET_MISSED if self.strict and self.target_missed else EXIT_OK

    def lines(self) -> list[tuple[str, str]]:
        """What a person wants to see of the run, as (label, text) rows."""
        state = (
            "interrupted (run again to resume)"
            if self.interrupted
            else "stopped on errors"
            if self.stopped_on_errors
            else "finished"
        )
        left, total = f"{self.pending:,} pending", f"{self.tasks:,}"
        rows = [
            ("store", str(self.store)),
            ("state", f"{state}, exit code {self.exit_code}"),
            ("tasks", f"{self.ok:,} ok, {self.failed:,} failed, {left} of {total}"),
            ("this run", f"{self.computed:,} computed in {self.seconds:.1f} s"),
        ]
        if self.failing:
            rows.append(("failing", f"method {self.failing[0]!r}: {self.failing[1]}"))
        rows += [("note", n) for n in (*self.warnings, *self.notes)]
        rows.append(
            ("next", f"simstudy.summarize(simstudy.open_results({str(self.store)!r}))")
        )
        return rows

    def __str__(self) -> str:
        return "\n".join(f"{k:>9}: {v}" for k, v in self.lines())

    def _repr_html_(self) -> str:
        """A notebook shows the returned report as this table."""
        body = "".join(
            f"<tr><th style='text-align:right'>{html.escape(k)}</th>"
            f"<td style='text-align:left'><code>{html.escape(v)}</code></td></tr>"
            for k, v in self.lines()
        )
        return (
            f"<table class='simstudy-run'><caption>simstudy run</caption>{body}</table>"
        )


def run(
    study: Study | str | os.PathLike[str],
    *,
    replicates: int | None = None,
    rng: str | None = None,
    progress: bool | None = None,
    on_progress: Callable[[Progress], None] | None = None,
    on_start: Callable[[str], None] | None = None,
    **options: Unpack[RunKwargs],
) -> RunReport:
    """Run (or resume) a study into its store.

    Parameters
    ----------
    study : Study or path
        The study, or the path of its study file.
    replicates : int, optional
        Override the study's replicate count (more extends the store; fewer
        computes only those and keeps the rest of the store as it is). The
        study object itself is not changed.
    rng : {"spawn", "pcg64-jump", "mt19937-jump"}, optional
        Override the study's stream scheme (``--rng``), on a copy.
    progress : bool, optional
        ``False`` (``--no-progress``): no progress at all. ``True``: a
        progress line on stderr (a bar in a notebook). Default: a bar in a
        notebook, nothing in a script.
    on_progress : callable, optional
        Called with a :class:`Progress` after each finished batch.
    on_start : callable, optional
        Called with a description of the executor once workers are up.
    **options
        ``store``, ``scheduler``, ``workers``, ``max_errors``, ... : every
        option of ``python -m simstudy run``, by its snake_case name; see
        :class:`simstudy.running.options.RunKwargs` for the list and their meaning.

    Returns
    -------
    RunReport
        Counts and the exit code.

    Raises
    ------
    StudyError, UsageError, StoreError
        Before anything is written, with a one-line message and a hint.
    """
    if not isinstance(study, Study):
        study = load_study(study)
    if replicates is not None:
        if isinstance(replicates, bool) or replicates < 1:
            raise UsageError(
                f"--replicates must be >= 1, got {replicates}.",
                hint="drop --replicates to use the study file's count",
            )
        study = study.derive(replicates=int(replicates))
    if rng is not None and rng != study.scheme:
        study = study.derive(scheme=rng)
    opts = RunOptions.build(study, **options)
    for message in lint_study(study):
        warnings.warn(message, ReproducibilityWarning, stacklevel=2)
    payload = study_payload(study)  # an unpicklable input fails here, first
    if progress is not None and not isinstance(progress, bool):
        raise UsageError(
            f"progress must be True or False, got {progress!r}.",
            hint="write progress=False for no progress output",
        )
    if on_progress is None and progress is not False:
        if in_notebook():
            on_progress = NotebookProgress()
        elif progress:
            printer = ProgressPrinter(sys.stderr)
            try:
                return _Run(study, opts, payload, printer, on_start).go()
            finally:
                printer.close()
    return _Run(study, opts, payload, on_progress, on_start).go()


class _Signals:
    """SIGINT/SIGTERM once: finish the batches in flight; twice: stop now.

    The first signal only sets a flag, so a batch being written is never cut
    between its outputs and its status.
    """

    def __init__(self) -> None:
        self.count = 0
        self.saved: dict[int, Any] = {}
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self.saved[sig] = signal.signal(sig, self._handle)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.count += 1
        if self.count >= 2:
            raise KeyboardInterrupt

    def restore(self) -> None:
        for sig, handler in self.saved.items():
            signal.signal(sig, handler)


class _Run:
    """One run: the study, its options, the open store and the executor."""

    def __init__(
        self,
        study: Study,
        opts: RunOptions,
        payload: bytes,
        on_progress: Callable[[Progress], None] | None,
        on_start: Callable[[str], None] | None,
    ) -> None:
        self.study, self.opts, self.payload = study, opts, payload
        self.on_progress, self.on_start = on_progress, on_start
        self.executor: Executor | None = None
        self.t0 = time.perf_counter()
        self.report = RunReport(store=opts.store, strict=opts.strict)
        self.failed_before = 0  # failed tasks before this run (within round 1)
        self.failed_now = 0  # failed in this run
        self.base = 0  # tasks computed in earlier rounds
        # one sizer for all rounds: task times measured in one round size the next
        self.sizer = BatchSizer(
            fixed=opts.batch_size,
            workers=opts.workers,
            rows=0,
            chunk=1,  # the store's, once it is open
            quantum=study.vmap_width or 1,
        )
        self.truth_checked = False  # the truth names outputs the methods return
        # per method, this run: (ok, failed, first error) for fail-fast
        self.by_method: dict[str, tuple[int, int, str]] = {}
        self.total = 0  # tasks of this round

    # ---- start and finish ----------------------------------------------
    def go(self) -> RunReport:
        """Start workers early where it pays, open the store, run, close."""
        o = self.opts
        created = not (o.store / "zarr.json").exists()  # by this run
        fresh = o.restart or not o.store.exists()
        early = SCHEDULERS[o.scheduler].early and fresh
        if early and os.access(o.store.parent, os.W_OK):
            # a new store always has work: spawn the workers first, so they
            # import and install the study while the store is being created
            self.executor = self._make_executor()
        elif o.address is not None:
            # connect first: an unreachable or refusing scheduler writes no store
            self.executor = self._make_executor()
        try:
            # imported here: zarr's ~0.15 s import overlaps the workers' start
            from simstudy.store import Store

            st = Store.open_for_run(
                o.store,
                self.study,
                restart=o.restart,
                recompute=o.recompute,
                prune=o.prune,
                provenance=backend_of(self.study).provenance(
                    self.study, Placement(o.scheduler, o.device)
                ),
            )
            if o.protocol is not None:
                st.record_protocol(o.protocol)  # report lists deviations from it
        except BaseException:
            self._close_executor()
            raise
        try:
            self._rounds(st)
        except SimstudyError:
            st.close()
            if created and self.report.computed == 0:
                # bad input found once the first results were in (a truth
                # naming no output): leave no store behind
                shutil.rmtree(st.path, ignore_errors=True)
            raise
        finally:
            st.close()
            self._close_executor()
        self.report.seconds = time.perf_counter() - self.t0
        return self.report

    def _make_executor(self) -> Executor:
        return make_executor(self.study, self.opts, payload=self.payload)

    def _close_executor(self) -> None:
        if self.executor is not None:
            self.executor.close()  # closing twice is harmless

    def _start_executor(self) -> Executor:
        """The executor, started now if need be, its workers up."""
        if self.executor is None:
            self.executor = self._make_executor()
        report = self.report
        if report.executor == "nothing to run":
            self.executor.wait()
            report.executor = self.executor.description
            report.startup = time.perf_counter() - self.t0
            if self.on_start is not None:
                link = getattr(self.executor, "dashboard", None)
                dashboard = f"; dashboard {link}" if link else ""
                self.on_start(self.executor.description + dashboard)
        return self.executor

    # ---- rounds ----------------------------------------------------------
    def _rounds(self, st: Store) -> None:
        """Run rounds until nothing is left (or the MCSE targets are met)."""
        study, o, report = self.study, self.opts, self.report
        plan = Plan(study, st)
        report.repaired = tuple(st.repaired)
        report.notes = _hidden_notes(st.hidden)
        changes = st.version_changes()
        if changes:
            message = recheck_versions(
                study, st, changes, accept=o.accept_version_change
            )
            report.warnings += (message,)
        target = None if o.target is None else TargetRule(o.target)
        record = st.meta.target_mcse
        if target is None and record:
            planned = min(e["replicates"] for e in record["points"])
            if study.replicates > planned:  # a plain run past the rule's counts
                st.record_target(None)
        counts = [study.replicates] * len(plan.grid)  # replicates per point
        self.sizer.chunk = st.group_rows
        signals = _Signals()
        self.watchdog = Watchdog(timeout=o.task_timeout)
        first = True
        try:
            while True:
                # failed tasks rerun once, in round one
                work = plan.round(counts, retry_failed=o.retry_failed and first)
                self._account(work, first=first)
                first = False
                if self.total:
                    self._round(st, plan, work, signals)
                if target is None or report.interrupted or report.stopped_on_errors:
                    break
                st.flush()
                counts, more = target.next_counts(st, plan.grid, counts)
                if not more:
                    self._short_of_target(target, len(plan.grid))
                    break
                st.extend_replicates(max(counts))
        except KeyboardInterrupt:
            report.interrupted = True
        finally:
            self.watchdog.close()
            signals.restore()
            self._close_executor()
        if report.nonfinite:
            note = (
                f"{report.nonfinite:,} ok task(s) returned NaN or inf in an output: "
                "kept as returned; summaries leave them out, measure by measure "
                "(to record a failure instead, raise an exception)."
            )
            report.notes += (note,)

    def _account(self, work: Round, *, first: bool) -> None:
        """Set the report's counts from a round's status."""
        report, retry = self.report, self.opts.retry_failed
        self.total = work.total
        report.tasks = sum(work.counts) * len(self.study.methods)
        report.ok = work.done
        report.failed = 0 if retry and first else work.failed
        report.pending = self.total
        if first:
            report.already_done = work.done
            self.failed_before = report.failed

    def _short_of_target(self, target: TargetRule, points: int) -> None:
        short = [e for e in target.last if e["state"] == "max"]
        if short:
            first = short[0]
            where = ", ".join(f"{k}={v}" for k, v in first["point"].items())
            mcse = ", ".join(
                f"{m} MCSE {v:.3g} > {target.spec.targets[m]:g}"
                for m, v in first["mcse"].items()
                if v is not None and v > target.spec.targets[m]
            )
            message = (
                f"the MCSE target is not met at {len(short)} of {points} "
                f"design point(s), stopped at --max-replicates "
                f"{target.spec.max_replicates:,} (e.g. {where}: {mcse})."
            )
            self.report.warnings += (message,)
            self.report.target_missed = True

    def _round(
        self,
        st: Store,
        plan: Plan,
        work: Round,
        signals: _Signals,
    ) -> None:
        """Compute a round's pending tasks, writing each finished batch."""
        o, report, sizer = self.opts, self.report, self.sizer
        executor = self._start_executor()
        self.watchdog.beat()  # waiting for workers (a Slurm queue) is no stall
        sizer.rows_left = work.rows
        for p, pending in enumerate(work.pending):
            st.expect(plan.pidx[p], pending.counts())
        executor.prepare(work.work())
        self.base = report.computed
        self._probe(st, plan, work, signals)
        batches = plan.batches(
            work, sizer, timeout=o.task_timeout, warnings=o.warnings, device=o.device
        )
        self._consume(st, plan, executor.results(batches, st.output_specs), signals)

    def _probe(self, st: Store, plan: Plan, work: Round, signals: _Signals) -> None:
        """Fix each method's output names by its first successful task in task
        order (design point, then replicate) before any other batch goes out,
        so which tasks fail for returning other names does not depend on the
        order results arrive in (workers, batch sizes, resume)."""
        study, o, executor = self.study, self.opts, self._start_executor()
        for _ in range(FAIL_FAST + 1):
            known = st.meta.outputs
            todo = [m for m, name in enumerate(study.method_names) if name not in known]
            at = work.first_pending(todo)
            report = self.report
            if at is None or report.stopped_on_errors or report.interrupted:
                return
            p, r = at
            methods = tuple(int(m) for m in np.flatnonzero(work.pending[p].row(r)))
            one = task_batch(study, p, plan.grid[p], r, methods)
            batch = replace(
                one, timeout=o.task_timeout, warnings=o.warnings, device=o.device
            )
            work.pending[p].take(r)
            self.sizer.issued(batch)
            self._consume(
                st, plan, executor.results(iter([batch]), st.output_specs), signals
            )

    def _consume(
        self, st: Store, plan: Plan, results: Iterator[BatchResult], signals: _Signals
    ) -> None:
        """Take results as they come: write, count, stop when asked to."""
        o, report, executor = self.opts, self.report, self._start_executor()
        while True:
            try:
                if signals.count and not report.interrupted:
                    self._stop(executor, interrupted=True)
                result = next(results, None)
                if result is None:
                    break
                self.sizer.observe(result.batch, result.seconds)
                self._take(st, plan, result)
                if o.max_errors is not None and self.failed_now >= o.max_errors:
                    report.stopped_on_errors = True
                    executor.stop_submitting()
                if report.failing is None and self._failing(result):
                    report.stopped_on_errors = True
                    executor.stop_submitting()
                self._emit()
            except KeyboardInterrupt:
                # raised by the signal handler outside a store write, or by the
                # caller's code (an on_progress callback): finish what is in flight
                report.interrupted = True
                executor.stop_submitting()
                signals.count = max(signals.count, 1)
                if signals.count >= 2:
                    raise

    def _stop(self, executor: Executor, *, interrupted: bool) -> None:
        self.report.interrupted = interrupted
        executor.stop_submitting()
        self._emit()

    def _take(self, st: Store, plan: Plan, result: BatchResult) -> None:
        """Write a finished batch; count it."""
        if not self.truth_checked:
            self.truth_checked = _check_truth(self.study, st.meta.outputs, result)
        b, report = result.batch, self.report
        self.watchdog.beat()
        result = st.write(result, plan.pidx[b.point], plan.midx[list(b.methods)])
        n_ok = int((result.status == OK).sum())
        n_bad = int((result.status == FAILED).sum())
        report.computed += n_ok + n_bad
        report.ok += n_ok
        report.nonfinite += _nonfinite(result, st.meta.outputs, self.study)
        self.failed_now += n_bad
        report.failed = self.failed_before + self.failed_now
        report.pending -= n_ok + n_bad

    def _failing(self, result: BatchResult) -> bool:
        """Count a batch per method; True when fail-fast should stop the run:
        a method's first FAIL_FAST tasks of this run have all failed."""
        first = {f.method: f"{f.type}: {f.message}" for f in reversed(result.failures)}
        for j, m in enumerate(result.batch.methods):
            name = self.study.methods[m].name
            ok, bad, error = self.by_method.get(name, (0, 0, ""))
            ok += int((result.status[:, j] == OK).sum())
            bad += int((result.status[:, j] == FAILED).sum())
            self.by_method[name] = (ok, bad, error or first.get(name, ""))
            if self.opts.fail_fast and ok == 0 and bad >= FAIL_FAST:
                self.report.failing = (name, self.by_method[name][2])
                return True
        return False

    def _emit(self) -> None:
        if self.on_progress is None:
            return
        report = self.report
        stopping = report.interrupted or report.stopped_on_errors
        elapsed = time.perf_counter() - self.t0
        failed = report.failed - self.failed_before
        self.on_progress(
            Progress(report.computed, self.base + self.total, failed, elapsed, stopping)
        )


def _check_truth(
    study: Study, known: dict[str, list[str]], result: BatchResult
) -> bool:
    """Once every method's outputs are known (stored, or in ``result``),
    refuse a truth naming none of them; True when checked."""
    names = {**{m: list(v) for m, v in known.items()}, **result.keys}
    if any(m not in names for m in study.method_names):
        return False
    outputs = {o for m in study.method_names for o in names[m]}
    # the first point alone: building the whole grid per batch cost O(points)
    truth = study.truth_for(study.first_point) if study.truth_values else {}
    for key in truth:
        if key not in outputs:
            where = f"{Path(study.source_file).name}: " if study.source_file else ""
            raise StudyError(
                f"{where}study.truth names {key!r}, which no method returns "
                f"(outputs: {', '.join(sorted(outputs))}).",
                hint="key the truth by the output that estimates it, e.g. "
                f"study.truth({min(outputs)}=...)",
            )
    return True


def _nonfinite(result: BatchResult, outputs: dict[str, list[str]], study: Study) -> int:
    """Ok tasks of a batch with a NaN or inf in one of their own outputs."""
    ok = result.status == OK
    bad = np.zeros(ok.shape, bool)
    for j, m in enumerate(result.batch.methods):
        for name in outputs.get(study.methods[m].name, ()):
            values = result.outputs.get(name)
            if values is not None:
                flat = values[:, j].reshape(len(values), -1)
                bad[:, j] |= ~np.isfinite(flat).all(axis=1)
    return int((bad & ok).sum())


def _hidden_notes(hidden: dict[str, Any]) -> tuple[str, ...]:
    """Say which stored levels and methods the study no longer has."""
    parts = [
        f"{f} = {', '.join(map(str, levels))}" for f, levels in hidden["levels"].items()
    ]
    if hidden["methods"]:
        parts.append(f"method {', '.join(hidden['methods'])}")
    if hidden.get("points"):
        parts.append(f"{hidden['points']} design point(s) outside the design")
    if not parts:
        return ()
    note = (
        f"the store holds results the study no longer has ({'; '.join(parts)}): "
        "they are kept but hidden from status, summarize and report "
        "(open_results(..., include_hidden=True) shows them; "
        "run --prune deletes them)."
    )
    return (note,)
