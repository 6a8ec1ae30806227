"""A bundle: a finished study packed to be verified and extended elsewhere.

``pack`` writes one tar file holding the study file and the local modules
it imports (found by reading their imports, never by running them), the
environment (``requirements.txt``: every installed distribution the study
and simstudy need, pinned; ``environment.json``), the protocol, the cube
(or, with ``no_results``, none), per-task hashes of the outputs and the
HTML report. ``verify`` unpacks a bundle, recomputes a sample of tasks
here and says per method whether they are identical, differ only by
floating-point noise (relative difference <= ``checks.RTOL``) or differ, naming
the package versions that differ from the bundle's. ``add_method`` adds
the methods of a file to a bundle's study and runs only their tasks on the
bundle's store: the data sets are regenerated bit for bit from the streams
(common random numbers), the original columns stay as they were.

Verifying or extending a bundle runs its code: only for bundles you trust.
"""

from __future__ import annotations

import hashlib
import inspect
import io
import json
import os
import platform
import shutil
import tarfile
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from simstudy.atomic import check_target, replacing
from simstudy.cube import FIXED_VARS, METHOD, OK, REPLICATE, point_json
from simstudy.declare.loader import import_file, study_imports
from simstudy.declare.study import Study
from simstudy.errors import StoreError, UsageError
from simstudy.sharing.checks import (
    BundleCheck,
    MethodCheck,
    difference,
    task_hash,
    version_differences,
)

__all__ = [
    "AddResult",
    "BundleCheck",
    "add_method",
    "is_bundle",
    "lock",
    "pack",
    "verify",
]

FORMAT = 1
MANIFEST = "bundle.json"


# ---- what goes in -----------------------------------------------------------
def local_files(study_file: Path) -> list[Path]:
    """The study file and the modules of its folder it imports, recursively
    (read with ``ast``: nothing is run)."""
    folder = study_file.parent
    found: list[Path] = []
    todo = [study_file]
    while todo:
        path = todo.pop()
        if path in found:
            continue
        found.append(path)
        for name in study_imports(path):
            parts = name.split(".")
            todo += [
                c
                for c in (
                    folder.joinpath(*parts).with_suffix(".py"),
                    folder.joinpath(*parts, "__init__.py"),
                )
                if c.is_file() and c not in found
            ]
    return found


def _dists_of(files: list[Path]) -> set[str]:
    tops = {m.split(".")[0] for f in files for m in study_imports(f)}
    found = metadata.packages_distributions()
    return {d for t in tops for d in found.get(t, [])} | {"simstudy"}


def lock(files: list[Path]) -> dict[str, str]:
    """Every installed distribution the files and simstudy need, recursively,
    with its version (requirements with an unmet marker or an extra left out)."""
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    out: dict[str, str] = {}
    todo = sorted(_dists_of(files))
    while todo:
        name = todo.pop()
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue
        key = canonicalize_name(dist.metadata["Name"])
        if key in out:
            continue
        out[key] = dist.version
        for text in dist.requires or []:
            req = Requirement(text)
            if req.marker is not None and not req.marker.evaluate({"extra": ""}):
                continue
            todo.append(req.name)
    return dict(sorted(out.items()))


def _output_vars(ds: Any) -> list[str]:
    return sorted(v for v in ds.data_vars if v not in FIXED_VARS)


def task_hashes(store: Path) -> dict[str, Any]:
    """Per design point and method, a hash of each ok task's outputs (None
    for a task not ok), with the dtypes hashed."""
    from simstudy.store import open_results

    ds = open_results(store)
    names = _output_vars(ds)
    factors = ds.attrs["simstudy"]["factor_order"]
    methods = [str(m) for m in ds[METHOD].values]
    loaded = {v: ds[v].values for v in names}
    status = ds["status"].values
    out: dict[str, Any] = {
        "outputs": names,
        "dtypes": {v: str(loaded[v].dtype) for v in names},
        "methods": methods,
        "replicates": int(ds.sizes[REPLICATE]),
        "hashes": {},
    }
    levels = [list(ds[f].values.tolist()) for f in factors]
    for idx in np.ndindex(*(len(lv) for lv in levels)):
        point = {
            f: levels[i][j] for i, (f, j) in enumerate(zip(factors, idx, strict=True))
        }
        per = {}
        for m, name in enumerate(methods):
            col: list[str | None] = []
            for r in range(out["replicates"]):
                if status[(*idx, r, m)] != OK:
                    col.append(None)
                    continue
                col.append(task_hash([loaded[v][(*idx, r, m)] for v in names]))
            per[name] = col
        out["hashes"][point_json(point)] = per
    ds.close()
    return out


