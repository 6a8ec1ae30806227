"""Study file path -> Study, with clear errors.

``load_study(path, lazy=True)`` (what ``simstudy run`` uses when the
workers, not this process, run the tasks) imports the installed libraries
the study file imports at its top level lazily (``importlib.util.
LazyLoader``): ``from scipy import stats`` binds a module that loads on its
first attribute access. The driver only declares, fingerprints and pickles
the study, which never touches it; so a run or a resume pays no ~1 s for
``scipy.stats`` here (the workers import it, from the forkserver).
"""

from __future__ import annotations

import ast
import copyreg
import hashlib
import importlib.abc
import importlib.machinery
import importlib.util
import os
import sys
import traceback
from collections.abc import Iterable
from pathlib import Path
from types import ModuleType
from typing import Any

from simstudy.declare.fingerprint import user_file
from simstudy.declare.methods import FROM_FILE
from simstudy.declare.study import Study
from simstudy.errors import StudyError

__all__ = ["import_file", "installed_modules", "load_study", "study_imports"]


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


def installed_modules(modules: Iterable[str], *, stdlib: bool = True) -> list[str]:
    """The modules of installed packages (and, with ``stdlib``, of the
    standard library) among ``modules``: never the user's own, whose code
    must run (and be fingerprinted) as it is now."""
    import sysconfig

    kinds = ("purelib", "platlib", "stdlib") if stdlib else ("purelib", "platlib")
    roots = {sysconfig.get_path(k) for k in kinds}
    keep: dict[str, bool] = {}
    out = []
    for name in modules:
        top = name.split(".")[0]
        if top not in keep:
            try:
                spec = importlib.util.find_spec(top)
            except (ImportError, ValueError):
                spec = None
            origin = (spec.origin or "") if spec is not None else ""
            keep[top] = (stdlib and origin in ("built-in", "frozen")) or any(
                origin.startswith(r + os.sep) for r in roots if r
            )
        if keep[top]:
            out.append(name)
    return out


# what isinstance(), pickling, the fingerprint (user_file) and cloudpickle's
# submodule scan read of a module: a lazily loaded module answers these
# (and __class__) without loading
_METADATA = frozenset(
    {"__name__", "__package__", "__spec__", "__file__", "__path__", "__loader__"}
)


class _LazyModule(importlib.util._LazyModule):  # type: ignore[name-defined,misc]
    """A module that loads on its first use, but not for its metadata."""

    def __getattribute__(self, attr: str) -> Any:
        if attr == "__class__":  # isinstance() asks for it
            return object.__getattribute__(self, attr)
        if attr in _METADATA:
            try:
                return object.__getattribute__(self, "__dict__")[attr]
            except KeyError:
                raise AttributeError(attr) from None
        return super().__getattribute__(attr)


class _LazyLoader(importlib.util.LazyLoader):
    def exec_module(self, module: ModuleType) -> None:
        super().exec_module(module)
        module.__class__ = _LazyModule


class _LazyLibraries(importlib.abc.MetaPathFinder):
    """Load the named modules lazily: pure-Python modules of installed
    packages only (an extension module's cost is its creation, which a lazy
    load does not defer)."""

    def __init__(self, names: Iterable[str]) -> None:
        self.names = frozenset(names)

    def find_spec(
        self, name: str, path: Any = None, target: Any = None
    ) -> importlib.machinery.ModuleSpec | None:
        if name not in self.names:
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if (
            spec is None
            or type(spec.loader) is not importlib.machinery.SourceFileLoader
        ):
            return None  # the usual machinery imports it, eagerly
        spec.loader = _LazyLoader(spec.loader)
        return spec


def _lazy_reduce(module: ModuleType) -> tuple[Any, tuple[str]]:
    """Pickle a lazily loaded module by name, without loading it."""
    return importlib.import_module, (module.__name__,)


# pickled by name like any module (pickle finds reducers by exact type)
copyreg.pickle(_LazyModule, _lazy_reduce)


