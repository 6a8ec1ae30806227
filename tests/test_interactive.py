"""The Python API outside the CLI (issue 16.4, 16.5): a plain script without
a ``__main__`` guard, a real Jupyter kernel (notebook progress, a method cell
run again, the report shown as a table), and hints on API errors."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import nbformat
import numpy as np
import pytest
from nbclient import NotebookClient

import simstudy
from tests.helpers import assert_store_consistent, cube_digest
from tests.studies import write_study_file

STUDY = """\
import simstudy
from simstudy import Study

study = Study("plain", factors={"n": [5, 10]}, replicates=50, seed=1)


@study.data
def gen(rng, n):
    return rng.standard_normal(n)


@study.method
def mean(x):
    return {"estimate": x.mean()}
"""


def _python(script: Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(script)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize("scheduler", ["processes", "distributed"])
def test_a_plain_script_without_a_main_guard_runs_once(tmp_path, scheduler):
    """Spawned workers used to run the script again: a run in every worker,
    a 'store in use' error and BrokenProcessPool."""
    script = tmp_path / "script.py"
    script.write_text(
        STUDY + f"\nreport = simstudy.run(study, store='plain.zarr', workers=2, "
        f"scheduler={scheduler!r})\nprint('exit', report.exit_code, report.ok)\n"
    )
    done = _python(script, tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["exit 0 100"]  # once: no run in a worker
    assert "Traceback" not in done.stderr
    reference = tmp_path / "ref.zarr"
    study = simstudy.load_study(_study_file(tmp_path))
    simstudy.run(study, store=reference, scheduler="synchronous")
    assert_store_consistent(tmp_path / "plain.zarr")
    assert cube_digest(tmp_path / "plain.zarr") == cube_digest(reference)


def _study_file(tmp_path: Path) -> Path:
    return write_study_file(tmp_path, STUDY, "plain_study.py")


def test_an_api_error_shows_its_hint_in_the_traceback(tmp_path):
    """The CLI prints 'hint: ...'; a script's traceback shows the same hint."""
    script = tmp_path / "script.py"
    script.write_text(
        STUDY + "\nsimstudy.run(study, store='s.zarr', scheduler='synchronous')\n"
        "study2 = simstudy.Study('plain', factors={'n': [5, 10]}, replicates=50, "
        "seed=2)\nstudy2.data(gen)\nstudy2.method(mean)\n"
        "simstudy.run(study2, store='s.zarr', scheduler='synchronous')\n"
    )
    done = _python(script, tmp_path)
    assert done.returncode == 1
    assert "simstudy.errors.FingerprintMismatch:" in done.stderr
    assert "\nhint: " in done.stderr
    assert "restart=True" in done.stderr.split("\nhint: ")[1]


def test_an_api_error_carries_the_clis_hint():
    with pytest.raises(simstudy.StudyError, match="replicates") as info:
        simstudy.Study("s", factors={"n": [1]}, replicates=0, seed=1)
    exc = info.value
    assert exc.hint
    assert exc.__notes__ == [f"hint: {exc.hint}"]
    assert str(exc) == exc.message  # the message itself stays one line


def test_a_method_declared_twice_in_a_script_is_still_an_error(tmp_path):
    script = tmp_path / "script.py"
    script.write_text(
        STUDY + "\n\n@study.method\ndef mean(x):\n    return {'estimate': 0.0}\n"
    )
    done = _python(script, tmp_path)
    assert done.returncode == 1
    assert "method 'mean' is declared twice" in done.stderr


def _notebook_cells(store: Path) -> list[str]:
    study, method = STUDY.split("@study.method\n")
    return [
        study,
        "@study.method\n" + method,
        # the same cell, edited and run again
        "@study.method\ndef mean(x):\n    return {'estimate': x.mean() + 1.0}\n",
        f"report = simstudy.run(study, store={str(store)!r}, workers=2)\nreport",
        f"float(simstudy.open_results({str(store)!r}).estimate.mean())",
        "@study.method\ndef mean(x):\n    return {'estimate': x.mean() + 2.0}\n",
        f"simstudy.run(study, store={str(store)!r}, workers=2)",
    ]


def test_a_notebook_session(tmp_path):
    """In a real Jupyter kernel: a method cell run again replaces the method
    with a notice; run shows an HTML progress bar and returns a report the
    notebook shows as a table; an error's traceback ends with the hint."""
    store = tmp_path / "nb.zarr"
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(c) for c in _notebook_cells(store)]
    client = NotebookClient(
        nb,
        timeout=120,
        kernel_name="python3",
        allow_errors=True,
        resources={"metadata": {"path": str(tmp_path)}},
    )
    client.execute()
    out = [cell.outputs for cell in nb.cells]
    assert not any(o.output_type == "error" for cells in out[:6] for o in cells)
    notice = "".join(o.get("text", "") for o in out[2])
    assert "method 'mean' declared again: replaced." in notice
    shown = [o for o in out[3] if o.output_type == "display_data"]
    assert shown, "no progress display"
    bar = shown[0].data["text/html"]
    assert '<progress value="100" max="100"' in bar  # updated in place to the end
    assert "\x1b[" not in bar
    result = next(o for o in out[3] if o.output_type == "execute_result")
    table = result.data["text/html"]
    assert "<table class='simstudy-run'>" in table
    assert "100 ok, 0 failed" in table
    # the replaced method is the one that ran
    mean = float(
        next(o for o in out[4] if o.output_type == "execute_result").data["text/plain"]
    )
    ds = simstudy.open_results(store)
    assert mean == pytest.approx(float(ds.estimate.mean()))
    assert 0.5 < mean < 1.5  # x.mean() + 1 over standard normals
    assert np.all(ds.status.values == 1)
    assert_store_consistent(store)
    error = next(o for o in out[6] if o.output_type == "error")
    assert error.ename == "FingerprintMismatch"
    trace = "\n".join(error.traceback)
    assert "hint: " in trace
    assert "recompute=" in trace


def test_run_report_reads_well_as_text(tmp_path):
    path = _study_file(tmp_path)
    report = simstudy.run(path, store=tmp_path / "s.zarr", scheduler="synchronous")
    text = str(report)
    assert textwrap.dedent(text).splitlines()[0].strip().startswith("store:")
    assert "100 ok, 0 failed, 0 pending of 100" in text
    assert "finished, exit code 0" in text
