"""A study through a real single-node Slurm (`.ci/slurm-up`): worker jobs
submitted by ``--cluster slurm`` (dask-jobqueue), cancelled mid-run, ended
by their lifetime and replaced, held in the queue; and the driver itself as
a batch job (docs/slurm/driver.sbatch), cancelled and resubmitted. Each run
must give the cube of a local synchronous run, bit for bit.

Skipped, with the reason, where no Slurm controller answers (not root, or
`.ci/slurm-up` not run); `.ci/run` brings Slurm up, so CI runs them.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import cube_digest, wait_for
from tests.studies import write_study_file

ROOT = Path(__file__).resolve().parents[1]
DRIVER_SCRIPT = ROOT / "docs" / "slurm" / "driver.sbatch"
RUN_TIMEOUT = 240  # seconds a run through Slurm may take (jobs start in ~3 s)

# 400 tasks; the workers' environment can slow a task down, and every task of
# ``boot`` leaves a file in SIMSTUDY_TEST_FLAGS (neither changes a number)
STUDY = """
import os
import time
import uuid
from pathlib import Path

from simstudy import Study

study = Study("remote", factors={"n": [10, 40]}, replicates=100, seed=7)

@study.data
def gen(rng, n):
    return rng.standard_normal(n)

@study.method
def mean(x):
    return {"estimate": float(x.mean())}

@study.method
def boot(x, rng):
    Path(os.environ["SIMSTUDY_TEST_FLAGS"], uuid.uuid4().hex).touch()
    time.sleep(float(os.environ.get("SIMSTUDY_TEST_SLEEP", "0")))
    means = rng.choice(x, (50, len(x))).mean(axis=1)
    return {"estimate": float(means.std())}
"""


def _slurm_up() -> str | None:
    """Why the Slurm tests cannot run here, or None."""
    if shutil.which("sbatch") is None or shutil.which("sinfo") is None:
        return "no Slurm on this machine (sudo bash .ci/slurm-up installs one)"
    try:
        out = subprocess.run(
            ["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=20
        )
    except (OSError, subprocess.SubprocessError) as exc:
        return f"sinfo failed: {exc}"
    states = set(out.stdout.split())
    if out.returncode != 0 or not states & {"idle", "mixed", "allocated"}:
        return f"no Slurm node up ({out.stderr.strip() or states}): run .ci/slurm-up"
    return None


pytestmark = [
    pytest.mark.cluster,
    pytest.mark.skipif(_slurm_up() is not None, reason=str(_slurm_up())),
]


def _config(lifetime: str | None = None, hold: bool = False) -> str:
    """simstudy-cluster.toml: two worker jobs of one core on the test node."""
    extra = ["--lifetime", lifetime] if lifetime else []
    directives = ["--hold"] if hold else []
    return f"""
[slurm]
jobs = 2
queue = "debug"
cores = 1
processes = 1
memory = "1GB"
walltime = "00:10:00"
python = "{sys.executable}"
interface = "lo"
log_directory = "slurm-logs"
job_name = "simstudy-test-{os.getpid()}"
worker_extra_args = {extra!r}
job_extra_directives = {directives!r}
scheduler_options = {{ host = "127.0.0.1", dashboard_address = "127.0.0.1:0" }}
"""


def _env(**extra: str) -> dict[str, str]:
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    return {**os.environ, "PATH": path, **extra}


def _jobs(name: str) -> dict[str, str]:
    """job id -> state of this user's jobs named ``name``."""
    out = subprocess.run(
        ["squeue", "-h", "-n", name, "-o", "%i %T"],
        capture_output=True,
        text=True,
        timeout=20,
    ).stdout
    return dict(line.split() for line in out.splitlines() if line.strip())


def _workers() -> dict[str, str]:
    return _jobs(f"simstudy-test-{os.getpid()}")


@pytest.fixture
def slurm_study(tmp_path: Path) -> Iterator[Path]:
    """The study's folder; every job of this test cancelled afterwards."""
    d = tmp_path / "study"
    write_study_file(d, STUDY)
    (d / "flags").mkdir()
    yield d
    for name in (f"simstudy-test-{os.getpid()}", f"driver-{os.getpid()}"):
        subprocess.run(["scancel", "-n", name], capture_output=True, timeout=20)


