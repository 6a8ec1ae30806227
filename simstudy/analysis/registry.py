"""The built-in performance measures, each declared once.

Each built-in is one ``Measure``: the kernel computing it (with its family),
what it needs, its reference line, its report section, whether it is a
share of replicates, whether a run may aim at its MCSE (``--target-mcse``)
and its formula as text. The summary, its blocks, the run's options, solve,
the plots, the report and the protocol read this table and the views below;
nothing else lists measures. A user's ``Measure`` goes the same way
(``lookup`` finds how to show it in the summary it is part of). A new
built-in measure is one declaration here (a ``func`` of rows, as a user's,
or a kernel in ``measures``) and its test. docs/analysis.md states every
formula.
"""

# ruff: noqa: RUF001  (the formulas are written in Unicode math on purpose)
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from simstudy.analysis.measures import (
    Formula,
    Measure,
    Need,
    bias_measures,
    conditional_measures,
    interval_measures,
    median_bias,
    modelse,
    paired_measures,
    power,
    spread,
)

__all__ = [
    "BUILTINS",
    "BY_NAME",
    "CASES",
    "MEASURES",
    "SECTIONS",
    "TARGET_NEEDS",
    "lookup",
]

# which replicates a summary uses (summarize(cases=...), --cases)
CASES = ("available", "complete", "no_warnings", "fallback")

