"""Shared fixtures: ``write_study`` and the hypothesis profiles."""

from __future__ import annotations

import os
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import settings

settings.register_profile("ci", deadline=None, print_blob=True, max_examples=25)
if os.environ.get("CI"):
    settings.load_profile("ci")

WriteStudy = Callable[..., Path]


@pytest.fixture
def write_study(tmp_path: Path) -> WriteStudy:
    """Return ``write(source, name="study.py") -> Path`` writing a dedented file."""

    def write(source: str, name: str = "study.py") -> Path:
        path = tmp_path / name
        path.write_text(textwrap.dedent(source))
        return path

    return write
