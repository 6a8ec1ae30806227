"""A load-time check for the commonest reproducibility mistake.

A data function or method that draws from ``np.random.*`` or ``random.*``
global state, or builds and seeds its own generator, gives numbers that do
not depend (only) on the task's stream: they change between runs, workers
and resumes. This finds such calls in the functions' source and says where.
"""

from __future__ import annotations

import ast
import inspect
import textwrap
from collections.abc import Callable
from typing import Any

from simstudy.declare.study import Study

__all__ = ["lint_study"]

GENERATORS = {"default_rng", "RandomState", "SeedSequence", "Generator", "seed"}


def _dotted(node: ast.expr) -> str:
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
    return ".".join(reversed(parts))


def _problems(func: Callable[..., Any]) -> list[tuple[int, str]]:
    """(line, call) of suspicious calls in a function's source."""
    try:
        lines, first = inspect.getsourcelines(func)
        tree = ast.parse(textwrap.dedent("".join(lines)))
    except (OSError, TypeError, SyntaxError):
        return []
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        name = _dotted(node.func)
        parts = name.split(".")
        suspicious = (
            name.startswith(("np.random.", "numpy.random."))
            or (parts[0] == "random" and len(parts) == 2)
            or (len(parts) == 1 and name in GENERATORS)
        )
        if suspicious:
            found.append((first + node.lineno - 1, name))
    return found


def lint_study(study: Study) -> list[str]:
    """Return one warning per suspicious call in the study's functions."""
    where = study.source_file or "<study>"
    funcs: list[tuple[str, Callable[..., Any]]] = []
    if study.data_func is not None:
        funcs.append(("the data function", study.data_func))
    funcs += [(f"method {m.name!r}", m.func) for m in study.methods]
    out = []
    for what, func in funcs:
        for line, call in _problems(func):
            out.append(
                f"{where}:{line}: {what} calls {call}(): numbers drawn that way do "
                "not come from the task's own stream, so they change between runs "
                "and resumes. Take an rng argument and draw from it "
                "(rng.normal(...)); simstudy gives each task its own stream."
            )
    return out
