"""Saved states of the mt19937-jump chain, so a resume need not walk from 0.

``<store>/.simstudy/mt19937/<seed tag>/<k>.npy`` holds the state of
``MT19937(seed).jumped(k)``: 624 key words and the position, int64. They
depend on the seed and k only, so they stay valid whatever the design.

Layers: imports ``store.meta`` (and numpy).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import numpy as np

from simstudy.store.meta import META

__all__ = ["read_mt_checkpoints", "save_mt_checkpoint"]


def _folder(path: Path, seed: int) -> Path:
    tag = hashlib.blake2b(str(seed).encode(), digest_size=8).hexdigest()
    return path / META / "mt19937" / tag


def save_mt_checkpoint(
    path: Path, seed: int, k: int, row: np.ndarray[Any, Any]
) -> None:
    """Save the state of ``MT19937(seed).jumped(k)`` (atomically)."""
    folder = _folder(path, seed)
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f"{k}.npy.partial"
    with open(tmp, "wb") as f:
        np.save(f, np.asarray(row, dtype=np.int64), allow_pickle=False)
    tmp.replace(folder / f"{k}.npy")


def read_mt_checkpoints(
    path: str | os.PathLike[str], seed: int
) -> dict[int, np.ndarray[Any, Any]]:
    """Return the saved states of ``MT19937(seed).jumped(k)`` in a store, by k.

    Files that do not load as a (625,) int64 array are ignored, and nothing
    is ever unpickled.
    """
    out = {}
    folder = _folder(Path(path), seed)
    for f in folder.glob("*.npy") if folder.exists() else []:
        try:
            row = np.load(f, allow_pickle=False)
            k = int(f.stem)
        except (OSError, ValueError):
            continue
        if row.shape == (625,) and row.dtype == np.int64:
            out[k] = row
    return out
