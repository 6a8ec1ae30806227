"""replay, errors, verify and the reproducibility lint (issue 8)."""

from __future__ import annotations

import shlex
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import numpy as np
import pytest

import simstudy
from simstudy.cli import main
from simstudy.errors import ReproducibilityWarning, UsageError
from simstudy.running.debugging import (  # == simstudy.replay, .verify
    error_groups,
    replay,
    verify,
)
from tests.studies import write_study_file

FRAGILE = """
import numpy as np
from simstudy import Study

study = Study("fit", factors={"n": [8, 12], "eps": [0.0, 0.5]}, replicates=40,
              seed=7, rng=SCHEME)

@study.data
def gen(rng, n, eps):
    return rng.standard_normal(n) + eps

@study.method
def mean(x):
    return {"estimate": x.mean(), "q": np.quantile(x, [0.25, 0.75])}

@study.method
def fragile(x, rng):
    if rng.random() < 0.05:
        raise np.linalg.LinAlgError("singular matrix")
    return {"estimate": np.median(x) + rng.normal()}
"""


def _study(tmp_path: Path, scheme: str = "spawn") -> Path:
    return write_study_file(
        tmp_path, textwrap.dedent(FRAGILE).replace("SCHEME", repr(scheme)), "fit.py"
    )


@pytest.mark.parametrize("scheme", ["spawn", "pcg64-jump", "mt19937-jump"])
def test_replay_reproduces_stored_outputs_for_every_scheme(tmp_path, scheme):
    path = _study(tmp_path, scheme)
    store = tmp_path / "fit.zarr"
    simstudy.run(path, store=store, scheduler="processes", workers=2)
    ds = simstudy.open_results(store)
    checked = 0
    for spec in (
        "n=8,eps=0.0,replicate=0,method=mean",
        "n=12,eps=0.5,replicate=39,method=fragile",
        "n=12,eps=0.0,replicate=17,method=fragile",
    ):
        result = replay(path, spec, store=store)
        where = dict(part.split("=") for part in spec.split(","))
        status = int(
            ds.status.sel(
                {
                    "n": int(where["n"]),
                    "eps": float(where["eps"]),
                    "replicate": int(where["replicate"]),
                    "method_name": where["method"],
                }
            )
        )
        if status == 1:
            assert result.same is True, result.differing
            checked += 1
        else:
            assert isinstance(result.error, np.linalg.LinAlgError)
    assert checked >= 2


def test_replay_returns_the_data_and_rejects_bad_tasks(tmp_path):
    path = _study(tmp_path)
    result = replay(path, "n=8,eps=0.5,replicate=3,method=mean")
    assert result.data.shape == (8,)
    assert result.outputs is not None
    assert result.outputs["estimate"] == pytest.approx(result.data.mean())
    assert result.same is None  # no store to compare with
    for bad, text in [
        ("n=8,eps=0.5,replicate=3", "missing ['method']"),
        ("n=9,eps=0.5,replicate=3,method=mean", "n=9 is not a level"),
        ("n=8,eps=0.5,replicate=40,method=mean", "not in 0..39"),
        ("n=8,eps=0.5,replicate=3,method=mode", "method=mode is not a method"),
        ("n=8,eps=0.5,replicate=3,method=mean,k=1", "unknown names ['k']"),
        ("n8", "is not NAME=VALUE"),
    ]:
        with pytest.raises(
            UsageError, match=text.replace("[", r"\[").replace("]", r"\]")
        ):
            replay(path, bad)


