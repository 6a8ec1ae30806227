"""``python -m simstudy solve``: its flags and its command.

Kept apart from parser.py and commands.py so the solve's flags live in one
place; ``build_parser`` and ``COMMANDS`` only register them.
"""

from __future__ import annotations

import argparse
import math
import sys
from typing import Any

from simstudy.executors import SCHEDULERS

__all__ = ["add_solve", "cmd_solve"]


def _target(text: str) -> dict[str, float]:
    name, sep, value = text.partition("=")
    try:
        goal = float(value)
    except ValueError:
        goal = math.nan
    if not sep or not name.strip() or not math.isfinite(goal):
        raise argparse.ArgumentTypeError(
            f"expected MEASURE=VALUE (e.g. power=0.8), got {text!r}"
        )
    return {name.strip(): goal}


def _at(text: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for part in text.split(","):
        name, sep, value = part.partition("=")
        if not sep or not name.strip() or not value.strip():
            raise argparse.ArgumentTypeError(
                f"expected FACTOR=LEVEL[,FACTOR=LEVEL...] (e.g. delta=0.5), "
                f"got {part!r}"
            )
        out[name.strip()] = value.strip()
    return out


def _range(text: str) -> tuple[float, float]:
    lo, sep, hi = text.partition(":")
    try:
        bounds = (float(lo), float(hi))
    except ValueError:
        sep = ""
    if not sep:
        raise argparse.ArgumentTypeError(
            f"expected LOW:HIGH (e.g. 10:200), got {text!r}"
        )
    return bounds


def _whole(text: str) -> int:
    try:
        value = int(text.replace("_", "").replace(",", ""))
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}")
    return value


def add_solve(sub: Any) -> None:
    """The ``solve`` command and its flags."""
    cmd = sub.add_parser(
        "solve",
        help="find the level of a factor where a measure meets a target",
        description="Find the level of one numeric factor at which a measure "
        "(power, coverage, rmse, ...) reaches a target, by rounds of ordinary "
        "tasks stored in the study's store; resumable. See docs/solve.md.",
    )
    cmd.add_argument("study", help="the study file (.py)")
    cmd.add_argument("--factor", required=True, help="the numeric factor to solve")
    cmd.add_argument(
        "--target",
        required=True,
        type=_target,
        metavar="MEASURE=VALUE",
        help="the measure and its target, e.g. power=0.8",
    )
    cmd.add_argument(
        "--at",
        type=_at,
        metavar="FACTOR=LEVEL,...",
        help="levels of the other factors (default: one solution per "
        "combination of their declared levels)",
    )
    cmd.add_argument("--method", help="the method (default: the study's only one)")
    cmd.add_argument(
        "--range",
        type=_range,
        metavar="LOW:HIGH",
        help="the range searched (default: the declared levels' span)",
    )
    cmd.add_argument(
        "--tolerance",
        metavar="WIDTH|P%",
        help="stop when the answer's 95%% interval is at most this wide, in the "
        "factor's units or a percentage of the answer (default 1%%)",
    )
    cmd.add_argument(
        "--budget",
        type=_whole,
        help="at most this many tasks per solution (default 500,000)",
    )
    cmd.add_argument(
        "--replicates",
        type=_whole,
        help="replicates per level in the first round (default: the study's); "
        "later rounds double",
    )
    cmd.add_argument("--store", help="zarr store (default ./<study-stem>.zarr)")
    cmd.add_argument("--scheduler", choices=list(SCHEDULERS), default=None)
    cmd.add_argument("--workers", type=_whole, help="worker processes")
    cmd.add_argument("--no-progress", action="store_true", help="no progress output")


def cmd_solve(args: argparse.Namespace) -> int:
    """Solve; print each solution on stdout, the rounds on stderr."""
    from simstudy.solving.solver import solve

    err = sys.stderr

    def progress(line: str) -> None:
        err.write(f"simstudy solve: {line}\n")
        err.flush()

    options: Any = {
        k: getattr(args, k)
        for k in ("store", "scheduler", "workers")
        if getattr(args, k) is not None
    }
    report = solve(
        args.study,
        factor=args.factor,
        target=args.target,
        at=args.at,
        method=args.method,
        bounds=args.range,
        tolerance=args.tolerance,
        budget=args.budget,
        replicates=args.replicates,
        on_progress=None if args.no_progress else progress,
        **options,
    )
    print(report)
    return report.exit_code