def _protocol_text(
    meta: dict[str, Any], study_file: Path | None, given: Path | None
) -> str | None:
    if given is not None:
        return given.read_text(encoding="utf-8")
    registered = meta.get("protocol")
    if registered:
        return str(registered["text"])
    if study_file is None:
        return None
    from simstudy.declare.loader import load_study
    from simstudy.sharing.protocol import build

    return build(load_study(study_file), pilot=20).markdown


def pack(
    store: str | os.PathLike[str],
    output: str | os.PathLike[str],
    *,
    study: str | os.PathLike[str] | None = None,
    no_results: bool = False,
    protocol: str | os.PathLike[str] | None = None,
) -> Path:
    """Write the bundle of ``store`` to ``output``; return its path.

    The study file is ``study``, or the one the store names (copied, never
    run; a protocol is then written only if one was registered).
    """
    from simstudy.report import write_report
    from simstudy.store import open_results

    src = Path(store)
    ds = open_results(src)
    meta = dict(ds.attrs["simstudy"])
    ds.close()
    named = study or meta.get("source_file")
    if not named or not Path(named).is_file() or Path(named).suffix != ".py":
        raise UsageError(
            f"bundle {src}: the study file {named!r} is not there.",
            hint="give it: python -m simstudy bundle STORE --study STUDY.py -o FILE",
        )
    study_file = Path(named).resolve()
    out = check_target(output)
    files = local_files(study_file)
    text = _protocol_text(
        meta, study_file if study else None, Path(protocol) if protocol else None
    )
    packages = lock(files)
    with tempfile.TemporaryDirectory() as tmp:
        report = write_report(src, Path(tmp) / "report.html")
        hashes = task_hashes(src)
        manifest = {
            "format": FORMAT,
            "study": meta["study"],
            "study_file": f"study/{study_file.name}",
            "store": None if no_results else f"results/{src.name}",
            "files": [f"study/{f.relative_to(study_file.parent)}" for f in files],
            "fingerprint": meta["fingerprint"],
            "versions": meta.get("versions", {}),
        }
        environment = {
            "python": platform.python_version(),
            "platform": platform.platform(),
            "packages": packages,
        }
        with replacing(out) as part, tarfile.open(part, "w") as tar:
            _add_text(tar, MANIFEST, json.dumps(manifest, indent=1))
            for f in files:
                tar.add(f, f"study/{f.relative_to(study_file.parent)}")
            _add_text(tar, "requirements.txt", _requirements(packages))
            _add_text(tar, "environment.json", json.dumps(environment, indent=1))
            if text is not None:
                _add_text(tar, "protocol.md", text)
            _add_text(tar, "hashes.json", json.dumps(hashes))
            tar.add(report, "report.html")
            if not no_results:
                tar.add(src, f"results/{src.name}", filter=_no_lock)
    return out


def _requirements(packages: dict[str, str]) -> str:
    """The pins, simstudy itself as a comment: it is installed from its
    source (it may be on no index), the rest with pip install -r."""
    head = (
        "# the environment that made this bundle: pip install -r requirements.txt\n"
        f"# python {platform.python_version()}\n"
        f"# simstudy=={packages.get('simstudy', '?')} (install it from its source)\n"
    )
    return head + "".join(f"{k}=={v}\n" for k, v in packages.items() if k != "simstudy")


def _add_text(tar: tarfile.TarFile, name: str, text: str) -> None:
    data = text.encode("utf-8")
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = int(time.time())
    tar.addfile(info, io.BytesIO(data))


def _no_lock(info: tarfile.TarInfo) -> tarfile.TarInfo | None:
    return None if info.name.endswith("/.simstudy/lock") else info


