"""Stream schemes: point/method keys and the numpy Generator of every task.

See docs/streams.md for the public recipe; tests/data/golden_streams.json
pins known answers.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
from numpy.random import MT19937, PCG64, Generator

from simstudy.rng.mtjump import MTJumper

__all__ = [
    "Reseeder",
    "jump_index",
    "key",
    "mt19937_row",
    "pcg64_base",
    "spawn_states",
    "spawn_words",
]

# numpy's SeedSequence constants (numpy/random/bit_generator.pyx)
_MASK32 = 0xFFFFFFFF
_INIT_A, _MULT_A = 0x43B0D7E5, 0x931E8875
_INIT_B, _MULT_B = 0x8B51F9DD, 0x58F38DED
_MIX_MULT_L, _MIX_MULT_R = 0xCA01F9DD, 0x4973F715
_POOL_SIZE = 4
# PCG64's 128-bit LCG multiplier (numpy/random/src/pcg64/pcg64.h)
_PCG_MULT = 0x2360ED051FC65DA44385DF649FCCF645
_MASK128 = (1 << 128) - 1
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


def _words(n: int) -> list[int]:
    """Split a non-negative int into 32-bit words, least significant first."""
    if n == 0:
        return [0]
    out = []
    while n > 0:
        out.append(n & _MASK32)
        n >>= 32
    return out


def spawn_words(
    seed: int,
    before: tuple[int, ...],
    replicates: np.ndarray[Any, Any],
    after: tuple[int, ...] = (),
    *,
    words: int,
) -> np.ndarray[Any, Any]:
    """Return ``generate_state(words, np.uint32)`` of a block of SeedSequences.

    Row ``i`` equals
    ``SeedSequence(seed, spawn_key=(*before, replicates[i], *after))
    .generate_state(words, np.uint32)``, bit for bit: numpy's SeedSequence
    hash redone in vectorised uint32 arithmetic over the block.
    tests/test_streams.py checks it against numpy itself.
    """
    reps = np.asarray(replicates, dtype=np.uint32)

    def col(word: int) -> np.ndarray[Any, Any]:
        return np.full(reps.shape, word, dtype=np.uint32)

    run = _words(seed)
    run += [0] * (_POOL_SIZE - len(run))  # padded because the spawn key is not empty
    entropy = [col(w) for w in run]
    entropy += [col(w) for k in before for w in _words(k)]
    entropy.append(reps)
    entropy += [col(w) for k in after for w in _words(k)]
    hashmix = _hasher(_INIT_A, _MULT_A)

    def mix(x: np.ndarray[Any, Any], y: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
        result: np.ndarray[Any, Any] = np.uint32(_MIX_MULT_L) * x
        result -= np.uint32(_MIX_MULT_R) * y
        mixed: np.ndarray[Any, Any] = result ^ (result >> np.uint32(16))
        return mixed

    pool = [hashmix(entropy[i]) for i in range(_POOL_SIZE)]
    for src in range(_POOL_SIZE):
        for dst in range(_POOL_SIZE):
            if src != dst:
                pool[dst] = mix(pool[dst], hashmix(pool[src]))
    for src in range(_POOL_SIZE, len(entropy)):
        for dst in range(_POOL_SIZE):
            pool[dst] = mix(pool[dst], hashmix(entropy[src]))
    # generate_state: words cycling over the pool
    draw = _hasher(_INIT_B, _MULT_B)
    out = np.empty((len(reps), words), dtype=np.uint32)
    for i in range(words):
        out[:, i] = draw(pool[i % _POOL_SIZE])
    return out


def _hasher(
    init: int, mult: int
) -> Callable[[np.ndarray[Any, Any]], np.ndarray[Any, Any]]:
    """SeedSequence's hash, its multiplier advancing with each call: from
    ``_INIT_A`` it mixes entropy into the pool, from ``_INIT_B`` it draws
    the state out of it."""
    hash_const = init

    def hashed(value: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
        nonlocal hash_const
        value = value ^ np.uint32(hash_const)
        hash_const = (hash_const * mult) & _MASK32
        value = value * np.uint32(hash_const)
        return value ^ (value >> np.uint32(16))

    return hashed


def spawn_states(
    seed: int,
    before: tuple[int, ...],
    replicates: np.ndarray[Any, Any],
    after: tuple[int, ...] = (),
) -> list[tuple[int, int]]:
    """Return the PCG64 ``(state, inc)`` of a block of spawn-scheme streams.

    Entry ``i`` is the state of
    ``PCG64(SeedSequence(seed, spawn_key=(*before, replicates[i], *after)))``,
    bit for bit (~1 µs a stream instead of ~11 µs): PCG64 seeds itself from
    ``generate_state(4, np.uint64)``, i.e. 8 words (``spawn_words``).
    """
    w = spawn_words(seed, before, replicates, after, words=8).astype(np.uint64)
    w64 = [w[:, 2 * j] | (w[:, 2 * j + 1] << np.uint64(32)) for j in range(4)]
    out: list[tuple[int, int]] = []
    for s_hi, s_lo, i_hi, i_lo in zip(*(c.tolist() for c in w64), strict=True):
        # pcg_setseq_128_srandom_r: inc = seq << 1 | 1; state = (inc + init) * a + inc
        inc = ((((i_hi << 64) | i_lo) << 1) | 1) & _MASK128
        state = ((inc + ((s_hi << 64) | s_lo)) * _PCG_MULT + inc) & _MASK128
        out.append((state, inc))
    return out


class Reseeder:
    """Hand out Generators by resetting one reused bit generator's state.

    Building a PCG64 or MT19937 costs ~7 µs; setting a state costs ~1.4 µs.
    Each ``generator`` call invalidates the previous Generator of this
    Reseeder, so a batch keeps one Reseeder per concurrently live stream.
    """

    def __init__(self) -> None:
        self.pcg = PCG64(0)
        self.mt: MT19937 | None = None

    def pcg64(self, state: tuple[int, int]) -> Generator:
        """Return a Generator at PCG64 ``(state, inc)``."""
        self.pcg.state = {
            "bit_generator": "PCG64",
            "state": {"state": state[0], "inc": state[1]},
            "has_uint32": 0,
            "uinteger": 0,
        }
        return Generator(self.pcg)

    def pcg64_jumped(self, base: Any, k: int) -> Generator:
        """Return ``Generator(PCG64(seed).jumped(k))`` from the seed's ``base`` state."""
        self.pcg.state = base
        self.pcg.advance(_PCG64_JUMP_STEP * k)
        return Generator(self.pcg)

    def mt19937(self, row: np.ndarray[Any, Any]) -> Generator:
        """Return a Generator on an MT19937 state row (624 key words + position)."""
        if self.mt is None:
            self.mt = MT19937(0)
        self.mt.state = _mt_state(row)
        return Generator(self.mt)


