"""Safe defaults: loopback-only sockets, and reading a store runs nothing from it."""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

import simstudy
from simstudy.cli import main
from simstudy.errors import StoreError
from tests.studies import GOOD_STUDY

LOOPBACK = {"127.0.0.1", "::1"}

SLOW = """
import time
from simstudy import Study

study = Study("slow", factors={"n": [5]}, replicates=400, seed=1)

@study.data
def gen(rng, n):
    return rng.standard_normal(n)

@study.method
def mean(x):
    time.sleep(0.02)
    return x.mean()
"""


def _listening(root: psutil.Process) -> list[tuple[str, int, int]]:
    """(ip, port, pid) of every listening socket of a process tree."""
    out = []
    for proc in [root, *root.children(recursive=True)]:
        try:
            conns = proc.net_connections(kind="inet")
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        out += [
            (c.laddr.ip, c.laddr.port, proc.pid)
            for c in conns
            if c.status == psutil.CONN_LISTEN
        ]
    return out


@pytest.mark.parametrize("scheduler", ["distributed", "processes"])
def test_a_local_run_listens_on_loopback_only(write_study, tmp_path, scheduler):
    path = write_study(SLOW, "slow.py")
    proc = subprocess.Popen(
        [sys.executable, "-m", "simstudy", "run", str(path), "--scheduler", scheduler],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        root = psutil.Process(proc.pid)
        seen: set[tuple[str, int, int]] = set()
        deadline = time.monotonic() + 6
        while time.monotonic() < deadline and proc.poll() is None:
            seen.update(_listening(root))  # sample while the cluster runs
            time.sleep(0.1)
    finally:
        proc.kill()
        proc.wait(timeout=30)
    assert all(ip in LOOPBACK for ip, _, _ in seen), sorted(seen)
    if scheduler == "distributed":
        # scheduler, workers, nannies and the dashboard: several listeners
        assert len({port for _, port, _ in seen}) >= 3, sorted(seen)
    else:
        assert not seen, f"the processes scheduler needs no socket: {sorted(seen)}"


def _booby_trap(store: Path, marker: Path) -> None:
    """Make the estimate array declare a pickle codec whose payload would
    create ``marker`` if it were ever unpickled."""

    class Plant:
        def __reduce__(self):
            return (marker.write_text, ("pwned",))

    payload = pickle.dumps(Plant()).hex()
    codec = {"name": "numcodecs.pickle", "configuration": {"payload": payload}}
    meta_file = store / "estimate" / "zarr.json"
    meta = json.loads(meta_file.read_text())
    meta["codecs"].insert(0, codec)
    meta_file.write_text(json.dumps(meta))
    root_file = store / "zarr.json"
    root = json.loads(root_file.read_text())
    root["consolidated_metadata"]["metadata"]["estimate"]["codecs"].insert(0, codec)
    root_file.write_text(json.dumps(root))


def test_a_store_declaring_a_foreign_codec_is_refused_unread(
    tmp_path, write_study, capsys
):
    path = write_study(GOOD_STUDY)
    store = tmp_path / "s.zarr"
    simstudy.run(path, store=store, scheduler="synchronous")
    marker = tmp_path / "pwned.txt"
    _booby_trap(store, marker)
    with pytest.raises(StoreError, match=r"numcodecs\.pickle"):
        simstudy.open_results(store)
    assert main(["status", str(store)]) == 2
    assert "never writes" in capsys.readouterr().err
    with pytest.raises(StoreError, match=r"numcodecs\.pickle"):
        simstudy.run(path, store=store, scheduler="synchronous")
    assert not marker.exists()


def _name_a_trap(store: Path, trap: Path) -> None:
    """Make the store's metadata name ``trap`` as the study file that made it."""
    root_file = store / "zarr.json"
    root = json.loads(root_file.read_text())
    root["attributes"]["simstudy"]["source_file"] = str(trap)
    root_file.write_text(json.dumps(root))


def test_no_command_runs_the_study_file_a_store_names(tmp_path, write_study, capsys):
    """19.3: whoever can write a store must not choose code for others to run."""
    path = write_study(GOOD_STUDY)
    store = tmp_path / "s.zarr"
    simstudy.run(path, store=store, scheduler="synchronous")
    marker = tmp_path / "pwned.txt"
    trap = tmp_path / "trap.py"  # a hostile study file: running it writes the marker
    trap.write_text(f"open({str(marker)!r}, 'w').write('pwned')\n" + GOOD_STUDY)
    _name_a_trap(store, trap)
    assert main(["verify", str(store)]) == 2
    err = capsys.readouterr().err
    assert "it never runs the file a store's metadata names" in err
    assert f"hint: write python -m simstudy verify {store} --study STUDY.py" in err
    for argv in (["status", str(store)], ["errors", str(store)]):
        assert main(argv) == 0
    assert main(["summarize", str(store)]) == 0
    assert main(["report", str(store), "-o", str(tmp_path / "r.html")]) == 0
    assert not marker.exists()
    # the study file the user names is the one that runs
    assert main(["verify", str(store), "--study", str(path), "--sample", "2"]) == 0
    assert main(["verify", str(path), "--store", str(store), "--sample", "2"]) == 0
    assert not marker.exists()


def test_verify_without_study_is_exit_2_in_a_real_process(tmp_path):
    store = tmp_path / "s.zarr"
    store.mkdir()
    proc = subprocess.run(
        [sys.executable, "-m", "simstudy", "verify", str(store)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("error: verify ")