def test_errors_groups_failures_and_its_replay_commands_reproduce_them(
    tmp_path, capsys
):
    path = _study(tmp_path)
    store = tmp_path / "fit.zarr"
    report = simstudy.run(path, store=store, scheduler="synchronous")
    assert report.failed > 0
    groups = error_groups(store)
    assert sum(g.count for g in groups) == report.failed
    assert {g.type for g in groups} == {"LinAlgError"}
    assert main(["errors", str(store)]) == 0
    out = capsys.readouterr().out
    commands = [
        line.split("replay: ", 1)[1] for line in out.splitlines() if "replay: " in line
    ]
    assert len(commands) == len(groups)
    for command in commands[:2]:
        argv = shlex.split(command)
        assert argv[:3] == ["python", "-m", "simstudy"]
        argv = [a for a in argv[3:] if a != "--pdb"]  # no debugger in a test
        proc = subprocess.run(
            [sys.executable, "-m", "simstudy", *argv],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert proc.returncode == 3, proc.stderr
        assert "the task raises LinAlgError: singular matrix" in proc.stdout
        assert 'fit.py", line' in proc.stdout  # the user's file and line


def test_verify_names_a_nondeterministic_method_and_passes_honest_ones(
    tmp_path, capsys
):
    source = textwrap.dedent(FRAGILE).replace("SCHEME", "'spawn'") + textwrap.dedent(
        """
        @study.method
        def sloppy(x):
            return {"estimate": x.mean() + np.random.default_rng().normal()}
        """
    )
    path = write_study_file(tmp_path, source, "fit.py")
    store = tmp_path / "fit.zarr"
    with pytest.warns(ReproducibilityWarning, match=r"fit.py:\d+: method 'sloppy'"):
        simstudy.run(path, store=store, scheduler="synchronous")
    result = verify(path, store, sample=6, scheduler="processes", workers=2, seed=1)
    assert set(result.differ) == {"sloppy"}
    assert len(result.differ["sloppy"]) == 6
    assert result.tasks >= 6 * 2
    assert main(["verify", str(store), "--study", str(path), "--sample", "4"]) == 3
    out = capsys.readouterr().out
    assert "method 'sloppy' is not reproducible" in out


def test_the_lint_is_quiet_for_a_study_that_uses_its_rng(tmp_path):
    path = _study(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ReproducibilityWarning)
        simstudy.run(path, store=tmp_path / "s.zarr", scheduler="synchronous")
    store = str(tmp_path / "s.zarr")
    assert main(["verify", str(path), "--store", store, "--sample", "5"]) == 0


def test_verify_checks_its_scheduler_as_a_run_does(tmp_path, capsys):
    path = _study(tmp_path)
    store = tmp_path / "s.zarr"
    simstudy.run(path, store=store, scheduler="synchronous")
    before = sorted(p.relative_to(store) for p in store.rglob("*"))
    argv = ["verify", str(path), "--store", str(store), "--scheduler"]
    assert main([*argv, "jax"]) == 2
    assert "--scheduler jax runs studies declared with backend='jax'" in (
        capsys.readouterr().err
    )
    with pytest.raises(UsageError, match="unknown scheduler 'slurm'"):
        verify(path, store, scheduler="slurm")
    assert sorted(p.relative_to(store) for p in store.rglob("*")) == before


@pytest.mark.parametrize(
    "call",
    [
        "np.random.normal()",
        "numpy.random.rand()",
        "random.random()",
        "default_rng(1).normal()",
    ],
    ids=["np-random", "numpy-random", "stdlib-random", "own-seeded-generator"],
)
def test_the_lint_flags_global_or_self_seeded_randomness(tmp_path, call):
    source = textwrap.dedent(FRAGILE).replace("SCHEME", "'spawn'") + (
        "\nimport random\nimport numpy\nfrom numpy.random import default_rng\n\n"
        f"@study.method\ndef bad(x):\n    return x.mean() + {call}\n"
    )
    path = write_study_file(tmp_path, source, "fit.py")
    from simstudy.declare.lint import lint_study

    found = lint_study(simstudy.load_study(path))
    assert len(found) == 1
    assert "method 'bad' calls" in found[0]
    assert f"fit.py:{source.count(chr(10))}" in found[0]  # the line of the call
