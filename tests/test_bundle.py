"""`simstudy bundle`, `verify BUNDLE` and `run BUNDLE --add-method`."""

from __future__ import annotations

import io
import json
import shutil
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

import simstudy
from simstudy.cli import main
from simstudy.cube import METHOD
from simstudy.sharing.checks import RTOL
from tests.studies import write_study_file

STUDY = '''
"""Aims: the first draw against the mean."""
import numpy as np
from scipy import special
from simstudy import Study
import tools

study = Study("shared", factors={"n": [4, 8]}, replicates=5, seed=11)


@study.data
def normal(rng, n):
    return rng.standard_normal(n)


@study.method
def first(x):
    return {"estimate": float(x[0])}


@study.method
def mean(x):
    return {"estimate": tools.centre(x)}


study.truth(estimate=0.0)
'''

TOOLS = "def centre(x):\n    return float(x.mean())\n"


@pytest.fixture(autouse=True)
def _fresh_tools():
    """Each test imports its own tools.py, as a new process would."""
    sys.modules.pop("tools", None)
    yield
    sys.modules.pop("tools", None)


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """A finished study and its bundle, made once for this file's tests."""
    folder = tmp_path_factory.mktemp("made")
    (folder / "tools.py").write_text(TOOLS)
    path = write_study_file(folder, STUDY)
    sys.modules.pop("tools", None)
    store = folder / "shared.zarr"
    simstudy.run(path, store=store, scheduler="synchronous")
    out = folder / "shared.simstudy.tar"
    assert main(["bundle", str(store), "-o", str(out)]) == 0
    return folder


@pytest.fixture
def bundle(made: Path, tmp_path: Path) -> Path:
    """A copy of the bundle each test may change; the store beside it."""
    shutil.copy(made / "shared.simstudy.tar", tmp_path)
    (tmp_path / "shared.zarr").symlink_to(made / "shared.zarr")
    return tmp_path / "shared.simstudy.tar"


def _rewrite(bundle: Path, name: str, edit) -> None:  # type: ignore[no-untyped-def]
    """Replace one member of a bundle by ``edit(its text)``."""
    with tarfile.open(bundle) as tar:
        members = [(m, tar.extractfile(m)) for m in tar.getmembers()]
        files = {m.name: (m, f.read() if f else None) for m, f in members}
    with tarfile.open(bundle, "w") as tar:
        for member, data in files.values():
            if member.name == name and data is not None:
                data = edit(data.decode()).encode()
                member.size = len(data)
            tar.addfile(member, io.BytesIO(data) if data is not None else None)


def test_a_bundle_holds_code_environment_protocol_cube_hashes_report(bundle):
    with tarfile.open(bundle) as tar:
        names = set(tar.getnames())
        lock = tar.extractfile("requirements.txt").read().decode()  # type: ignore[union-attr]
        hashes = json.loads(tar.extractfile("hashes.json").read())  # type: ignore[union-attr]
    assert {
        "bundle.json",
        "study/study.py",
        "study/tools.py",  # the local module the study imports
        "requirements.txt",
        "environment.json",
        "hashes.json",
        "report.html",
        "results/shared.zarr/zarr.json",
    } <= names
    assert "protocol.md" not in names  # none registered, no --study given
    assert not any(n.endswith(".simstudy/lock") for n in names)
    pins = dict(line.split("==") for line in lock.splitlines() if "==" in line)
    for needed in ("numpy", "scipy", "zarr", "xarray", "dask", "cloudpickle"):
        assert needed in pins
    assert "# simstudy==" in lock  # installed from its source, not from an index
    assert "pytest" not in pins
    assert "hypothesis" not in pins
    assert pins["scipy"] == __import__("scipy").__version__
    cell = hashes["hashes"]['{"n": 4}']
    assert len(cell["first"]) == 5
    assert all(cell["first"])


def test_verify_a_bundle_here_is_identical(bundle, capsys):
    assert main(["verify", str(bundle), "--sample", "3"]) == 0
    out = capsys.readouterr().out
    assert "package versions: the same as the bundle's" in out
    assert "  first: identical (3 task(s), bit for bit)" in out
    assert "  mean: identical (3 task(s), bit for bit)" in out


def test_verify_names_a_package_whose_version_differs(bundle, capsys):
    def older(text: str) -> str:
        env = json.loads(text)
        env["packages"]["scipy"] = "0.0.1"
        return json.dumps(env)

    _rewrite(bundle, "environment.json", older)
    assert main(["verify", str(bundle), "--sample", "2"]) == 0
    out = capsys.readouterr().out
    here = __import__("scipy").__version__
    assert f"package versions differ: scipy 0.0.1 (bundle) -> {here} (here)" in out


def test_verify_tells_noise_from_a_difference(bundle, capsys):
    def edit(text: str) -> str:
        text = text.replace("float(x[0])", "float(x[0]) + 1.0")
        return text.replace("tools.centre(x)", "tools.centre(x) * (1 + 1e-14)")

    _rewrite(bundle, "study/study.py", edit)
    assert main(["verify", str(bundle), "--sample", "2"]) == 3
    out = capsys.readouterr().out
    assert "  first: DIFFERS (2 of 2 task(s); largest relative difference" in out
    assert "  mean: differs only by floating-point noise (2 of 2 task(s)" in out
    assert f"<= {RTOL:g})" in out


