"""Random access to ``MT19937(seed).jumped(k)``, bit for bit, without walking 0..k.

numpy's ``MT19937.jumped(1)`` applies a fixed polynomial ``p`` (``x**2**128``
mod the generator's characteristic polynomial ``chi``) to the state by
Horner's rule, so ``jumped(k)`` costs k such applications. Here the powers
``p**d`` are precomputed (``d = 2**i`` for i < 32, and ``d = 1..16``), reduced
modulo ``x * chi`` -- not ``chi`` alone, so that the 31 unused low bits of the
state's first word come out exactly as numpy's chain leaves them -- and shipped
in ``simstudy/rng/data/mt19937_jumps.npz``. Stream k is then at most a few
polynomial applications away from the seed (set bits of k) or from the
stream computed last.

One application, vectorised: the state is read as a window of 624 words
``W`` of the generator's word sequence ``x`` (``x[:624] = W``, the rest by
the MT recurrence, made by numpy's own MT19937), and
``p(A) W = XOR over set bits i of p of x[i : i + 624]``. Bits are taken
four at a time from a 16-row table of XORs of shifted copies of ``x``
(Haramoto et al. 2008's sliding window, in numpy), ~1.3 ms here. Tempering
is GF(2)-linear, so the XORs run over numpy's tempered outputs and only the
624-word result is untempered.

``make_tables`` recomputes the shipped file from scratch (Berlekamp-Massey
on an MT19937 bit sequence gives ``chi``); tests/test_mtjump.py checks the
file against it and every result against numpy's own ``jumped``.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np
from numpy.random import MT19937

__all__ = ["MTJumper", "make_tables"]

_N = 624  # words in the state
_DEG = 19937  # degree of chi (the Mersenne exponent)
_NBYTES = (_DEG + 1 + 7) // 8  # a polynomial mod x*chi, packed little-endian
_SMALL = 16  # p**d shipped directly for d = 1.._SMALL
_POWERS = 32  # p**(2**i) shipped for i < _POWERS
_Q = 4  # bits per table lookup (even: windows then align to 64-bit words)
DATA = Path(__file__).resolve().parent / "data" / "mt19937_jumps.npz"

Array = np.ndarray[Any, Any]


def _untemper(y: Array) -> Array:
    """Invert MT19937's output tempering (uint32 in, uint32 out)."""
    y = y.astype(np.uint32)
    y ^= y >> np.uint32(18)
    y ^= (y << np.uint32(15)) & np.uint32(0xEFC60000)
    t = y.copy()
    for _ in range(4):
        t = y ^ ((t << np.uint32(7)) & np.uint32(0x9D2C5680))
    out: Array = t ^ (t >> np.uint32(11)) ^ (t >> np.uint32(22))
    return out


def _temper(x: Array) -> Array:
    """MT19937's output tempering (uint32 in, uint32 out)."""
    y = x ^ (x >> np.uint32(11))
    y ^= (y << np.uint32(7)) & np.uint32(0x9D2C5680)
    y ^= (y << np.uint32(15)) & np.uint32(0xEFC60000)
    out: Array = y ^ (y >> np.uint32(18))
    return out


_local = threading.local()  # per thread: a bit generator, work buffers


def _outputs(window: Array, length: int) -> Array:
    """The tempered outputs ``y[:length]`` of MT19937's word sequence ``x``
    with ``x[:624] = window`` (``y = temper(x)``, word by word)."""
    bg = getattr(_local, "bg", None)
    if bg is None:  # one per thread: its state is set, then drawn from
        bg = _local.bg = MT19937(0)
    bg.state = {
        "bit_generator": "MT19937",
        "state": {"key": window, "pos": _N},
    }
    y = np.empty(length, np.uint32)
    y[:_N] = _temper(window)
    y[_N:] = bg.random_raw(length - _N)
    return y


def _sequence(window: Array, length: int) -> Array:
    """The word sequence ``x[:length]`` of MT19937 with ``x[:624] = window``."""
    y = _outputs(window, length)
    return np.concatenate([window, _untemper(y[_N:])])


_PART = 128  # windows gathered at once (~320 KB: stays in a 512 KB L2 cache)


