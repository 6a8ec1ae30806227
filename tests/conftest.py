"""Shared fixtures: ``write_study``, ``reference_digest`` and the hypothesis
profiles."""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import settings

from tests.studies import write_study_file

settings.register_profile("ci", deadline=None, print_blob=True, max_examples=25)

# Under pytest-xdist a test runs in a worker whose __main__ (execnet's) has no
# __file__, which simstudy takes for a notebook (where declaring a method
# twice replaces it instead of raising). A plain `pytest` run's __main__ is
# pytest's own __main__.py, which spawned children import and which does
# nothing then: give the workers a file that behaves the same.
_main = sys.modules.get("__main__")
if _main is not None and not hasattr(_main, "__file__"):
    _main.__file__ = str(Path(__file__).with_name("xdist_main.py"))
if os.environ.get("CI"):
    settings.load_profile("ci")

WriteStudy = Callable[..., Path]


@pytest.fixture
def write_study(tmp_path: Path) -> WriteStudy:
    """Return ``write(source, name="study.py") -> Path`` writing a dedented file
    into ``tmp_path``."""
    return functools.partial(write_study_file, tmp_path)


@pytest.fixture(scope="session")
def reference_digest(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], str]:
    """Return ``digest(source) -> str``: the cube digest of the study ``source``
    run from scratch, uninterrupted, in this process. Each source runs once a
    session: the crash and full-disk tests compare many runs to a few."""
    import simstudy
    from tests.helpers import cube_digest

    digests: dict[str, str] = {}

    def digest(source: str) -> str:
        if source not in digests:
            folder = tmp_path_factory.mktemp("reference")
            path = write_study_file(folder, source)
            report = simstudy.run(
                path, store=folder / "ref.zarr", scheduler="synchronous"
            )
            assert report.exit_code == 0
            digests[source] = cube_digest(folder / "ref.zarr")
        return digests[source]

    return digest
