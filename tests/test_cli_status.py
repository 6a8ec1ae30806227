"""``status`` and ``run`` options in-process, and fixed inputs end to end."""

from __future__ import annotations

import numpy as np
import pytest

import simstudy
from simstudy.cli import main
from simstudy.errors import FingerprintMismatch
from tests.helpers import assert_store_consistent
from tests.studies import write_study_file

FIXED = """
import numpy as np
from simstudy import Study

study = Study("fx", factors={"n": [3, 4]}, replicates=5, seed=9)
study.fixed(X=np.arange(12.0).reshape(4, 3) * SCALE)

@study.data
def gen(rng, n, X):
    return X[:n] @ rng.standard_normal(3)

@study.method
def total(y):
    return {"estimate": y.sum()}

study.truth(lambda n: {"estimate": 0.0 * n})
"""


def _write(tmp_path, scale=1.0):
    return write_study_file(tmp_path, FIXED.replace("SCALE", repr(scale)), "fx.py")


@pytest.mark.parametrize("scheduler", ["synchronous", "distributed"])
def test_fixed_inputs_are_injected_on_every_scheduler(tmp_path, scheduler):
    path = _write(tmp_path)
    store = tmp_path / "fx.zarr"
    report = simstudy.run(path, store=store, scheduler=scheduler, workers=1)
    assert report.exit_code == 0
    ds = assert_store_consistent(store)
    X = np.arange(12.0).reshape(4, 3)
    pk = simstudy.rng.streams.key({"n": 4})
    rng = np.random.Generator(
        np.random.PCG64(np.random.SeedSequence(9, spawn_key=(pk, 2)))
    )
    expected = (X[:4] @ rng.standard_normal(3)).sum()
    assert ds.estimate.sel({"n": 4, "replicate": 2, "method_name": "total"}) == expected
    assert ds.attrs["simstudy"]["truth"] == {
        '{"n": 3}': {"estimate": 0.0},
        '{"n": 4}': {"estimate": 0.0},
    }


def test_changed_fixed_input_is_refused(tmp_path):
    store = tmp_path / "fx.zarr"
    simstudy.run(_write(tmp_path), store=store, scheduler="synchronous")
    with pytest.raises(FingerprintMismatch, match="fixed inputs changed"):
        simstudy.run(_write(tmp_path, 2.0), store=store, scheduler="synchronous")


def test_status_per_design_point(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = _write(tmp_path)
    code = main(["run", str(path), "--scheduler", "synchronous", "--no-progress"])
    assert code == 0
    capsys.readouterr()
    assert main(["status", str(path)]) == 0
    out = capsys.readouterr().out
    assert "10 ok, 0 failed, 0 pending of 10 tasks (100.0% ok)" in out
    assert "  n=3: 5 ok, 0 failed, 0 pending" in out
    assert main(["status", str(tmp_path / "fx.zarr")]) == 0


def test_rng_option_overrides_the_scheme(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = _write(tmp_path)
    argv = ["run", str(path), "--scheduler", "threads", "--rng", "mt19937-jump"]
    assert main([*argv, "--batch-size", "2", "--workers", "2"]) == 0
    ds = simstudy.open_results(tmp_path / "fx.zarr")
    assert ds.attrs["rng"] == "mt19937-jump"
    capsys.readouterr()
    # same scheme again: resumes with nothing to do; another scheme: refused
    assert main(argv) == 0
    assert "computed 0" in capsys.readouterr().out
    assert main(["run", str(path), "--scheduler", "threads"]) == 2
    assert "rng scheme changed ('mt19937-jump' -> 'spawn')" in capsys.readouterr().err


def test_progress_eta_ignores_the_start_up(monkeypatch):
    """The first line says ETA -- (no data yet); later ones estimate from the
    rate since the first result, not since the process started."""
    import io
    import time

    from simstudy.progress import ProgressPrinter
    from simstudy.running.runner import Progress

    clock = [100.0]
    monkeypatch.setattr(time, "monotonic", lambda: clock[0])
    out = io.StringIO()
    printer = ProgressPrinter(out)
    printer(Progress(done=12, total=1012, failed=0, elapsed=1.5))
    clock[0] += 10.0
    printer(Progress(done=512, total=1012, failed=0, elapsed=11.5))
    first, second = out.getvalue().splitlines()
    assert "ETA --" in first
    assert "50/s" in second  # 500 tasks in the 10 s since the first result
    assert "ETA 0:10" in second


def test_status_into_a_closed_pipe_stops_quietly(tmp_path, capsys, monkeypatch):
    """`simstudy status STORE | head -1`: the reader leaves early; that is not
    an internal error and prints nothing on stderr."""
    import io
    import os
    import sys

    path = _write(tmp_path)
    simstudy.run(path, store=tmp_path / "s.zarr", scheduler="synchronous")
    read, write = os.pipe()
    os.close(read)  # nobody reads: the first write raises BrokenPipeError
    out = io.TextIOWrapper(os.fdopen(write, "wb"), line_buffering=True)
    monkeypatch.setattr(sys, "stdout", out)
    assert main(["status", str(tmp_path / "s.zarr")]) == 0
    assert capsys.readouterr().err == ""


def test_progress_on_a_terminal_is_one_live_bar(monkeypatch):
    import io
    import time

    from simstudy.progress import ProgressPrinter
    from simstudy.running.runner import Progress

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    clock = [0.0]
    monkeypatch.setattr(time, "monotonic", lambda: clock[0])
    out = Terminal()
    printer = ProgressPrinter(out)
    for done in (0, 250, 500, 1000):
        clock[0] += 1.0
        printer(Progress(done=done, total=1000, failed=2, elapsed=clock[0]))
    text = out.getvalue()
    assert text.count("\r\x1b[2K") == 4  # redrawn in place
    assert "[############------------] 500/1,000 tasks" in text
    assert "failed 2" in text
    assert text.endswith("\n")  # the finished bar stays
