"""The public API is exactly ``simstudy.__all__``, driven by one table."""

from __future__ import annotations

import ast
import inspect

import pytest

import simstudy


def test_all_is_sorted_and_complete():
    public = {
        name
        for name in dir(simstudy)
        if not name.startswith("_")
        and name not in {"annotations", "TYPE_CHECKING", "Any"}
        and not isinstance(getattr(simstudy, name, None), type(simstudy))
    }
    assert simstudy.__all__ == sorted(simstudy.__all__)
    lazy = set(simstudy._LAZY)
    assert {"run", "solve", "open_results", "summarize", "replay", "verify"} <= lazy
    assert "write_report" in lazy
    assert {"contrast", "failure_ledger"} <= lazy
    assert set(simstudy.__all__) == public | lazy


@pytest.mark.parametrize(
    "name",
    ["RunReport", "Progress", "ReproducibilityWarning", "Measure"],
    ids=["RunReport", "Progress", "ReproducibilityWarning", "Measure"],
)
def test_the_user_facing_classes_are_exported(name):
    assert name in simstudy.__all__
    assert inspect.isclass(getattr(simstudy, name))


def test_every_lazy_name_resolves_to_its_module_s_object():
    import importlib

    for name, module in simstudy._LAZY.items():
        assert getattr(simstudy, name) is getattr(importlib.import_module(module), name)


def test_the_type_checking_imports_list_the_lazy_table():
    """Type checkers cannot read the table: its TYPE_CHECKING block must
    import the same names from the same modules."""
    tree = ast.parse(inspect.getsource(simstudy))
    block = next(
        node
        for node in tree.body
        if isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING"
    )
    imported = {
        alias.name: node.module
        for node in block.body
        if isinstance(node, ast.ImportFrom)
        for alias in node.names
    }
    assert imported == simstudy._LAZY


@pytest.mark.parametrize("old", sorted(simstudy._moved.MOVED))
def test_a_module_s_old_flat_name_is_the_same_module(old):
    """``simstudy.summary`` etc. (before the folders) import the moved module."""
    import importlib

    moved = importlib.import_module(simstudy._moved.new_name(f"simstudy.{old}"))
    aliased = importlib.import_module(f"simstudy.{old}")
    assert aliased is moved
    assert moved.__spec__ is not None
    assert moved.__spec__.name == moved.__name__ != f"simstudy.{old}"


def test_the_moved_table_names_every_module_in_the_folders_and_none_at_the_top():
    import pathlib

    root = pathlib.Path(simstudy.__file__).parent
    for old, folder in simstudy._moved.MOVED.items():
        assert (root / folder / f"{old}.py").is_file()
        assert not (root / f"{old}.py").exists()


def test_the_documented_measure_import_still_works_in_a_fresh_process():
    import subprocess
    import sys

    code = (
        "from simstudy.summary import Measure\n"
        "import simstudy\n"
        "assert Measure is simstudy.Measure\n"
        "from simstudy import streams\n"
        "assert streams.__name__ == 'simstudy.rng.streams'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
