"""Bad input on the command line: exit 2, ``error:`` + ``hint:``, nothing written."""

from __future__ import annotations

from pathlib import Path

import pytest

from simstudy.cli import main
from tests.conftest import WriteStudy
from tests.studies import GOOD_STUDY

BAD_SYNTAX = "from simstudy import Study\nstudy = Study(\n"
NO_STUDY = "x = 1\n"
DUP_LEVELS = GOOD_STUDY.replace('"n": [5, 10]', '"n": [5, 5]')
UNKNOWN_PARAM = GOOD_STUDY.replace("def gen(rng, n, eps)", "def gen(rng, n, eps, k)")
IMPORT_RAISES = "from simstudy import Study\nraise ValueError('nope')\n"
BAD_SEED = GOOD_STUDY.replace("seed=1", "seed=-1")
NO_METHOD = GOOD_STUDY.split("@study.method")[0]
UNPICKLABLE_FIXED = (
    GOOD_STUDY + "\nimport threading\nstudy.fixed(lock=threading.Lock())\n"
)
UNPICKLABLE_METHOD = GOOD_STUDY + (
    "\nimport threading\n_lock = threading.Lock()\n\n@study.method\n"
    "def locked(x):\n    with _lock:\n        return x.mean()\n"
)
EMPTY_LEVELS = GOOD_STUDY.replace('"n": [5, 10]', '"n": []')
FACTOR_RESERVED = GOOD_STUDY.replace('"n": [5, 10]', '"replicate": [5, 10]')
ZERO_REPLICATES = GOOD_STUDY.replace("replicates=4", "replicates=0")
BAD_SCHEME = GOOD_STUDY.replace("seed=1)", "seed=1, rng='xorshift')")
DUP_METHOD = GOOD_STUDY.replace("def median(x)", "def mean(x)")
NO_DATA = GOOD_STUDY.replace("@study.data\n", "")
BAD_CI = GOOD_STUDY.replace(
    "@study.method\ndef median", '@study.method(ci=("lo",))\ndef median'
)
BAD_SE = GOOD_STUDY.replace(
    "@study.method\ndef median", "@study.method(se=3)\ndef median"
)

# (study source written to study.py or None, argv, text expected in the error line)
CASES = [
    (BAD_SYNTAX, ["run", "study.py"], "study.py:2: syntax error"),
    (NO_STUDY, ["run", "study.py"], "no Study found"),
    (DUP_LEVELS, ["run", "study.py"], "duplicate levels"),
    (UNKNOWN_PARAM, ["run", "study.py"], "asks for parameter 'k'"),
    (IMPORT_RAISES, ["run", "study.py"], "study.py:2: importing the study file"),
    (BAD_SEED, ["run", "study.py"], "seed must be a non-negative integer"),
    (NO_METHOD, ["run", "study.py"], "has no method"),
    (UNPICKLABLE_FIXED, ["run", "study.py"], "fixed input 'lock' cannot be sent"),
    (UNPICKLABLE_METHOD, ["run", "study.py"], "method 'locked' cannot be sent"),
    (EMPTY_LEVELS, ["run", "study.py"], "'n'"),
    (FACTOR_RESERVED, ["run", "study.py"], "'replicate'"),
    (ZERO_REPLICATES, ["run", "study.py"], "replicates"),
    (BAD_SCHEME, ["run", "study.py"], "xorshift"),
    (DUP_METHOD, ["run", "study.py"], "'mean'"),
    (NO_DATA, ["run", "study.py"], "data function"),
    (BAD_CI, ["run", "study.py"], "ci must be two output names"),
    (BAD_SE, ["run", "study.py"], "se= must name an output"),
    (GOOD_STUDY, ["run", "study.py", "--replicates", "0"], "expected a number >= 1"),
    (
        GOOD_STUDY,
        ["run", "study.py", "--recompute", "nosuch"],
        "the study has no method 'nosuch'",
    ),
    (GOOD_STUDY, ["run", "study.py", "--target-mcse", "bias"], "expected MEASURE=MCSE"),
    (
        GOOD_STUDY,
        ["run", "study.py", "--target-mcse", "empse=-1"],
        "expected MEASURE=MCSE with MCSE > 0",
    ),
    (
        GOOD_STUDY,
        ["run", "study.py", "--target-mcse", "bias=0.1"],
        "the study declares no true value",
    ),
    (
        GOOD_STUDY,
        ["run", "study.py", "--max-replicates", "100"],
        "--max-replicates only applies to a --target-mcse run",
    ),
    (GOOD_STUDY, ["run", "study.py", "--task-timeout", "0"], "expected seconds > 0"),
    (GOOD_STUDY, ["run", "study.py", "--task-timeout", "abc"], "number of seconds"),
    (
        GOOD_STUDY,
        ["run", "study.py", "--task-timeout", "5", "--scheduler", "threads"],
        "--task-timeout works with the processes and synchronous",
    ),
    (GOOD_STUDY, ["run", "study.txt"], "must be a Python file ending in .py"),
    (GOOD_STUDY, ["run", "missing.py"], "no such study file"),
    (GOOD_STUDY, ["bogus", "study.py"], "invalid choice: 'bogus'"),
    (GOOD_STUDY, ["run"], "the following arguments are required: study"),
    (GOOD_STUDY, ["run", "study.py", "--workers", "0"], "expected a number >= 1"),
    (GOOD_STUDY, ["run", "study.py", "--workers", "abc"], "expected a whole number"),
    (GOOD_STUDY, ["run", "study.py", "--batch-size", "-1"], "expected a number >= 1"),
    (GOOD_STUDY, ["run", "study.py", "--max-errors", "0"], "expected a number >= 1"),
    (GOOD_STUDY, ["run", "study.py", "--scheduler", "bogus"], "invalid choice"),
    (GOOD_STUDY, ["run", "study.py", "--rng", "bogus"], "invalid choice"),
    (
        GOOD_STUDY,
        [
            "run",
            "study.py",
            "--scheduler",
            "threads",
            "--address",
            "tcp://127.0.0.1:8786",
        ],
        "not allowed with argument",
    ),
    pytest.param(
        GOOD_STUDY,
        ["run", "study.py", "--address", "http://x:1"],
        "has scheme 'http'",
    ),
    pytest.param(
        GOOD_STUDY,
        ["run", "study.py", "--address", "tcp://10.1.2.3:8786"],
        "plain tcp to a non-loopback host",
    ),
    (
        GOOD_STUDY,
        ["run", "study.py", "--store", "missing/dir/s.zarr"],
        "directory",
    ),
    (GOOD_STUDY, ["run", "study.py", "--store", "study.txt"], "is a file, not a store"),
    (GOOD_STUDY, ["status", "nowhere.zarr"], "is not a simstudy store"),
    (GOOD_STUDY, ["status", "."], "is not a simstudy store"),
    (GOOD_STUDY, ["status", "study.py"], "is not a simstudy store"),
]

