"""Hostile inputs: levels that are shell code, files that cannot be written,
mathtext in levels, malformed failure records, huge integers."""

from __future__ import annotations

import errno
import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import xarray as xr

from simstudy.cli import main
from simstudy.declare.grid import points
from simstudy.declare.loader import load_study
from simstudy.errors import UsageError
from simstudy.plots.common import PlotFigure
from simstudy.running.debugging import parse_task, task_spec
from simstudy.shell import command, quote
from tests.conftest import WriteStudy
from tests.helpers import assert_store_consistent
from tests.studies import write_study_file

LABS = ["lab=$(touch pwned)", "a,b", "it's", " padded ", "new\nline", "plain"]
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


def _failed_store(
    tmp_path: Path, write_study: WriteStudy, capsys: pytest.CaptureFixture[str]
) -> tuple[Path, Path, str]:
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
    argvs: list[list[str]] = []
    argv: list[str] = []
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


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ('{"lab": "a,b", "replicate": 1.5, "method": "ok"}', "replicate=1.5 is not"),
        ('{"lab": "a,b", "replicate": true, "method": "ok"}', "replicate=True is not"),
        ('{"lab": ["a,b"], "replicate": 0, "method": "ok"}', "is not a level"),
        ('{"lab": "a,b", "replicate": 0', "not a JSON object"),
        ('["a,b", 0, "ok"]', "is not NAME=VALUE"),
    ],
    ids=["fraction", "bool", "list-level", "truncated", "array"],
)
def test_task_json_form_refuses_what_is_not_a_task(write_study, spec, message):
    study = load_study(write_study(HOSTILE))
    with pytest.raises(UsageError, match=re.escape(message)):
        parse_task(study, spec)


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
    study = load_study(path)
    for argv in argvs:
        assert argv[:4] == ["-m", "simstudy", "replay", str(path)]
        assert argv[4] == "--task"
        assert argv[6:] == ["--pdb"]
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


# ---- files written outside the store: whole or not at all ---------------------
SMALL = """
from simstudy import Study

study = Study("small", factors={"n": [5]}, replicates=4, seed=3)

@study.data
def gen(rng, n):
    return rng.standard_normal(n)

@study.method
def mean(x):
    return {"estimate": x.mean()}

study.truth(estimate=0.0)
"""
PREVIOUS = b"a previous good file\n" * 200


@pytest.fixture(scope="module")
def small_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("small")
    path = write_study_file(folder, SMALL, "small.py")
    store = folder / "small.zarr"
    assert main(["run", str(path), "--store", str(store), "--scheduler",
                 "synchronous", "--no-progress"]) == 0  # fmt: skip
    return store