# ---- reading a bundle -----------------------------------------------------
def is_bundle(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a tar file (a bundle, or meant to be one)."""
    file = Path(path)
    return file.is_file() and (file.suffix == ".tar" or tarfile.is_tarfile(file))


def _unpack(bundle: Path, into: Path) -> dict[str, Any]:
    try:
        with tarfile.open(bundle) as tar:
            tar.extractall(into, filter="data")
    except (tarfile.TarError, OSError) as exc:
        raise UsageError(
            f"{bundle}: not a readable bundle ({type(exc).__name__}: {exc}).",
            hint="pass a file written by python -m simstudy bundle",
        ) from None
    try:
        manifest: dict[str, Any] = json.loads((into / MANIFEST).read_text())
    except (OSError, ValueError):
        raise UsageError(
            f"{bundle}: no {MANIFEST} in it: not a simstudy bundle.",
            hint="pass a file written by python -m simstudy bundle",
        ) from None
    return manifest


@contextmanager
def _unpacked(bundle: Path) -> Iterator[tuple[Path, dict[str, Any]]]:
    with tempfile.TemporaryDirectory(prefix="simstudy-bundle-") as tmp:
        yield Path(tmp), _unpack(bundle, Path(tmp))


def verify(
    bundle: str | os.PathLike[str], *, sample: int = 20, seed: int | None = None
) -> BundleCheck:
    """Recompute ``sample`` replicates of a bundle here (every method) and
    compare them with its cube, or with its hashes without one."""
    from simstudy.backends import backend_of
    from simstudy.declare.grid import points
    from simstudy.declare.loader import load_study
    from simstudy.running.debugging import task_spec
    from simstudy.running.recompute import task_batch

    if sample < 1:
        raise UsageError(
            f"--sample must be >= 1, got {sample}.", hint="write --sample 20"
        )
    with _unpacked(Path(bundle)) as (tmp, manifest):
        study = load_study(tmp / manifest["study_file"])
        hashes = json.loads((tmp / "hashes.json").read_text())
        env = json.loads((tmp / "environment.json").read_text())
        grid = points(study)
        rows = [
            (p, r)
            for p, point in enumerate(grid)
            for r in range(hashes["replicates"])
            if any(
                col[r] is not None
                for col in hashes["hashes"].get(point_json(point), {}).values()
            )
        ]
        if not rows:
            raise StoreError(f"{bundle}: no finished task to verify.", hint="")
        rng = np.random.default_rng(seed)
        chosen = sorted(rng.choice(len(rows), min(sample, len(rows)), replace=False))
        cube = None
        if manifest.get("store"):
            from simstudy.store import open_results

            cube = open_results(tmp / manifest["store"])
        backend = backend_of(study)
        checks = {m.name: MethodCheck() for m in study.methods}
        every = tuple(range(len(study.methods)))
        for i in chosen:
            p, r = rows[int(i)]
            point = grid[p]
            result = backend.run_batch(study, task_batch(study, p, point, r, every))
            stored = hashes["hashes"][point_json(point)]
            for j, m in enumerate(study.methods):
                if stored.get(m.name, [None] * (r + 1))[r] is None:
                    continue
                where = {**point, REPLICATE: r, METHOD: m.name}
                stored_values = None if cube is None else (cube, where)
                rel = difference(result, j, hashes, stored[m.name][r], stored_values)
                checks[m.name].add(rel, task_spec(point, r, m.name))
        if cube is not None:
            cube.close()
    return BundleCheck(
        study=study.name,
        sample=len(chosen),
        methods=checks,
        versions=version_differences(env.get("packages", {})),
        hashes_only=cube is None,
        python=(env.get("python", "?"), platform.python_version()),
    )


# ---- a living benchmark: add a method -----------------------------------------
@dataclass
class AddResult:
    """What ``add_method`` did."""

    folder: Path
    store: Path
    added: list[str]
    computed: int
    original_tasks: int
    unchanged: bool
    report: Path
    seconds: float
    exit_code: int


def _added_methods(study: Study, path: Path) -> list[str]:
    """Register the public functions defined in ``path`` as methods."""
    module = import_file(path, what=f"--add-method {path.name}")
    name = module.__name__
    funcs = [
        f
        for n, f in vars(module).items()
        if inspect.isfunction(f) and f.__module__ == name and not n.startswith("_")
    ]
    if not funcs:
        raise UsageError(
            f"--add-method {path.name}: defines no function (a method is a public "
            "top-level function f(x, ...) -> {output: value}).",
            hint="write def mine(x): return {'estimate': ...}",
        )
    clash = [f.__name__ for f in funcs if f.__name__ in study.method_names]
    if clash:
        raise UsageError(
            f"--add-method {path.name}: the bundle's study has a method "
            f"{clash[0]!r} already.",
            hint="rename the function (its name is the method's name)",
        )
    for func in funcs:
        # what @study.method(...) would be given: func.simstudy = {"se": "se"}
        declared = getattr(func, "simstudy", None) or {}
        if not isinstance(declared, dict) or not set(declared) <= _OPTIONS:
            raise UsageError(
                f"--add-method {path.name}: {func.__name__}.simstudy must be a "
                f"dict of {sorted(_OPTIONS)}, got {declared!r}.",
                hint=f'write {func.__name__}.simstudy = {{"se": "se"}}',
            )
        study.method(**declared)(func)
    return [f.__name__ for f in funcs]


_OPTIONS = {"estimate", "se", "ci", "p"}


def _columns_digest(store: Path, methods: list[str]) -> dict[str, str]:
    """Per variable, a hash of its values in ``methods``' columns."""
    from simstudy.store import open_results

    ds = open_results(store, include_hidden=True)
    out = {}
    for v in sorted(str(name) for name in ds.data_vars):
        values = ds[v].sel({METHOD: methods}).values
        out[v] = hashlib.sha256(np.ascontiguousarray(values).tobytes()).hexdigest()
    ds.close()
    return out


def add_method(
    bundle: str | os.PathLike[str],
    method_file: str | os.PathLike[str],
    *,
    folder: str | os.PathLike[str] | None = None,
    **options: Any,
) -> AddResult:
    """Unpack ``bundle`` into ``folder`` (default ``./<bundle stem>.extended``;
    an existing one is resumed), add the methods of ``method_file`` to its
    study and run only their tasks into its store; write the report."""
    from simstudy.declare.loader import load_study
    from simstudy.report import write_report
    from simstudy.running.runner import run

    started = time.perf_counter()
    packed, mine = Path(bundle), Path(method_file)
    if not mine.is_file() or mine.suffix != ".py":
        raise UsageError(
            f"--add-method {mine}: no such Python file.", hint="check the path"
        )
    stem = packed.name.removesuffix(".tar").removesuffix(".simstudy")
    into = Path(folder) if folder is not None else Path.cwd() / f"{stem}.extended"
    if into.exists() and not (into / MANIFEST).is_file():
        raise UsageError(
            f"{into} exists and is not an unpacked bundle.",
            hint="move it away, or run from another directory",
        )
    fresh = not into.exists()
    manifest = (
        _unpack(packed, into) if fresh else json.loads((into / MANIFEST).read_text())
    )
    if not manifest.get("store"):
        if fresh:
            shutil.rmtree(into)
        raise UsageError(
            f"{packed}: a bundle without results (--no-results): no data sets' "
            "results to compare a new method with.",
            hint="ask for the bundle with its cube, or run the study file itself",
        )
    try:
        study_file = into / manifest["study_file"]
        copy = study_file.parent / mine.name
        if copy.exists() and copy.read_bytes() != mine.read_bytes() and fresh:
            raise UsageError(
                f"--add-method {mine.name}: the bundle has a file of that name.",
                hint="rename your file",
            )
        shutil.copy(mine, copy)
        study = load_study(study_file)
        original = list(study.method_names)
        added = _added_methods(study, copy)
    except BaseException:
        if fresh:  # bad input leaves nothing behind
            shutil.rmtree(into, ignore_errors=True)
        raise
    store = into / manifest["store"]
    before = _columns_digest(store, original)
    report = run(study, store=store, **options)
    after = _columns_digest(store, original)  # a new output adds a variable
    unchanged = all(after.get(v) == h for v, h in before.items())
    path = write_report(store, into / "report.html")
    return AddResult(
        folder=into,
        store=store,
        added=added,
        computed=report.computed,
        original_tasks=study.n_points * study.replicates * len(original),
        unchanged=unchanged,
        report=path,
        seconds=time.perf_counter() - started,
        exit_code=report.exit_code,
    )
