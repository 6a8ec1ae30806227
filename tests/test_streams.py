"""Known answers for simstudy.rng.streams (the recipe is in docs/streams.md)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from numpy.random import MT19937, PCG64, Generator, SeedSequence

from simstudy.rng.streams import (
    Reseeder,
    jump_index,
    key,
    mt19937_row,
    pcg64_base,
    point_key,
    spawn_states,
)
from tests.helpers import data_generator, method_generator, mt_generator


def pcg64_jumped(seed: int, k: int) -> Generator:
    """The engine's way to stream k of pcg64-jump: a state advance on a reused
    bit generator from the seed's cached base state."""
    return Reseeder().pcg64_jumped(pcg64_base(seed), k)


GOLDEN = json.loads(
    (Path(__file__).parent / "data" / "golden_streams.json").read_text()
)["schemes"]


def _state_row(bg: MT19937) -> np.ndarray[Any, Any]:
    st = bg.state["state"]
    return np.append(np.asarray(st["key"], dtype=np.int64), st["pos"])


# ---- keys -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("obj", "expected"),
    [
        ("median", 13735692919293469785),
        ("trimmed", 550629980927044984),
        ({"n": 100, "eps": 0.1}, 4891859490792294409),
        ({"n": 5, "mu": 0.0}, 4063726512637998272),
    ],
)
def test_key_known_values(obj: Any, expected: int) -> None:
    assert key(obj) == expected


def test_key_is_blake2b_of_canonical_json() -> None:
    text = '{"eps":0.1,"n":100}'
    digest = hashlib.blake2b(text.encode(), digest_size=8).digest()
    assert key({"n": 100, "eps": 0.1}) == int.from_bytes(digest, "little")
    assert key("median") == int.from_bytes(
        hashlib.blake2b(b'"median"', digest_size=8).digest(), "little"
    )


def test_point_key_ignores_factor_order_but_not_level_type() -> None:
    assert point_key({"n": 100, "eps": 0.1}) == point_key({"eps": 0.1, "n": 100})
    assert point_key({"n": 100}) != point_key({"n": 100.0})
    assert 0 <= point_key({"n": 100}) < 2**64


# ---- spawn ------------------------------------------------------------------


def _numpy_state(seed: int, spawn_key: tuple[int, ...]) -> tuple[int, int]:
    st = PCG64(SeedSequence(seed, spawn_key=spawn_key)).state["state"]
    return st["state"], st["inc"]


@given(
    seed=st.one_of(st.integers(0, 2**32), st.integers(0, 2**300)),
    before=st.lists(st.integers(0, 2**64 - 1), min_size=1, max_size=3),
    reps=st.lists(st.integers(0, 2**32 - 1), min_size=1, max_size=20),
    after=st.lists(st.integers(0, 2**64 - 1), max_size=2),
)
def test_spawn_states_equal_numpy_seedsequence(
    seed: int, before: list[int], reps: list[int], after: list[int]
) -> None:
    """The vectorised hash is numpy's SeedSequence + PCG64 seeding, bit for bit,
    for seeds of 1 to 10 words (pool padding and overflow words both)."""
    ours = spawn_states(seed, tuple(before), np.array(reps), tuple(after))
    assert ours == [_numpy_state(seed, (*before, r, *after)) for r in reps]


def test_reseeder_streams_draw_like_fresh_generators() -> None:
    pk, mk = point_key({"n": 5}), key("median")
    src = Reseeder()
    states = spawn_states(9, (pk,), np.arange(3), (mk,))
    for r, state in enumerate(states):
        ours = src.pcg64(state).standard_normal(5)
        expected = method_generator(9, pk, r, mk).standard_normal(5)
        np.testing.assert_array_equal(ours, expected)
    for k in (0, 1, 37):
        ours = src.pcg64_jumped(pcg64_base(4), k).random(3)
        np.testing.assert_array_equal(ours, Generator(PCG64(4).jumped(k)).random(3))
    row = _state_row(MT19937(3).jumped(2))
    expected = Generator(MT19937(3).jumped(2)).random(3)
    np.testing.assert_array_equal(src.mt19937(row).random(3), expected)


