"""A run's driver imports the study's libraries lazily (issue 17).

``simstudy run`` (process pool or a cluster) loads the study file with
``load_study(path, lazy=True)``: ``from scipy import stats`` binds a module
that loads on first use. The driver only declares, fingerprints and pickles
the study, so it never pays for ``scipy.stats``; the workers import it.
These tests run in fresh interpreters, where scipy.stats is not loaded yet.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import simstudy
from tests.conftest import WriteStudy
from tests.helpers import cube_digest
from tests.studies import write_study_file

ROOT = Path(__file__).resolve().parents[1]

STUDY = """
import numpy as np
from scipy import stats
import scipy.special as special

from simstudy import Study

study = Study("lazy", factors={"n": [8, 30]}, replicates=5, seed=11)

@study.data
def gen(rng, n):
    return rng.standard_normal(n)

@study.method
def trimmed(x):
    return {"estimate": float(stats.trim_mean(x, 0.1))}

@study.method
def expit_mean(x):
    return {"estimate": float(np.mean(special.expit(x)))}
"""


def _python(code: str, cwd: Path) -> Any:
    env_code = f"import sys; sys.path.insert(0, {str(ROOT)!r})\n"
    done = subprocess.run(
        [sys.executable, "-c", env_code + textwrap.dedent(code)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


PROBE = """
import json, sys, cloudpickle
from simstudy.declare.loader import load_study
from simstudy.executors import study_payload
study = load_study("study.py", lazy={lazy})
payload = study_payload(study)
loaded = lambda m: m in sys.modules and type(sys.modules[m]).__name__ == "module"
print(json.dumps({{
    "stats": loaded("scipy.stats"),
    "special": loaded("scipy.special"),
    "fingerprint": study.fingerprint(),
    "payload": payload.hex(),
}}))
"""


@pytest.fixture
def folder(tmp_path: Path, write_study: WriteStudy) -> Path:
    write_study(STUDY)
    return tmp_path


def test_a_lazy_load_runs_no_library_and_changes_no_fingerprint(folder):
    lazy = _python(PROBE.format(lazy=True), folder)
    eager = _python(PROBE.format(lazy=False), folder)
    assert eager["stats"]
    assert eager["special"]
    # declared, fingerprinted and pickled without loading either library
    assert not lazy["stats"]
    assert not lazy["special"]
    assert lazy["fingerprint"] == eager["fingerprint"]
    # the pickled study works in a fresh process: the methods import them
    (folder / "payload.bin").write_bytes(bytes.fromhex(lazy["payload"]))
    out = _python(
        """
        import json, pickle, numpy as np
        study = pickle.loads(open("payload.bin", "rb").read())
        x = np.arange(10.0)
        print(json.dumps([m.func(x)["estimate"] for m in study.methods]))
        """,
        folder,
    )
    from scipy import special, stats  # here, after the probes

    x = np.arange(10.0)
    assert out == [float(stats.trim_mean(x, 0.1)), float(special.expit(x).mean())]


def test_a_library_used_at_the_top_of_the_study_loads_as_usual(folder):
    write_study_file(
        folder,
        STUDY.replace(
            'study = Study("lazy"', 'CUT = stats.norm.ppf(0.975)\nstudy = Study("lazy"'
        ),
    )
    got = _python(PROBE.format(lazy=True), folder)
    assert got["stats"]  # loaded at its first use, in the file itself


def test_a_run_through_the_cli_gives_the_eager_runs_cube(folder, tmp_path):
    """The default scheduler (lazy driver) and the synchronous one (eager:
    tasks run in the driver) write the same numbers."""
    for store, extra in (
        ("lazy.zarr", []),
        ("eager.zarr", ["--scheduler", "synchronous"]),
    ):
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "simstudy",
                "run",
                "study.py",
                "--store",
                store,
                "--no-progress",
                "--workers",
                "2",
                *extra,
            ],
            cwd=folder,
            capture_output=True,
            text=True,
            timeout=300,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        assert done.returncode == 0, done.stderr
    assert cube_digest(folder / "lazy.zarr") == cube_digest(folder / "eager.zarr")
    ds = simstudy.open_results(folder / "lazy.zarr")
    assert int((ds["status"] == 1).sum()) == 2 * 5 * 2


def test_an_edit_is_still_seen_by_a_lazy_resume(folder):
    """The fingerprint of a lazily loaded study still sees a changed method."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [
        sys.executable,
        "-m",
        "simstudy",
        "run",
        "study.py",
        "--store",
        "s.zarr",
        "--no-progress",
    ]
    assert subprocess.run(cmd, cwd=folder, env=env, timeout=300).returncode == 0
    write_study_file(folder, STUDY.replace("trim_mean(x, 0.1)", "trim_mean(x, 0.2)"))
    again = subprocess.run(
        cmd, cwd=folder, env=env, capture_output=True, text=True, timeout=300
    )
    assert again.returncode == 2, again.stderr
    assert "trimmed" in again.stderr


