"""The jax backend on real JAX (CPU here): invariance, recompute, failures."""

from __future__ import annotations

import json
import textwrap

import numpy as np
import pytest

import simstudy
from simstudy import cli
from simstudy.errors import FingerprintMismatch, StudyError
from simstudy.store import open_results, read_failures
from tests.helpers import assert_store_consistent, cube_digest, reseal
from tests.studies import GOOD_STUDY, write_study_file

jax = pytest.importorskip("jax")
jnp = jax.numpy
pytestmark = pytest.mark.jax

SOURCE = """
import jax
import jax.numpy as jnp
from simstudy import Study

study = Study("jx", factors={{"n": [3, 8], "eps": [0.0, 0.5]}},
              replicates={replicates}, seed=7, backend="jax", vmap_width=16)

@study.data
def gen(key, n, eps):
    k1, k2 = jax.random.split(key)
    return jax.random.normal(k1, (n,)) + eps * jax.random.uniform(k2, (n,))

@study.method
def mean(x):
    return {{"estimate": x.mean()}}

@study.method
def med(x):
    return {{"estimate": jnp.median(x), "q": jnp.quantile(x, jnp.array([0.25, 0.75]))}}

@study.method
def noisy(x, key, n):
    return x.mean() + jax.random.normal(key) / n
{extra}
"""


def write(tmp_path, *, replicates=40, extra="", name="jx.py"):
    source = SOURCE.format(replicates=replicates, extra=textwrap.dedent(extra))
    return write_study_file(tmp_path, source, name)


def test_cube_is_identical_for_any_batch_size_and_after_resume(tmp_path):
    """Issue 6: batch sizes 1, 7, 1000 and all replicates, an interrupted and
    resumed run, and a run extended from 20 to 40 replicates: one cube."""
    study = write(tmp_path)
    digests = {}
    for size in (1, 7, 1000, 40, None):
        store = tmp_path / f"b{size}.zarr"
        report = simstudy.run(study, store=store, batch_size=size)
        assert report.exit_code == 0, report
        assert_store_consistent(store)
        digests[f"batch {size}"] = cube_digest(store)

    calls = []

    def interrupt(ev):
        calls.append(ev)
        if len(calls) == 3:
            raise KeyboardInterrupt

    store = tmp_path / "resumed.zarr"
    first = simstudy.run(study, store=store, batch_size=5, on_progress=interrupt)
    assert first.interrupted
    assert 0 < first.ok < first.tasks
    assert simstudy.run(study, store=store).exit_code == 0
    digests["resumed"] = cube_digest(store)

    store = tmp_path / "grown.zarr"
    simstudy.run(write(tmp_path, replicates=20, name="small.py"), store=store)
    simstudy.run(study, store=store)
    assert_store_consistent(store)
    digests["grown"] = cube_digest(store)
    assert len(set(digests.values())) == 1, digests


def recompute(seed, point, r, method_name=None):
    """The documented recipe (docs/jax.md): the cell's keys from plain numpy
    SeedSequences, then the study's functions on one replicate, unvectorised."""
    from numpy.random import SeedSequence

    from simstudy.rng.streams import key

    pkey = key(point)
    spawn = (pkey, r) if method_name is None else (pkey, r, key(method_name))
    words = SeedSequence(seed, spawn_key=spawn).generate_state(2, np.uint32)
    return jax.random.wrap_key_data(words, impl="threefry2x32")