IDS = [
    "syntax-error",
    "no-study",
    "duplicate-levels",
    "unknown-parameter",
    "import-raises",
    "negative-seed",
    "no-method",
    "unpicklable-fixed-input",
    "unpicklable-method",
    "empty-levels",
    "factor-named-replicate",
    "zero-replicates",
    "unknown-rng-scheme",
    "duplicate-method",
    "no-data-function",
    "ci-one-name",
    "se-not-a-name",
    "replicates-zero",
    "recompute-unknown-method",
    "target-without-value",
    "target-negative",
    "target-needs-truth",
    "max-replicates-alone",
    "task-timeout-zero",
    "task-timeout-abc",
    "task-timeout-with-threads",
    "not-py",
    "missing-study",
    "unknown-subcommand",
    "missing-study-arg",
    "workers-zero",
    "workers-abc",
    "batch-size-negative",
    "max-errors-zero",
    "scheduler-bogus",
    "rng-bogus",
    "address-with-scheduler",
    "address-http",
    "address-plain-tcp-remote",
    "store-in-missing-directory",
    "store-is-a-file",
    "status-missing-store",
    "status-not-a-store",
    "status-study-without-store",
]


def _check_bad_input(
    code: int, err: str, expected: str, cwd: Path, *, check_store: bool = True
) -> None:
    assert code == 2, err
    lines = err.splitlines()
    assert lines, "nothing on stderr"
    assert lines[0].startswith("error: "), err
    assert expected in lines[0], err
    assert any(line.startswith("hint: ") for line in lines[1:]), err
    assert "Traceback" not in err
    if check_store:
        assert not list(cwd.glob("*.zarr")), "a store was written on bad input"


def _snapshot(root: Path) -> dict[str, bytes]:
    """Every file and directory under root (Python's caches aside), with contents."""
    return {
        str(p.relative_to(root)): p.read_bytes() if p.is_file() else b"<dir>"
        for p in sorted(root.rglob("*"))
        if "__pycache__" not in p.parts
    }


@pytest.mark.parametrize(("source", "argv", "expected"), CASES, ids=IDS)
def test_bad_input_exits_2_with_error_and_hint(
    write_study: WriteStudy,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    source: str,
    argv: list[str],
    expected: str,
) -> None:
    write_study(source)
    write_study(source, name="study.txt")
    monkeypatch.chdir(tmp_path)
    before = _snapshot(tmp_path)
    code = main(argv)
    out, err = capsys.readouterr()
    _check_bad_input(code, err, expected, tmp_path)
    assert "Traceback" not in out
    assert _snapshot(tmp_path) == before, "bad input changed files on disk"


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("http://x:1", "has scheme 'http'"),
        ("tcp://10.1.2.3:8786", "plain tcp to a non-loopback host"),
    ],
    ids=["http", "plain-tcp-remote"],
)
def test_bad_address_is_refused_without_connecting(
    write_study: WriteStudy,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    address: str,
    expected: str,
) -> None:
    write_study(GOOD_STUDY)
    monkeypatch.chdir(tmp_path)
    code = main(["run", "study.py", "--no-progress", "--address", address])
    _, err = capsys.readouterr()
    _check_bad_input(code, err, expected, tmp_path, check_store=False)


def test_debug_shows_traceback(
    write_study: WriteStudy,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    write_study(NO_STUDY)
    monkeypatch.chdir(tmp_path)
    assert main(["run", "study.py", "--debug"]) == 2
    _, err = capsys.readouterr()
    assert "Traceback" in err
    assert "error: study.py: no Study found" in err


def test_bad_flush_seconds_setting_is_refused_before_writing(
    write_study: WriteStudy,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    write_study(GOOD_STUDY)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SIMSTUDY_FLUSH_SECONDS", "soon")
    before = _snapshot(tmp_path)
    code = main(["run", "study.py", "--no-progress"])
    _, err = capsys.readouterr()
    _check_bad_input(code, err, "SIMSTUDY_FLUSH_SECONDS must be a number", tmp_path)
    assert _snapshot(tmp_path) == before
