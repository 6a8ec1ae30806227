"""Hostile inputs: levels that are shell code, files that cannot be written,
mathtext in levels, malformed failure records, huge integers."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from simstudy.cli import main
from simstudy.debugging import parse_task, task_spec
from simstudy.grid import points
from simstudy.loader import load_study
from simstudy.shell import command, quote
from tests.helpers import assert_store_consistent

LABS = ["lab=$(touch pwned)", "a,b", "it's", " padded ", "plain"]
HOSTILE = f"""
from simstudy import Study

study = Study("hostile", factors={{"lab": {LABS!r}}}, replicates=2, seed=1)

@study.data
def gen(rng, lab):
    return rng.standard_normal(3)

@study.method
def ok(x):
    return {{"estimate": x.mean()}}

@study.method(name="m=1,$(touch pwned2)")
def bad(x, lab):
    raise ValueError(f"fails at {{lab}}")
"""
BAD = "m=1,$(touch pwned2)"


def _failed_store(tmp_path: Path, write_study, capsys) -> tuple[Path, Path, str]:
    """A store (in a folder named like shell code) whose ``bad`` tasks failed."""
    path = write_study(HOSTILE)
    folder = tmp_path / "my $(touch pwned3) 'dir'"
    folder.mkdir()
    store = folder / "hostile.zarr"
    code = main([
        "run", str(path), "--store", str(store),
        "--scheduler", "synchronous", "--no-progress",
    ])  # fmt: skip
    assert code == 3
    assert_store_consistent(store)
    return path, store, capsys.readouterr().err


def _pasted(lines: list[str], cwd: Path) -> list[list[str]]:
    """The argv each line gives when pasted into bash (python replaced by a
    function that prints its arguments, so nothing but bash's parsing runs)."""
    script = "python() { printf '%s\\0' \"$@\"; printf 'END\\0'; }\n" + "\n".join(lines)
    out = subprocess.run(
        ["bash", "-c", script], cwd=cwd, capture_output=True, check=True
    ).stdout.decode()
    argvs, argv = [], []
    for arg in out.split("\0")[:-1]:
        if arg == "END":
            argvs.append(argv)
            argv = []
        else:
            argv.append(arg)
    return argvs


def test_task_spec_round_trips_levels_with_commas_quotes_and_dollars(write_study):
    study = load_study(write_study(HOSTILE))
    for p, point in enumerate(points(study)):
        for m, method in enumerate(study.method_names):
            spec = task_spec(point, 1, method)
            assert parse_task(study, spec) == (p, point, 1, m)


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("lab=plain,replicate=1,method=ok", ("plain", 1, "ok")),
        ('{"lab": "a,b", "replicate": 0, "method": "ok"}', ("a,b", 0, "ok")),
        ('{"lab": " padded ", "replicate": 1, "method": "ok"}', (" padded ", 1, "ok")),
    ],
    ids=["plain-form", "json-comma", "json-spaces"],
)
def test_task_accepts_the_plain_and_the_json_form(write_study, spec, expected):
    study = load_study(write_study(HOSTILE))
    _, point, r, m = parse_task(study, spec)
    assert (point["lab"], r, study.method_names[m]) == expected


def test_errors_prints_replay_commands_that_paste_safely(tmp_path, write_study, capsys):
    path, store, err = _failed_store(tmp_path, write_study, capsys)
    # the run's hint names the store quoted
    assert f"{command('errors', store)} groups them" in err
    assert main(["errors", str(store)]) == 0
    lines = [
        line.removeprefix("  replay: ")
        for line in capsys.readouterr().out.splitlines()
        if line.startswith("  replay: ")
    ]
    assert len(lines) == len(LABS)
    before = sorted(os.listdir(tmp_path))
    argvs = _pasted(lines, tmp_path)
    assert sorted(os.listdir(tmp_path)) == before  # no pwned file anywhere
    assert not list(tmp_path.rglob("pwned*"))
    seen = set()
    for argv in argvs:
        assert argv[:4] == ["-m", "simstudy", "replay", str(path)]
        assert argv[4] == "--task"
        assert argv[6:] == ["--pdb"]
        study = load_study(path)
        _, point, r, m = parse_task(study, argv[5])
        assert study.method_names[m] == BAD
        assert r == 0
        # replays that task (in process, without the debugger)
        assert main([*argv[2:6], "--store", str(store)]) == 3
        assert f"the task raises ValueError: fails at {point['lab']}" in (
            capsys.readouterr().out
        )
        seen.add(point["lab"])
    assert seen == set(LABS)


def test_pasted_replay_command_runs_the_task_and_no_shell_code(
    tmp_path, write_study, capsys
):
    _, store, _ = _failed_store(tmp_path, write_study, capsys)
    main(["errors", str(store)])
    line = next(
        line.removeprefix("  replay: ")
        for line in capsys.readouterr().out.splitlines()
        if line.startswith("  replay: ") and "lab=$(touch pwned)" in line
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    done = subprocess.run(
        ["bash", "-c", line],
        cwd=tmp_path,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 3, done.stderr
    assert "the task raises ValueError: fails at lab=$(touch pwned)" in done.stdout
    assert not list(tmp_path.rglob("pwned*"))


def test_printed_store_paths_are_quoted():
    assert quote("a b") == "'a b'"
    assert command("run", "STUDY.py", "--store", Path("x $y.zarr")) == (
        "python -m simstudy run STUDY.py --store 'x $y.zarr'"
    )