BROKEN = """
import numpy as np
import {package}
from simstudy import Study

study = Study("broken", factors={{"n": [3]}}, replicates=4, seed=1)

@study.data
def gen(rng, n):
    return rng.standard_normal(n)

@study.method
def m(x):
    return {{"estimate": float({package}.f(x))}}
"""


def test_a_library_that_fails_to_import_is_a_clear_error_and_no_store(
    write_study, tmp_path
):
    """Loaded lazily, the library first fails in the workers: still exit 2,
    one clear line naming the error, and no store left behind."""
    import sysconfig
    import uuid

    package = f"simstudy_broken_{uuid.uuid4().hex[:8]}"
    where = Path(sysconfig.get_path("purelib")) / package  # an installed library
    where.mkdir()
    try:
        (where / "__init__.py").write_text('raise ImportError("boom: needs libfoo")\n')
        write_study(BROKEN.format(package=package))
        done = subprocess.run(
            [sys.executable, "-m", "simstudy", "run", "study.py", "--no-progress"],
            cwd=tmp_path,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            capture_output=True,
            text=True,
            timeout=300,
        )
    finally:
        for f in where.rglob("*"):
            if f.is_file():
                f.unlink()
        for d in sorted(where.rglob("*"), reverse=True):
            d.rmdir()
        where.rmdir()
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith(
        "error: study.py: the worker processes cannot load the study: "
        "ImportError: boom: needs libfoo"
    ), done.stderr
    assert "internal error" not in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "study.zarr").exists()


WORKER_ONLY = """
import os
import numpy as np
from simstudy import Study

DRIVER = os.getpid()


def _rebuild():
    if os.getpid() != DRIVER:
        raise ImportError("the workers lack what this needs")
    return Thing()


class Thing:
    def __reduce__(self):
        return (_rebuild, ())


study = Study("w", factors={"n": [3]}, replicates=4, seed=1)
study.fixed(thing=Thing())

@study.data
def gen(rng, n):
    return rng.standard_normal(n)

@study.method
def m(x, thing):
    return {"estimate": float(np.mean(x))}
"""


def test_a_study_the_workers_cannot_unpickle_is_a_clear_error(
    write_study, tmp_path, capsys
):
    """The same for an eagerly loaded study (a pool worker whose setup
    fails used to break the pool: an internal error)."""
    from simstudy.cli import main

    path = write_study(WORKER_ONLY, "w.py")
    store = tmp_path / "w.zarr"
    assert main(["run", str(path), "--store", str(store)]) == 2
    err = capsys.readouterr().err
    assert (
        "error: w.py: the worker processes cannot load the study: ImportError: "
        "the workers lack what this needs"
    ) in err
    assert "internal error" not in err
    assert not store.exists()


def test_which_imports_load_lazily(write_study, tmp_path, monkeypatch):
    """Installed libraries' leaf modules only: not the standard library, not
    numpy or simstudy, not a package another name lies in, not the user's
    own module beside the study (nor one already imported: not here)."""
    from simstudy.declare.loader import _lazy_names

    for name in ("scipy.stats", "scipy.special"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    (tmp_path / "helpers.py").write_text("X = 1\n")
    study = write_study(
        "import json, statistics\nimport numpy as np\nimport helpers\n"
        "import scipy.stats as st\nfrom scipy import special\nimport simstudy\n",
        "s.py",
    )
    assert _lazy_names(study) == ["scipy.stats", "scipy.special"]
