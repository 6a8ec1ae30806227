"""docs/streams.md's recipes recompute real cubes bit for bit."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import simstudy
from simstudy.rng.streams import key as engine_key
from tests.studies import write_study_file

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "streams.md"
GOLDEN = Path(__file__).parent / "data" / "golden_streams.json"
SCHEMES = ("spawn", "pcg64-jump", "mt19937-jump")

# A 2x2-point, 3-replicate, 2-method study; "noisy" takes rng.
SMALL_SEED, SMALL_R = 7, 3
SMALL_POINTS = [{"n": n, "mu": mu} for n in (5, 8) for mu in (0.0, 1.5)]
SMALL_METHODS = ("mean", "noisy")
SMALL_STUDY = """\
from simstudy import Study

study = Study(
    "small",
    factors={{"n": [5, 8], "mu": [0.0, 1.5]}},
    replicates=3,
    seed=7,
    rng={scheme!r},
)


@study.data
def normal(rng, n, mu):
    return rng.normal(mu, 1.0, n)


@study.method
def mean(x):
    return {{"estimate": x.mean()}}


@study.method
def noisy(x, rng):
    return {{"estimate": x.mean() + rng.standard_normal()}}
"""


def doc_key(obj: object) -> int:
    """The key recipe exactly as docs/streams.md prints it."""
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"))
    digest = hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "little")


def recipe_block() -> str:
    text = DOC.read_text()
    head = text.index("## Recompute any cell with plain numpy")
    m = re.search(r"```python\n(.*?)```", text[head:], re.DOTALL)
    assert m, "no python block under the recompute heading"
    return m.group(1)


def run_small(tmp_path: Path, scheme: str) -> tuple[np.ndarray, np.ndarray]:
    path = write_study_file(
        tmp_path, SMALL_STUDY.format(scheme=scheme), f"small_{scheme}.py"
    )
    store = tmp_path / f"{scheme}.zarr"
    simstudy.run(path, store=store, scheduler="synchronous")
    ds = simstudy.open_results(store).load()
    assert ds["estimate"].dims == ("n", "mu", "replicate", "method_name")
    assert list(ds["method_name"].values) == list(SMALL_METHODS)
    return ds["status"].values, ds["estimate"].values


def cube_sha256(status: np.ndarray, estimate: np.ndarray) -> str:
    """SHA-256 of the int8 status and float64 estimate arrays, C order."""
    h = hashlib.sha256()
    h.update(np.ascontiguousarray(status, dtype=np.int8).tobytes())
    h.update(np.ascontiguousarray(estimate, dtype="<f8").tobytes())
    return h.hexdigest()


def recompute_small(scheme: str) -> np.ndarray:
    """Every cell of the small study from plain numpy, following the doc."""
    seed, nr, nm = SMALL_SEED, SMALL_R, len(SMALL_METHODS)
    out = np.empty((2, 2, nr, nm))
    gens: dict[int, np.random.Generator] = {}
    if scheme == "pcg64-jump":

        def stream(k: int) -> np.random.Generator:
            return np.random.Generator(np.random.PCG64(seed).jumped(k))

    elif scheme == "mt19937-jump":
        # chain single jumps upward, as the doc says
        bg = np.random.MT19937(seed)
        for k in range(len(SMALL_POINTS) * nr * (nm + 1)):
            gens[k] = np.random.Generator(bg)
            bg = bg.jumped(1)

        def stream(k: int) -> np.random.Generator:
            return gens[k]

    for p, point in enumerate(SMALL_POINTS):
        i, j = divmod(p, 2)
        for r in range(nr):
            if scheme == "spawn":
                ss = np.random.SeedSequence(seed, spawn_key=(doc_key(point), r))
                data_rng = np.random.Generator(np.random.PCG64(ss))
                ss = np.random.SeedSequence(
                    seed, spawn_key=(doc_key(point), r, doc_key("noisy"))
                )
                noisy_rng = np.random.Generator(np.random.PCG64(ss))
            else:
                data_rng = stream(((p * nr + r) * (nm + 1)) + 0)
                noisy_rng = stream(((p * nr + r) * (nm + 1)) + 1 + 1)
            x = data_rng.normal(point["mu"], 1.0, int(point["n"]))
            out[i, j, r, 0] = x.mean()
            out[i, j, r, 1] = x.mean() + noisy_rng.standard_normal()
    return out


def test_doc_recipe_matches_real_store(tmp_path: Path) -> None:
    source = (ROOT / "studies" / "location.py").read_text()
    assert "replicates=2000," in source
    path = write_study_file(
        tmp_path, source.replace("replicates=2000,", "replicates=20,"), "location.py"
    )
    store = tmp_path / "s.zarr"
    simstudy.run(path, store=store, scheduler="synchronous")
    ds = simstudy.open_results(store)
    # a dict: the keyword method= would be xarray's sel(method=...) argument
    cell = ds.sel({"n": 100, "eps": 0.1, "replicate": 17, "method_name": "median"})
    assert int(cell["status"]) == 1
    stored = float(cell["estimate"].values)

    code = recipe_block()
    imports = set(re.findall(r"^(?:import|from) (\w+)", code, re.MULTILINE))
    assert imports <= {"numpy", "json", "hashlib", "scipy"}
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        exec(compile(code, str(DOC), "exec"), {"__name__": "__doc__"})  # noqa: S102 (runs the doc recipe)
    printed = float(buf.getvalue().strip())
    assert printed == stored


def test_doc_key_recipe_is_the_engines() -> None:
    text = DOC.read_text()
    block = textwrap.dedent(
        """\
        def key(obj) -> int:  # obj: plain Python values (int, float, str, bool)
            text = json.dumps(obj, sort_keys=True, separators=(",", ":"))
        """
    )
    assert block in text
    for obj in ("median", {"n": 100, "eps": 0.1}, {"n": 5, "mu": 0.0}, 3):
        assert doc_key(obj) == engine_key(obj)


@pytest.mark.parametrize("scheme", SCHEMES)
def test_every_cell_recomputes_with_plain_numpy(tmp_path: Path, scheme: str) -> None:
    status, estimate = run_small(tmp_path, scheme)
    assert (status == 1).all()
    expected = recompute_small(scheme)
    assert estimate.tobytes() == expected.tobytes()
    np.testing.assert_array_equal(estimate, expected)


@pytest.mark.parametrize("scheme", SCHEMES)
def test_small_cube_matches_golden(tmp_path: Path, scheme: str) -> None:
    golden = json.loads(GOLDEN.read_text())["schemes"][scheme]["cube"]
    status, estimate = run_small(tmp_path, scheme)
    assert estimate.ravel().tolist() == golden["estimate"]
    assert cube_sha256(status, estimate) == golden["sha256"]


@pytest.mark.jax
def test_jax_doc_recipe_matches_real_store(tmp_path: Path) -> None:
    """docs/jax.md's plain-JAX recipe gives the stored cell to float tolerance."""
    pytest.importorskip("jax")
    doc = ROOT / "docs" / "jax.md"
    text = doc.read_text()
    head = text.index("## Recompute a cell with plain JAX")
    m = re.search(r"```python\n(.*?)```", text[head:], re.DOTALL)
    assert m, "no python block under the recompute heading"
    source = (ROOT / "studies" / "location_jax.py").read_text()
    assert "replicates=2000," in source
    path = write_study_file(
        tmp_path,
        source.replace("replicates=2000,", "replicates=20,"),
        "location_jax.py",
    )
    store = tmp_path / "s.zarr"
    simstudy.run(path, store=store)
    ds = simstudy.open_results(store)
    cell = ds.sel({"n": 100, "eps": 0.1, "replicate": 17, "method_name": "median"})
    assert int(cell["status"]) == 1
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        exec(compile(m.group(1), str(doc), "exec"), {"__name__": "__doc__"})  # noqa: S102 (runs the doc recipe)
    printed = float(buf.getvalue().strip())
    assert printed == pytest.approx(float(cell["estimate"]), rel=1e-6, abs=1e-7)


