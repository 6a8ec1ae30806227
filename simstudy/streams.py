"""Stream schemes: point/method keys and the numpy Generator of every task.

Layers: imports only ``simstudy.errors`` (and numpy). See docs/streams.md for
the public recipe; tests/data/golden_streams.json pins known answers.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

import numpy as np
from numpy.random import MT19937, PCG64, Generator, SeedSequence

__all__ = [
    "MTChain",
    "data_generator",
    "jump_index",
    "key",
    "method_generator",
    "pcg64_jumped",
]

# numpy's PCG64.jump_inplace step: (phi - 1) * 2**128, rounded to odd.
_PCG64_JUMP_STEP = 0x9E3779B97F4A7C15F39CC0605CEDC835


def key(obj: Any) -> int:
    """Return the 64-bit stream key of a plain JSON-able value.

    Examples
    --------
    >>> key("median")
    13735692919293469785
    """
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"))
    digest = hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "little")


def point_key(point: Mapping[str, Any]) -> int:
    """Return the key of a design point (factor name -> level)."""
    return key(dict(point))


def data_generator(seed: int, pkey: int, replicate: int) -> Generator:
    """Return the data stream of (point, replicate) under the spawn scheme."""
    return Generator(PCG64(SeedSequence(seed, spawn_key=(pkey, replicate))))


def method_generator(seed: int, pkey: int, replicate: int, mkey: int) -> Generator:
    """Return the method stream of (point, replicate, method) under spawn."""
    return Generator(PCG64(SeedSequence(seed, spawn_key=(pkey, replicate, mkey))))


def jump_index(p: int, r: int, slot: int, *, replicates: int, methods: int) -> int:
    """Return the jump count of a stream slot (0 = data, 1 + m = method m)."""
    return (p * replicates + r) * (methods + 1) + slot


class _PCG64Base:
    """Cache the seeded PCG64 state so each jumped stream costs one advance."""

    def __init__(self, seed: int) -> None:
        self.state = PCG64(seed).state

    def jumped(self, k: int) -> PCG64:
        bg = PCG64(0)
        bg.state = self.state
        bg.advance(_PCG64_JUMP_STEP * k)
        return bg


_pcg_cache: dict[int, _PCG64Base] = {}


def pcg64_jumped(seed: int, k: int) -> Generator:
    """Return ``Generator(PCG64(seed).jumped(k))`` without rebuilding from entropy."""
    base = _pcg_cache.get(seed)
    if base is None:
        base = _pcg_cache[seed] = _PCG64Base(seed)
    return Generator(base.jumped(k))


def mt_generator(state: np.ndarray[Any, Any]) -> Generator:
    """Return a Generator on an MT19937 state row (624 key words + position)."""
    bg = MT19937(0)
    bg.state = {
        "bit_generator": "MT19937",
        "state": {"key": state[:624].astype(np.uint32), "pos": int(state[624])},
    }
    return Generator(bg)


class MTChain:
    """Walk ``MT19937(seed).jumped(k)`` forward by chaining single jumps.

    ``MT19937.jumped(k)`` costs O(k) (about 2 ms per unit), so streams are
    derived in increasing order from the previous one, never from scratch.
    """

    def __init__(self, seed: int) -> None:
        self.k = 0
        self.bg = MT19937(seed)

    def states(self, ks: list[int]) -> np.ndarray[Any, Any]:
        """Return the states of streams ``ks`` (ascending, >= the last asked)."""
        out = np.empty((len(ks), 625), dtype=np.int64)
        for i, k in enumerate(ks):
            if k < self.k:
                raise ValueError(f"MTChain moves forward only ({k} < {self.k})")
            while self.k < k:
                self.bg = self.bg.jumped(1)
                self.k += 1
            st = self.bg.state["state"]
            out[i, :624] = st["key"]
            out[i, 624] = st["pos"]
        return out
