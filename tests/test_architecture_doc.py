"""docs/architecture.md and CONTRIBUTING.md show the package as it is."""

from __future__ import annotations

import re
from pathlib import Path

import simstudy

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = Path(simstudy.__file__).resolve().parent
ENTRY = re.compile(r"^(?P<pre>[│ ]*)[├└]── (?P<name>\S+)")


def _tree(path: Path, heading: str) -> str:
    text = path.read_text(encoding="utf-8")
    section = text[text.index(heading) :]
    return section[
        section.index("```") + 3 : section.index("```", section.index("```") + 3)
    ]


def _paths_in(tree: str) -> set[str]:
    """The files and folders a drawn tree names, as paths below simstudy/."""
    paths: set[str] = set()
    parents: list[str] = []
    for line in tree.splitlines():
        match = ENTRY.match(line)
        if not match:
            continue
        depth = len(match["pre"]) // 4
        parents = parents[:depth]
        name = match["name"].rstrip(",")
        paths.add("/".join([*parents, name.rstrip("/")]))
        if name.endswith("/"):
            parents.append(name.rstrip("/"))
    return paths


def test_the_architecture_tree_names_every_module_and_no_other():
    drawn = {
        p
        for p in _paths_in(_tree(ROOT / "docs/architecture.md", "## The tree"))
        if p.endswith(".py")
    }
    actual = {
        str(p.relative_to(PACKAGE))
        for p in PACKAGE.rglob("*.py")
        if "__pycache__" not in p.parts
    }
    assert drawn == actual, (
        f"missing from docs/architecture.md: {sorted(actual - drawn)}; "
        f"gone from the package: {sorted(drawn - actual)}"
    )


def test_contributing_shows_every_folder_of_the_package():
    drawn = _paths_in(_tree(ROOT / "CONTRIBUTING.md", "## The tree"))
    folders = {
        p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").exists()
    }
    assert folders <= drawn, (
        f"folders missing from CONTRIBUTING.md: {sorted(folders - drawn)}"
    )
