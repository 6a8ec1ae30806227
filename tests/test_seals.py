"""Seals tie each chunk's checksum to its position (issue 19.5).

A chunk that is whole but sits at another position (swapped or copied) is
named; a run killed between sealing and replacing a chunk, a torn log line
and a store made before seals raise no false alarm.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import zarr
from hypothesis import given, settings
from hypothesis import strategies as st

import simstudy
import simstudy.store.layout
from simstudy.errors import StoreError
from simstudy.store import seals
from simstudy.store.chunks import ChunkedArray
from simstudy.store.health import check_readable
from simstudy.store.layout import CHUNK_KEYS, COMPRESSORS


def _array(tmp: Path, name: str = "estimate") -> ChunkedArray:
    root = zarr.open_group(str(tmp / "s.zarr"), mode="a", zarr_format=3)
    arr = root.create_array(
        name,
        shape=(4, 2),
        chunks=(1, 2),
        dtype="float64",
        fill_value=np.nan,
        compressors=list(COMPRESSORS),
        chunk_key_encoding=CHUNK_KEYS,  # type: ignore[arg-type]
    )
    return ChunkedArray(tmp / "s.zarr", name, arr)


def _problems(array: ChunkedArray) -> dict[str, str]:
    sealed = seals.Seals(array.dir)
    out = {}
    for f in array.chunk_files():
        why = array.problem(f, sealed)
        if why is not None:
            out[f.name] = why
    return out


def test_a_swap_names_where_each_chunk_was_written(tmp_path):
    array = _array(tmp_path)
    for i in range(4):
        array.write((i, 0), np.full((1, 2), float(i)))
    a, b = array.path((1, 0)), array.path((3, 0))
    blob = a.read_bytes()
    a.write_bytes(b.read_bytes())
    b.write_bytes(blob)
    assert _problems(array) == {
        "c.1.0": "holds the chunk written at c.3.0: swapped or copied chunk files",
        "c.3.0": "holds the chunk written at c.1.0: swapped or copied chunk files",
    }


def test_an_old_version_of_a_chunk_put_back_is_named(tmp_path):
    array = _array(tmp_path)
    array.write((0, 0), np.zeros((1, 2)))
    old = array.path((0, 0)).read_bytes()
    array.write((0, 0), np.ones((1, 2)))
    array.write((0, 0), np.full((1, 2), 2.0))
    array.path((0, 0)).write_bytes(old)  # restored from an old backup
    assert _problems(array) == {
        "c.0.0": "not the chunk written at this position (its checksum differs)"
    }


def test_a_kill_between_seal_and_rename_leaves_the_old_chunk_valid(tmp_path):
    array = _array(tmp_path)
    array.write((2, 0), np.zeros((1, 2)))
    new = np.ones((1, 2))
    path = array.path((2, 0))
    seals.append(array.dir, [(path, seals.crc_of(array.encode(new)))])
    assert _problems(array) == {}  # the rename never happened
    array.replace(path, array.encode(new))
    assert _problems(array) == {}


def test_a_torn_last_line_is_skipped_and_the_next_append_starts_afresh(tmp_path):
    array = _array(tmp_path)
    array.write((0, 0), np.zeros((1, 2)))
    log = seals.log_path(array.dir)
    with open(log, "ab") as f:
        f.write(b"c.1.0 - 12")  # a kill or a full disk mid-append
    assert _problems(array) == {}
    array.write((1, 0), np.ones((1, 2)))
    lines = log.read_text().splitlines()
    assert lines[1] == "c.1.0 - 12"
    assert lines[2].startswith("c.1.0 - ")
    assert seals.Seals(array.dir).last["c.1.0"][1] == seals.crc_of(
        array.path((1, 0)).read_bytes()
    )
    assert _problems(array) == {}


def test_positions_without_a_seal_are_not_judged(tmp_path):
    """A store written before seals (or by --prune's copy): no log."""
    array = _array(tmp_path)
    array.write((0, 0), np.zeros((1, 2)))
    array.write((1, 0), np.ones((1, 2)))
    seals.log_path(array.dir).unlink()
    shutil_swap(array.path((0, 0)), array.path((1, 0)))
    assert _problems(array) == {}


def shutil_swap(a: Path, b: Path) -> None:
    blob = a.read_bytes()
    a.write_bytes(b.read_bytes())
    b.write_bytes(blob)


@settings(max_examples=60, deadline=None)
@given(
    writes=st.lists(
        st.tuples(st.integers(0, 3), st.integers(0, 5), st.booleans()),
        min_size=1,
        max_size=12,
    ),
    swap=st.tuples(st.integers(0, 3), st.integers(0, 3)),
)
def test_any_history_of_writes_and_kills_passes_and_swaps_are_caught(
    tmp_path_factory, writes, swap
):
    """Invariant: after any sequence of chunk writes, some killed between
    seal and rename, every chunk passes. After exchanging two chunks, a
    position is named exactly when the bytes it got are neither those of
    its last sealed write nor those that write was to replace (the one
    state a kill may leave: the model below)."""
    array = _array(tmp_path_factory.mktemp("seals"))
    held: dict[int, bytes | None] = {}  # the model: what each file holds
    last: dict[int, tuple[bytes | None, bytes]] = {}  # its last seal
    for row, value, killed in writes:
        blob = array.encode(np.full((1, 2), float(value)))
        path = array.path((row, 0))
        last[row] = (held.get(row), blob)
        seals.append(array.dir, [(path, seals.crc_of(blob))])
        if not killed:
            array.replace(path, blob)
            held[row] = blob
    assert _problems(array) == {}
    a, b = swap
    pa, pb = array.path((a, 0)), array.path((b, 0))
    if a != b and a in held and b in held:
        shutil_swap(pa, pb)
        expected = {
            p.name
            for row, p, got in ((a, pa, held[b]), (b, pb, held[a]))
            if got not in last[row]
        }
        assert set(_problems(array)) == expected
        if held[a] != held[b] and last[a] == (None, held[a]):
            assert pa.name in expected  # written once: a swap is always caught


PRUNED = """
import numpy as np
from simstudy import Study

study = Study("pr", factors={{"n": {levels}}}, replicates=6, seed=3)

@study.data
def gen(rng, n):
    return rng.standard_normal(n)

@study.method
def mean(x):
    return {{"estimate": float(np.mean(x))}}
"""


def test_a_pruned_store_is_sealed_too(tmp_path, write_study, monkeypatch):
    monkeypatch.setattr(simstudy.store.layout, "CHUNK_REPLICATES", 2)
    store = tmp_path / "s.zarr"
    simstudy.run(
        write_study(PRUNED.format(levels=[5, 10, 20])),
        store=store,
        scheduler="synchronous",
    )
    path = write_study(PRUNED.format(levels=[5, 20]))
    simstudy.run(path, store=store, scheduler="synchronous", prune=True)
    check_readable(store)
    shutil_swap(store / "estimate" / "c.0.0.0", store / "estimate" / "c.1.2.0")
    with pytest.raises(StoreError, match=r"holds the chunk written at c\.1\.2\.0"):
        check_readable(store)
    report = simstudy.run(path, store=store, scheduler="synchronous")
    assert report.repaired
    check_readable(store)
