"""A study on a real external Dask cluster (issue 7): `dask scheduler` and
`dask worker` processes on 127.0.0.1, each worker in its own directory with
no study file on its path; the driver connects with ``--address``.

Faults (a worker killed, a worker joining, a slow worker), resume across
local and external clusters, fixed inputs sent once per worker (measured in
the worker processes' read bytes), and TLS with throwaway certificates.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

import simstudy
from simstudy.cli import main
from tests.dask_cluster import DaskProcesses, make_certs
from tests.helpers import assert_store_consistent, cube_digest, wait_for
from tests.studies import GOOD_STUDY, write_study_file
from tests.test_cli_errors import _check_bad_input, _snapshot

# a study whose work is spread over many batches; the workers' environment
# can slow a worker down or make it leave a flag named by its pid (neither
# changes a number)
REMOTE = """
import os
import time
from pathlib import Path

import numpy as np
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
    flags = os.environ.get("SIMSTUDY_TEST_FLAGS")
    if flags:
        Path(flags, str(os.getpid())).touch()
    time.sleep(float(os.environ.get("SIMSTUDY_TEST_SLEEP", "0")))
    means = rng.choice(x, (50, len(x))).mean(axis=1)
    return {"estimate": float(means.std())}
"""

RUN_TIMEOUT = 120  # seconds any one `simstudy run` subprocess may take


@pytest.fixture
def driver(tmp_path: Path) -> Path:
    """The driver's directory, holding the study file."""
    d = tmp_path / "driver"
    write_study_file(d, REMOTE)
    return d


@pytest.fixture
def procs(tmp_path: Path) -> Iterator[DaskProcesses]:
    """Real dask processes under tmp_path/cluster; all stopped afterwards."""
    root = tmp_path / "cluster"
    root.mkdir()
    cluster = DaskProcesses(root)
    try:
        yield cluster
    finally:
        cluster.stop()
        groups = {q.pid for q in cluster.procs}

        def left() -> list[int]:
            return [p.pid for p in psutil.process_iter() if _in_groups(p, groups)]

        # SIGKILLed children take a moment to go
        with contextlib.suppress(AssertionError):
            wait_for("the dask processes to exit", lambda: not left(), timeout=10)
        assert not left(), f"dask processes left running: {left()}"


def _in_groups(p: psutil.Process, groups: set[int]) -> bool:
    try:
        return os.getpgid(p.pid) in groups and p.status() != psutil.STATUS_ZOMBIE
    except (OSError, psutil.Error):
        return False


@pytest.fixture
def reference(driver: Path) -> str:
    """The digest of the study's cube from a local synchronous run."""
    store = driver / "reference.zarr"
    simstudy.run(driver / "study.py", store=store, scheduler="synchronous")
    assert_store_consistent(store)
    return cube_digest(store)


def run_cli(
    driver: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "simstudy", "run", "study.py", "--no-progress", *args],
        cwd=driver,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
    )