def test_cells_match_an_unvectorised_computation_with_the_documented_keys(tmp_path):
    store = tmp_path / "s.zarr"
    simstudy.run(write(tmp_path, replicates=20), store=store)
    ds = open_results(store)
    checked = 0
    with jax.threefry_partitionable(False):
        for n, eps, r in [(3, 0.0, 0), (8, 0.5, 17), (3, 0.5, 19), (8, 0.0, 5)]:
            k1, k2 = jax.random.split(recompute(7, {"n": n, "eps": eps}, r))
            x = jax.random.normal(k1, (n,)) + eps * jax.random.uniform(k2, (n,))
            noise = jax.random.normal(recompute(7, {"n": n, "eps": eps}, r, "noisy"))
            expected = {
                ("estimate", "mean"): x.mean(),
                ("estimate", "med"): jnp.median(x),
                ("value", "noisy"): x.mean() + noise / n,
            }
            cell = ds.sel({"n": n, "eps": eps, "replicate": r})
            for (output, method), value in expected.items():
                got = float(cell[output].sel({"method_name": method}))
                np.testing.assert_allclose(got, float(value), rtol=1e-6, atol=1e-6)
                checked += 1
            q = cell["q"].sel({"method_name": "med"}).values
            np.testing.assert_allclose(
                q, np.quantile(np.asarray(x), [0.25, 0.75]), rtol=1e-5
            )
    assert checked == 12
    # the store says how the numbers were made
    meta = ds.attrs["simstudy"]
    assert meta["fingerprint"]["backend"] == {"name": "jax", "vmap_width": 16}
    versions = meta["versions"]
    assert versions["jax"] == jax.__version__
    assert versions["jax-device"].startswith("cpu:")
    assert versions["jaxlib"]
    assert versions["jax-x64"] == "False"


def test_float_factors_share_one_compile_and_python_control_flow_still_works(tmp_path):
    from simstudy.backends.jax import kernels_for

    extra = """
    @study.method
    def branchy(x, eps):
        if eps > 0:  # needs the value: this kernel is compiled per point
            return x.max()
        return x.min()
    """
    study = simstudy.load_study(write(tmp_path, replicates=20, extra=extra))
    store = tmp_path / "s.zarr"
    assert simstudy.run(study, store=store).exit_code == 0
    ks = kernels_for(study, None)
    compiled = [k for k in ks.cache.values() if k.run is not None]
    # per n: one data kernel and one of each of mean, med, noisy (shared by
    # both eps levels), and branchy once per (n, eps)
    assert len(compiled) == 2 * 4 + 4
    ds = open_results(store)
    x_max = ds["value"].sel({"method_name": "branchy", "eps": 0.5})
    x_min = ds["value"].sel({"method_name": "branchy", "eps": 0.0})
    med = ds["estimate"].sel({"method_name": "med"})
    assert (x_max >= med.sel({"eps": 0.5})).all()
    assert (x_min <= med.sel({"eps": 0.0})).all()


def test_failures_name_the_method_and_point_and_spare_the_rest(tmp_path):
    extra = """
    @study.method
    def broken(x, n):
        if n == 8:
            raise ValueError("cannot handle n=8")
        return {"estimate": x.sum()}

    @study.method
    def numpy_inside(x):
        import numpy as np

        return {"estimate": float(np.mean(x))}

    @study.method
    def sometimes_nan(x):
        return {"estimate": jnp.where(x[0] > 0, jnp.nan, x[0]), "other": x[1]}
    """
    store = tmp_path / "s.zarr"
    # every task of numpy_inside fails: fail-fast (issue 16.7) would stop the
    # run at its 50th; this test wants all of it to see who is spared
    path = write(tmp_path, replicates=20, extra=extra)
    report = simstudy.run(path, store=store, fail_fast=False)
    assert report.exit_code == 3
    ds = assert_store_consistent(store)
    status = ds["status"]
    assert (status.sel({"method_name": ["mean", "med", "noisy"]}) == 1).all()
    assert (status.sel({"method_name": "broken", "n": 8}) == 2).all()
    assert (status.sel({"method_name": "broken", "n": 3}) == 1).all()
    failures = read_failures(store)
    broken = [f for f in failures if f["method"] == "broken"]
    assert len(broken) == 2 * 20
    first = broken[0]
    assert first["type"] == "ValueError"
    assert "method 'broken' at n=8" in first["message"]
    assert "tracing the jax kernel" in first["message"]
    assert "cannot handle n=8" in first["message"]
    assert "jx.py" in first["traceback"]
    numpy_inside = [f for f in failures if f["method"] == "numpy_inside"]
    assert len(numpy_inside) == 4 * 20
    assert (
        "used a traced value as a Python value; on data use jax.numpy"
        in (numpy_inside[0]["message"])
    )
    # NaN is a value (issue 16.8): those tasks are ok, NaN kept as it came
    assert not [f for f in failures if f["method"] == "sometimes_nan"]
    assert (status.sel({"method_name": "sometimes_nan"}) == 1).all()
    estimate = ds["estimate"].sel({"method_name": "sometimes_nan"})
    assert 0 < int(estimate.isnull().sum()) < 80
    assert ds["other"].sel({"method_name": "sometimes_nan"}).notnull().all()