_pcg_cache: dict[int, Any] = {}


def pcg64_base(seed: int) -> Any:
    """Return the state of ``PCG64(seed)`` (cached), the origin of its jumps."""
    base = _pcg_cache.get(seed)
    if base is None:
        base = _pcg_cache[seed] = PCG64(seed).state
    return base


def jump_index(p: int, r: int, slot: int, *, replicates: int, methods: int) -> int:
    """Return the jump count of a stream slot (0 = data, 1 + m = method m)."""
    return (p * replicates + r) * (methods + 1) + slot


def _mt_state(row: np.ndarray[Any, Any]) -> Any:
    return {
        "bit_generator": "MT19937",
        "state": {"key": row[:624].astype(np.uint32), "pos": int(row[624])},
    }


_jumpers: dict[int, MTJumper] = {}


def mt19937_row(seed: int, k: int) -> np.ndarray[Any, Any]:
    """Return the state row of ``MT19937(seed).jumped(k)``: 624 key words, then pos.

    Random access (``simstudy.rng.mtjump``): a few ms for any k < 2**32, ~1.5 ms
    from the stream asked last in this process. Bit for bit numpy's state.
    """
    jumper = _jumpers.get(seed)
    if jumper is None:
        jumper = _jumpers[seed] = MTJumper(seed)
    return jumper.row(k)
