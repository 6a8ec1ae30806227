"""Small study files (as source text) shared by tests, and their writer."""

from __future__ import annotations

import textwrap
from pathlib import Path


def write_study_file(folder: Path, source: str, name: str = "study.py") -> Path:
    """Write a study's source, dedented, as ``folder/name``; return the path.

    The ``write_study`` fixture writes into the test's ``tmp_path``; this is
    for module-scoped fixtures and studies kept in a folder of their own.
    """
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(source))
    return path


GOOD_STUDY = """
import numpy as np
from simstudy import Study

study = Study("good", factors={"n": [5, 10], "eps": [0.0, 0.5]}, replicates=4, seed=1)

@study.data
def gen(rng, n, eps):
    return rng.standard_normal(n) + eps

@study.method
def mean(x):
    return {"estimate": float(np.mean(x))}

@study.method
def median(x):
    return {"estimate": float(np.median(x))}
"""