# the report's tables, split so that none is wider than the page
PRECISION = "Bias and precision"
INTERVALS = "Model SE, intervals and tests"
AGAINST = "Against the reference method"
ROBUST = "Robust, and given rejection"
TRUTH: tuple[Need, ...] = ("truth",)
# the summary's order: its records, tables and --measures list follow it;
# one row a measure (a table, kept as written)
# fmt: off
BUILTINS: tuple[Measure, ...] = (
    Measure(name="mean", kernel=spread, section=PRECISION, target=True,
            formula=Formula("mean of the estimates", "θ̄", "s/√n")),
    Measure(name="bias", kernel=bias_measures, needs=TRUTH, reference=0.0, section=PRECISION, target=True,
            formula=Formula("bias", "θ̄ − θ", "s/√n")),
    Measure(name="relbias", kernel=bias_measures, needs=TRUTH, reference=0.0, section=PRECISION, target=True,
            formula=Formula("relative bias", "(θ̄ − θ)/θ", "s/(√n·|θ|)")),
    Measure(name="empse", kernel=spread, section=PRECISION, target=True,
            formula=Formula("empirical SE", "s", "s/√(2(n−1))")),
    Measure(name="mse", kernel=bias_measures, needs=TRUTH, section=PRECISION, target=True,
            formula=Formula("mean squared error", "Σ(θ̂ᵢ − θ)²/n", "√(Σ[(θ̂ᵢ−θ)² − mse]²/(n(n−1)))")),
    Measure(name="rmse", kernel=bias_measures, needs=TRUTH, section=PRECISION, target=True,
            formula=Formula("root MSE", "√mse", "MCSE(mse)/(2·rmse)")),
    Measure(name="mae", kernel=bias_measures, needs=TRUTH, section=PRECISION, target=True,
            formula=Formula("mean absolute error", "Σ|θ̂ᵢ − θ|/n", "sd(|θ̂ᵢ − θ|)/√n")),
    Measure(name="modelse", kernel=modelse, needs=("se",), section=INTERVALS, target=True,
            formula=Formula("model-based SE", "√(Σ ŝeᵢ²/n)", "√(Var(ŝe²)/(4n·modelse²))")),
    Measure(name="relerr_modelse", kernel=modelse, needs=("se",), reference=0.0, section=INTERVALS, target=True,
            formula=Formula("relative % error in model SE", "100(modelse/empse − 1)", "100·(modelse/empse)·√(Var(ŝe²)/(4n·modelse⁴) + 1/(2(n−1)))")),
    # ci, p: declared, or a Wald interval and test from the SE
    Measure(name="coverage", kernel=interval_measures, needs=("truth", "ci"), reference="level", section=INTERVALS, bounded=True, target=True,
            formula=Formula("coverage", "#{lᵢ ≤ θ ≤ uᵢ}/n", "√(c(1−c)/n)")),
    Measure(name="becoverage", kernel=interval_measures, needs=("ci",), reference="level", section=INTERVALS, bounded=True, target=True,
            formula=Formula("bias-eliminated coverage", "#{lᵢ ≤ θ̄ ≤ uᵢ}/n", "√(c(1−c)/n)")),
    Measure(name="ci_width", kernel=interval_measures, needs=("ci",), section=INTERVALS, target=True,
            formula=Formula("mean interval width", "Σ(uᵢ − lᵢ)/n", "sd(uᵢ − lᵢ)/√n")),
    Measure(name="power", kernel=power, needs=("p",), reference="alpha", section=INTERVALS, bounded=True, target=True,
            formula=Formula("rejection rate", "#{pᵢ < α}/n", "√(r(1−r)/n)")),
    Measure(name="relprec", kernel=paired_measures, needs=("reference",), reference=0.0, section=AGAINST,
            formula=Formula("relative % increase in precision", "100[(s_ref/s)² − 1]", "200(s_ref/s)²·√((1−ρ²)/(n−1))")),
    Measure(name="bias_diff", kernel=paired_measures, needs=("reference",), reference=0.0, section=AGAINST,
            formula=Formula("bias minus the reference's bias", "Σ(θ̂ᵢ − θ̂_ref,ᵢ)/n", "sd(θ̂ᵢ − θ̂_ref,ᵢ)/√n")),
    Measure(name="mse_ratio", kernel=paired_measures, needs=("truth", "reference"), reference=1.0, section=AGAINST,
            formula=Formula("MSE / the reference's MSE", "a/b", "(a/b)·√((v_a/a² + v_b/b² − 2c_ab/(ab))/n)")),
    Measure(name="corr", kernel=paired_measures, needs=("reference",), section=AGAINST,
            formula=Formula("correlation of the estimates", "ρ", "(1−ρ²)/√(n−3)")),
    Measure(name="median_bias", kernel=median_bias, needs=TRUTH, section=ROBUST, drawn=False,
            formula=Formula("median bias", "median(θ̂ᵢ) − θ", "(θ̂₍ₖ₂₎ − θ̂₍ₖ₁₎)/(2·1.96)")),
    Measure(name="coverage_rejected", kernel=conditional_measures, needs=("truth", "ci", "p"), section=ROBUST, drawn=False,
            formula=Formula("coverage among the replicates whose test rejects", "#{lᵢ ≤ θ ≤ uᵢ, rejᵢ}/n_r", "√(c(1−c)/n_r)")),
    Measure(name="type_s", kernel=conditional_measures, needs=("truth", "p"), section=ROBUST, drawn=False,
            formula=Formula("type-S rate: rejections whose estimate has the wrong sign", "#{sign θ̂ᵢ ≠ sign θ, rejᵢ}/n_r", "√(t(1−t)/n_r)")),
    Measure(name="exaggeration", kernel=conditional_measures, needs=("truth", "p"), section=ROBUST, drawn=False,
            formula=Formula("exaggeration ratio (type M)", "Σ_rej |θ̂ᵢ|/|θ| / n_r", "sd/√n_r")),
    # rates of the failure ledger, shown in the report's own section
    Measure(name="failure_rate", ledger=True, reference=0.0, section=None, bounded=True, target=True,
            formula=Formula("failed share of tasks", "#failed/#finished", "√(f(1−f)/N)")),
    Measure(name="warning_rate", ledger=True, reference=0.0, section=None, bounded=True, target=True,
            formula=Formula("share of tasks that warned", "#warned/#finished", "√(w(1−w)/N)")),
)
# fmt: on
BY_NAME: dict[str, Measure] = {measure.name: measure for measure in BUILTINS}
MEASURES = tuple(BY_NAME)
# the report's tables of measures, in order (a user's measure may add one)
SECTIONS = tuple(dict.fromkeys(m.section for m in BUILTINS if m.section))
# measures a run may aim at (--target-mcse), and what each needs
TARGET_NEEDS = {m.name: m.needs for m in BUILTINS if m.target}


def lookup(name: str, attrs: Mapping[str, Any] | None = None) -> Measure | None:
    """The measure ``name`` of a summary: a built-in, or a user's as the
    summary's ``attrs["custom"]`` says to show it; None if neither."""
    if name in BY_NAME:
        return BY_NAME[name]
    shown = dict((attrs or {}).get("custom") or {}).get(name)
    return None if shown is None else Measure(name=name, **shown)