def start_cli(
    driver: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "simstudy", "run", "study.py", "--no-progress", *args],
        cwd=driver,
        env={**os.environ, **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(proc: subprocess.Popen[str]) -> tuple[int, str]:
    try:
        _, err = proc.communicate(timeout=RUN_TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
        raise AssertionError(f"simstudy run did not finish: {err}") from None
    return proc.returncode, err


def worker_pids_in_cube(store: Path) -> dict[int, int]:
    """pid -> number of tasks it computed, from the cube's ``worker`` variable."""
    ds = assert_store_consistent(store)
    names = ds.attrs["simstudy"]["workers"]
    idx = ds["worker"].values[ds["status"].values != 0]
    counts: dict[int, int] = {}
    for i in idx.ravel():
        pid = int(names[int(i)].split(":")[1].split("/")[0])
        counts[pid] = counts.get(pid, 0) + 1
    return counts


def flags_from(flags: Path, pids: set[int]) -> set[int]:
    return {int(p.name) for p in flags.iterdir()} & pids


@pytest.mark.cluster
def test_two_external_workers_give_the_local_cube(driver, procs, reference):
    address = procs.start_scheduler()
    procs.start_worker("w1")
    procs.start_worker("w2")
    procs.wait_for_workers(2)
    for name in ("w1", "w2"):  # the workers cannot import the study file
        assert not list((procs.root / name).rglob("study.py"))
    done = run_cli(driver, "--address", address, "--store", "ext.zarr")
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    assert cube_digest(driver / "ext.zarr") == reference
    used = worker_pids_in_cube(driver / "ext.zarr")
    for name in ("w1", "w2"):
        assert used.keys() & procs.worker_pids(name), f"{name} computed nothing"
    # the same through the API, in-process (warnings are errors here)
    report = simstudy.run(
        driver / "study.py", store=driver / "api.zarr", address=address
    )
    assert report.exit_code == 0
    assert "tcp://127.0.0.1" in report.executor
    assert cube_digest(driver / "api.zarr") == reference


@pytest.mark.cluster
@pytest.mark.parametrize("nanny", [True, False], ids=["nanny", "no-nanny"])
def test_a_worker_killed_mid_run_changes_nothing(driver, procs, reference, nanny):
    flags = driver / "flags"
    flags.mkdir()
    env = {"SIMSTUDY_TEST_SLEEP": "0.01", "SIMSTUDY_TEST_FLAGS": str(flags)}
    address = procs.start_scheduler()
    procs.start_worker("w1", env=env, nanny=nanny)
    procs.start_worker("w2", env=env, nanny=nanny)
    procs.wait_for_workers(2)
    victim = procs.worker_pids("w1")
    run = start_cli(driver, "--address", address, "--store", "s.zarr")
    wait_for("w1 to compute a task", lambda: bool(flags_from(flags, victim)))
    pid = flags_from(flags, victim).pop()
    os.kill(pid, signal.SIGKILL)
    code, err = finish(run)
    assert code == 0, err
    assert cube_digest(driver / "s.zarr") == reference
    if nanny:  # the nanny started a new worker process, which got work too
        assert procs.worker_pids("w1") - victim


@pytest.mark.cluster
def test_a_worker_that_joins_mid_run_gets_work(driver, procs, reference):
    flags = driver / "flags"
    flags.mkdir()
    env = {"SIMSTUDY_TEST_SLEEP": "0.02", "SIMSTUDY_TEST_FLAGS": str(flags)}
    address = procs.start_scheduler()
    procs.start_worker("w1", env=env)
    procs.wait_for_workers(1)
    run = start_cli(driver, "--address", address, "--store", "s.zarr")
    first = procs.worker_pids("w1")
    wait_for("the run to start", lambda: bool(flags_from(flags, first)))
    procs.start_worker("w2", env=env)
    code, err = finish(run)
    assert code == 0, err
    used = worker_pids_in_cube(driver / "s.zarr")
    late = used.keys() & procs.worker_pids("w2")
    assert late, f"the worker that joined computed nothing: {used}"
    assert sum(used[p] for p in late) >= 10, used
    assert cube_digest(driver / "s.zarr") == reference


@pytest.mark.cluster
def test_a_slow_worker_changes_nothing(driver, procs, reference):
    address = procs.start_scheduler()
    procs.start_worker("fast")
    procs.start_worker("slow", env={"SIMSTUDY_TEST_SLEEP": "0.05"})
    procs.wait_for_workers(2)
    done = run_cli(driver, "--address", address, "--store", "s.zarr")
    assert done.returncode == 0, done.stderr
    assert cube_digest(driver / "s.zarr") == reference
    used = worker_pids_in_cube(driver / "s.zarr")
    fast = sum(used.get(p, 0) for p in procs.worker_pids("fast"))
    slow = sum(used.get(p, 0) for p in procs.worker_pids("slow"))
    assert fast > slow > 0, used  # the slow worker took part, and did less


@pytest.mark.cluster
@pytest.mark.parametrize(
    "first", ["local", "external"], ids=["local-then-external", "external-then-local"]
)
def test_resume_moves_between_local_and_external_clusters(
    driver, procs, reference, first
):
    """Interrupt a run on one kind of cluster, finish it on the other."""
    flags = driver / "flags"
    flags.mkdir()
    slow = {"SIMSTUDY_TEST_SLEEP": "0.02", "SIMSTUDY_TEST_FLAGS": str(flags)}
    address = procs.start_scheduler()
    procs.start_worker("w1", env=slow if first == "external" else None)
    procs.wait_for_workers(1)
    external = ["--address", address]
    local = ["--scheduler", "processes", "--workers", "2"]
    start, then = (local, external) if first == "local" else (external, local)
    run = start_cli(driver, *start, "--store", "s.zarr", env=slow)
    wait_for("tasks to start", lambda: len(list(flags.iterdir())) > 0)
    time.sleep(0.5)
    run.send_signal(signal.SIGINT)
    code, err = finish(run)
    assert code == 130, err
    ds = assert_store_consistent(driver / "s.zarr")
    ok = int((ds["status"].values == 1).sum())
    assert 0 < ok < ds["status"].size, "the interruption did not fall mid-run"
    done = run_cli(driver, *then, "--store", "s.zarr")
    assert done.returncode == 0, done.stderr
    assert cube_digest(driver / "s.zarr") == reference


FIXED = """
import numpy as np
from simstudy import Study

study = Study("fixed", factors={"n": [5]}, replicates=REPLICATES, seed=3)
study.fixed(X=np.arange(1_000_000, dtype=np.float64))  # 8 MB

@study.data
def gen(rng, n):
    return rng.standard_normal(n)

@study.method
def weighted(x, X):
    return float(x @ X[: len(x)])
"""


def tcp_bytes_received(pids: set[int]) -> int:
    """Bytes the kernel received on the open TCP sockets of ``pids``
    (``ss -tinp``: tcp_info's bytes_received per socket)."""
    out = subprocess.run(
        ["ss", "-tinpH"], capture_output=True, text=True, check=True, timeout=30
    ).stdout
    lines = out.splitlines()
    total = 0
    for sock, info in itertools.pairwise(lines):
        owners = {int(p) for p in re.findall(r"pid=(\d+)", sock)}
        got = re.search(r"bytes_received:(\d+)", info)
        if owners & pids and got:
            total += int(got.group(1))
    return total


@pytest.mark.cluster
def test_fixed_inputs_travel_once_per_worker_not_per_batch(tmp_path, procs):
    """The bytes the workers receive during a run: the 8 MB fixed input once
    per worker, and under a kB per batch, whether the run has 20 batches or
    200 (measured by the kernel on the workers' sockets)."""
    address = procs.start_scheduler()
    procs.start_worker("w1")
    procs.start_worker("w2")
    procs.wait_for_workers(2)
    pids = procs.worker_pids("w1") | procs.worker_pids("w2")
    received = {}
    for batches in (20, 200):
        d = tmp_path / f"b{batches}"
        write_study_file(d, FIXED.replace("REPLICATES", str(batches)))
        before = tcp_bytes_received(pids)
        done = run_cli(d, "--address", address, "--batch-size", "1")
        assert done.returncode == 0, done.stderr
        received[batches] = tcp_bytes_received(pids) - before
        ds = assert_store_consistent(d / "study.zarr")
        assert int((ds["status"].values == 1).sum()) == batches
    per_batch = (received[200] - received[20]) / 180
    print(  # the issue note quotes these (pytest -s)
        f"\nbytes received by the 2 workers: {received[20]:,} for 20 batches, "
        f"{received[200]:,} for 200 batches; {per_batch:,.0f} per extra batch"
    )
    payload = 8_000_000
    assert received[20] >= 2 * payload  # each worker got the fixed input once
    assert received[200] < 3 * payload  # ... and not per batch (200 x 8 MB)
    assert per_batch < 10_000  # a batch's message is small


@pytest.mark.cluster
def test_tls_with_certificates_works_and_another_ca_is_refused(tmp_path, driver):
    certs = make_certs(tmp_path, "ca")
    other = make_certs(tmp_path, "other-ca")
    procs = DaskProcesses(tmp_path / "tls", certs=certs)
    (tmp_path / "tls").mkdir()
    try:
        address = procs.start_scheduler()
        assert address.startswith("tls://127.0.0.1:")
        procs.start_worker("w1")
        procs.wait_for_workers(1)
        mixed = [  # our CA (trusts the scheduler), a client cert it did not sign
            "--tls-ca-file",
            str(certs.ca),
            "--tls-cert",
            str(other.cert),
            "--tls-key",
            str(other.key),
        ]
        for args, expected in [
            (other.args(), "certificate verify failed"),
            (mixed, "TLS handshake with the Dask scheduler"),
        ]:
            before = _snapshot(driver)
            refused = run_cli(driver, "--address", address, *args)
            _check_bad_input(refused.returncode, refused.stderr, expected, driver)
            assert _snapshot(driver) == before
        done = run_cli(driver, "--address", address, *certs.args(), "--store", "t.zarr")
        assert done.returncode == 0, done.stderr
        assert_store_consistent(driver / "t.zarr")
    finally:
        procs.stop()


def test_an_unreachable_scheduler_fails_fast_and_writes_nothing(
    write_study, tmp_path, monkeypatch, capsys
):
    import socket

    with socket.socket() as s:  # a loopback port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    write_study(GOOD_STUDY)
    monkeypatch.chdir(tmp_path)
    before = _snapshot(tmp_path)
    t0 = time.perf_counter()
    code = main(["run", "study.py", "--address", f"tcp://127.0.0.1:{port}"])
    seconds = time.perf_counter() - t0
    _, err = capsys.readouterr()
    _check_bad_input(code, err, "Connection refused", tmp_path)
    assert _snapshot(tmp_path) == before
    # fails at once (~0.1 s), not after the 30 s connect timeout
    assert seconds < 20, f"took {seconds:.1f} s to say the port is closed"


TLS = ["--address", "tls://127.0.0.1:8786"]
BAD = [
    (TLS, "no certificates were given"),
    ([*TLS, "--tls-cert", "study.py"], "--tls-ca-file, --tls-key missing"),
    (
        [*TLS, "--tls-ca-file", "ca.pem", "--tls-cert", "c.pem", "--tls-key", "k.pem"],
        "--tls-ca-file ca.pem: no such file",
    ),
    (
        ["--address", "tcp://127.0.0.1:8786", "--tls-ca-file", "study.py"],
        "--tls-ca-file is for a tls:// scheduler",
    ),
    (["--tls-key", "study.py"], "--tls-key is for a tls:// scheduler"),
    (["--cluster", "slurm", "--cluster-config", "no.toml"], "no.toml: no such file"),
    (["--cluster", "slurm", "--cluster-config", "bad.toml"], "not valid TOML"),
    (["--cluster", "slurm", "--cluster-config", "jobs.toml"], "expected a whole"),
    (["--cluster", "pbs"], "invalid choice"),
    (["--cluster", "slurm", *TLS], "not allowed with argument"),
    (["--cluster", "slurm", "--scheduler", "threads"], "not allowed with argument"),
]


@pytest.mark.parametrize(
    ("argv", "expected"),
    BAD,
    ids=[
        "tls-without-certificates",
        "tls-cert-alone",
        "tls-files-missing",
        "tls-files-with-tcp",
        "tls-files-without-address",
        "cluster-config-missing",
        "cluster-config-not-toml",
        "cluster-jobs-zero",
        "cluster-unknown",
        "cluster-with-address",
        "cluster-with-scheduler",
    ],
)
def test_bad_cluster_options_exit_2_and_change_nothing(
    write_study, tmp_path, monkeypatch, capsys, argv, expected
):
    write_study(GOOD_STUDY)
    (tmp_path / "bad.toml").write_text("[slurm\nqueue = 1\n")
    (tmp_path / "jobs.toml").write_text("[slurm]\njobs = 0\n")
    monkeypatch.chdir(tmp_path)
    before = _snapshot(tmp_path)
    code = main(["run", "study.py", "--no-progress", *argv])
    _, err = capsys.readouterr()
    _check_bad_input(code, err, expected, tmp_path)
    assert _snapshot(tmp_path) == before, "bad input changed files on disk"


def test_slurm_job_script_from_the_config_file(tmp_path):
    """What `--cluster slurm` would submit (no Slurm here: the script only)."""
    from simstudy.executors.launchers import make_cluster

    config = tmp_path / "simstudy-cluster.toml"
    config.write_text(
        """
        [slurm]
        queue = "compute"
        account = "proj42"
        cores = 8
        processes = 8
        memory = "32GB"
        walltime = "02:00:00"
        jobs = 3
        job_script_prologue = ["source ~/venv/bin/activate"]
        scheduler_options = { host = "127.0.0.1" }
        """.replace("\n        ", "\n")
    )
    cluster, jobs = make_cluster("slurm", str(config))
    try:
        script = cluster.job_script()
    finally:
        cluster.close()
    assert jobs == 3
    lines = script.splitlines()
    assert "#SBATCH -p compute" in lines
    assert "#SBATCH -A proj42" in lines
    assert "#SBATCH -t 02:00:00" in lines
    assert "#SBATCH --cpus-per-task=8" in lines
    assert "export OMP_NUM_THREADS=1" in lines  # BLAS threads = 1 by default
    assert lines.index("export OMP_NUM_THREADS=1") < lines.index(
        "source ~/venv/bin/activate"
    )
    worker = next(line for line in lines if "distributed.cli.dask_worker" in line)
    assert "--nworkers 8" in worker
    assert "--nthreads 1" in worker  # 8 cores, 8 processes: one thread each
    assert "tcp://127.0.0.1:" in worker


def test_slurm_without_dask_jobqueue_says_what_to_install(
    write_study, tmp_path, monkeypatch, capsys
):
    write_study(GOOD_STUDY)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setitem(sys.modules, "dask_jobqueue.slurm", None)  # not importable
    before = _snapshot(tmp_path)
    code = main(["run", "study.py", "--no-progress", "--cluster", "slurm"])
    _, err = capsys.readouterr()
    _check_bad_input(code, err, "needs dask-jobqueue", tmp_path)
    assert "simstudy[slurm]" in err
    assert _snapshot(tmp_path) == before


def test_slurm_without_sbatch_fails_before_submitting(
    write_study, tmp_path, monkeypatch, capsys
):
    write_study(GOOD_STUDY)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PATH", str(tmp_path / "no-bin"))
    code = main(["run", "study.py", "--no-progress", "--cluster", "slurm"])
    _, err = capsys.readouterr()
    _check_bad_input(code, err, "sbatch", tmp_path)


@pytest.mark.cluster
def test_window_follows_the_cluster_s_threads(driver, procs):
    """The in-flight window is 2 x threads + 1, recounted as workers come."""
    from simstudy.declare.loader import load_study
    from simstudy.executors.dask import DistributedExecutor
    from simstudy.running.options import RunOptions

    address = procs.start_scheduler()
    procs.start_worker("w1")
    procs.wait_for_workers(1)
    opts = RunOptions(
        store=driver / "s.zarr", scheduler="distributed", workers=1, address=address
    )
    ex = DistributedExecutor(load_study(driver / "study.py"), opts)
    try:
        assert ex._window() == 3
        procs.start_worker("w2")
        procs.wait_for_workers(2)
        ex.counted -= ex.RECOUNT
        assert ex._window() == 5
    finally:
        ex.close()


SSHD = "/usr/sbin/sshd"


@pytest.fixture
def sshd(tmp_path: Path) -> Iterator[dict[str, object]]:
    """A real sshd on a free loopback port, key login only; the connect
    options for distributed.SSHCluster (asyncssh)."""
    import socket

    assert os.path.exists(SSHD), (
        "sshd is needed (Debian package openssh-server; .ci/run installs it)"
    )
    d = tmp_path / "sshd"
    d.mkdir()
    for key in ("host_key", "client_key"):
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(d / key)],
            check=True,
            timeout=30,
        )
    (d / "authorized_keys").write_text((d / "client_key.pub").read_text())
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    (d / "sshd_config").write_text(
        f"ListenAddress 127.0.0.1\nPort {port}\nHostKey {d / 'host_key'}\n"
        f"AuthorizedKeysFile {d / 'authorized_keys'}\nPasswordAuthentication no\n"
        "KbdInteractiveAuthentication no\nPermitRootLogin prohibit-password\n"
        f"StrictModes no\nUsePAM no\nPidFile {d / 'sshd.pid'}\n"
    )
    Path("/run/sshd").mkdir(exist_ok=True)  # sshd's privilege separation dir
    log = open(d / "sshd.log", "wb")  # noqa: SIM115 (closed below)
    proc = subprocess.Popen(
        [SSHD, "-D", "-e", "-f", str(d / "sshd_config")],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:

        def listening() -> bool:
            with socket.socket() as s:
                return s.connect_ex(("127.0.0.1", port)) == 0

        wait_for("sshd to listen", listening, timeout=30)
        yield {
            "port": port,
            "known_hosts": None,
            "client_keys": [str(d / "client_key")],
            "username": psutil.Process().username(),
        }
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=10)
        log.close()


