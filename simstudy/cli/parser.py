"""The argument parser of ``python -m simstudy``: every command and flag.

Flags are the snake_case option names in kebab-case (``--max-errors`` for
``max_errors``); a bad argument raises UsageError, printed as one line.
"""

from __future__ import annotations

import argparse
from typing import Any, NoReturn

from simstudy.analysis.registry import CASES
from simstudy.cli.solve import add_solve
from simstudy.errors import UsageError
from simstudy.executors import SCHEDULERS

__all__ = ["Parser", "add_summary_options", "build_parser"]


class Parser(argparse.ArgumentParser):
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


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``python -m simstudy``."""
    top = Parser(
        prog="python -m simstudy",
        description="Run simulation studies with reproducible streams.",
    )
    top.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = top.add_subparsers(dest="command", required=True, parser_class=Parser)
    _add_run(sub)
    _add_other(sub)
    add_solve(sub)
    _add_share(sub)
    for command in sub.choices.values():  # every command takes it, as its last
        command.add_argument("--debug", action="store_true", help="show tracebacks")
    return top


def _add_run(sub: Any) -> None:
    """The ``run`` command: every option of ``simstudy.run``."""
    run = sub.add_parser("run", help="run or resume a study")
    run.add_argument("study", help="the study file (.py)")
    run.add_argument("--store", help="zarr store (default ./<study-stem>.zarr)")
    where = run.add_mutually_exclusive_group()
    where.add_argument(
        "--scheduler",
        default=None,
        choices=list(SCHEDULERS),
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
    _add_run_execution(run)
    _add_run_study(run)
    _add_run_share(run)
    run.add_argument("--no-progress", action="store_true", help="no progress output")


def _add_run_execution(run: Any) -> None:
    """How the run's tasks execute: workers, batches, failures, time limits."""
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
        "--no-fail-fast",
        dest="fail_fast",
        action="store_false",
        help="run every task even when a method's first 50 tasks all failed "
        "(by default the run stops there)",
    )
    run.add_argument(
        "--warnings-as-errors",
        action="store_true",
        help="a task that emits a warning is a failed task",
    )
    run.add_argument(
        "--task-timeout",
        type=_seconds,
        metavar="SECONDS",
        help="record a data/method call running longer as a failed task "
        "(processes and synchronous schedulers)",
    )
    run.add_argument("--retry-failed", action="store_true", help="rerun failed tasks")


def _add_run_study(run: Any) -> None:
    """What the run computes into the store: replicates, targets, recomputes."""
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
        "--round-size",
        type=_positive,
        metavar="K",
        help="with --target-mcse: a point's next round adds at least K "
        "replicates, its count a multiple of K (default: a tenth of the first)",
    )
    run.add_argument(
        "--strict",
        action="store_true",
        help="with --target-mcse: exit with code 6 when a point stops at "
        "--max-replicates short of its target",
    )
    run.add_argument(
        "--accept-version-change",
        action="store_true",
        help="go on although numpy/jax changed and finished tasks recompute "
        "differently (the cube then mixes both versions)",
    )
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


def _cases(text: str) -> str | list[str]:
    """``--cases a,b``: one strategy, or several side by side; each checked."""
    names = [c.strip() for c in text.split(",") if c.strip()]
    for name in names:
        if name not in CASES:
            raise argparse.ArgumentTypeError(
                f"invalid choice: {name!r} (choose from {', '.join(CASES)})"
            )
    return names[0] if len(names) == 1 else names


def _add_summarize(sub: Any) -> None:
    """`summarize`: measures, layout and format."""
    summ = sub.add_parser("summarize", help="performance measures with Monte Carlo SEs")
    summ.add_argument("store", help="the store (.zarr)")
    summ.add_argument(
        "--format",
        choices=["table", "csv", "json", "netcdf", "latex", "markdown"],
        default=None,
        help="default: table, or from the -o file's suffix "
        "(.csv .json .nc .txt .tex .md)",
    )
    summ.add_argument("-o", "--output", help="write to this file (netcdf needs it)")
    summ.add_argument(
        "--wide",
        action="store_true",
        help="methods as columns (table, csv, latex, markdown)",
    )
    add_summary_options(summ)


def add_summary_options(p: Any) -> None:
    """What a summary computes, for `summarize` and `report` alike: the
    keyword options of ``simstudy.summarize`` and which methods and design
    points it covers."""
    p.add_argument(
        "--measures",
        metavar="M1,M2,...",
        help="only these measures, e.g. bias,coverage (default: all computed)",
    )
    p.add_argument(
        "--cases",
        type=_cases,
        default="available",
        metavar="C1,C2,...",
        help="which replicates: available (each method's usable ones), complete "
        "(those every method has), no_warnings (tasks without warnings), "
        "fallback (a failed method takes its declared fallback's value); "
        "several, comma-separated, side by side",
    )
    p.add_argument(
        "--winsorize",
        type=float,
        metavar="K",
        help="clip estimates to [Q1 - K IQR, Q3 + K IQR] per design point and "
        "method before every measure",
    )
    p.add_argument(
        "--reference",
        metavar="M",
        help="method to compare with: relprec, bias_diff, mse_ratio, corr",
    )
    p.add_argument(
        "--alpha", type=float, default=0.05, help="test level for power (0.05)"
    )
    p.add_argument(
        "--level",
        type=float,
        default=0.95,
        help="confidence level of Wald intervals from se (0.95)",
    )
    p.add_argument(
        "--null",
        type=float,
        default=0.0,
        help="the value the Wald test from se rejects (0)",
    )
    p.add_argument(
        "--df",
        help="t intervals/tests with these degrees of freedom: a number or "
        "an output (default: normal)",
    )
    p.add_argument(
        "--methods",
        metavar="M1,M2,...",
        help="only these methods (default: all)",
    )
    p.add_argument(
        "--points",
        action="append",
        metavar="FACTOR=L1,L2,...",
        help="only these levels of a factor, e.g. n=20,50; repeat for several "
        "factors (default: every design point)",
    )