@pytest.mark.parametrize(("seed", "r"), [(2026, 17), (0, 0), (12345, 999)])
def test_data_generator_is_spawn_key_seedsequence(seed: int, r: int) -> None:
    pk = point_key({"n": 100, "eps": 0.1})
    ours = data_generator(seed, pk, r)
    ref = Generator(PCG64(SeedSequence(seed, spawn_key=(pk, r))))
    assert ours.bit_generator.state == ref.bit_generator.state
    assert ours.random(8).tobytes() == ref.random(8).tobytes()


def test_method_generator_is_spawn_key_seedsequence() -> None:
    pk, mk = point_key({"n": 5, "mu": 1.5}), key("noisy")
    ours = method_generator(7, pk, 3, mk)
    ref = Generator(PCG64(SeedSequence(7, spawn_key=(pk, 3, mk))))
    assert ours.random(8).tobytes() == ref.random(8).tobytes()
    assert data_generator(7, pk, 3).random() != method_generator(7, pk, 3, mk).random()


# ---- jump schemes -------------------------------------------------------------


def test_jump_index_formula() -> None:
    assert jump_index(0, 0, 0, replicates=3, methods=2) == 0
    assert jump_index(0, 0, 2, replicates=3, methods=2) == 2
    assert jump_index(0, 1, 0, replicates=3, methods=2) == 3
    assert jump_index(1, 0, 0, replicates=3, methods=2) == 9
    assert jump_index(3, 2, 1, replicates=3, methods=2) == ((3 * 3 + 2) * 3) + 1


@pytest.mark.parametrize("k", [0, 1, 2, 7, 1000, 2**40 + 3])
def test_pcg64_jumped_equals_numpy_jumped(k: int) -> None:
    ours = pcg64_jumped(2026, k)
    ref = Generator(PCG64(2026).jumped(k))
    assert ours.bit_generator.state == ref.bit_generator.state
    assert ours.random(8).tobytes() == ref.random(8).tobytes()


def test_pcg64_jumped_streams_are_fresh() -> None:
    a = pcg64_jumped(5, 3).random(4)
    b = pcg64_jumped(5, 3).random(4)  # the cache does not share state
    assert a.tobytes() == b.tobytes()


# ---- golden values ------------------------------------------------------------


@pytest.mark.parametrize("case", range(3))
def test_golden_spawn_streams(case: int) -> None:
    c = GOLDEN["spawn"]["streams"][case]
    pk, mk = point_key(c["point"]), key(c["method"])
    assert (pk, mk) == (c["point_key"], c["method_key"])
    data = data_generator(c["seed"], pk, c["replicate"]).random(5)
    meth = method_generator(c["seed"], pk, c["replicate"], mk).random(5)
    assert data.tolist() == c["data"]
    assert meth.tolist() == c["method_stream"]


@pytest.mark.parametrize("case", range(3))
def test_golden_pcg64_jump_streams(case: int) -> None:
    c = GOLDEN["pcg64-jump"]["streams"][case]
    kw = {"replicates": c["replicates"], "methods": c["methods"]}
    kd = jump_index(c["point"], c["replicate"], 0, **kw)
    km = jump_index(c["point"], c["replicate"], 1 + c["method"], **kw)
    assert (kd, km) == (c["data_jump"], c["method_jump"])
    assert pcg64_jumped(c["seed"], kd).random(5).tolist() == c["data"]
    assert pcg64_jumped(c["seed"], km).random(5).tolist() == c["method_stream"]


@pytest.mark.parametrize("case", range(3))
def test_golden_mt19937_jump_streams(case: int) -> None:
    c = GOLDEN["mt19937-jump"]["streams"][case]
    kw = {"replicates": c["replicates"], "methods": c["methods"]}
    kd = jump_index(c["point"], c["replicate"], 0, **kw)
    km = jump_index(c["point"], c["replicate"], 1 + c["method"], **kw)
    assert (kd, km) == (c["data_jump"], c["method_jump"])
    rows = [mt19937_row(c["seed"], kd), mt19937_row(c["seed"], km)]
    assert mt_generator(rows[0]).random(5).tolist() == c["data"]
    assert mt_generator(rows[1]).random(5).tolist() == c["method_stream"]