@pytest.mark.cluster
def test_sshcluster_on_loopback_gives_the_local_cube(driver, reference, sshd):
    """distributed.SSHCluster starts scheduler and workers over ssh (here:
    to 127.0.0.1; the remote processes start in the login's home directory,
    not the driver's)."""
    from distributed import SSHCluster

    cluster = SSHCluster(
        ["127.0.0.1", "127.0.0.1", "127.0.0.1"],  # scheduler, then 2 workers
        connect_options=sshd,
        worker_options={"nthreads": 1, "host": "127.0.0.1", "dashboard_address": None},
        scheduler_options={"port": 0, "host": "127.0.0.1", "dashboard": False},
        remote_python=sys.executable,
    )
    address = cluster.scheduler_address
    try:
        done = run_cli(driver, "--address", address, "--store", "ssh.zarr")
        assert done.returncode == 0, done.stderr
        assert cube_digest(driver / "ssh.zarr") == reference
        assert len(worker_pids_in_cube(driver / "ssh.zarr")) == 2
    finally:
        cluster.close()

        def remote() -> list[psutil.Process]:
            return [
                p
                for p in psutil.process_iter(["cmdline"])
                if address in " ".join(p.info["cmdline"] or [])
            ]

        # the remote workers leave once they lose their scheduler
        with contextlib.suppress(AssertionError):
            wait_for("the ssh-started workers to exit", lambda: not remote(), 15)
        for p in remote():  # started by this test, over ssh
            with contextlib.suppress(psutil.Error):
                p.kill()


