"""``simstudy solve``: the level of one factor at which a measure meets a target.

A solve runs the study in rounds, each an ordinary ``run`` of a copy of the
study (``Study.derive``) restricted to one method, the other factors fixed
at one design point and the solved factor at the round's levels, with the
round's replicates. Round 0 spreads four levels over the range; after each
round, ``rootfit.fit_root`` fits the measure's curve to every level so far
(each at the replicates it was given) and the next round evaluates the root
estimate and the two ends of its interval (rounded: a level may come
again), each brought to ``R`` more replicates than the most any of them
has, ``R`` doubling each round up to 16 times the first round's. The solve stops when the interval is at
most ``tolerance`` wide or the next round would pass the task budget.

Every decision is a function of stored results only, so a solve that is
interrupted (Ctrl-C, kill -9) and started again replays its rounds from the
store, computing nothing twice, and reaches the same answer bit for bit;
a second solve with a tighter tolerance or a larger budget replays the
first and goes on. At the end the store shows the study's own levels and
every evaluated level (``open_results``), and records the solution in its
metadata (``solve``) for ``report``.

Layers: imports ``runner, options, store, summary, rootfit, loader, study,
cube, errors``.
"""

from __future__ import annotations

import itertools
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Unpack

import numpy as np

from simstudy.cube import METHOD, REPLICATE
from simstudy.errors import EXIT_INTERRUPTED, EXIT_OK, NoSolution, UsageError
from simstudy.loader import load_study
from simstudy.options import RunKwargs, default_store
from simstudy.rootfit import PROPORTIONS, Point, RootFit, Scale, fit_root
from simstudy.rootfit import monotone_breach as _breach
from simstudy.runner import run
from simstudy.study import Study

__all__ = ["Evaluation", "Solution", "SolveReport", "solve"]

DEFAULT_BUDGET = 500_000  # tasks per solution
DEFAULT_TOLERANCE = "1%"  # of the root estimate
GROWTH_CAP = 16  # a round's replicates: at most this many times the first's
MAX_ROUNDS = 40
REFUSED = ("replicates", "restart", "prune", "recompute", "target_mcse")


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


