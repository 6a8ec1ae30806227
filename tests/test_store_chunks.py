"""chunkio writes the bytes zarr writes, and reads zarr's chunks back."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zarr
from zarr.codecs import Crc32cCodec, ZstdCodec

from simstudy.store.chunks import ChunkCache, ChunkedArray, CorruptChunk


def _array(path: Path, name: str, dtype: str, fill: Any, shape: tuple[int, ...]) -> Any:
    group = zarr.open_group(path, mode="a")
    return group.create_array(
        name,
        shape=(2, 10, 3, *shape),
        chunks=(1, 4, 2, *shape),
        dtype=dtype,
        fill_value=fill,
        compressors=[ZstdCodec(level=1), Crc32cCodec()],
    )


def _chunk_files(root: Path) -> list[Path]:
    return sorted(
        f.relative_to(root) for f in (root / "x" / "c").rglob("*") if f.is_file()
    )


@pytest.mark.parametrize(
    ("dtype", "fill", "shape"),
    [("float64", np.nan, ()), ("int8", 0, ()), ("int16", -1, ()), ("float64", 0, (3,))],
)
def test_chunk_bytes_equal_zarrs(
    tmp_path: Path, dtype: str, fill: Any, shape: Any
) -> None:
    rng = np.random.default_rng(0)
    values = (rng.random((2, 10, 3, *shape)) * 100).astype(dtype)
    theirs = _array(tmp_path / "a.zarr", "x", dtype, fill, shape)
    theirs[...] = values
    ours = _array(tmp_path / "b.zarr", "x", dtype, fill, shape)
    cache = ChunkCache()
    arr = ChunkedArray(tmp_path / "b.zarr", "x", ours)
    for p in range(2):
        # two writes per chunk row, methods in two groups, as batches do
        cache.put(arr, (p,), 0, 6, np.array([0, 2]), values[p, 0:6][:, [0, 2]])
        cache.put(arr, (p,), 6, 10, np.array([0, 2]), values[p, 6:10][:, [0, 2]])
        cache.put(arr, (p,), 0, 10, np.array([1]), values[p][:, [1]])
    assert not (tmp_path / "b.zarr" / "x" / "c").exists()  # nothing written yet
    cache.flush(list(cache.dirty))
    assert not cache.dirty
    np.testing.assert_array_equal(np.asarray(ours[...]), values)
    files = _chunk_files(tmp_path / "a.zarr")
    assert len(files) == 2 * 3 * 2  # every chunk was written by both
    assert files == _chunk_files(tmp_path / "b.zarr")
    for f in files:
        assert (tmp_path / "a.zarr" / f).read_bytes() == (
            tmp_path / "b.zarr" / f
        ).read_bytes()
    # and zarr's chunks read back through chunkio
    back = ChunkedArray(tmp_path / "a.zarr", "x", theirs)
    np.testing.assert_array_equal(
        back.read((1, 2, 1, *([0] * len(shape))))[0, :2, :1], values[1, 8:10, 2:3]
    )


def test_a_damaged_chunk_is_reported(tmp_path: Path) -> None:
    z = _array(tmp_path / "a.zarr", "x", "float64", np.nan, ())
    z[...] = 1.0
    arr = ChunkedArray(tmp_path / "a.zarr", "x", z)
    path = arr.path((0, 0, 0))
    blob = path.read_bytes()
    path.write_bytes(blob[:-7])
    with pytest.raises(CorruptChunk, match="crc32c"):
        arr.read((0, 0, 0))
    path.write_bytes(b"")
    with pytest.raises(CorruptChunk):
        arr.read((0, 0, 0))
    assert (arr.read((1, 1, 1))[0, :, 0] == 1.0).all()  # other chunks still read


def test_the_cache_stays_within_its_budget(tmp_path: Path) -> None:
    z = _array(tmp_path / "a.zarr", "x", "float64", np.nan, ())
    arr = ChunkedArray(tmp_path / "a.zarr", "x", z)
    cache = ChunkCache(budget=2 * 4 * 2 * 8)  # two chunks
    for r in range(10):
        cache.put(arr, (0,), r, r + 1, np.array([0]), np.full((1, 1), float(r)))
        cache.flush(list(cache.dirty))
        assert cache.used <= cache.budget
    np.testing.assert_array_equal(np.asarray(z[0, :, 0]), np.arange(10.0))


def test_a_chunk_larger_than_the_budget_is_kept_until_written(
    tmp_path: Path,
) -> None:
    """A store of large array outputs (chunks over the cache budget) lost the
    chunk being filled and failed at flush with KeyError."""
    z = _array(tmp_path / "a.zarr", "x", "float64", np.nan, ())
    arr = ChunkedArray(tmp_path / "a.zarr", "x", z)
    cache = ChunkCache(budget=1)  # smaller than any chunk
    for r in range(10):
        cache.put(arr, (0,), r, r + 1, np.array([0]), np.full((1, 1), float(r)))
    cache.flush(list(cache.dirty))
    np.testing.assert_array_equal(np.asarray(z[0, :, 0]), np.arange(10.0))