def test_tutorial_truth_function_example_runs(tmp_path: Path) -> None:
    """docs/tutorial.md's @study.truth on a function of factors, as printed."""
    text = (ROOT / "docs" / "tutorial.md").read_text()
    block = next(
        b
        for b in re.findall(r"```python\n(.*?)```", text, re.DOTALL)
        if "def truth(sigma)" in b
    )
    path = write_study_file(
        tmp_path,
        "from simstudy import Study\n\n"
        + block.replace("replicates=500", "replicates=40"),
        "scale.py",
    )
    study = simstudy.load_study(path)
    assert study.truth_for({"n": 20, "sigma": 3.0}) == {"estimate": 3.0}
    simstudy.run(study, store=tmp_path / "s.zarr", scheduler="synchronous")
    summary = simstudy.summarize(simstudy.open_results(tmp_path / "s.zarr"))
    bias = summary["bias"].values
    assert np.isfinite(bias).all()
    assert (np.abs(bias) < 0.5).all()  # sd is nearly unbiased for sigma


def test_tutorial_script_example_runs_as_a_plain_script(tmp_path: Path) -> None:
    """docs/tutorial.md's API example, as printed, run by `python FILE`."""
    text = (ROOT / "docs" / "tutorial.md").read_text()
    block = next(
        b
        for b in re.findall(r"```python\n(.*?)```", text, re.DOTALL)
        if "print(report)" in b
    )
    (tmp_path / "pilot.py").write_text(block)
    done = subprocess.run(
        [sys.executable, "pilot.py"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "400 ok, 0 failed, 0 pending of 400" in done.stdout
    assert "simstudy.summarize(simstudy.open_results('pilot.zarr'))" in done.stdout
    summary = simstudy.summarize(simstudy.open_results(tmp_path / "pilot.zarr"))
    assert int(summary["n_ok"].sum()) == 400


ANALYSIS = ROOT / "docs" / "analysis.md"


def test_analysis_worked_example_matches_a_hand_computation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """docs/analysis.md's worked example runs, and its numbers are numpy's."""
    import runpy
    from statistics import NormalDist

    from simstudy.cli import main

    text = ANALYSIS.read_text()
    head = text.index("## Worked example")
    blocks = re.findall(r"```(python|bash)\n(.*?)```", text[head:], re.DOTALL)
    script = tmp_path / "worked.py"
    script.write_text(blocks[0][1])
    monkeypatch.chdir(tmp_path)
    ns = runpy.run_path(str(script))
    printed = capsys.readouterr().out
    cube, summary = ns["cube"].load(), ns["summary"]
    sel = {"n": 40, "mu": 1.0}
    x = cube["est"].sel(sel).values  # (replicate, method): t_test, median
    se = cube["se"].sel(sel).values[:, 1]
    med, mean = x[:, 1], x[:, 0]
    z = NormalDist().inv_cdf(0.975)
    cov = np.mean((med - z * se <= 1.0) & (med + z * se >= 1.0))
    cell = summary.sel(method_name="median", **sel)
    assert float(cell.coverage) == pytest.approx(cov, rel=1e-12)
    assert f"coverage {cov:.3f}" in printed
    ratio = np.mean((med - 1.0) ** 2) / np.mean((mean - 1.0) ** 2)
    assert float(cell.mse_ratio) == pytest.approx(ratio, rel=1e-12)
    assert abs(ratio - np.pi / 2) < 4 * float(cell.mse_ratio_mcse)  # as the doc says
    assert float(cell.q90) == pytest.approx(np.quantile(med - 1.0, 0.9), rel=1e-12)
    assert summary.attrs["intervals"]["median"] == "Wald from se"
    argv = blocks[1][1].replace("\\\n", " ").split()[3:]
    assert main(argv) == 0
    latex = capsys.readouterr().out
    assert latex.startswith("\\begin{tabular}")
    assert "\\bottomrule" in latex


def test_plots_doc_examples_run_on_small_stores(tmp_path, monkeypatch):
    """Every python block of docs/plots.md runs, in order, on small runs of
    the two example studies it uses, and each figure it makes saves."""
    from matplotlib.figure import Figure

    for name, replicates in (
        ("intervals", "replicates=1000"),
        ("location", "replicates=2000"),
    ):
        source = (ROOT / "studies" / f"{name}.py").read_text()
        assert replicates in source
        path = write_study_file(
            tmp_path, source.replace(replicates, "replicates=12"), f"{name}.py"
        )
        simstudy.run(path, store=tmp_path / f"{name}.zarr", scheduler="synchronous")
    monkeypatch.chdir(tmp_path)
    text = (ROOT / "docs" / "plots.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, re.DOTALL)
    assert len(blocks) >= 8
    namespace: dict[str, object] = {"__name__": "__doc__"}
    for block in blocks:
        exec(compile(block, "docs/plots.md", "exec"), namespace)  # noqa: S102 (runs the doc's examples)
        assert isinstance(namespace.get("fig", Figure()), Figure)
    for image in re.findall(r"\]\((img/[^)]+)\)", text):
        path = ROOT / "docs" / image
        assert path.exists(), image
        assert path.stat().st_size < 160_000, image  # pictures stay small
    assert (tmp_path / "zip.png").exists()
    assert (tmp_path / "bias.png").exists()