def test_data_function_failing_at_one_point_fails_only_that_point(tmp_path):
    source = SOURCE.replace(
        "    k1, k2 = jax.random.split(key)\n",
        "    if n == 3:\n        raise RuntimeError('no data for n=3')\n"
        "    k1, k2 = jax.random.split(key)\n",
    )
    path = write_study_file(tmp_path, source.format(replicates=8, extra=""), "jx.py")
    store = tmp_path / "s.zarr"
    assert simstudy.run(path, store=store).exit_code == 3
    ds = assert_store_consistent(store)
    assert (ds["status"].sel({"n": 3}) == 2).all()
    assert (ds["status"].sel({"n": 8}) == 1).all()
    messages = {f["message"] for f in read_failures(store)}
    assert all(m.startswith("data function at n=3, eps=") for m in messages)


def test_changed_vmap_width_is_refused_as_a_changed_backend(tmp_path):
    path = write(tmp_path, replicates=4)
    store = tmp_path / "s.zarr"
    simstudy.run(path, store=store)
    path.write_text(path.read_text().replace("vmap_width=16", "vmap_width=32"))
    before = sorted(p.name for p in store.rglob("*"))
    with pytest.raises(
        FingerprintMismatch, match=r"backend changed .*'vmap_width': 16"
    ):
        simstudy.run(path, store=store)
    assert sorted(p.name for p in store.rglob("*")) == before


def test_a_jax_study_on_dask_workers_gives_the_same_cube(tmp_path):
    """Batches dispatched to two LocalCluster workers (each its own JAX)."""
    study = write(tmp_path, replicates=40)
    local, dist = tmp_path / "local.zarr", tmp_path / "dist.zarr"
    simstudy.run(study, store=local, batch_size=16)
    report = simstudy.run(
        study, store=dist, scheduler="distributed", workers=2, batch_size=16
    )
    assert report.exit_code == 0
    ds = assert_store_consistent(dist)
    assert cube_digest(local) == cube_digest(dist)
    assert len(ds.attrs["simstudy"]["workers"]) == 2


