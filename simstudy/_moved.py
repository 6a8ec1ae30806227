"""The modules that moved into folders, still importable by their old names.

``import simstudy.summary`` (documented for ``Measure``), ``simstudy.streams``
and every other module that sat at the top level before the folders keep
working: the old name is an alias of the same module object, so patching,
pickling and ``isinstance`` see one module. New code imports the new path.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
from types import ModuleType

# old top-level module -> where it lives now (one table; a test checks both sides)
MOVED: dict[str, str] = {
    "blocks": "analysis",
    "bundle": "sharing",
    "contrasts": "analysis",
    "debugging": "running",
    "design": "declare",
    "deviations": "declare",
    "factors": "declare",
    "fingerprint": "declare",
    "grid": "declare",
    "ledger": "analysis",
    "lint": "declare",
    "loader": "declare",
    "measures": "analysis",
    "mtjump": "rng",
    "options": "running",
    "outputs": "declare",
    "pilot": "running",
    "plan": "running",
    "protocol": "sharing",
    "recompute": "running",
    "results": "declare",
    "rootfit": "solving",
    "runner": "running",
    "selection": "analysis",
    "solver": "solving",
    "solvespec": "solving",
    "stall": "running",
    "streams": "rng",
    "study": "declare",
    "summary": "analysis",
    "target": "running",
    "worker": "backends",
}


class _Alias(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds ``simstudy.<old>`` and hands back the module at its new path."""

    def __init__(self) -> None:
        self._specs: dict[str, importlib.machinery.ModuleSpec | None] = {}

    def find_spec(
        self, fullname: str, path: object = None, target: object = None
    ) -> importlib.machinery.ModuleSpec | None:
        package, _, name = fullname.partition(".")
        if package != "simstudy" or name not in MOVED:
            return None
        return importlib.machinery.ModuleSpec(fullname, self)

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        module = importlib.import_module(new_name(spec.name))
        self._specs[spec.name] = module.__spec__
        return module

    def exec_module(self, module: ModuleType) -> None:
        # the import system stamped the alias's spec on the module; put its
        # own back, so the module still knows where it lives
        alias = module.__spec__.name if module.__spec__ else ""
        if self._specs.get(alias) is not None:
            module.__spec__ = self._specs.pop(alias)


def new_name(old: str) -> str:
    """``simstudy.summary`` -> ``simstudy.analysis.summary``."""
    name = old.removeprefix("simstudy.")
    return f"simstudy.{MOVED[name]}.{name}"


def install() -> None:
    if not any(isinstance(finder, _Alias) for finder in sys.meta_path):
        sys.meta_path.append(_Alias())