def _add_other(sub: Any) -> None:
    """The commands that read a store or a study: status ... report."""
    status = sub.add_parser("status", help="show a store's progress")
    status.add_argument("target", help="a study file (.py) or a store (.zarr)")
    status.add_argument("--store", help="the store, when TARGET is a study file")
    _add_summarize(sub)
    rpl = sub.add_parser("replay", help="rerun one task here, with its streams")
    rpl.add_argument("study", help="the study file (.py)")
    rpl.add_argument(
        "--task",
        required=True,
        help="every factor, the replicate and the method: "
        "n=100,eps=0.1,replicate=17,method=median, or as a JSON object "
        '(levels with \',\' or \'=\'): \'{"lab": "a,b", "replicate": 17, '
        '"method": "median"}\'',
    )
    rpl.add_argument("--store", help="compare with this store (default ./<stem>.zarr)")
    rpl.add_argument("--pdb", action="store_true", help="debug the task's exception")
    err_p = sub.add_parser("errors", help="failed tasks, grouped, with replay commands")
    err_p.add_argument("store", help="the store (.zarr)")
    ver = sub.add_parser("verify", help="recompute finished tasks, compare bit for bit")
    ver.add_argument(
        "store",
        metavar="STORE|STUDY.py|BUNDLE",
        help="the store (.zarr), the study file, or a bundle (.tar: runs its code)",
    )
    ver.add_argument(
        "--study",
        help="the study file that made STORE (required with a store: the file a "
        "store names is never run)",
    )
    ver.add_argument(
        "--store",
        dest="to",
        metavar="STORE",
        help="with STUDY.py: the store (default ./<stem>.zarr)",
    )
    ver.add_argument("--sample", type=_positive, default=20, help="replicates (20)")
    ver.add_argument(
        "--scheduler",
        choices=list(SCHEDULERS),
        default=None,
        help="where to recompute (default: in this process)",
    )
    ver.add_argument("--workers", type=_positive, help="worker processes")
    pln = sub.add_parser("plan", help="what a run would do: tasks, size, time")
    pln.add_argument("study", help="the study file (.py)")
    pln.add_argument("--store", help="the store (default ./<stem>.zarr)")
    pln.add_argument("--replicates", type=_positive, metavar="N", help="as for run")
    pln.add_argument("--workers", type=_positive, help="worker processes (cores)")
    pln.add_argument(
        "--retry-failed",
        action="store_true",
        help="count failed tasks as to run, as run --retry-failed does",
    )
    rep = sub.add_parser("report", help="write a self-contained HTML report")
    rep.add_argument("store", help="the store (.zarr)")
    rep.add_argument(
        "-o", "--output", default="report.html", help="the HTML file (report.html)"
    )
    add_summary_options(rep)
    rep.add_argument(
        "--split",
        metavar="FACTOR",
        help="one panel per level of FACTOR in each figure, and the replicate "
        "figures in one section per level (e.g. --split delta)",
    )


def _add_run_share(run: Any) -> None:
    """``run``'s flags of docs/share.md: a registered protocol, an added method."""
    run.add_argument(
        "--protocol",
        metavar="FILE",
        help="record this protocol (python -m simstudy protocol) in the store: "
        "the report then lists the deviations from it",
    )
    run.add_argument(
        "--add-method",
        metavar="FILE.py",
        help="with a bundle (.tar) as STUDY: add the methods of FILE.py to it and "
        "run only their tasks, on the bundle's data sets",
    )


def _add_share(sub: Any) -> None:
    """`protocol` and `bundle`: register a study, share what it made."""
    pro = sub.add_parser("protocol", help="write an ADEMP protocol of a study file")
    pro.add_argument("study", help="the study file (.py)")
    pro.add_argument(
        "-o", "--output", help="write to this file (.md, or .html); default: print"
    )
    pro.add_argument(
        "--compare",
        metavar="PROTOCOL",
        help="list how the study file now deviates from this protocol instead",
    )
    pro.add_argument(
        "--pilot",
        type=_positive,
        default=50,
        metavar="N",
        help="replicates per design point the pilot runs here (50)",
    )
    pro.add_argument(
        "--target-mcse",
        type=_targets,
        action="append",
        metavar="MEASURE=MCSE",
        help="also give the replicates each MCSE target needs, e.g. bias=0.005",
    )
    bnd = sub.add_parser(
        "bundle", help="pack a store, its study code, environment and report"
    )
    bnd.add_argument("store", help="the store (.zarr)")
    bnd.add_argument(
        "--study",
        help="the study file that made STORE (default: the one the store names, "
        "copied, never run); needed to write a protocol when none was registered",
    )
    bnd.add_argument(
        "-o", "--output", required=True, help="the bundle (e.g. study.simstudy.tar)"
    )
    bnd.add_argument(
        "--no-results",
        action="store_true",
        help="leave the cube out (keep only the per-task hashes)",
    )
    bnd.add_argument(
        "--protocol", metavar="FILE", help="the protocol (default: the registered one)"
    )
