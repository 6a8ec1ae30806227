"""Study file path -> Study, with clear errors.

Layers: imports ``study``, ``fingerprint`` and ``errors``.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.util
import os
import sys
import traceback
from pathlib import Path
from types import ModuleType

from simstudy.errors import StudyError
from simstudy.fingerprint import user_file
from simstudy.study import FROM_FILE, Study

__all__ = ["load_study", "study_imports"]


def study_imports(path: str | os.PathLike[str] | None) -> list[str]:
    """The modules a study file imports at its top level, read without running it.

    ``import a.b`` gives ``a.b``; ``from a import b`` gives ``a`` and ``a.b``
    (``b`` may be a submodule). Relative imports are left out, and a file
    that cannot be read or parsed gives none: this only serves to import
    them early (the process pool's forkserver), never to check the file.
    """
    if path is None:
        return []
    try:
        tree = ast.parse(Path(path).read_bytes())
    except (OSError, SyntaxError, ValueError):
        return []
    out: list[str] = []
    for node in tree.body:
        if isinstance(node, ast.Import):
            out += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            out.append(node.module)
            out += [f"{node.module}.{a.name}" for a in node.names if a.name != "*"]
    return list(dict.fromkeys(out))


def _user_frames(exc: BaseException, path: Path) -> str:
    """Return the last frame of the user's file as 'file:line'."""
    frames = [
        f
        for f in traceback.extract_tb(exc.__traceback__)
        if os.path.abspath(f.filename) == str(path)
    ]
    if frames:
        return f"{path.name}:{frames[-1].lineno}"
    return path.name


def load_study(path: str | os.PathLike[str]) -> Study:
    """Load the single Study declared in a study file.

    Parameters
    ----------
    path : str or PathLike
        A Python file that creates exactly one ``simstudy.Study`` (as module
        attribute ``study``, or as the only Study instance).

    Returns
    -------
    Study
        The validated study; ``study.source_file`` is the absolute path.

    Raises
    ------
    StudyError
        The file is missing, fails to import, declares no or several Studies,
        or its Study is invalid.
    """
    p = Path(path).resolve()
    if p.is_dir():
        raise StudyError(
            f"{path} is a directory, not a study file.",
            hint="pass the study's .py file (a store is a .zarr directory: "
            "`simstudy status` and `summarize` take those)",
        )
    if not p.is_file():
        raise StudyError(
            f"{path}: no such study file.", hint="check the path to the .py file"
        )
    if p.suffix != ".py":
        raise StudyError(
            f"{path}: a study file must be a Python file ending in .py.",
            hint="pass the study's .py file (a store is a .zarr directory)",
        )
    module = _import(p)
    found = _the_study(module, p)
    try:
        found.validate()
    except StudyError as exc:
        raise StudyError(f"{p.name}: {exc.message}", hint=exc.hint) from exc
    found.source_file = str(p)
    _ship_by_value(module, p.parent)
    return found


def _ship_by_value(module: ModuleType, folder: Path) -> None:
    """Send the study module, and the modules of the study's own folder it
    imported (``import helpers`` beside the study file), to workers by value:
    workers elsewhere need neither file."""
    import cloudpickle

    cloudpickle.register_pickle_by_value(module)
    for other in list(sys.modules.values()):
        path = user_file(other)
        if other is not module and path and Path(path).is_relative_to(folder):
            cloudpickle.register_pickle_by_value(other)


def _import(p: Path) -> ModuleType:
    """Import a study file as a module of its own; errors name its lines."""
    digest = hashlib.sha256(str(p).encode()).hexdigest()[:10]
    modname = f"simstudy_study_{p.stem if p.stem.isidentifier() else 'file'}_{digest}"
    folder = str(p.parent)
    if folder not in sys.path:  # the study's own modules import as in a script
        sys.path.insert(0, folder)
    spec = importlib.util.spec_from_file_location(modname, p)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[modname] = module
    token = FROM_FILE.set(True)
    try:
        spec.loader.exec_module(module)
    except StudyError as exc:
        sys.modules.pop(modname, None)
        raise StudyError(
            f"{_user_frames(exc, p)}: {exc.message}", hint=exc.hint
        ) from exc
    except SyntaxError as exc:
        sys.modules.pop(modname, None)
        if exc.lineno is not None:
            raise StudyError(
                f"{p.name}:{exc.lineno}: syntax error: {exc.msg}.",
                hint="fix the line shown; run `python FILE` to check it alone",
            ) from exc
        raise _unreadable(p, exc.msg) from exc
    except (ValueError, UnicodeDecodeError) as exc:
        sys.modules.pop(modname, None)
        if _user_frames(exc, p) != p.name:  # raised by the file's own code
            raise _import_error(exc, p) from exc
        raise _unreadable(p, str(exc)) from exc
    except BaseException as exc:
        sys.modules.pop(modname, None)
        if isinstance(exc, KeyboardInterrupt | SystemExit):
            raise
        raise _import_error(exc, p) from exc
    finally:
        FROM_FILE.reset(token)
    return module


def _unreadable(p: Path, why: str) -> StudyError:
    """A file Python cannot read as source (binary, bad encoding)."""
    return StudyError(
        f"{p.name}: not a readable Python source file ({why}).",
        hint="check that this is the study's .py file; run `python FILE` to "
        "check it alone",
    )


def _import_error(exc: BaseException, p: Path) -> StudyError:
    return StudyError(
        f"{_user_frames(exc, p)}: importing the study file raised "
        f"{type(exc).__name__}: {exc}",
        hint="run `python FILE` to see the full traceback, or add --debug",
    )


def _the_study(module: ModuleType, p: Path) -> Study:
    """The one Study of a study file: ``study``, or the only instance."""
    unique = {id(v): v for v in vars(module).values() if isinstance(v, Study)}
    if not unique:
        raise StudyError(
            f"{p.name}: no Study found; a study file must create one.",
            hint='write study = Study("name", factors=..., replicates=..., seed=...)',
        )
    if len(unique) > 1:
        names = sorted(s.name for s in unique.values())
        raise StudyError(
            f"{p.name}: {len(unique)} Studies found ({', '.join(names)}); "
            "a study file declares exactly one.",
            hint="keep one Study per file (put the other in a file of its own)",
        )
    return next(iter(unique.values()))