@dataclass(slots=True)
class _Problem:
    """A solve's validated inputs, the same for every design point."""

    study: Study
    factor: str
    measure: str
    target: float
    method: str
    bounds: tuple[float, float]
    integer: bool
    tolerance: tuple[float, bool]  # value, relative
    budget: int
    first: int  # replicates of round 0
    level: float
    store: Path
    options: dict[str, Any]

    @property
    def scale(self) -> Scale:
        return Scale(
            sqrt_factor=self.integer and self.bounds[0] > 0,
            probit=self.measure in PROPORTIONS,
        )

    def round_level(self, x: float) -> float:
        lo, hi = self.bounds
        x = min(max(x, lo), hi)
        if self.integer:
            return round(x)
        return float(f"{x:.4g}")


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
    t0 = time.perf_counter()
    problem, points = _validate(
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
    report = SolveReport(store=problem.store)
    for point in points:
        solution = _Solver(problem, point, report, on_progress).go()
        if solution is None:
            break
        report.solutions.append(solution)
    if report.solutions:
        _record(problem, report.solutions)
    report.seconds = time.perf_counter() - t0
    return report


# ---- validation ------------------------------------------------------------
def _validate(
    study: Study | str | os.PathLike[str], **given: Any
) -> tuple[_Problem, list[dict[str, Any]]]:
    """Check every argument before anything is written."""
    if not isinstance(study, Study):
        study = load_study(study)
    options = given["options"]
    for name in REFUSED:
        if options.get(name) not in (None, False, (), []):
            raise UsageError(
                f"solve: option {name!r} does not apply to a solve.",
                hint="drop it; `solve --replicates` sets the first round's size",
            )
    options = {k: v for k, v in options.items() if k not in REFUSED}
    if study.scheme != "spawn":
        raise UsageError(
            f"solve: the study's rng scheme is {study.scheme!r}; a solve adds "
            "levels, which renumbers the streams of a jump scheme.",
            hint='use rng="spawn" (streams keyed by the design point\'s values)',
        )
    factor = given["factor"]
    kind = _numeric_kind(study, factor)
    measure, goal = _target(given["target"])
    method = _method(study, given["method"])
    bounds = _bounds(study, factor, kind, given["bounds"])
    points = _points(study, factor, given["at"])
    first = given["replicates"] or study.replicates
    budget = DEFAULT_BUDGET if given["budget"] is None else given["budget"]
    for name, value in (("replicates", first), ("budget", budget)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise UsageError(
                f"solve: --{name} must be a whole number >= 1, got {value!r}.",
                hint=f"e.g. --{name} 1000",
            )
    level = given["level"]
    if not 0 < level < 1:
        raise UsageError(
            f"solve: the interval's level must be between 0 and 1, got {level!r}.",
            hint="use level=0.95",
        )
    store = Path(options.pop("store", None) or default_store(study))
    return (
        _Problem(
            study=study,
            factor=factor,
            measure=measure,
            target=goal,
            method=method,
            bounds=bounds,
            integer=kind == "integer",
            tolerance=_tolerance(given["tolerance"]),
            budget=budget,
            first=int(first),
            level=float(level),
            store=store,
            options=options,
        ),
        points,
    )


def _numeric_kind(study: Study, factor: str) -> str:
    if factor not in study.factors:
        raise UsageError(
            f"solve: --factor {factor!r} is not a factor of the study "
            f"(factors: {', '.join(study.factors)}).",
            hint="name one of the study's numeric factors",
        )
    levels = study.factors[factor]
    if all(isinstance(v, int) and not isinstance(v, bool) for v in levels):
        return "integer"
    if all(isinstance(v, int | float) and not isinstance(v, bool) for v in levels):
        return "real"
    raise UsageError(
        f"solve: factor {factor!r} has non-numeric levels {list(levels)!r}.",
        hint="solve for a factor with int or float levels",
    )


def _target(target: Mapping[str, float]) -> tuple[str, float]:
    items = list(dict(target).items())
    if len(items) != 1:
        raise UsageError(
            f"solve: --target needs exactly one MEASURE=VALUE, got {dict(target)!r}.",
            hint="e.g. --target power=0.8",
        )
    measure, goal = items[0]
    from simstudy.summary import MEASURES

    if measure not in MEASURES:
        raise UsageError(
            f"solve: --target {measure!r} is not a measure of summarize "
            f"(measures: {', '.join(MEASURES)}).",
            hint="e.g. --target power=0.8 or --target rmse=0.1",
        )
    if isinstance(goal, bool) or not isinstance(goal, int | float):
        raise UsageError(
            f"solve: --target {measure} must be a number, got {goal!r}.",
            hint="e.g. --target power=0.8",
        )
    if not math.isfinite(goal) or (measure in PROPORTIONS and not 0 < goal < 1):
        raise UsageError(
            f"solve: --target {measure}={goal!r} is out of reach: a proportion's "
            "target must be strictly between 0 and 1.",
            hint=f"e.g. --target {measure}=0.8",
        )
    return measure, float(goal)


def _method(study: Study, method: str | None) -> str:
    names = study.method_names
    if method is None:
        if len(names) == 1:
            return names[0]
        raise UsageError(
            f"solve: the study has {len(names)} methods ({', '.join(names)}); "
            "say which one's measure to solve.",
            hint=f"add --method {names[0]}",
        )
    if method not in names:
        raise UsageError(
            f"solve: --method {method!r} is not a method of the study "
            f"(methods: {', '.join(names)}).",
            hint=f"use --method {names[0]}",
        )
    return method


def _bounds(
    study: Study, factor: str, kind: str, bounds: Sequence[float] | None
) -> tuple[float, float]:
    if bounds is None:
        levels = [float(v) for v in study.factors[factor]]
        if len(set(levels)) < 2:
            raise UsageError(
                f"solve: factor {factor!r} has one declared level, so no range "
                "to search.",
                hint="give the range, e.g. --range 10:200",
            )
        lo, hi = min(levels), max(levels)
    else:
        lo, hi = (float(b) for b in bounds)
    ok = math.isfinite(lo) and math.isfinite(hi) and lo < hi
    if kind == "integer":
        ok = ok and lo == int(lo) and hi == int(hi) and hi - lo >= 3
    if not ok:
        raise UsageError(
            f"solve: the range of {factor!r} must be LOW < HIGH"
            f"{' (whole numbers, at least 3 apart)' if kind == 'integer' else ''}, "
            f"got {lo:g}:{hi:g}.",
            hint="e.g. --range 10:200",
        )
    if kind == "integer":
        return int(lo), int(hi)
    return lo, hi


def _points(
    study: Study, factor: str, at: Mapping[str, Any] | None
) -> list[dict[str, Any]]:
    """The design points of the other factors: given by --at, or every
    combination of their declared levels."""
    at = dict(at or {})
    fixed: dict[str, list[Any]] = {}
    for name, value in at.items():
        if name == factor or name not in study.factors:
            others = [f for f in study.factors if f != factor]
            raise UsageError(
                f"solve: --at {name}={value!r}: {name!r} is "
                f"{'the solved factor' if name == factor else 'not a factor'} "
                f"(other factors: {', '.join(others) or 'none'}).",
                hint="fix only the other factors, e.g. --at "
                + (f"{others[0]}=..." if others else "(nothing)"),
            )
        fixed[name] = [_as_level(study.factors[name], name, value)]
    names = [f for f in study.factors if f != factor]
    levels = [fixed.get(f, list(study.factors[f])) for f in names]
    return [
        dict(zip(names, combo, strict=True)) for combo in itertools.product(*levels)
    ]


def _as_level(declared: Sequence[Any], name: str, value: Any) -> Any:
    """A --at value with the type of the factor's declared levels."""
    kind = type(declared[0])
    if isinstance(value, str) and kind is not str:
        try:
            value = (
                bool(value == "True")
                if kind is bool
                else kind(float(value))
                if kind is int and float(value) == int(float(value))
                else kind(value)
            )
        except ValueError:
            raise UsageError(
                f"solve: --at {name}={value!r} is not a {kind.__name__} "
                f"like the declared levels {list(declared)!r}.",
                hint=f"e.g. --at {name}={declared[0]}",
            ) from None
    if kind is int and isinstance(value, float) and value == int(value):
        value = int(value)
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, kind):
        raise UsageError(
            f"solve: --at {name}={value!r} is not a {kind.__name__} like the "
            f"declared levels {list(declared)!r}.",
            hint=f"e.g. --at {name}={declared[0]}",
        )
    return value


def _tolerance(tolerance: float | str | None) -> tuple[float, bool]:
    text = DEFAULT_TOLERANCE if tolerance is None else tolerance
    relative = isinstance(text, str) and text.strip().endswith("%")
    value: Any
    try:
        value = float(text.strip().rstrip("%")) if isinstance(text, str) else text
    except ValueError:
        value = math.nan
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not (0 < value < math.inf)
    ):
        raise UsageError(
            f"solve: --tolerance must be a width > 0 or a percentage, got "
            f"{tolerance!r}.",
            hint="e.g. --tolerance 2 (factor units) or --tolerance 1%",
        )
    return (float(value) / 100 if relative else float(value)), relative