def test_replay_and_verify_a_jax_task_bit_for_bit(tmp_path, capsys):
    path = write(tmp_path, replicates=20)
    store = tmp_path / "jx.zarr"
    simstudy.run(path, store=store)
    code = cli.main(
        [
            "replay",
            str(path),
            "--store",
            str(store),
            "--task",
            "n=8,eps=0.5,replicate=17,method=noisy",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0, out
    assert "identical, bit for bit" in out
    assert "unvectorised, they differ by at most" in out
    result = simstudy.replay(path, "n=3,eps=0.0,replicate=2,method=med", store=store)
    assert result.same
    assert result.eager_difference is not None
    assert result.eager_difference < 1e-5
    assert set(result.outputs or {}) == {"estimate", "q"}
    assert cli.main(["verify", str(store), "--study", str(path), "--sample", "5"]) == 0


def test_compiled_kernels_are_kept_between_runs(tmp_path, monkeypatch):
    import subprocess
    import sys

    path = write(tmp_path, replicates=8)
    cache = tmp_path / "cache"
    env = {**__import__("os").environ, "SIMSTUDY_JAX_CACHE": str(cache)}
    digests = []
    for store in ("a.zarr", "b.zarr"):
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "simstudy",
                "run",
                str(path),
                "--store",
                str(tmp_path / store),
                "--no-progress",
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert proc.returncode == 0, proc.stderr
        digests.append(cube_digest(tmp_path / store))
        if store == "a.zarr":
            entries = sorted(p.name for p in cache.iterdir())
            assert len(entries) >= 8  # 2 data + 6 method kernels, at least
    assert digests[0] == digests[1]
    assert sorted(p.name for p in cache.iterdir()) == entries  # nothing recompiled
    env["SIMSTUDY_JAX_CACHE"] = "off"
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            "from simstudy.backends.jax import cache_dir;print(cache_dir())",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.stdout.strip() == "None"


BAD_STUDIES = {
    "rng-in-jax": ("backend='jax'", "def gen(rng, n):", "whose functions take 'key'"),
    "key-in-numpy": ("", "def gen(key, n):", "only backend='jax' studies give"),
    "jump-scheme": (
        "backend='jax', rng='pcg64-jump'",
        "def gen(key, n):",
        "takes its keys from the spawn scheme",
    ),
    "width-3": ("backend='jax', vmap_width=3", "def gen(key, n):", "power of two"),
    "width-big": (
        "backend='jax', vmap_width=16384",
        "def gen(key, n):",
        "power of two from 1 to 8192",
    ),
    "width-text": ("backend='jax', vmap_width='8'", "def gen(key, n):", "power of two"),
    "width-numpy": ("vmap_width=8", "def gen(rng, n):", "applies to backend='jax'"),
    "backend-typo": ("backend='jaxx'", "def gen(key, n):", "backend 'jaxx' is unknown"),
}


@pytest.mark.parametrize("case", list(BAD_STUDIES), ids=list(BAD_STUDIES))
def test_bad_jax_declarations_are_clear_errors(tmp_path, case):
    options, signature, message = BAD_STUDIES[case]
    source = (
        "import numpy as np\nfrom simstudy import Study\n"
        f"study = Study('b', factors={{'n': [3]}}, replicates=2, seed=1"
        f"{', ' + options if options else ''})\n"
        f"@study.data\n{signature}\n    return np.zeros(n)\n"
        "@study.method\ndef m(x):\n    return x.sum()\n"
    )
    path = write_study_file(tmp_path, source, "bad.py")
    with pytest.raises(StudyError, match=message):
        simstudy.load_study(path)


CLI_CASES = {
    "gpu-missing": (["--device", "gpu"], True, "JAX sees no gpu device here"),
    "processes": (["--scheduler", "processes"], True, "runs in this process"),
    "jump-rng": (["--rng", "mt19937-jump"], True, "from the spawn scheme"),
    "timeout": (["--task-timeout", "1"], True, "cannot interrupt a jitted"),
    "warnings": (["--warnings-as-errors"], True, "does not work with the jax"),
    "jax-on-numpy": (["--scheduler", "jax"], False, "runs studies declared with"),
    "device-on-numpy": (["--device", "cpu"], False, "applies to backend='jax'"),
}


@pytest.mark.parametrize("case", list(CLI_CASES), ids=list(CLI_CASES))
def test_bad_run_options_for_the_backend_exit_2_and_write_nothing(
    tmp_path, capsys, case
):
    args, is_jax, message = CLI_CASES[case]
    if is_jax:
        path = write(tmp_path, replicates=4)
    else:
        path = write_study_file(tmp_path, GOOD_STUDY, "good.py")
    before = sorted(p.name for p in tmp_path.rglob("*"))
    code = cli.main(["run", str(path), "--no-progress", *args])
    err = capsys.readouterr().err
    assert code == 2, err
    assert message in err
    assert "hint:" in err
    assert "Traceback" not in err
    assert sorted(p.name for p in tmp_path.rglob("*")) == before


def test_status_and_summarize_read_a_jax_cube(tmp_path, capsys):
    path = write(tmp_path, replicates=20)
    store = tmp_path / "jx.zarr"
    assert cli.main(["run", str(path), "--store", str(store), "--no-progress"]) == 0
    capsys.readouterr()
    assert cli.main(["status", str(store)]) == 0
    status = capsys.readouterr().out
    assert "240 ok, 0 failed, 0 pending of 240 tasks" in status
    assert "n=8, eps=0.5: 60 ok, 0 failed, 0 pending" in status
    assert cli.main(["summarize", str(store), "--format", "json"]) == 0
    records = json.loads(capsys.readouterr().out)["measures"]
    means = {
        (r["n"], r["eps"]): r["value"]
        for r in records
        if r["method"] == "mean" and r["measure"] == "mean"
    }
    ds = open_results(store)
    expected = ds["estimate"].sel({"method_name": "mean"}).mean("replicate")
    assert len(means) == 4
    for (n, eps), value in means.items():
        assert value == pytest.approx(float(expected.sel({"n": n, "eps": eps})))


def test_plan_pilots_one_block_per_point_and_writes_nothing(tmp_path, capsys):
    path = write(tmp_path, replicates=40)
    before = sorted(p.name for p in tmp_path.rglob("*"))
    assert cli.main(["plan", str(path)]) == 0
    out = capsys.readouterr().out
    # a block of the width (16) per point: 4 points x 16 replicates x 3 methods
    assert "pilot: 192 task(s) here" in out
    assert "µs a task once compiled" in out
    assert "thread(s), plus ~1 s to start and the compiles" in out
    assert sorted(p.name for p in tmp_path.rglob("*")) == before


def test_fixed_inputs_reach_the_kernels(tmp_path):
    """A numeric fixed input is a kernel argument, a non-array one static."""
    source = """
    import jax
    import jax.numpy as jnp
    import numpy as np
    from simstudy import Study

    study = Study("fx", factors={"n": [4]}, replicates=10, seed=3, backend="jax",
                  vmap_width=8)
    study.fixed(beta=np.array([1.0, -2.0, 0.5, 3.0]), label="ols")

    @study.data
    def gen(key, n, beta):
        X = jax.random.normal(key, (n, 4))
        return X, X @ beta

    @study.method
    def ols(data, label, beta):
        X, y = data
        fit = jnp.linalg.lstsq(X, y)[0]
        return {"err": jnp.abs(fit - beta).max(), "is_ols": float(label == "ols")}
    """
    path = write_study_file(tmp_path, source, "fx.py")
    store = tmp_path / "fx.zarr"
    assert simstudy.run(path, store=store).exit_code == 0
    ds = assert_store_consistent(store)
    assert float(ds["err"].max()) < 1e-3  # noiseless y = X beta: beta recovered
    assert (ds["is_ols"] == 1.0).all()


def test_a_changed_jax_device_is_checked_by_recomputing_finished_tasks(tmp_path):
    """A store made on another device kind: finished tasks are recomputed
    through the jax kernels first; identical here, so the run goes on."""
    import warnings

    import zarr

    path = write(tmp_path, replicates=20)
    store = tmp_path / "s.zarr"
    simstudy.run(path, store=store)
    zarr.open_array(store / "status", mode="r+")[1, 1, 15:, :] = 0  # work left
    reseal(store)
    group = zarr.open_group(store, mode="r+")
    meta = open_results(store).attrs["simstudy"]
    meta["versions"] = {**meta["versions"], "jax-device": "gpu:NVIDIA A100"}
    group.attrs["simstudy"] = meta
    with warnings.catch_warnings():  # .simstudy/ is not a zarr node
        warnings.simplefilter("ignore")
        zarr.consolidate_metadata(store)
    report = simstudy.run(path, store=store)
    assert report.computed == 5 * 3
    assert len(report.warnings) == 1
    assert "jax-device gpu:NVIDIA A100 -> cpu:" in report.warnings[0]
    assert "finished task(s) recomputed bit for bit identical" in report.warnings[0]
    versions = open_results(store).attrs["simstudy"]["versions"]
    assert versions["jax-device"].startswith("cpu:")
    assert simstudy.run(path, store=store).warnings == ()