def _lazy_names(p: Path) -> list[str]:
    """The modules of installed libraries a study file imports at its top
    level, to load lazily: not the standard library (cheap, and sometimes
    imported for its side effects), numpy (simstudy has it loaded) nor
    simstudy, and not a package another of the names lies in (``from scipy
    import stats`` loads ``scipy`` as usual and ``scipy.stats`` lazily)."""
    names = [
        m
        for m in installed_modules(study_imports(p), stdlib=False)
        if m.split(".")[0] not in ("numpy", "simstudy") and m not in sys.modules
    ]
    return [m for m in names if not any(o.startswith(m + ".") for o in names)]


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


def load_study(path: str | os.PathLike[str], *, lazy: bool = False) -> Study:
    """Load the single Study declared in a study file.

    Parameters
    ----------
    path : str or PathLike
        A Python file that creates exactly one ``simstudy.Study`` (as module
        attribute ``study``, or as the only Study instance).
    lazy : bool, default False
        Import the installed libraries the file imports at its top level
        lazily (see the module's docstring). Only for a process that runs
        no task of the study itself.

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
    file = Path(path).resolve()
    if file.is_dir():
        raise StudyError(
            f"{path} is a directory, not a study file.",
            hint="pass the study's .py file (a store is a .zarr directory: "
            "`simstudy status` and `summarize` take those)",
        )
    if not file.is_file():
        raise StudyError(
            f"{path}: no such study file.", hint="check the path to the .py file"
        )
    if file.suffix != ".py":
        raise StudyError(
            f"{path}: a study file must be a Python file ending in .py.",
            hint="pass the study's .py file (a store is a .zarr directory)",
        )
    module = import_file(file, _lazy_names(file) if lazy else [])
    found = _the_study(module, file)
    try:
        found.validate()
    except StudyError as exc:
        raise StudyError(f"{file.name}: {exc.message}", hint=exc.hint) from exc
    found.source_file = str(file)
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


def import_file(
    p: Path, lazy: list[str] | None = None, *, what: str = "the study file"
) -> ModuleType:
    """Import a study file (or a file of methods, ``what``) as a module of its
    own, its folder's modules importable and sent to workers by value;
    errors name its lines. The ``lazy`` modules load on first use
    (``_LazyLibraries``)."""
    lazy = lazy or []
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
    finder = _LazyLibraries(lazy) if lazy else None
    if finder is not None:
        sys.meta_path.insert(0, finder)
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
            raise _import_error(exc, p, what) from exc
        raise _unreadable(p, str(exc)) from exc
    except BaseException as exc:
        sys.modules.pop(modname, None)
        if isinstance(exc, KeyboardInterrupt | SystemExit):
            raise
        raise _import_error(exc, p, what) from exc
    finally:
        FROM_FILE.reset(token)
        if finder is not None:
            sys.meta_path.remove(finder)
    _ship_by_value(module, p.parent)
    return module


def _unreadable(p: Path, why: str) -> StudyError:
    """A file Python cannot read as source (binary, bad encoding)."""
    return StudyError(
        f"{p.name}: not a readable Python source file ({why}).",
        hint="check that this is the study's .py file; run `python FILE` to "
        "check it alone",
    )


def _import_error(exc: BaseException, p: Path, what: str) -> StudyError:
    hint = "run `python FILE` to see the full traceback, or add --debug"
    missing = exc.name if isinstance(exc, ModuleNotFoundError) else None
    if missing:
        top = missing.split(".")[0]
        hint = f"{top} is not installed here: pip install {top}" + (
            ' (simstudy\'s extra: pip install "simstudy[jax]")'
            if top in ("jax", "jaxlib")
            else " (the package's name may differ, e.g. scikit-learn for sklearn)"
        )
    return StudyError(
        f"{_user_frames(exc, p)}: importing {what} raised {type(exc).__name__}: {exc}",
        hint=hint,
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