# ---- the rounds ------------------------------------------------------------
class _Solver:
    """The rounds of one solution, at one design point of the other factors."""

    def __init__(
        self,
        problem: _Problem,
        point: dict[str, Any],
        report: SolveReport,
        on_progress: Callable[[str], None] | None,
    ) -> None:
        self.p, self.point, self.report = problem, point, report
        self.on_progress = on_progress
        self.counts: dict[float, int] = {}  # level -> replicates given, in order
        self.evaluations: dict[float, Evaluation] = {}

    def go(self) -> Solution | None:
        p = self.p
        lo, hi = p.bounds
        scale = p.scale
        spread = np.linspace(scale.x(lo), scale.x(hi), 4)
        levels = _unique(p.round_level(scale.level(float(x))) for x in spread)
        reps, fit, rounds, met = p.first, None, 0, False
        while rounds < MAX_ROUNDS:
            top = max(self.counts.get(lv, 0) for lv in levels) + reps
            cost = sum(top - self.counts.get(lv, 0) for lv in levels)
            if fit is not None and self.tasks + cost > p.budget:
                break
            if not self._evaluate(levels, top):
                return None
            rounds += 1
            fit = self._fit()
            self._progress(rounds, fit)
            met = rounds > 1 and fit.width <= self._tolerance(fit)
            if met:
                break
            half = max((fit.upper - fit.lower) / 2, 1.0 if p.integer else 0.0)
            levels = _unique(
                p.round_level(x) for x in (fit.root, fit.root - half, fit.root + half)
            )
            reps = min(2 * reps, GROWTH_CAP * p.first)
        assert fit is not None  # round 0 always runs
        return self._solution(fit, rounds, met)

    @property
    def tasks(self) -> int:
        return sum(self.counts.values())

    def _tolerance(self, fit: RootFit) -> float:
        value, relative = self.p.tolerance
        return value * abs(fit.root) if relative else value

    def _evaluate(self, levels: list[float], top: int) -> bool:
        """Bring the round's levels to ``top`` replicates (a level evaluated
        before goes on from its last replicate); read them back."""
        p = self.p
        for lv in levels:
            self.counts[lv] = top
        derived = p.study.derive(replicates=top)
        derived.factors = {
            f: (self.point[f],) if f != p.factor else tuple(sorted(levels))
            for f in p.study.factors
        }
        derived.methods = [m for m in p.study.methods if m.name == p.method]
        result = run(derived, store=p.store, **p.options)
        self.report.computed += result.computed
        if result.interrupted:
            self.report.interrupted = True
            return False
        self._read()
        return True

    def _read(self) -> None:
        """Each level's measure over its first ``counts`` replicates."""
        import xarray as xr

        from simstudy.store import open_results
        from simstudy.summary import summarize

        p = self.p
        levels = sorted(self.counts)
        cube = open_results(p.store, include_hidden=True)
        cube = cube.sel({**{f: [v] for f, v in self.point.items()}, METHOD: [p.method]})
        cube = cube.sel({p.factor: levels})
        cube = cube.isel({REPLICATE: slice(0, max(self.counts.values()))})
        limit = xr.DataArray(
            [self.counts[lv] for lv in levels], coords={p.factor: levels}
        )
        cube = cube.assign(status=cube["status"].where(cube[REPLICATE] < limit, 0))
        summary = summarize(cube, measures=[p.measure])
        if p.measure not in summary:
            skipped = summary.attrs.get("skipped", {})
            raise UsageError(
                f"solve: --target {p.measure}: the measure is not computed for "
                f"method {p.method!r} ({skipped.get(p.measure, 'unknown measure')}).",
                hint="choose a measure `simstudy summarize` shows for this method",
            )
        sel = summary.sel(dict(self.point)).sel({METHOD: p.method})
        for lv in levels:
            cell = sel.sel({p.factor: lv})
            value = float(cell[p.measure].values)
            name = f"{p.measure}_mcse"
            mcse = float(cell[name].values) if name in cell else math.nan
            n_ok = int(cell["n_ok"].values)
            self.evaluations[lv] = Evaluation(
                level=lv, replicates=self.counts[lv], value=value, mcse=mcse, n_ok=n_ok
            )
        cube.close()

    def _fit(self) -> RootFit:
        """The fitted root, or NoSolution with the reason."""
        p = self.p
        where = ", ".join(f"{k}={v}" for k, v in self.point.items())
        where = f" at {where}" if where else ""
        pts = [
            Point(e.level, e.value, e.mcse, e.n_ok)
            for e in self.evaluations.values()
            if math.isfinite(e.value) and math.isfinite(e.mcse)
        ]
        breach = _breach(pts)
        if breach is not None:
            a, b, c, d = breach
            raise NoSolution(
                f"solve: {p.measure} of {p.method} is not monotone in "
                f"{p.factor}{where}: it rises from {_fmt(a.value)} at "
                f"{p.factor}={_fmt(a.level)} to {_fmt(b.value)} at {_fmt(b.level)} "
                f"but falls from {_fmt(c.value)} at {_fmt(c.level)} to "
                f"{_fmt(d.value)} at {_fmt(d.level)} (beyond Monte Carlo error).",
                hint="narrow --range to a stretch where the measure is monotone",
            )
        fit = fit_root(pts, p.target, p.scale, level=p.level)
        lo, hi = p.bounds
        if fit is None or not lo <= fit.root <= hi:
            ends = sorted(pts, key=lambda q: q.level)
            raise NoSolution(
                f"solve: {p.measure} of {p.method} does not reach {_fmt(p.target)} "
                f"for {p.factor} in {_fmt(lo)}..{_fmt(hi)}{where}: "
                f"{_fmt(ends[0].value)} at {_fmt(ends[0].level)}, "
                f"{_fmt(ends[-1].value)} at {_fmt(ends[-1].level)}.",
                hint="widen --range (or check the target's value)",
            )
        return fit

    def _progress(self, rounds: int, fit: RootFit) -> None:
        if self.on_progress is None:
            return
        p = self.p
        evals = ", ".join(
            f"{_fmt(e.level)}:{e.value:.3f}"
            for e in sorted(self.evaluations.values(), key=lambda e: e.level)
        )
        self.on_progress(
            f"round {rounds}: {p.factor} in [{_fmt(fit.lower)}, {_fmt(fit.upper)}] "
            f"(estimate {_fmt(fit.root)}), {self.tasks:,} tasks; {evals}"
        )

    def _solution(self, fit: RootFit, rounds: int, met: bool) -> Solution:
        p = self.p
        if p.integer:
            answer: float = math.ceil(round(fit.root, 9))
        else:
            answer = float(f"{fit.root:.4g}")
        return Solution(
            point=dict(self.point),
            factor=p.factor,
            measure=p.measure,
            method=p.method,
            target=p.target,
            answer=answer,
            estimate=fit.root,
            lower=fit.lower,
            upper=fit.upper,
            level=p.level,
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
def _record(problem: _Problem, solutions: list[Solution]) -> None:
    """Show the study's levels and every level a solve evaluated in the
    store, and keep the solutions in its metadata (``solve``: a list, one
    entry per factor, measure, method and point; a new solve replaces its
    own entry) for the report."""
    from simstudy.backends import Placement, backend_of
    from simstudy.options import RunOptions
    from simstudy.store import Store, open_results

    def key(s: Mapping[str, Any]) -> tuple[Any, ...]:
        return (s["factor"], s["measure"], s["method"], sorted(s["point"].items()))

    new = [s.to_json() for s in solutions]
    keys = [key(s) for s in new]
    old = open_results(problem.store, include_hidden=True).attrs["simstudy"]
    kept = [s for s in old.get("solve", []) if key(s) not in keys]
    record = kept + new
    study = problem.study
    view = study.derive()
    view.factors = {
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
    opts = RunOptions.build(view, store=problem.store, **problem.options)
    st = Store.open_for_run(
        problem.store,
        view,
        provenance=backend_of(view).provenance(
            view, Placement(opts.scheduler, opts.device)
        ),
    )
    try:
        st.record_solve(record)
    finally:
        st.close()
