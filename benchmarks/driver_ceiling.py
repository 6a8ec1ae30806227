"""The driver's ceiling: how many worker threads one simstudy driver keeps busy.

    python benchmarks/driver_ceiling.py [--threads 100,250,1000] [--batch 1,5,25]
                                        [--sleep 0.2] [--seconds 10]

A large cluster, simulated on this machine: a `dask scheduler` and a few
`dask worker` processes on 127.0.0.1 with hundreds of threads in all, running
a study whose one method sleeps ``--sleep`` seconds, so the CPU is not the
limit and what is measured is the scheduler's and the driver's per-batch
cost. For each (worker threads, batch size) it runs
`python -m simstudy run --address ... --batch-size B` on about ``--seconds``
of ideal work and prints:

- tasks/s and batches/s once the workers were up (the run's own figure);
- busy: the fraction of worker-thread time spent in tasks,
  tasks/s x sleep / threads (1.00 = every thread always busy);
- the driver's CPU share (user + sys seconds of the `simstudy run` process
  over its wall time; 1.00 = one core) and its peak RSS;
- the scheduler's CPU share over the same time.

Then, per thread count, the smallest batch size measured that keeps the
workers >= 95% busy. Every process it starts is stopped at the end.
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.dask_cluster import DASK, DaskProcesses

STUDY = """
import time
from simstudy import Study

study = Study("nap", factors={{"p": list(range({points}))}},
              replicates={replicates}, seed=1)

@study.data
def nothing(rng, p):
    return p

@study.method
def nap(x):
    time.sleep({sleep})
    return {{"estimate": float(x)}}
"""

PROCESSES = 4  # worker processes the threads are spread over
BATCHES = 6  # batches each worker thread gets, at least


def start_workers(procs: DaskProcesses, threads: int) -> None:
    per = max(1, threads // PROCESSES)
    for i in range(min(PROCESSES, threads)):
        name = f"w{i}"
        cmd = [DASK, "worker", procs.address, "--name", name, "--nthreads", str(per)]
        cmd += ["--nworkers", "1", "--host", "127.0.0.1", "--no-dashboard"]
        cmd += ["--local-directory", str(procs.root / name / "dask-scratch")]
        procs.workers[name] = procs._popen(cmd, procs.root / name, None, f"{name}.log")
    procs.wait_for_workers(min(PROCESSES, threads))


def one_run(study: Path, address: str, store: Path, batch: int) -> dict[str, float]:
    cmd = [sys.executable, "-m", "simstudy", "run", str(study), "--no-progress"]
    cmd += ["--address", address, "--batch-size", str(batch), "--store", str(store)]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(f"simstudy run failed:\n{done.stderr[-3000:]}")
    found = re.search(r"then ([\d,.]+) tasks/s", done.stdout)
    if found is None:
        raise SystemExit(f"no rate in the run's output:\n{done.stdout}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {
        "rate": float(found.group(1).replace(",", "")),
        "wall": wall,
        "cpu": cpu / wall,
        "rss": after.ru_maxrss / 1024,  # MiB (the largest child so far)
    }


def _stop(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)  # so the finally below stops the cluster


def main() -> None:
    signal.signal(signal.SIGTERM, _stop)
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", default="100,250,1000")
    parser.add_argument("--batch", default="1,5,25")
    parser.add_argument("--sleep", type=float, default=0.2)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    threads_list = [int(t) for t in args.threads.split(",")]
    batches = [int(b) for b in args.batch.split(",")]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for threads in threads_list:
            procs = DaskProcesses(root / f"cluster-{threads}")
            (root / f"cluster-{threads}").mkdir()
            try:
                address = procs.start_scheduler()
                start_workers(procs, threads)
                scheduler = psutil.Process(procs.procs[0].pid)
                study = root / f"nap{threads}.py"
                for batch in batches:
                    # --seconds of ideal work, and at least BATCHES batches a
                    # thread, so the last round's tail does not pass for overhead
                    span = max(args.seconds, BATCHES * batch * args.sleep)
                    tasks = int(threads * span / args.sleep)
                    replicates = max(1, tasks // 10)
                    study.write_text(
                        STUDY.format(points=10, replicates=replicates, sleep=args.sleep)
                    )
                    s0 = sum(scheduler.cpu_times()[:2])
                    store = root / f"s-{threads}-{batch}.zarr"
                    got = one_run(study, address, store, batch)
                    got["sched"] = (sum(scheduler.cpu_times()[:2]) - s0) / got["wall"]
                    got["busy"] = got["rate"] * args.sleep / threads
                    rows.append((threads, batch, got))
                    print(
                        f"{threads:>7} threads, batch {batch:>3}: "
                        f"{got['rate']:>8.0f} tasks/s, busy {got['busy']:.2f}",
                        flush=True,
                    )
            finally:
                procs.stop()
    print()
    print(
        f"tasks sleep {args.sleep} s; {PROCESSES} worker processes; "
        f"{os.cpu_count()} cores on this machine"
    )
    head = (
        f"{'threads':>7} {'batch':>5} {'batch s':>7} {'tasks/s':>8} "
        f"{'batches/s':>9} {'busy':>5} {'driver CPU':>10} {'driver MiB':>10} "
        f"{'sched CPU':>9}"
    )
    print(head)
    for threads, batch, got in rows:
        print(
            f"{threads:>7} {batch:>5} {batch * args.sleep:>7.1f} {got['rate']:>8.0f} "
            f"{got['rate'] / batch:>9.1f} {got['busy']:>5.2f} {got['cpu']:>10.2f} "
            f"{got['rss']:>10.0f} {got['sched']:>9.2f}"
        )
    for threads in threads_list:
        ok = [b for t, b, g in rows if t == threads and g["busy"] >= 0.95]
        best = f"batch {min(ok)}" if ok else "none of the batch sizes measured"
        print(f"{threads} threads >= 95% busy from: {best}")


if __name__ == "__main__":
    main()
