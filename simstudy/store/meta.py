"""The store's metadata: ``attrs["simstudy"]`` of the zarr root, typed.

It says which study made the store (name, factor order, fingerprint), what
is known of the outputs, the library versions that made the numbers, the
truth and measure declarations summaries read, the workers that ran tasks,
and what a ``--target-mcse`` run decided. Plain JSON on disk; keys this
version does not know are kept as they are.
"""

from __future__ import annotations

import platform
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["META", "NUMBER_MAKERS", "StoreMeta", "installed", "versions"]

META = ".simstudy"  # the folder of lock, records and checkpoints in a store
FORMAT = 2  # 2: the method dimension is cube.METHOD (store.migrations)
# recorded versions and settings that can change numbers: a change since the
# store was made makes a run recompute finished tasks across the store and
# compare (recompute.recheck_versions; store.versionlog records it)
NUMBER_MAKERS = ("numpy", "jax", "jaxlib", "jax-device", "jax-x64")


def installed(package: str) -> bool:
    from importlib.metadata import PackageNotFoundError, version

    try:
        version(package)
    except PackageNotFoundError:
        return False
    return True


def versions() -> dict[str, str]:
    """The versions of what makes and stores the numbers, here and now."""
    from importlib.metadata import version

    import zarr

    return {  # from package metadata: importing xarray and dask costs ~0.4 s
        "simstudy": version("simstudy"),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "zarr": zarr.__version__,
        "xarray": version("xarray"),
        "dask": version("dask"),
        **({"jax": version("jax")} if installed("jax") else {}),
        **({"jaxlib": version("jaxlib")} if installed("jaxlib") else {}),
        "platform": platform.platform(),
    }


_OPTIONAL = (
    "outputs",
    "active",
    "design",
    "target_mcse",
    "versions_history",
    "version_log",
)


@dataclass
class StoreMeta:
    """What ``attrs["simstudy"]`` holds (docs/store.md lists every key)."""

    study: str
    factor_order: list[str]
    fingerprint: dict[str, Any]
    versions: dict[str, str]
    created: str
    format: int = FORMAT
    workers: list[str] = field(default_factory=list)
    # method -> its sorted output names, from its first finished task
    outputs: dict[str, list[str]] = field(default_factory=dict)
    truth: dict[str, dict[str, Any]] = field(default_factory=dict)
    measures: dict[str, dict[str, Any]] = field(default_factory=dict)
    source_file: str | None = None
    # the levels and methods the current study has, when the store has more
    active: dict[str, Any] | None = None
    # the current study's design points (levels in factor order) when they
    # are not the full cross of its levels (where=, factors varying together)
    design: list[list[Any]] | None = None
    target_mcse: dict[str, Any] | None = None
    versions_history: list[dict[str, str]] = field(default_factory=list)
    # each version change a run went on with (store.versionlog)
    version_log: list[dict[str, Any]] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> StoreMeta:
        known = set(cls.__dataclass_fields__) - {"extra"}
        values = {k: v for k, v in data.items() if k in known}
        extra = {k: v for k, v in data.items() if k not in known}
        return cls(**values, extra=extra)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "format": self.format,
            "study": self.study,
            "factor_order": self.factor_order,
            "fingerprint": self.fingerprint,
            "workers": self.workers,
            "versions": self.versions,
            "created": self.created,
            "truth": self.truth,
            "measures": self.measures,
            "source_file": self.source_file,
        }
        for key in _OPTIONAL:
            value = getattr(self, key)
            if value:
                out[key] = value
        return {**self.extra, **out}