@pytest.fixture
def reference(slurm_study: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    import simstudy

    store = slurm_study / "reference.zarr"
    flags = slurm_study / "reference-flags"
    flags.mkdir()
    monkeypatch.setenv("SIMSTUDY_TEST_FLAGS", str(flags))
    simstudy.run(slurm_study / "study.py", store=store, scheduler="synchronous")
    monkeypatch.delenv("SIMSTUDY_TEST_FLAGS")
    return cube_digest(store)


def _start(d: Path, *args: str, **env: str) -> subprocess.Popen[str]:
    cmd = [sys.executable, "-m", "simstudy", "run", "study.py", "--no-progress"]
    err = (d / "run.err").open("w")
    return subprocess.Popen(
        [*cmd, "--cluster", "slurm", "--store", "s.zarr", *args],
        cwd=d,
        env=_env(SIMSTUDY_TEST_FLAGS=str(d / "flags"), **env),
        stdout=subprocess.DEVNULL,
        stderr=err,
        text=True,
    )


def _finish(d: Path, proc: subprocess.Popen[str]) -> str:
    try:
        proc.wait(timeout=RUN_TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise AssertionError(
            f"run did not finish: {(d / 'run.err').read_text()}"
        ) from None
    err = (d / "run.err").read_text()
    assert proc.returncode == 0, err
    return err


def _computed(d: Path) -> int:
    """Tasks of ``boot`` computed so far (reruns included)."""
    return len(list((d / "flags").iterdir()))


def test_two_worker_jobs_give_the_local_cube(slurm_study, reference):
    (slurm_study / "simstudy-cluster.toml").write_text(_config())
    err = _finish(slurm_study, _start(slurm_study, SIMSTUDY_QUEUE_SECONDS="30"))
    assert "waiting for Slurm" not in err  # the jobs started at once
    assert cube_digest(slurm_study / "s.zarr") == reference
    wait_for("the worker jobs to be cancelled", lambda: not _workers(), 60)


def test_a_cancelled_worker_job_changes_nothing(slurm_study, reference):
    (slurm_study / "simstudy-cluster.toml").write_text(_config())
    run = _start(slurm_study, SIMSTUDY_TEST_SLEEP="0.02")
    wait_for("both worker jobs to run", lambda: len(_workers()) == 2, 120)
    wait_for("a worker to compute", lambda: _computed(slurm_study) > 0, 120)
    victim = min(_workers())
    subprocess.run(["scancel", victim], check=True, timeout=20)
    _finish(slurm_study, run)
    assert cube_digest(slurm_study / "s.zarr") == reference


def test_worker_jobs_that_end_mid_study_are_replaced(slurm_study, reference):
    """Every worker job leaves after 6 s (dask's --lifetime, what a walltime
    ends too): the cluster submits new jobs, and the study finishes."""
    (slurm_study / "simstudy-cluster.toml").write_text(_config(lifetime="6s"))
    run = _start(slurm_study, SIMSTUDY_TEST_SLEEP="0.08", SIMSTUDY_QUEUE_SECONDS="2")
    seen: set[str] = set()

    def replaced() -> bool:
        seen.update(_workers())
        return len(seen) > 2 or run.poll() is not None

    wait_for("a replacement worker job", replaced, RUN_TIMEOUT)
    _finish(slurm_study, run)
    assert len(seen) > 2, f"no job was replaced: {seen}"
    assert cube_digest(slurm_study / "s.zarr") == reference


def test_jobs_that_start_late_make_the_run_wait_and_say_so(slurm_study, reference):
    (slurm_study / "simstudy-cluster.toml").write_text(_config(hold=True))
    run = _start(slurm_study, SIMSTUDY_QUEUE_SECONDS="2")
    err = slurm_study / "run.err"
    wait_for(
        "the waiting notice",
        lambda: "waiting for Slurm to start the worker jobs" in err.read_text(),
        120,
    )
    assert run.poll() is None, err.read_text()  # still waiting, not failed
    assert set(_workers().values()) == {"PENDING"}
    for job in _workers():
        subprocess.run(["scontrol", "release", job], check=True, timeout=20)
    text = _finish(slurm_study, run)
    assert "worker thread(s) joined; the run goes on" in text
    assert cube_digest(slurm_study / "s.zarr") == reference


def _submit_driver(d: Path) -> str:
    out = subprocess.run(
        [
            "sbatch",
            "--parsable",
            f"--job-name=driver-{os.getpid()}",
            f"--chdir={d}",
            f"--output={d}/driver-%j.out",
            str(DRIVER_SCRIPT),
            "study.py",
            "--cluster",
            "slurm",
            "--store",
            "s.zarr",
        ],
        env=_env(SIMSTUDY_TEST_FLAGS=str(d / "flags"), SIMSTUDY_TEST_SLEEP="0.05"),
        capture_output=True,
        text=True,
        check=True,
        timeout=20,
    )
    return out.stdout.strip().split(";")[0]


def test_the_driver_job_cancelled_and_resubmitted_resumes(slurm_study, reference):
    d = slurm_study
    (d / "simstudy-cluster.toml").write_text(_config())
    first = _submit_driver(d)
    wait_for("the driver's workers to compute", lambda: _computed(d) > 20, 120)
    subprocess.run(["scancel", first], check=True, timeout=20)
    wait_for("the driver job to end", lambda: first not in _drivers(), 60)
    first_log = (d / f"driver-{first}.out").read_text()
    assert "interrupted: the store is consistent" in first_log, first_log
    assert _computed(d) < 200, "the run finished before the scancel"
    second = _submit_driver(d)
    wait_for("the resubmitted driver to finish", lambda: second not in _drivers(), 240)
    log = (d / f"driver-{second}.out").read_text()
    assert "400 ok, 0 failed, 0 pending" in log, log
    # no task computed twice: the resume computed exactly what was pending
    done = re.search(r"(\d+) ok, 0 failed, (\d+) pending", first_log)
    assert done is not None, first_log
    assert f"computed {done.group(2)} in" in log, (first_log, log)
    assert cube_digest(d / "s.zarr") == reference
    with contextlib.suppress(AssertionError):
        wait_for("the worker jobs to be cancelled", lambda: not _workers(), 60)
    assert not _workers(), "the driver left worker jobs behind"


def _drivers() -> dict[str, str]:
    return _jobs(f"driver-{os.getpid()}")
