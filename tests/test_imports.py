"""Worker-side modules and the measure registry (the run's options read it) stay
light; the layers hold at run time too."""

from __future__ import annotations

import subprocess
import sys

import pytest

HEAVY = ("xarray", "zarr", "matplotlib", "jax", "dask", "distributed")


@pytest.mark.parametrize(
    "module",
    [
        "simstudy",
        "simstudy.backends.numpy",
        "simstudy.backends.worker",
        "simstudy.analysis.registry",
    ],
    ids=["package", "numpy-backend", "worker", "measure-registry"],
)
def test_light_imports(module):
    code = (
        f"import sys, {module}\n"
        f"print(','.join(m for m in {HEAVY!r} if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == ""


def test_lazy_names_resolve():
    import simstudy

    assert callable(simstudy.run)
    assert callable(simstudy.open_results)
    assert callable(simstudy.summarize)
    with pytest.raises(AttributeError, match="has no attribute 'nope'"):
        _ = simstudy.nope
