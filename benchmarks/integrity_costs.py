"""What the numbers' integrity costs (issue 24), measured in one process.

    python benchmarks/integrity_costs.py [--repeat 5] [--replicates 500]

guard    per-task time of the numpy backend on studies/location.py, methods
         given their data through ``backends.guard.Guard`` (read-only views)
         vs handed the data object itself (the engine before issue 24),
         interleaved, the same batches, medians of --repeat; and the same
         for the study's data returned as a pandas DataFrame and as a dict
         of lists (a fresh copy per method).
recheck  the version recheck after a (pretended) numpy change: a store of
         studies/location.py (6 points x 3 methods, --replicates finished)
         rechecked, each task alone (recompute.RECHECK_PER_CELL,
         RECHECK_TOTAL); seconds, and per task.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import simstudy
from simstudy.backends import numpy as nb
from simstudy.declare.grid import Batch, points


class _Unguarded:
    """The engine before issue 24: every method gets the same object."""

    __slots__ = ("data",)

    def __init__(self, data: Any) -> None:
        self.data = data

    def get(self) -> Any:
        return self.data


WRAPPED = {
    "DataFrame": (
        "import pandas as pd\n",
        "    return pd.DataFrame({'x': x})\n",
        "x = x['x'].to_numpy()",
    ),
    "dict of lists": ("", "    return {'x': x.tolist()}\n", "x = np.asarray(x['x'])"),
}


def _study(tmp: Path, kind: str | None, replicates: int = 2000) -> Any:
    source = (ROOT / "studies" / "location.py").read_text()
    source = source.replace("replicates=2000", f"replicates={replicates}")
    if kind is not None:
        head, ret, unwrap = WRAPPED[kind]
        source = head + source.replace("    return x\n", ret)
        for name in ("mean(x)", "median(x)", "trimmed_mean(x)"):
            source = source.replace(f"def {name}:\n", f"def {name}:\n    {unwrap}\n")
    path = tmp / f"location_{(kind or 'array').replace(' ', '_')}.py"
    path.write_text(source)
    return simstudy.load_study(path)


def _batch_seconds(study: Any, batch: Batch, cls: Any) -> float:
    """CPU seconds of one batch with ``cls`` as the backend's guard."""
    real = nb.Guard
    nb.Guard = cls
    try:
        t0 = time.process_time()  # CPU time: the machine may be shared
        result = nb.run_batch(study, batch)
        seconds = time.process_time() - t0
    finally:
        nb.Guard = real
    assert (result.status == 1).all(), result.failures[:1]
    return seconds


def guard(repeat: int, replicates: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        for kind in (None, "DataFrame", "dict of lists"):
            study = _study(Path(tmp), kind)
            methods = tuple(range(len(study.methods)))
            batches = [
                Batch(p, tuple(point.items()), 0, replicates, methods)
                for p, point in enumerate(points(study))
            ]
            tasks = replicates * len(methods) * len(batches)
            ratios, per = [], {"guarded": [], "unguarded": []}
            for i in range(repeat):
                pair = [("guarded", nb.Guard), ("unguarded", _Unguarded)]
                if i % 2:
                    pair.reverse()  # interleaved, each first half of the time
                got = {
                    label: sum(_batch_seconds(study, b, cls) for b in batches)
                    for label, cls in pair
                }
                for label, seconds in got.items():
                    per[label].append(seconds / tasks)
                ratios.append(got["guarded"] / got["unguarded"])
            g = statistics.median(per["guarded"])
            u = statistics.median(per["unguarded"])
            print(
                f"guard  data {kind or 'ndarray'}: {g * 1e6:.1f} us/task guarded, "
                f"{u * 1e6:.1f} us/task unguarded (CPU time); median ratio "
                f"{statistics.median(ratios):.3f}, {(g - u) * 1e6:+.1f} us/task"
            )
            sample = study.data_func(rng=np.random.default_rng(0), n=100, eps=0.1)
            n = 20000
            t0 = time.process_time()
            for _ in range(n):
                given = nb.Guard(sample)
                given.get(), given.get(), given.get()
            alone = (time.process_time() - t0) / n
            print(
                f"       the guard alone (n=100): {alone * 1e6:.2f} us per "
                "replicate of 3 methods"
            )


def recheck(replicates: int) -> None:
    from simstudy.running.recompute import recheck_versions
    from simstudy.store import Store

    with tempfile.TemporaryDirectory() as tmp:
        study = _study(Path(tmp), None, replicates)
        store = Path(tmp) / "s.zarr"
        simstudy.run(study, store=store, scheduler="synchronous")
        root = json.loads((store / "zarr.json").read_text())
        meta = root["attributes"]["simstudy"]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import zarr

            meta["versions"] = {**meta["versions"], "numpy": "1.0.0"}
            zarr.open_group(store, mode="r+").attrs["simstudy"] = meta
            zarr.consolidate_metadata(store)
        st = Store.open_for_run(store, study)
        try:
            t0 = time.perf_counter()
            message = recheck_versions(study, st, st.version_changes(), accept=False)
            seconds = time.perf_counter() - t0
        finally:
            st.close()
        checked = int(message.split("; ")[1].split()[0])
        print(
            f"recheck  {checked} tasks (6 points x 3 methods) in "
            f"{seconds:.3f} s, {seconds / checked * 1e3:.2f} ms/task: {message}"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--replicates", type=int, default=500)
    ap.add_argument("--only", default="guard,recheck")
    args = ap.parse_args()
    only = set(args.only.split(","))
    if "guard" in only:
        guard(args.repeat, args.replicates)
    if "recheck" in only:
        recheck(args.replicates)


if __name__ == "__main__":
    main()