@pytest.mark.cluster
def test_dask_mpi_on_loopback_gives_the_local_cube(driver, reference, tmp_path):
    """dask-mpi under MPICH's mpiexec (PyPI wheels): rank 0 the scheduler,
    ranks 1-2 workers, all on the loopback interface."""
    mpiexec = str(Path(sys.executable).with_name("mpiexec"))
    dask_mpi = str(Path(sys.executable).with_name("dask-mpi"))
    assert os.path.exists(mpiexec), "mpiexec is needed (pip install mpich)"
    file = tmp_path / "mpi" / "sched.json"
    file.parent.mkdir()
    cmd = [mpiexec, "-iface", "lo", "-n", "3", dask_mpi, "--scheduler-file", str(file)]
    cmd += ["--scheduler-port", "0", "--interface", "lo", "--nthreads", "1"]
    cmd += ["--no-dashboard"]
    with open(file.with_name("mpi.log"), "wb") as log:
        proc = subprocess.Popen(
            cmd,
            cwd=file.parent,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:

        def read_address() -> str:
            with contextlib.suppress(OSError, ValueError, KeyError):
                return str(json.loads(file.read_text())["address"])
            return ""

        wait_for("the scheduler file", lambda: bool(read_address()), timeout=60)
        address = read_address()
        assert address.startswith("tcp://127.0.0.1:")
        from distributed import Client

        with Client(address, timeout="30s") as c:
            c.wait_for_workers(2, timeout=60)
        done = run_cli(driver, "--address", address, "--store", "mpi.zarr")
        assert done.returncode == 0, done.stderr
        assert cube_digest(driver / "mpi.zarr") == reference
        assert len(worker_pids_in_cube(driver / "mpi.zarr")) == 2
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        with contextlib.suppress(AssertionError):
            wait_for(
                "the MPI ranks to exit",
                lambda: (
                    not any(_in_groups(p, {proc.pid}) for p in psutil.process_iter())
                ),
                timeout=10,
            )
        for p in psutil.process_iter():
            if _in_groups(p, {proc.pid}):
                with contextlib.suppress(psutil.Error):
                    p.kill()


JAX_REMOTE = """
import jax
import jax.numpy as jnp
from simstudy import Study

study = Study("jremote", factors={"n": [4, 12], "s": [1.0, 3.0]}, replicates=64,
              seed=11, backend="jax", vmap_width=16)

@study.data
def gen(key, n, s):
    return s * jax.random.normal(key, (n,))

@study.method
def spread(x):
    return {"estimate": x.std(), "range": jnp.stack([x.min(), x.max()])}

@study.method
def noisy(x, key):
    return x.mean() + jax.random.uniform(key)
"""


@pytest.mark.cluster
@pytest.mark.jax
def test_a_jax_study_on_external_workers_gives_the_in_process_cube(tmp_path, procs):
    """Issue 6 on issue 7's cluster: batches of a jax study dispatched to two
    external workers (each compiling its own kernels) give the cube the
    in-process jax executor gives."""
    pytest.importorskip("jax")
    driver = tmp_path / "jdriver"
    simstudy.run(write_study_file(driver, JAX_REMOTE), store=driver / "local.zarr")
    address = procs.start_scheduler()
    procs.start_worker("w1")
    procs.start_worker("w2")
    procs.wait_for_workers(2)
    done = run_cli(
        driver, "--address", address, "--store", "ext.zarr", "--batch-size", "16"
    )
    assert done.returncode == 0, done.stderr
    assert cube_digest(driver / "ext.zarr") == cube_digest(driver / "local.zarr")
    used = worker_pids_in_cube(driver / "ext.zarr")
    for name in ("w1", "w2"):
        assert used.keys() & procs.worker_pids(name), f"{name} computed nothing"
    names = simstudy.open_results(driver / "ext.zarr").attrs["simstudy"]["workers"]
    assert all(n.endswith("/cpu:0") for n in names)  # each worker's own device