def test_a_bundle_without_results_verifies_by_hashes(bundle, tmp_path, capsys):
    store = tmp_path / "shared.zarr"
    out = tmp_path / "light.tar"
    assert main(["bundle", str(store), "-o", str(out), "--no-results"]) == 0
    with tarfile.open(out) as tar:
        assert not any(n.startswith("results/") for n in tar.getnames())
    assert out.stat().st_size < bundle.stat().st_size
    assert main(["verify", str(out), "--sample", "2"]) == 0
    assert "  mean: identical (2 task(s), bit for bit)" in capsys.readouterr().out


def test_an_added_method_runs_only_its_tasks_on_the_same_data(
    bundle, tmp_path, monkeypatch, capsys
):
    mine = tmp_path / "mine.py"
    mine.write_text(
        "def again(x):\n    return {'estimate': float(x[0]), 'sd': 1.0}\n\n"
        "again.simstudy = {'se': 'sd'}\n\n"
        "def _helper():\n    pass\n"
    )
    before = xr.open_zarr(tmp_path / "shared.zarr").load()
    monkeypatch.chdir(tmp_path)
    argv = ["run", str(bundle), "--add-method", str(mine), "--scheduler", "threads"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "added 'again': 10 task(s) computed" in out
    assert "20 original task(s) not run, their columns byte-identical" in out
    store = tmp_path / "shared.extended" / "results" / "shared.zarr"
    after = xr.open_zarr(store).load()
    assert list(after[METHOD].values) == ["first", "mean", "again"]
    for var in ("estimate", "status", "seconds", "started", "worker"):
        old = before[var].values
        assert np.array_equal(after[var].sel({METHOD: ["first", "mean"]}).values, old)
    # common random numbers: the new method saw the very same data sets
    assert np.array_equal(
        after["estimate"].sel({METHOD: "again"}).values,
        after["estimate"].sel({METHOD: "first"}).values,
    )
    assert "again" in (tmp_path / "shared.extended" / "report.html").read_text()
    assert after.attrs["simstudy"]["measures"]["again"] == {"se": "sd"}


def test_an_added_method_may_not_reuse_a_name(bundle, tmp_path, monkeypatch, capsys):
    mine = tmp_path / "mine.py"
    mine.write_text("def mean(x):\n    return {'estimate': 0.0}\n")
    monkeypatch.chdir(tmp_path)
    argv = ["run", str(bundle), "--add-method", str(mine), "--scheduler", "threads"]
    assert main(argv) == 2
    assert "has a method 'mean' already" in capsys.readouterr().err
    assert not (tmp_path / "shared.extended").exists()  # bad input: nothing written


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("def mine(x):\n    return {'estimate': 1.0\n", "mine.py:2: syntax error"),
        ("raise RuntimeError('boom')\n", "mine.py:1: importing --add-method mine.py"),
    ],
    ids=["syntax-error", "raises"],
)
def test_a_broken_method_file_names_its_line_and_writes_nothing(
    bundle, tmp_path, monkeypatch, capsys, source, expected
):
    mine = tmp_path / "mine.py"
    mine.write_text(source)
    monkeypatch.chdir(tmp_path)
    before = sorted(tmp_path.iterdir())
    assert main(["run", str(bundle), "--add-method", str(mine)]) == 2
    assert expected in capsys.readouterr().err
    assert sorted(tmp_path.iterdir()) == before


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["verify", "{tmp}/junk.tar"], "not a readable bundle"),
        (["bundle", "{tmp}/none.zarr", "-o", "{tmp}/b.tar"], "no such store"),
        (["run", "{tmp}/junk.tar"], "a bundle runs only with --add-method"),
        (["run", "{tmp}/study.py", "--add-method", "{tmp}/m.py"], "is not a bundle"),
    ],
    ids=["verify-junk", "bundle-no-store", "run-bundle-alone", "add-to-a-study-file"],
)
def test_bad_bundle_commands_exit_2_and_write_nothing(tmp_path, capsys, argv, expected):
    (tmp_path / "junk.tar").write_text("not a tar file")
    (tmp_path / "study.py").write_text("")  # a stand-in: it only has to be no bundle
    before = sorted(tmp_path.iterdir())
    assert main([a.format(tmp=tmp_path) for a in argv]) == 2
    assert expected in capsys.readouterr().err
    assert sorted(tmp_path.iterdir()) == before


def test_a_refused_verify_flag_hints_a_command_that_pastes(tmp_path, capsys):
    odd = tmp_path / "my bundle $(touch pwned).tar"
    odd.write_text("not read: the flag is refused first")
    before = sorted(tmp_path.iterdir())
    assert main(["verify", str(odd), "--workers", "2"]) == 2
    err = capsys.readouterr().err
    assert "--workers does not apply" in err
    assert f"write python -m simstudy verify '{odd}' [--sample N]" in err
    assert sorted(tmp_path.iterdir()) == before
