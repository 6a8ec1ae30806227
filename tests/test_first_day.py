"""The first day's traps: keywords for every flag, one name for a list,
status that never rounds failures away, plan's pilot findings and counts,
hints in the caller's language, and the next command after a run."""

from __future__ import annotations

import argparse
import inspect
import re
from pathlib import Path

import pytest

import simstudy
from simstudy.cli import main
from simstudy.cli.parser import build_parser
from simstudy.errors import FingerprintMismatch, UsageError
from simstudy.progress import percent
from simstudy.running.options import RunKwargs
from simstudy.running.runner import run
from tests.helpers import assert_store_consistent

DOCS = Path(__file__).parent.parent / "docs" / "cli.md"

TRAPS = """
import warnings
from simstudy import Study

study = Study("traps", factors={"n": [10, 20]}, replicates=6, seed=3)

@study.data
def draw(rng, n):
    return rng.normal(size=n)

@study.method
def warns(x):
    warnings.warn("Perfect separation detected", RuntimeWarning)
    warnings.warn("Perfect separation detected", RuntimeWarning)
    return {"estimate": x.mean()}

@study.method
def pair(x):
    return (x.mean(), 1.0)

@study.method
def flaky(x, rng):
    if rng.random() < 0.3:
        raise ValueError("did not converge")
    return {"estimate": x.mean()}
"""

PLAIN = """
from simstudy import Study

study = Study("plain", factors={"n": [5, 10]}, replicates=4, seed=1)

@study.data
def draw(rng, n):
    return rng.normal(size=n)

@study.method
def mean(x):
    return {"estimate": x.mean()}

@study.method
def median(x):
    return {"estimate": float(sorted(x)[len(x) // 2])}
"""


def _run_actions() -> list[argparse.Action]:
    top = build_parser()
    sub = next(a for a in top._actions if a.dest == "command")
    assert isinstance(sub.choices, dict)
    return [
        a for a in sub.choices["run"]._actions if a.option_strings and a.dest != "help"
    ]


def _keyword(action: argparse.Action) -> str:
    """The keyword of run() a flag maps to: its dest, or the thing a
    ``--no-X`` flag turns off."""
    return "progress" if action.dest == "no_progress" else action.dest


def _docs_table() -> dict[str, str]:
    """flag -> keyword, from docs/cli.md's "The same options from Python"."""
    text = DOCS.read_text().split("### The same options from Python")[1]
    rows = {}
    for line in text.split("\n## ")[0].splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")] if "|" in line else []
        flag = re.match(r"`(--[a-z-]+)", cells[0]) if cells else None
        if flag:
            kw = re.match(r"`([a-z_]+)=", cells[-1])
            rows[flag.group(1)] = kw.group(1) if kw else ""
    return rows


def test_every_run_flag_has_a_keyword_run_accepts_and_the_docs_table_agrees():
    accepted = set(RunKwargs.__annotations__) | set(inspect.signature(run).parameters)
    table = _docs_table()
    flags = set()
    for action in _run_actions():
        flag = action.option_strings[-1]
        flags.add(flag)
        assert flag in table, f"{flag} is missing from docs/cli.md's keyword table"
        if flag in ("--debug", "--add-method"):
            # the CLI's own: tracebacks; a bundle's new method (from Python:
            # simstudy.sharing.bundle.add_method, docs/share.md)
            assert table[flag] == ""
            continue
        assert _keyword(action) in accepted, flag
        assert table[flag] == _keyword(action), flag
    assert set(table) == flags  # and the table names no flag that is gone


def test_progress_and_rng_keywords_work_like_their_flags(write_study, capsys):
    path = write_study(PLAIN)
    store = path.parent / "s.zarr"
    quiet = run(path, store=store, scheduler="synchronous", progress=False)
    assert quiet.exit_code == 0
    assert capsys.readouterr().err == ""
    loud = run(
        path,
        store=path.parent / "j.zarr",
        scheduler="synchronous",
        progress=True,
        rng="pcg64-jump",
    )
    assert loud.exit_code == 0
    assert "16/16" in capsys.readouterr().err
    meta = simstudy.open_results(path.parent / "j.zarr").attrs["simstudy"]
    assert meta["fingerprint"]["scheme"] == "pcg64-jump"
    with pytest.raises(UsageError, match="progress must be True or False"):
        run(path, store=store, scheduler="synchronous", progress="no")  # type: ignore[arg-type]