class _Poly:
    """A jump polynomial prepared for application: table lookups by offset
    (into this thread's ``_scratch`` buffers)."""

    def __init__(self, packed: Array) -> None:
        bits = np.unpackbits(packed, bitorder="little")
        groups = -(-len(bits) // _Q)
        bits = np.concatenate([bits, np.zeros(groups * _Q - len(bits), np.uint8)])
        values = (bits.reshape(groups, _Q).astype(np.int64) << np.arange(_Q)).sum(1)
        nz = np.flatnonzero(values)
        self.length = groups * _Q + _N + _Q
        self.width = (self.length - _Q) & ~1  # table columns, in 32-bit words
        # where each nonzero group's window starts in the flattened table, in
        # 64-bit words: row (the group's value) and offset (_Q/2 per group)
        self.starts = values[nz] * (self.width // 2) + nz * (_Q // 2)

    def apply(self, window: Array) -> Array:
        """Return ``p(A) window``: 624 uint32 words.

        Tempering is linear over GF(2) and the same for every word, so the
        XOR of shifted windows is taken over the tempered outputs ``y`` (as
        numpy gives them) and only the 624-word result is untempered.
        """
        x = _outputs(window, self.length)
        width = self.width
        table, windows, row = _scratch(width)
        for b in range(_Q):  # row v: XOR of x shifted by each set bit of v
            np.bitwise_xor(
                table[: 1 << b], x[b : b + width], out=table[1 << b : 2 << b]
            )
        out: Array = np.zeros(_N // 2, np.uint64)
        for s in range(0, len(self.starts), _PART):
            part = windows[self.starts[s : s + _PART]]  # rows: contiguous copies
            np.bitwise_xor.reduce(part, axis=0, out=row)
            out ^= row
        return _untemper(out.view(np.uint32))


def _scratch(width: int) -> tuple[Array, Array, Array]:
    """This thread's work buffers for ``_Poly.apply``: the lookup table, its
    312-word windows (a view) and one row. Allocated once per thread and
    reused (a fresh megabyte per call costs page faults that doubled the
    time); per thread, since numpy releases the GIL while filling them and
    two threads (the ``threads`` scheduler) would mix their tables."""
    got = getattr(_local, "buffers", None)
    if got is None or got[0].shape[1] != width:
        table = np.zeros((1 << _Q, width), np.uint32)
        windows = np.lib.stride_tricks.sliding_window_view(
            table.view(np.uint64).reshape(-1), _N // 2
        )
        got = _local.buffers = (table, windows, np.empty(_N // 2, np.uint64))
    return got


class _Tables:
    """The shipped polynomials, prepared on first use."""

    def __init__(self, path: Path = DATA) -> None:
        with np.load(path, allow_pickle=False) as f:
            self.small = f["small"]  # row d-1: p**d mod x*chi
            self.powers = f["powers"]  # row i: p**(2**i) mod x*chi
            self.step = int(f["step"])  # degree of p: pos advance per jump
        self._prepared: dict[tuple[str, int], _Poly] = {}

    def poly(self, kind: str, i: int) -> _Poly:
        got = self._prepared.get((kind, i))
        if got is None:
            rows = self.small if kind == "small" else self.powers
            got = self._prepared[(kind, i)] = _Poly(rows[i])
        return got

    def plan(self, d: int) -> list[_Poly]:
        """The polynomials whose product is ``p**d`` (few: set bits of d)."""
        out = []
        low, high = d % _SMALL, d // _SMALL
        if low:
            out.append(self.poly("small", low - 1))
        i = 4  # _SMALL == 2**4
        while high:
            if high & 1:
                n = 1 << max(0, i - (_POWERS - 1))  # beyond the table: repeat
                out += [self.poly("powers", min(i, _POWERS - 1))] * n
            high >>= 1
            i += 1
        return out


_tables: list[_Tables] = []


def _get_tables() -> _Tables:
    if not _tables:
        _tables.append(_Tables())
    return _tables[0]


def _cost(d: int) -> int:
    """Polynomial applications to jump ``d`` streams ahead."""
    return (d % _SMALL > 0) + (d // _SMALL).bit_count()


class MTJumper:
    """The states of ``MT19937(seed).jumped(k)`` for any k, in any order.

    Each stream is reached from the seed or from the stream asked last,
    whichever is fewer polynomial applications away: consecutive streams
    cost one application (~1.5 ms), any k < 2**32 at most 29.
    """

    def __init__(self, seed: int) -> None:
        st = MT19937(seed).state["state"]
        self.origin = (0, np.asarray(st["key"], np.uint32), int(st["pos"]))
        self.last = self.origin

    def state(self, k: int) -> tuple[Array, int]:
        """Return the (key, pos) of stream ``k``: 624 uint32 words and a position."""
        if k < 0:
            raise ValueError(f"stream index must be >= 0, got {k}")
        if k == 0:
            return self.origin[1].copy(), self.origin[2]
        k0, key, pos = self.last
        if k < k0 or _cost(k - k0) > _cost(k):
            k0, key, pos = self.origin
        if k == k0:
            return key.copy(), pos
        pos = 0 if pos >= _N else pos  # numpy's jump reads pos 624 as 0
        d = k - k0
        if d == 1:  # numpy's own single jump is a little faster
            bg = MT19937(0)
            bg.state = {"bit_generator": "MT19937", "state": {"key": key, "pos": pos}}
            st = bg.jumped(1).state["state"]
            key, pos = np.asarray(st["key"], np.uint32), int(st["pos"])
        else:
            tables = _get_tables()
            window = np.roll(key, -pos)
            for poly in tables.plan(d):
                window = poly.apply(window)
            pos = (pos + d * tables.step) % _N
            key = np.roll(window, pos)
        self.last = (k, key, pos)
        return key.copy(), pos

    def row(self, k: int) -> Array:
        """The state of stream ``k`` as a (625,) int64 row: key words, then pos."""
        key, pos = self.state(k)
        return np.append(key.astype(np.int64), pos)


# ---- recomputing the shipped tables -------------------------------------------


def _charpoly() -> int:
    """The characteristic polynomial of MT19937 (bit i = coefficient of x**i),
    by Berlekamp-Massey on the low bit of its word sequence."""
    x = _sequence(np.asarray(MT19937(1).state["state"]["key"], np.uint32), 3 * _DEG)
    bits = (x[_N : _N + 2 * _DEG + 64] & 1).tolist()
    c, b, length, m, recent = 1, 1, 0, 1, 0
    mask = (1 << (_DEG + 64)) - 1
    for n, s in enumerate(bits):
        recent = ((recent << 1) | int(s)) & mask  # bit i = s[n - i]
        if (c & recent).bit_count() & 1:
            c, t = c ^ (b << m), c
            if 2 * length <= n:
                length, b, m = n + 1 - length, t, 1
                continue
        m += 1
    if length != _DEG:
        raise RuntimeError(f"Berlekamp-Massey found degree {length}, not {_DEG}")
    return int(format(c, f"0{_DEG + 1}b")[::-1], 2)  # x**L * C(1/x)


def _mod(a: int, m: int) -> int:
    dm = m.bit_length() - 1
    while (shift := a.bit_length() - 1 - dm) >= 0:
        a ^= m << shift
    return a


def _mulmod(a: int, b: int, m: int) -> int:
    out = 0
    while b:
        low = b & -b
        out ^= a << (low.bit_length() - 1)
        b ^= low
    return _mod(out, m)


def _pack(p: int) -> Array:
    return np.frombuffer(p.to_bytes(_NBYTES, "little"), np.uint8).copy()


def make_tables(path: Path | None = None) -> dict[str, Array]:
    """Recompute the jump polynomials (a few seconds); save them to ``path``."""
    chi = _charpoly()
    p = 2  # the polynomial x
    for _ in range(128):
        p = _mulmod(p, p, chi)  # x**2**128 mod chi: numpy's jump polynomial
    modulus = chi << 1  # x * chi
    powers, q = [], p
    for _ in range(_POWERS):
        powers.append(_pack(q))
        q = _mulmod(q, q, modulus)
    small, q = [_pack(p)], p
    for _ in range(_SMALL - 1):
        q = _mulmod(q, p, modulus)
        small.append(_pack(q))
    out = {
        "small": np.stack(small),
        "powers": np.stack(powers),
        "step": np.asarray(p.bit_length() - 1),
    }
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(path, **out)  # type: ignore[arg-type]
    return out


if __name__ == "__main__":  # python -m simstudy.rng.mtjump: rewrite the shipped file
    make_tables(DATA)
