"""Run a study: options, store, plan, executor, and the loop that joins them.

``run`` builds the run's options once (``options.RunOptions``), opens and
locks the store (``store.Store``), and hands rounds of work (``plan.Plan``)
to an executor (``executors``), writing each finished batch to the store as
it arrives. Progress goes to ``on_progress``; Ctrl-C or SIGTERM once lets
the batches in flight finish, twice stops at once; either way the store is
consistent and a second run resumes. The study is never changed by a run.
"""

from __future__ import annotations

import os
import shutil
import signal
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import replace
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
    ReproducibilityWarning,
    SimstudyError,
    StudyError,
    UsageError,
)
from simstudy.executors import SCHEDULERS, Executor, make_executor, study_payload
from simstudy.progress import NotebookProgress, ProgressPrinter, in_notebook
from simstudy.running.options import FAIL_FAST, RunKwargs, RunOptions, default_store
from simstudy.running.outcome import Progress, RunReport
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
        self.started = time.perf_counter()
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
        opts = self.opts
        created = not (opts.store / "zarr.json").exists()  # by this run
        fresh = opts.restart or not opts.store.exists()
        early = SCHEDULERS[opts.scheduler].early and fresh
        if early and os.access(opts.store.parent, os.W_OK):
            # a new store always has work: spawn the workers first, so they
            # import and install the study while the store is being created
            self.executor = self._make_executor()
        elif opts.address is not None:
            # connect first: an unreachable or refusing scheduler writes no store
            self.executor = self._make_executor()
        try:
            # imported here: zarr's ~0.15 s import overlaps the workers' start
            from simstudy.store import Store

            store = Store.open_for_run(
                opts.store,
                self.study,
                restart=opts.restart,
                recompute=opts.recompute,
                prune=opts.prune,
                provenance=backend_of(self.study).provenance(
                    self.study, Placement(opts.scheduler, opts.device)
                ),
            )
            if opts.protocol is not None:
                store.record_protocol(opts.protocol)  # report lists deviations from it
        except BaseException:
            self._close_executor()
            raise
        try:
            self._rounds(store)
        except SimstudyError:
            store.close()
            if created and self.report.computed == 0:
                # bad input found once the first results were in (a truth
                # naming no output): leave no store behind
                shutil.rmtree(store.path, ignore_errors=True)
            raise
        finally:
            store.close()
            self._close_executor()
        self.report.seconds = time.perf_counter() - self.started
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
            report.startup = time.perf_counter() - self.started
            if self.on_start is not None:
                link = getattr(self.executor, "dashboard", None)
                dashboard = f"; dashboard {link}" if link else ""
                self.on_start(self.executor.description + dashboard)
        return self.executor

    # ---- rounds ----------------------------------------------------------
    def _rounds(self, store: Store) -> None:
        """Run rounds until nothing is left (or the MCSE targets are met)."""
        study, opts, report = self.study, self.opts, self.report
        plan = Plan(study, store)
        report.repaired = tuple(store.repaired)
        report.notes = _hidden_notes(store.hidden)
        changes = store.version_changes()
        if changes:
            message = recheck_versions(
                study, store, changes, accept=opts.accept_version_change
            )
            report.warnings += (message,)
        target = None if opts.target is None else TargetRule(opts.target)
        record = store.meta.target_mcse
        if target is None and record:
            planned = min(e["replicates"] for e in record["points"])
            if study.replicates > planned:  # a plain run past the rule's counts
                store.record_target(None)
        counts = [study.replicates] * len(plan.grid)  # replicates per point
        self.sizer.chunk = store.group_rows
        signals = _Signals()
        self.watchdog = Watchdog(timeout=opts.task_timeout)
        first = True
        try:
            while True:
                # failed tasks rerun once, in round one
                work = plan.round(counts, retry_failed=opts.retry_failed and first)
                self._account(work, first=first)
                first = False
                if self.total:
                    self._round(store, plan, work, signals)
                if target is None or report.interrupted or report.stopped_on_errors:
                    break
                store.flush()
                counts, more = target.next_counts(store, plan.grid, counts)
                if not more:
                    self._short_of_target(target, len(plan.grid))
                    break
                store.extend_replicates(max(counts))
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
        store: Store,
        plan: Plan,
        work: Round,
        signals: _Signals,
    ) -> None:
        """Compute a round's pending tasks, writing each finished batch."""
        opts, report, sizer = self.opts, self.report, self.sizer
        executor = self._start_executor()
        self.watchdog.beat()  # waiting for workers (a Slurm queue) is no stall
        sizer.rows_left = work.rows
        for p, pending in enumerate(work.pending):
            store.expect(plan.pidx[p], pending.counts())
        executor.prepare(work.work())
        self.base = report.computed
        self._probe(store, plan, work, signals)
        batches = plan.batches(
            work,
            sizer,
            timeout=opts.task_timeout,
            warnings=opts.warnings,
            device=opts.device,
        )
        results = executor.results(batches, store.output_specs)
        self._consume(store, plan, results, signals)

    def _probe(self, store: Store, plan: Plan, work: Round, signals: _Signals) -> None:
        """Fix each method's output names by its first successful task in task
        order (design point, then replicate) before any other batch goes out,
        so which tasks fail for returning other names does not depend on the
        order results arrive in (workers, batch sizes, resume)."""
        study, opts, executor = self.study, self.opts, self._start_executor()
        for _ in range(FAIL_FAST + 1):
            known = store.meta.outputs
            todo = [m for m, name in enumerate(study.method_names) if name not in known]
            at = work.first_pending(todo)
            report = self.report
            if at is None or report.stopped_on_errors or report.interrupted:
                return
            p, r = at
            methods = tuple(int(m) for m in np.flatnonzero(work.pending[p].row(r)))
            one = task_batch(study, p, plan.grid[p], r, methods)
            batch = replace(
                one,
                timeout=opts.task_timeout,
                warnings=opts.warnings,
                device=opts.device,
            )
            work.pending[p].take(r)
            self.sizer.issued(batch)
            results = executor.results(iter([batch]), store.output_specs)
            self._consume(store, plan, results, signals)

    def _consume(
        self,
        store: Store,
        plan: Plan,
        results: Iterator[BatchResult],
        signals: _Signals,
    ) -> None:
        """Take results as they come: write, count, stop when asked to."""
        opts, report, executor = self.opts, self.report, self._start_executor()
        while True:
            try:
                if signals.count and not report.interrupted:
                    self._stop(executor, interrupted=True)
                result = next(results, None)
                if result is None:
                    break
                self.sizer.observe(result.batch, result.seconds)
                self._take(store, plan, result)
                if opts.max_errors is not None and self.failed_now >= opts.max_errors:
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

    def _take(self, store: Store, plan: Plan, result: BatchResult) -> None:
        """Write a finished batch; count it."""
        if not self.truth_checked:
            self.truth_checked = _check_truth(self.study, store.meta.outputs, result)
        batch, report = result.batch, self.report
        self.watchdog.beat()
        result = store.write(
            result, plan.pidx[batch.point], plan.midx[list(batch.methods)]
        )
        n_ok = int((result.status == OK).sum())
        n_bad = int((result.status == FAILED).sum())
        report.computed += n_ok + n_bad
        report.ok += n_ok
        report.nonfinite += _nonfinite(result, store.meta.outputs, self.study)
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
        elapsed = time.perf_counter() - self.started
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