def _disk_full_midway(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every write of a file outside the store stops half way: ENOSPC."""

    def half(data: bytes | str, path: Path) -> None:
        with open(path, "wb") as f:
            f.write((data.encode() if isinstance(data, str) else data)[:100])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    def write_text(self: Path, text: str, *args: object, **kwargs: object) -> int:
        half(text, self)
        return 0

    def to_netcdf(self: object, path: Path, *args: object, **kwargs: object) -> None:
        half(b"CDF\x01" + b"\0" * 200, path)

    monkeypatch.setattr(Path, "write_text", write_text)
    monkeypatch.setattr(xr.Dataset, "to_netcdf", to_netcdf)


@pytest.mark.parametrize(
    ("command_", "name"),
    [
        (["report"], "r.html"),
        (["summarize"], "s.csv"),
        (["summarize"], "s.json"),
        (["summarize"], "s.nc"),
        (["summarize"], "s.tex"),
        (["summarize"], "s.md"),
        (["summarize"], "s.txt"),
    ],
    ids=["report", "csv", "json", "netcdf", "latex", "markdown", "table"],
)
def test_disk_full_keeps_the_previous_output_and_exits_4(
    tmp_path, small_store, monkeypatch, capsys, command_, name
):
    target = tmp_path / name
    target.write_bytes(PREVIOUS)
    _disk_full_midway(monkeypatch)
    assert main([*command_, str(small_store), "-o", str(target)]) == 4
    err = capsys.readouterr().err
    assert f"error: cannot write {target}: No space left on device (ENOSPC)" in err
    assert "the previous file is unchanged" in err
    assert target.read_bytes() == PREVIOUS
    assert os.listdir(tmp_path) == [name]  # no temporary file left


def test_outputs_are_replaced_whole(tmp_path, small_store):
    target = tmp_path / "s.csv"
    target.write_bytes(PREVIOUS)
    target.chmod(0o640)
    assert main(["summarize", str(small_store), "-o", str(target)]) == 0
    assert target.read_text().startswith("n,method,")
    assert target.stat().st_mode & 0o777 == 0o640  # the replaced file's rights
    assert main(["summarize", str(small_store), "-o", str(tmp_path / "s.nc")]) == 0
    with xr.open_dataset(tmp_path / "s.nc") as ds:
        assert ds["n_ok"].sum() == 4
    assert sorted(os.listdir(tmp_path)) == ["s.csv", "s.nc"]


def test_output_in_a_missing_folder_is_exit_2(tmp_path, small_store, capsys):
    target = tmp_path / "no" / "s.csv"
    assert main(["summarize", str(small_store), "-o", str(target)]) == 2
    assert "folder" in capsys.readouterr().err
    assert os.listdir(tmp_path) == []


# ---- smaller ones --------------------------------------------------------------
MATH = r"""
from simstudy import Study

study = Study("mt", factors={"lab": ["$\\nope{$", "price $5 and $6"]}, replicates=3,
              seed=1)

@study.data
def gen(rng, lab):
    return rng.standard_normal(4)

@study.method(name="m$\\x$")
def mean(x):
    return {"estimate": x.mean()}

@study.method
def med(x):
    return {"estimate": float(sorted(x)[2])}

study.truth(estimate=0.0)
"""


@pytest.fixture(scope="module")
def math_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("math")
    path = write_study_file(folder, MATH, "mt.py")
    store = folder / "mt.zarr"
    assert main(["run", str(path), "--store", str(store), "--scheduler",
                 "synchronous", "--no-progress"]) == 0  # fmt: skip
    return store


def test_levels_that_are_not_mathtext_draw_as_plain_text(math_store):
    from simstudy import open_results, plots, summarize

    cube = open_results(math_store)
    summary = summarize(cube)
    figures = [plots.nested_loop_plot(summary, "bias"), plots.distribution_plot(cube)]
    for fig in figures:
        fig.savefig(io.BytesIO(), format="png", bbox_inches="tight")
    fig = figures[0]
    assert isinstance(fig, PlotFigure)
    fig.mathtext = True  # the user asks for mathtext: then it must be valid
    with pytest.raises(ValueError, match="Unknown symbol"):
        fig.savefig(io.BytesIO(), format="png")


def test_report_of_levels_with_dollars(math_store, tmp_path, capsys):
    target = tmp_path / "r.html"
    assert main(["report", str(math_store), "-o", str(target)]) == 0
    assert "price $5 and $6" in target.read_text()


@pytest.mark.parametrize(
    "content",
    [
        [{"wrong": "keys"}],
        {"replicate": 0},
        [{"n": 5, "replicate": "0", "method": "mean", "type": "E", "message": ""}],
    ],
    ids=["wrong-keys", "not-a-list", "replicate-not-int"],
)
def test_failure_record_with_wrong_keys_is_exit_2_naming_the_file(
    tmp_path, write_study, capsys, content
):
    path = write_study(SMALL.replace("return {", "raise ValueError('x')\n    return {"))
    store = tmp_path / "s.zarr"
    argv = ["run", str(path), "--store", str(store), "--scheduler", "synchronous",
            "--no-progress"]  # fmt: skip
    assert main(argv) == 3
    (record,) = (store / ".simstudy" / "failures").glob("*.json")
    record.write_text(json.dumps(content))
    capsys.readouterr()
    assert main(["errors", str(store)]) == 2
    err = capsys.readouterr().err
    assert "damaged" in err
    assert ".simstudy/failures/0_c0.json (records: not valid JSON, or not" in err
    assert command("run", "STUDY.py", "--store", store) in err
    if content != [{"wrong": "keys"}]:
        return
    # and the run that hint names repairs it: the tasks are computed again
    assert main(argv) == 3
    assert main(["errors", str(store)]) == 0
    assert "4 failed task(s)" in capsys.readouterr().out
    assert_store_consistent(store)


@pytest.mark.parametrize(
    "code", [errno.EROFS, errno.EACCES], ids=["read-only-fs", "no-permission"]
)
def test_new_store_in_a_read_only_folder_is_exit_2(
    tmp_path, write_study, monkeypatch, capsys, code
):
    path = write_study(SMALL)
    folder = tmp_path / "ro"
    folder.mkdir()
    store = folder / "s.zarr"
    real = Path.mkdir

    def refused(self: Path, *args: object, **kwargs: object) -> None:
        if self.parent == folder:  # what a read-only folder does, even for root
            raise OSError(code, os.strerror(code), str(self))
        real(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(Path, "mkdir", refused)
    argv = ["run", str(path), "--store", str(store), "--scheduler", "synchronous"]
    assert main([*argv, "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert f"error: cannot write the store {store}: {os.strerror(code)}." in err
    assert "hint: fix the permissions (or choose another --store)" in err
    assert os.listdir(folder) == []


BIG = """
import numpy as np
from simstudy import Study

study = Study("big", factors={"k": [0, 1, 2]}, replicates=2, seed=3)

@study.data
def gen(rng, k):
    return k

@study.method
def count(k):
    # 2**60 is exact in float64; 2**53 + 1 is not, as a Python or numpy int
    return {"estimate": [2**60, 2**53 + 1, np.int64(-(2**53) - 1)][k]}
"""


def test_integer_output_float64_would_round_is_a_task_failure(tmp_path, write_study):
    from simstudy.store import read_failures

    store = tmp_path / "big.zarr"
    argv = ["run", str(write_study(BIG)), "--store", str(store), "--scheduler",
            "synchronous", "--no-progress", "--no-fail-fast"]  # fmt: skip
    assert main(argv) == 3
    ds = assert_store_consistent(store)
    assert ds["status"].sel(k=0).values.tolist() == [[1], [1]]
    assert ds["estimate"].sel(k=0).values.tolist() == [[2.0**60], [2.0**60]]
    failures = sorted(read_failures(store), key=lambda f: (f["k"], f["replicate"]))
    assert [f["k"] for f in failures] == [1, 1, 2, 2]
    assert "is the integer 9007199254740993, which float64" in failures[0]["message"]
    assert "is the integer -9007199254740993" in failures[2]["message"]
