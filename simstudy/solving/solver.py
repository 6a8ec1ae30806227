"""``simstudy solve``: the level of one factor at which a measure meets a target.

A solve runs the study in rounds, each an ordinary ``run`` of a copy of the
study (``Study.derive``) restricted to one method, the other factors fixed
at one design point and the solved factor at the round's levels, with the
round's replicates. Round 0 spreads four levels over the range; after each
round, ``rootfit.fit_root`` fits the measure's curve to every level so far
(each at the replicates it was given) and the next round evaluates the root
estimate and the two ends of its interval (rounded: a level may come
again), each brought to ``R`` more replicates than the most any of them
has, ``R`` doubling each round up to 16 times the first round's (or
16,000, whichever is more). The solve stops when the interval is at
most ``tolerance`` wide or the next round would pass the task budget.

Every decision is a function of stored results only, so a solve that is
interrupted (Ctrl-C, kill -9) and started again replays its rounds from the
store, computing nothing twice, and reaches the same answer bit for bit;
a second solve with a tighter tolerance or a larger budget replays the
first and goes on. At the end the store shows the study's own levels and
every evaluated level (``open_results``), and records the solution in its
metadata (``solve``) for ``report``.
The arguments are checked in ``solvespec``.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Unpack

import numpy as np

from simstudy.cube import METHOD, REPLICATE, point_json
from simstudy.declare.study import Study
from simstudy.errors import EXIT_INTERRUPTED, EXIT_OK, NoSolution, UsageError
from simstudy.running.options import RunKwargs
from simstudy.running.runner import run
from simstudy.solving.rootfit import Point, RootFit, fit_root
from simstudy.solving.rootfit import monotone_breach as _breach
from simstudy.solving.solvespec import SolveSpec, validate

__all__ = ["Evaluation", "Solution", "SolveReport", "solve"]

# a round's replicates: at most this many times the first's, or GROWTH_FLOOR
# (a study of 100 replicates would otherwise need dozens of rounds)
GROWTH_CAP, GROWTH_FLOOR = 16, 16_000
MAX_ROUNDS = 40


@dataclass(frozen=True, slots=True)
class Evaluation:
    """One evaluated level: the measure, its MCSE, the replicates used."""

    level: float
    replicates: int
    value: float
    mcse: float
    n_ok: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Solution:
    """The level at which the measure meets the target, at one design point.

    ``answer`` is the estimate rounded up to a whole number for an integer
    factor (the smallest level at or past the root), else rounded to 4
    significant digits; ``lower``/``upper`` bound the root's confidence
    interval (``level``, default 95%) reflecting the Monte Carlo error.
    """

    point: dict[str, Any]
    factor: str
    measure: str
    method: str
    target: float
    answer: float
    estimate: float
    lower: float
    upper: float
    level: float
    tolerance: float
    met: bool  # the interval is at most `tolerance` wide
    tasks: int  # tasks of this solve's evaluations
    rounds: int
    evaluations: tuple[Evaluation, ...] = field(default=())

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["evaluations"] = [asdict(e) for e in self.evaluations]
        return out

    def line(self) -> str:
        at = ", ".join(f"{k}={v}" for k, v in self.point.items())
        where = f" at {at}" if at else ""
        state = "" if self.met else " (tolerance not met: budget spent)"
        return (
            f"{self.factor} = {_fmt(self.answer)}{where}: {self.measure} of "
            f"{self.method} reaches {_fmt(self.target)} at {_fmt(self.estimate)}, "
            f"{self.level:.0%} CI {_fmt(self.lower)} to {_fmt(self.upper)}; "
            f"{self.tasks:,} tasks in {self.rounds} rounds{state}"
        )


@dataclass(slots=True, kw_only=True)
class SolveReport:
    """What a solve found and did; ``exit_code`` follows the CLI contract."""

    store: Path
    solutions: list[Solution] = field(default_factory=list)
    computed: int = 0  # tasks computed by this call (replayed ones excluded)
    seconds: float = 0.0
    interrupted: bool = False

    @property
    def exit_code(self) -> int:
        return EXIT_INTERRUPTED if self.interrupted else EXIT_OK

    def __str__(self) -> str:
        lines = [s.line() for s in self.solutions]
        if self.interrupted:
            lines.append("interrupted: run the same command again to resume")
        lines.append(
            f"store {self.store}: {self.computed:,} tasks computed now, "
            f"in {self.seconds:.1f} s"
        )
        return "\n".join(lines)


def solve(
    study: Study | str | os.PathLike[str],
    *,
    factor: str,
    target: Mapping[str, float],
    at: Mapping[str, Any] | None = None,
    method: str | None = None,
    bounds: tuple[float, float] | None = None,
    tolerance: float | str | None = None,
    budget: int | None = None,
    replicates: int | None = None,
    level: float = 0.95,
    on_progress: Callable[[str], None] | None = None,
    **options: Unpack[RunKwargs],
) -> SolveReport:
    """Find the level of ``factor`` at which a measure reaches a target.

    Parameters
    ----------
    study : Study or path
        The study (its rng scheme must be ``spawn``: streams keyed by the
        design point's values, so new levels never disturb others).
    factor : str
        A numeric factor: integer levels (a sample size) are solved in
        whole numbers, real ones to 4 significant digits.
    target : mapping
        One measure of ``summarize`` and its target, ``{"power": 0.8}``.
    at : mapping, optional
        Levels of the other factors (new levels are fine). Factors not
        given are solved at each of their declared levels.
    method : str, optional
        The method whose measure is solved (default: the study's only one).
    bounds : (low, high), optional
        The range searched (default: the factor's declared levels' span).
    tolerance : float or str
        Stop when the root's interval is at most this wide: a number in
        the factor's units, or ``"1%"`` of the estimate (the default).
    budget : int
        At most this many tasks per solution (default 500,000).
    replicates : int
        Replicates of round 0 (default: the study's); later rounds double.
    level : float
        Confidence level of the root's interval (default 0.95).
    on_progress : callable, optional
        Called with one line per round: the bracket and the evaluations.
    **options
        ``store``, ``scheduler``, ``workers``, ... as for ``simstudy.run``.

    Returns
    -------
    SolveReport
        The solutions (one per design point of the other factors).

    Raises
    ------
    UsageError, StudyError
        Bad arguments, before anything is written.
    NoSolution
        The measure is not monotone in the factor within its Monte Carlo
        error, or does not reach the target in the range (exit code 5; the
        evaluations stay in the store).
    """
    started = time.perf_counter()
    problem, points = validate(
        study,
        factor=factor,
        target=target,
        at=at,
        method=method,
        bounds=bounds,
        tolerance=tolerance,
        budget=budget,
        replicates=replicates,
        level=level,
        options=dict(options),
    )
    report = _solve_each(problem, points, on_progress)
    report.seconds = time.perf_counter() - started
    return report


def _solve_each(
    problem: SolveSpec,
    points: list[dict[str, Any]],
    on_progress: Callable[[str], None] | None,
) -> SolveReport:
    """Solve at each design point of the other factors in turn (an
    interrupted one ends the solve); record the solutions in the store."""
    report = SolveReport(store=problem.store)
    for point in points:
        solution = _Solver(problem, point, report, on_progress).go()
        if solution is None:
            break
        report.solutions.append(solution)
    if report.solutions:
        _record(problem, report.solutions)
    return report


# ---- the rounds ------------------------------------------------------------
class _Solver:
    """The rounds of one solution, at one design point of the other factors."""

    def __init__(
        self,
        problem: SolveSpec,
        point: dict[str, Any],
        report: SolveReport,
        on_progress: Callable[[str], None] | None,
    ) -> None:
        self.spec, self.point, self.report = problem, point, report
        self.on_progress = on_progress
        self.counts: dict[float, int] = {}  # level -> replicates given, in order
        self.evaluations: dict[float, Evaluation] = {}

    def go(self) -> Solution | None:
        spec = self.spec
        lo, hi = spec.bounds
        scale = spec.scale
        spread = np.linspace(scale.x(lo), scale.x(hi), 4)
        levels = _unique(spec.round_level(scale.level(float(x))) for x in spread)
        reps, fit, rounds, met = spec.first, None, 0, False
        while rounds < MAX_ROUNDS:
            top = max(self.counts.get(lv, 0) for lv in levels) + reps
            cost = sum(top - self.counts.get(lv, 0) for lv in levels)
            if fit is not None and self.tasks + cost > spec.budget:
                break
            if not self._evaluate(levels, top):
                return None
            rounds += 1
            fit = self._fit()
            self._progress(rounds, fit)
            met = rounds > 1 and fit.width <= self._tolerance(fit)
            if met:
                break
            half = max((fit.upper - fit.lower) / 2, 1.0 if spec.integer else 0.0)
            levels = _unique(
                spec.round_level(x)
                for x in (fit.root, fit.root - half, fit.root + half)
            )
            reps = min(2 * reps, max(GROWTH_CAP * spec.first, GROWTH_FLOOR))
        assert fit is not None  # round 0 always runs
        return self._solution(fit, rounds, met)

    @property
    def tasks(self) -> int:
        return sum(self.counts.values())

    def _tolerance(self, fit: RootFit) -> float:
        value, relative = self.spec.tolerance
        return value * abs(fit.root) if relative else value

    def _evaluate(self, levels: list[float], top: int) -> bool:
        """Bring the round's levels to ``top`` replicates (a level evaluated
        before goes on from its last replicate); read them back."""
        spec = self.spec
        for lv in levels:
            self.counts[lv] = top
        derived = spec.study.derive(replicates=top).with_levels(
            {
                f: (self.point[f],) if f != spec.factor else tuple(sorted(levels))
                for f in spec.study.factors
            }
        )
        derived.methods = [m for m in spec.study.methods if m.name == spec.method]
        result = run(derived, store=spec.store, **spec.options)
        self.report.computed += result.computed
        if result.interrupted:
            self.report.interrupted = True
            return False
        if result.stopped_on_errors and result.failing is not None:
            method, error = result.failing
            raise NoSolution(
                f"solve: the tasks of method {method!r} fail ({error}), so "
                f"{spec.measure} cannot be evaluated.",
                hint="fix the method (`simstudy errors STORE` lists the failures)",
            )
        self._read()
        return True

    def _read(self) -> None:
        """Each level's measure over its first ``counts`` replicates."""
        import xarray as xr

        from simstudy.analysis.summary import summarize
        from simstudy.store import open_results

        spec = self.spec
        levels = sorted(self.counts)
        cube = open_results(spec.store, include_hidden=True)
        cube = cube.sel(
            {**{f: [v] for f, v in self.point.items()}, METHOD: [spec.method]}
        )
        cube = cube.sel({spec.factor: levels})
        cube = cube.isel({REPLICATE: slice(0, max(self.counts.values()))})
        limit = xr.DataArray(
            [self.counts[lv] for lv in levels], coords={spec.factor: levels}
        )
        cube = cube.assign(status=cube["status"].where(cube[REPLICATE] < limit, 0))
        cube.attrs["simstudy"] = self._with_truth(cube.attrs["simstudy"], levels)
        summary = summarize(cube, measures=[spec.measure])
        if spec.measure not in summary:
            why = summary.attrs.get("skipped", {}).get(spec.measure, "unknown measure")
            raise UsageError(
                f"solve: --target {spec.measure}: the measure is not computed for "
                f"method {spec.method!r} ({why}).",
                hint="choose a measure `simstudy summarize` shows for this method",
            )
        cells = summary.sel(dict(self.point)).sel({METHOD: spec.method})
        for lv in levels:
            cell = cells.sel({spec.factor: lv})
            value = float(cell[spec.measure].values)
            name = f"{spec.measure}_mcse"
            mcse = float(cell[name].values) if name in cell else math.nan
            n_ok = int(cell["n_ok"].values)
            self.evaluations[lv] = Evaluation(
                level=lv, replicates=self.counts[lv], value=value, mcse=mcse, n_ok=n_ok
            )
        cube.close()

    def _with_truth(self, meta: dict[str, Any], levels: list[float]) -> dict[str, Any]:
        """The metadata with the truth at every evaluated level: a run
        records it for its own study's points only, a round's."""

        spec, truths = self.spec, dict(meta.get("truth") or {})
        for lv in levels:
            point = {**self.point, spec.factor: lv}
            truth = spec.study.truth_for(point)
            if truth:
                truths[point_json(point)] = truth
        return {**meta, "truth": truths}

    def _fit(self) -> RootFit:
        """The fitted root, or NoSolution with the reason."""
        spec = self.spec
        where = ", ".join(f"{k}={v}" for k, v in self.point.items())
        where = f" at {where}" if where else ""
        points = [
            Point(e.level, e.value, e.mcse, e.n_ok)
            for e in self.evaluations.values()
            if math.isfinite(e.value) and math.isfinite(e.mcse)
        ]
        breach = _breach(points)
        if breach is not None:
            rise, fall = breach[:2], breach[2:]
            raise NoSolution(
                f"solve: {spec.measure} of {spec.method} is not monotone in "
                f"{spec.factor}{where}: it rises from {_fmt(rise[0].value)} at "
                f"{spec.factor}={_fmt(rise[0].level)} to {_fmt(rise[1].value)} at "
                f"{_fmt(rise[1].level)} but falls from {_fmt(fall[0].value)} at "
                f"{_fmt(fall[0].level)} to {_fmt(fall[1].value)} at "
                f"{_fmt(fall[1].level)} (beyond Monte Carlo error).",
                hint="narrow --range to a stretch where the measure is monotone",
            )
        fit = fit_root(points, spec.target, spec.scale, level=spec.level)
        lo, hi = spec.bounds
        if fit is None or not lo <= fit.root <= hi:
            ends = sorted(points, key=lambda q: q.level)
            raise NoSolution(
                f"solve: {spec.measure} of {spec.method} does not reach "
                f"{_fmt(spec.target)} for {spec.factor} in "
                f"{_fmt(lo)}..{_fmt(hi)}{where}: "
                f"{_fmt(ends[0].value)} at {_fmt(ends[0].level)}, "
                f"{_fmt(ends[-1].value)} at {_fmt(ends[-1].level)}.",
                hint="widen --range (or check the target's value)",
            )
        return fit

    def _progress(self, rounds: int, fit: RootFit) -> None:
        if self.on_progress is None:
            return
        spec = self.spec
        evals = ", ".join(
            f"{_fmt(e.level)}:{e.value:.3f}"
            for e in sorted(self.evaluations.values(), key=lambda e: e.level)
        )
        self.on_progress(
            f"round {rounds}: {spec.factor} in [{_fmt(fit.lower)}, {_fmt(fit.upper)}] "
            f"(estimate {_fmt(fit.root)}), {self.tasks:,} tasks; {evals}"
        )

    def _solution(self, fit: RootFit, rounds: int, met: bool) -> Solution:
        spec = self.spec
        if spec.integer:
            answer: float = math.ceil(round(fit.root, 9))
        else:
            answer = float(f"{fit.root:.4g}")
        return Solution(
            point=dict(self.point),
            factor=spec.factor,
            measure=spec.measure,
            method=spec.method,
            target=spec.target,
            answer=answer,
            estimate=fit.root,
            lower=fit.lower,
            upper=fit.upper,
            level=spec.level,
            tolerance=self._tolerance(fit),
            met=met,
            tasks=self.tasks,
            rounds=rounds,
            evaluations=tuple(sorted(self.evaluations.values(), key=lambda e: e.level)),
        )


def _unique(levels: Any) -> list[Any]:
    out: list[Any] = []
    for lv in levels:
        if lv not in out:
            out.append(lv)
    return out


def _fmt(x: Any) -> str:
    if isinstance(x, int) or (isinstance(x, float) and x == int(x) and abs(x) < 1e9):
        return f"{int(x)}"
    return f"{x:.4g}"


# ---- the record --------------------------------------------------------------
def _record(problem: SolveSpec, solutions: list[Solution]) -> None:
    """Show the study's levels and every level a solve evaluated in the
    store, and keep the solutions in its metadata (``solve``: a list, one
    entry per factor, measure, method and point; a new solve replaces its
    own entry) for the report."""
    from simstudy.backends import Placement, backend_of
    from simstudy.running.options import RunOptions
    from simstudy.store import Store
    from simstudy.store.files import read_meta

    def key(s: Mapping[str, Any]) -> tuple[Any, ...]:
        return (s["factor"], s["measure"], s["method"], sorted(s["point"].items()))

    new = [s.to_json() for s in solutions]
    keys = [key(s) for s in new]
    old = read_meta(Path(problem.store)) or {}
    kept = [s for s in old.get("solve", []) if key(s) not in keys]
    record = kept + new
    study = problem.study
    view = study.with_levels(
        {
            f: tuple(
                sorted(
                    set(levels)
                    | {s["point"][f] for s in record if f in s["point"]}
                    | {
                        e["level"]
                        for s in record
                        if s["factor"] == f
                        for e in s["evaluations"]
                    }
                )
            )
            for f, levels in study.factors.items()
        }
    )
    opts = RunOptions.build(view, store=problem.store, **problem.options)
    store = Store.open_for_run(
        problem.store,
        view,
        provenance=backend_of(view).provenance(
            view, Placement(opts.scheduler, opts.device)
        ),
    )
    try:
        store.record_solve(record)
    finally:
        store.close()