def test_one_method_name_is_a_list_of_one(write_study):
    path = write_study(PLAIN)
    store = path.parent / "s.zarr"
    run(path, store=store, scheduler="synchronous")
    again = run(path, store=store, scheduler="synchronous", recompute="median")
    assert again.computed == 2 * 4  # median's column, not m, e, d, i, a, n
    assert_store_consistent(store)
    with pytest.raises(UsageError, match=re.escape('recompute="nope": the study')):
        run(path, store=store, scheduler="synchronous", recompute="nope")


def test_a_changed_method_is_refused_in_the_callers_language(write_study, capsys):
    path = write_study(PLAIN)
    store = path.parent / "s.zarr"
    run(path, store=store, scheduler="synchronous")
    path.write_text(path.read_text().replace("len(x) // 2", "len(x) // 3"))
    with pytest.raises(FingerprintMismatch, match="method 'median' changed") as info:
        run(path, store=store, scheduler="synchronous")
    assert 'run with recompute="median" to recompute' in str(info.value.hint)
    assert "restart=True" in str(info.value.hint)
    argv = ["run", str(path), "--store", str(store), "--scheduler", "synchronous"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "hint: run with --recompute median to recompute" in err
    assert "recompute=" not in err


def test_run_prints_the_next_command_shell_quoted(write_study, capsys):
    path = write_study(PLAIN)
    store = path.parent / "my results" / "s.zarr"
    store.parent.mkdir()
    argv = ["run", str(path), "--store", str(store), "--scheduler", "synchronous"]
    assert main([*argv, "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert f"next: python -m simstudy summarize '{store.resolve()}'" in err


@pytest.mark.parametrize(
    ("ok", "total", "shown"),
    [
        (59_991, 60_000, "99.98%"),
        (999_999, 1_000_000, "99.9999%"),
        (1, 100_000, "0.001%"),
        (0, 10, "0.0%"),
        (5, 10, "50.0%"),
        (10, 10, "100.0%"),
    ],
    ids=["9-failed", "1-in-a-million", "1-ok", "none-ok", "half", "all-ok"],
)
def test_the_share_of_ok_tasks_never_rounds_a_difference_away(ok, total, shown):
    assert percent(ok, total) == shown


def test_plan_reports_pilot_failures_per_method_and_each_warning_once(
    write_study, capsys
):
    path = write_study(TRAPS)
    store = path.parent / "traps.zarr"
    assert main(["plan", str(path), "--store", str(store)]) == 0
    out = capsys.readouterr().out
    assert "pilot: method 'pair': 6 of 6 task(s) failed (every one" in out
    assert "6 x OutputError: method 'pair' returned tuple" in out
    assert re.search(r"pilot: method 'flaky': \d of 6 task\(s\) failed\n", out)
    assert "x ValueError: method 'flaky': did not converge" in out
    warned = [line for line in out.splitlines() if "Perfect separation" in line]
    once = "  pilot warning (12 x, method 'warns'): RuntimeWarning: Perfect"
    assert warned == [f"{once} separation detected"]
    assert not store.exists()


def test_plan_and_run_agree_on_the_tasks_to_run(write_study, capsys):
    path = write_study(TRAPS)
    store = path.parent / "traps.zarr"
    argv = ["--store", str(store)]
    first = run(path, store=store, scheduler="synchronous", fail_fast=False)
    assert first.failed > 0
    capsys.readouterr()

    def to_run(*extra):
        assert main(["plan", str(path), *argv, *extra]) == 0
        line = next(x for x in capsys.readouterr().out.splitlines() if "tasks:" in x)
        found = re.search(r"; ([\d,]+) to run", line)
        assert found is not None, line
        return int(found.group(1).replace(",", ""))

    assert to_run() == 0
    assert to_run("--retry-failed") == first.failed
    assert run(path, store=store, scheduler="synchronous").computed == 0
    retried = run(path, store=store, scheduler="synchronous", retry_failed=True)
    assert retried.computed == first.failed


def test_status_shows_failures_next_to_the_share(write_study, capsys):
    path = write_study(TRAPS)
    store = path.parent / "traps.zarr"
    report = run(path, store=store, scheduler="synchronous", fail_fast=False)
    assert main(["status", str(store)]) == 0
    first = capsys.readouterr().out.splitlines()[0]
    share = percent(report.ok, report.tasks)
    assert first.endswith(f"({share} ok, {report.failed} failed)")


def test_every_summarize_flag_but_the_output_ones_is_a_keyword_of_summarize():
    top = build_parser()
    sub = next(a for a in top._actions if a.dest == "command")
    assert isinstance(sub.choices, dict)
    output = {"format", "output", "wide", "debug", "help"}  # how it is written
    flags = [a.dest for a in sub.choices["summarize"]._actions if a.option_strings]
    accepted = set(inspect.signature(simstudy.summarize).parameters)
    assert [f for f in flags if f not in output and f not in accepted] == []
