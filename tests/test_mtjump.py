"""Known answers for random access to mt19937-jump streams (simstudy.rng.mtjump).

Every state must equal numpy's ``MT19937(seed).jumped(k)`` bit for bit: the
624 key words (the unused low bits of the first word included) and ``pos``.
"""

from __future__ import annotations

import hashlib
import time
from typing import Any

import numpy as np
import pytest
from numpy.random import MT19937, Generator

from simstudy.rng import mtjump
from simstudy.rng.streams import Reseeder, mt19937_row


def _row(bg: MT19937) -> np.ndarray[Any, Any]:
    st = bg.state["state"]
    return np.append(np.asarray(st["key"], dtype=np.int64), st["pos"])


@pytest.mark.parametrize("seed", [11, 2026, 2**40 + 3])
def test_states_equal_numpy_jumped_in_any_order(seed: int) -> None:
    jumper = mtjump.MTJumper(seed)
    for k in [0, 1, 2, 3, 7, 16, 17, 33, 100, 5, 4, 0, 18]:  # forward, back, repeat
        np.testing.assert_array_equal(jumper.row(k), _row(MT19937(seed).jumped(k)))


def test_first_draws_equal_numpy() -> None:
    for k in (0, 1, 2, 3, 7):
        got = Reseeder().mt19937(mt19937_row(5, k)).random(8)
        assert got.tobytes() == Generator(MT19937(5).jumped(k)).random(8).tobytes()


# numpy's own MT19937(seed).jumped(k), computed once (~6 s of chained jumps)
GOLDEN = {
    (2026, 4095): (
        "8f2aa2687a230de80c5742a7735db620245f64cc715539983ef81f2e066e4a69",
        [0.8954705096766493, 0.6409894969950074, 0.616271922049647],
    ),
    (7, 1500): (
        "db29844cb099cb10f019e3bd1a30c9a91a2876520fe92c1992316a80f19de56a",
        [0.6050945816929396, 0.6846888873684266, 0.3682348956608702],
    ),
}


@pytest.mark.parametrize(("seed", "k"), list(GOLDEN))
def test_golden_far_streams(seed: int, k: int) -> None:
    digest, draws = GOLDEN[(seed, k)]
    row = mtjump.MTJumper(seed).row(k)
    assert hashlib.sha256(row.tobytes()).hexdigest() == digest
    assert Reseeder().mt19937(row).random(3).tolist() == draws


@pytest.mark.parametrize(
    ("a", "b"), [(2**20 + 5, 3), (4095, 2**20 + 5), (2**31 + 12345, 2**31 - 99)]
)
def test_jumps_compose(a: int, b: int) -> None:
    """jump(a) then b more equals jump(a + b) reached from the seed; beyond
    the table (k >= 2**32) too."""
    walk = mtjump.MTJumper(9)
    walk.row(a)
    np.testing.assert_array_equal(walk.row(a + b), mtjump.MTJumper(9).row(a + b))


def test_any_stream_below_2_to_32_is_set_up_without_jumping_k_times() -> None:
    """The farthest stream costs 29 table applications, not 2**32 - 1 jumps
    (~2 ms each: months); its speed is measured in benchmarks/throughput.py.
    The bound only tells the two apart on a loaded machine."""
    t0 = time.perf_counter()
    mtjump.MTJumper(3).row(2**32 - 1)  # the most set bits: 29 applications
    assert time.perf_counter() - t0 <= 30


def test_shipped_tables_are_numpys_jump_polynomial_and_its_powers() -> None:
    chi = mtjump._charpoly()
    p = 2
    for _ in range(128):
        p = mtjump._mulmod(p, p, chi)
    t = mtjump._Tables()
    assert t.step == p.bit_length() - 1 == 19933

    def poly(row: np.ndarray[Any, Any]) -> int:
        return int.from_bytes(row.tobytes(), "little")

    assert poly(t.small[0]) == poly(t.powers[0]) == p
    modulus = chi << 1
    for i in (0, 5, 30):
        assert poly(t.powers[i + 1]) == mtjump._mulmod(
            poly(t.powers[i]), poly(t.powers[i]), modulus
        )
    assert poly(t.small[1]) == poly(t.powers[1])
    assert poly(t.small[15]) == poly(t.powers[4])
    assert poly(t.small[6]) == mtjump._mulmod(poly(t.small[5]), p, modulus)


def test_threads_jumping_at_once_get_numpys_states() -> None:
    """The ``threads`` scheduler runs batches side by side in one process:
    jumps in parallel threads (numpy releases the GIL while a polynomial is
    applied) must not share work buffers. They once did, and a property
    test caught a threads run whose mt19937-jump numbers differed."""
    from concurrent.futures import ThreadPoolExecutor

    seed = 7
    ks = [5, 17, 40, 77, 123, 300] * 4
    want = {k: MT19937(seed).jumped(k).state["state"]["key"] for k in set(ks)}

    def state(k: int) -> tuple[int, np.ndarray[Any, Any]]:
        # a fresh jumper per call: each walks from the seed through the
        # shared polynomials, so the threads overlap in apply()
        return k, mtjump.MTJumper(seed).state(k)[0]

    with ThreadPoolExecutor(max_workers=4) as pool:
        for _ in range(3):
            for k, key in pool.map(state, ks):
                np.testing.assert_array_equal(key, want[k])
