"""What ``verify`` finds: recomputed outputs judged against a bundle's.

A task's outputs are hashed as the bundle stores them (``task_hash``); a
task whose hash differs is measured against the bundle's cube by its largest
relative difference, noise up to ``RTOL``. ``MethodCheck`` counts one
method's verdicts, ``BundleCheck`` holds them all and the package versions
that differ, and says them as lines.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

import numpy as np

from simstudy.cube import OK
from simstudy.shell import quote

__all__ = [
    "RTOL",
    "BundleCheck",
    "MethodCheck",
    "difference",
    "task_hash",
    "version_differences",
]

RTOL = 1e-9  # relative difference still called floating-point noise


def task_hash(values: list[np.ndarray[Any, Any]]) -> str:
    """A short hash of one task's outputs, by their bytes."""
    hasher = hashlib.blake2b(digest_size=8)
    for value in values:
        hasher.update(np.ascontiguousarray(value).tobytes())
    return hasher.hexdigest()


def version_differences(recorded: dict[str, str]) -> list[str]:
    """Packages whose version here differs from the bundle's, as text."""
    out = []
    for name, then in recorded.items():
        try:
            now = metadata.version(name)
        except metadata.PackageNotFoundError:
            now = "not installed"
        if now != then:
            out.append(f"{name} {then} (bundle) -> {now} (here)")
    return out


@dataclass
class MethodCheck:
    tasks: int = 0
    identical: int = 0
    noise: int = 0
    differ: list[str] = field(default_factory=list)
    max_rel: float = 0.0

    def add(self, rel: float, task: str) -> None:
        """Count one recomputed task, ``rel`` its largest relative difference."""
        self.tasks += 1
        self.max_rel = max(self.max_rel, rel)
        if rel == 0.0:
            self.identical += 1
        elif rel <= RTOL:
            self.noise += 1
        else:
            self.differ.append(task)

    @property
    def verdict(self) -> str:
        if self.differ:
            return "differs"
        return "noise" if self.noise else "identical"


@dataclass
class BundleCheck:
    """What ``verify`` found: per method, and the versions that differ."""

    study: str
    sample: int
    methods: dict[str, MethodCheck]
    versions: list[str]
    hashes_only: bool
    python: tuple[str, str]

    @property
    def ok(self) -> bool:
        return all(not check.differ for check in self.methods.values())

    def lines(self) -> list[str]:
        out = [f"study {self.study!r}: {self.sample} replicate(s) recomputed here"]
        if self.python[0] != self.python[1]:
            out.append(f"python {self.python[0]} (bundle) -> {self.python[1]} (here)")
        if self.versions:
            out.append("package versions differ: " + "; ".join(self.versions))
        else:
            out.append("package versions: the same as the bundle's")
        for name, check in self.methods.items():
            out.append(f"  {name}: {self._said(check)}")
        return out

    def _said(self, check: MethodCheck) -> str:
        """One method's verdict in words."""
        if check.verdict == "identical":
            return f"identical ({check.tasks} task(s), bit for bit)"
        if check.verdict == "noise":
            return (
                f"differs only by floating-point noise ({check.noise} of "
                f"{check.tasks} task(s); largest relative difference "
                f"{check.max_rel:.2g} <= {RTOL:g})"
            )
        how = (
            "hashes differ; the bundle has no cube to measure by how much"
            if self.hashes_only
            else f"largest relative difference {check.max_rel:.2g} > {RTOL:g}"
        )
        return (
            f"DIFFERS ({len(check.differ)} of {check.tasks} task(s); {how}), "
            f"e.g. --task {quote(check.differ[0])}"
        )


def _rel(new: np.ndarray[Any, Any], old: np.ndarray[Any, Any]) -> float:
    now, then = np.asarray(new, dtype=float), np.asarray(old, dtype=float)
    if now.shape != then.shape:
        return float("inf")
    same = (now == then) | (np.isnan(now) & np.isnan(then))
    if same.all():
        return 0.0
    scale = np.maximum(np.abs(then), np.finfo(float).tiny)
    return float(np.max(np.where(same, 0.0, np.abs(now - then) / scale)))


def difference(
    result: Any,
    j: int,
    hashes: dict[str, Any],
    digest: str,
    stored: tuple[Any, dict[str, Any]] | None,
) -> float:
    """How far method ``j``'s recomputed outputs are from the bundle's: 0
    when the hash matches, else the largest relative difference from the
    cube (inf without a cube, or for a failed task)."""
    if result.status[0, j] != OK:
        return float("inf")
    try:
        cast = [
            np.asarray(
                result.outputs[v][0, j] if v in result.outputs else np.nan,
                dtype=hashes["dtypes"][v],
            )
            for v in hashes["outputs"]
        ]
    except (ValueError, TypeError):
        return float("inf")
    if task_hash(cast) == digest:
        return 0.0
    if stored is None:
        return float("inf")
    cube, where = stored
    return max(
        _rel(cast[k], cube[v].sel(where).values)
        for k, v in enumerate(hashes["outputs"])
    )
