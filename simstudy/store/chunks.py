"""Write and read the store's zarr v3 chunks directly: bytes, zstd, crc32c.

zarr's own write path hops through an event loop and a thread pool for
every chunk (about 1 ms a chunk here, several ms when workers load the
cores); encoding a chunk and renaming it into place costs ~0.1 ms. The bytes
are exactly what zarr writes for the codecs the store uses (the ``bytes``
codec little-endian, ``zstd`` without checksum, ``crc32c``), so zarr, xarray
and anyone else read them as usual; tests/test_store_chunks.py compares the bytes
with zarr's.
"""

from __future__ import annotations

import math
import os
import uuid
from collections import OrderedDict
from pathlib import Path
from typing import Any

import google_crc32c
import numpy as np
from numcodecs import Zstd

from simstudy.errors import StoreError
from simstudy.store import files, seals
from simstudy.store.crash import crash_point
from simstudy.store.seals import crc_of

__all__ = ["ChunkCache", "ChunkedArray", "CorruptChunk"]


class CorruptChunk(StoreError):
    """A chunk file whose checksum or length does not match its content."""


def _whole(blob: bytes) -> bool:
    """Whether a chunk file's bytes end with the crc32c of the rest."""
    body, crc = blob[:-4], blob[-4:]
    return len(blob) >= 4 and google_crc32c.value(body).to_bytes(4, "little") == crc


def _hint(chunk: Path) -> str:
    store = chunk.parent.parent
    return (
        f"run python -m simstudy run STUDY.py --store {store}: it recomputes "
        "what the chunk held"
    )


def _content_size(blob: bytes) -> int | None:
    """The decoded size a zstd frame's header declares (None: not given).

    RFC 8878, 3.1.1.1: magic, frame header descriptor, window descriptor
    (unless single segment), dictionary id, then the content size.
    """
    if len(blob) < 6 or blob[:4] != b"\x28\xb5\x2f\xfd":
        return None
    desc = blob[4]
    fcs_flag, single, dict_flag = desc >> 6, (desc >> 5) & 1, desc & 3
    width = (1 if single else 0, 2, 4, 8)[fcs_flag]
    if not width:
        return None
    at = 5 + (0 if single else 1) + (0, 1, 2, 4)[dict_flag]
    value = int.from_bytes(blob[at : at + width], "little")
    return value + 256 if width == 2 else value


class ChunkedArray:
    """One zarr v3 array of the store, addressed chunk by chunk."""

    def __init__(self, store: Path, name: str, array: Any) -> None:
        codecs = [c.to_dict() for c in array.metadata.codecs]
        names = [c["name"] for c in codecs]
        if names != ["bytes", "zstd", "crc32c"] or codecs[1]["configuration"].get(
            "checksum"
        ):
            raise StoreError(
                f"array {name!r} of {store} uses codecs {names}; simstudy writes "
                "only bytes + zstd + crc32c.",
                hint="was this store written by simstudy? see docs/store.md",
            )
        self.dir = store / name
        self.name = name
        self.shape: tuple[int, ...] = tuple(array.shape)
        self.chunks: tuple[int, ...] = tuple(array.chunks)
        self.dtype = np.dtype(array.dtype).newbyteorder("<")
        self.fill = array.fill_value
        self.zstd = Zstd(level=codecs[1]["configuration"]["level"], checksum=False)
        # a chunk's decoded bytes, and the most its file may hold: zstd's
        # worst case (incompressible data) plus the crc32c; nothing larger
        # is read (a chunk linked to /dev/zero, a crafted file)
        self.raw = math.prod(self.chunks) * self.dtype.itemsize
        self.limit = self.raw + self.raw // 128 + 4096
        self.encode_key = array.metadata.encode_chunk_key

    def path(self, coords: tuple[int, ...]) -> Path:
        return self.dir / str(self.encode_key(coords))

    def empty(self) -> np.ndarray[Any, Any]:
        return np.full(self.chunks, self.fill, dtype=self.dtype)

    def chunk_files(self) -> list[Path]:
        """This array's chunk files ("c.0.3.0", or "c/0/3/0" in older stores)."""
        files = [f for f in self.dir.glob("c.*") if not f.name.endswith(".partial")]
        nested = self.dir / "c"
        if nested.is_dir():
            files += [
                f
                for f in nested.rglob("*")
                if f.is_file() and not f.name.endswith(".partial")
            ]
        return files

    def coords_of(self, path: Path) -> tuple[int, ...]:
        """The chunk coordinates of one of this array's chunk files."""
        rel = path.relative_to(self.dir).as_posix()
        parts = rel.split("/") if "/" in rel else rel.split(".")
        return tuple(int(x) for x in parts[1:])

    def intact(self, path: Path) -> bool:
        """Whether a chunk file's crc32c matches its content (no decoding)."""
        return self.problem(path, None) is None

    def problem(self, path: Path, sealed: seals.Seals | None) -> str | None:
        """What is wrong with a chunk file: its crc32c does not match its
        content, or (with ``sealed``) it is not what was written at its
        position. None when nothing is."""
        try:
            blob = files.read_bytes(path, limit=self.limit)
        except StoreError:
            return f"not a chunk file: larger than {self.limit} bytes, or not a regular file"
        except OSError:
            return "cannot be read"
        if not _whole(blob):
            return "fails its crc32c checksum"
        if sealed is None:
            return None
        return sealed.judge(path.relative_to(self.dir).as_posix(), crc_of(blob))

    def read(self, coords: tuple[int, ...]) -> np.ndarray[Any, Any]:
        """Return a whole chunk (the fill value where never written)."""
        path = self.path(coords)
        try:
            blob = files.read_bytes(path, limit=self.limit)
        except FileNotFoundError:
            return self.empty()
        if not _whole(blob):
            raise CorruptChunk(
                f"chunk {path} fails its crc32c check.", hint=_hint(path)
            )
        size = _content_size(blob)
        if size != self.raw:
            raise CorruptChunk(
                f"chunk {path} declares {size} bytes; its array's chunks hold "
                f"{self.raw}.",
                hint=_hint(path),
            )
        out = np.empty(self.chunks, dtype=self.dtype)
        try:  # into a buffer of the chunk's size: a crafted frame cannot grow it
            self.zstd.decode(blob[:-4], out=out.view(np.uint8).reshape(-1))
        except Exception as exc:
            raise CorruptChunk(
                f"chunk {path} does not decode: {exc}", hint=_hint(path)
            ) from None
        return out

    def encode(self, chunk: np.ndarray[Any, Any]) -> bytes:
        body = bytes(self.zstd.encode(np.ascontiguousarray(chunk, dtype=self.dtype)))
        return body + int(google_crc32c.value(body)).to_bytes(4, "little")

    def write(self, coords: tuple[int, ...], chunk: np.ndarray[Any, Any]) -> None:
        """Seal one chunk (``store.seals``), then replace its file."""
        path, blob = self.path(coords), self.encode(chunk)
        seals.append(self.dir, [(path, crc_of(blob))])
        crash_point("flush:sealed")
        self.replace(path, blob)

    @staticmethod
    def replace(path: Path, blob: bytes) -> None:
        """Replace one chunk file atomically (a temporary file, then rename)."""
        tmp = path.with_name(f"{path.name}.{uuid.uuid4().hex}.partial")
        try:
            try:
                tmp.write_bytes(blob)
            except FileNotFoundError:
                path.parent.mkdir(parents=True, exist_ok=True)
                tmp.write_bytes(blob)
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)  # e.g. disk full halfway through
            raise


Key = tuple[str, tuple[int, ...]]  # (array name, chunk coords)


class ChunkCache:
    """Chunks being filled, in memory, written out on ``flush``.

    ``put`` updates a chunk in memory and marks it dirty; nothing touches the
    disk until ``flush`` writes the dirty chunks asked for, in the order
    given (the store writes outputs before status). Clean chunks are kept
    for reuse while they fit in ``budget`` bytes.
    """

    def __init__(self, budget: int = 64 * 2**20) -> None:
        self.budget = budget
        self.used = 0
        self.chunks: OrderedDict[Key, np.ndarray[Any, Any]] = OrderedDict()
        self.arrays: dict[str, ChunkedArray] = {}
        self.dirty: dict[Key, None] = {}  # insertion-ordered set

    def get(self, array: ChunkedArray, coords: tuple[int, ...]) -> np.ndarray[Any, Any]:
        key = (array.name, coords)
        chunk = self.chunks.get(key)
        if chunk is None:
            chunk = array.read(coords)
            self.used += chunk.nbytes
            # evict before adding: the new chunk is about to be written to
            # (dirty), and evicting it would lose the write
            self._evict()
            self.chunks[key] = chunk
        else:
            self.chunks.move_to_end(key)
        return chunk

    def _evict(self) -> None:
        for key in list(self.chunks):
            if self.used <= self.budget:
                return
            if key not in self.dirty:
                self.used -= self.chunks.pop(key).nbytes

    @property
    def over_budget(self) -> bool:
        return self.used > self.budget

    def put(
        self,
        array: ChunkedArray,
        index: tuple[int, ...],
        start: int,
        stop: int,
        methods: np.ndarray[Any, Any],
        values: np.ndarray[Any, Any],
    ) -> None:
        """Set ``values`` (replicates x methods x ...) at point ``index``,
        replicates ``start:stop`` and the given method indices, in memory."""
        self.arrays.setdefault(array.name, array)
        n = len(index)
        rows, width = array.chunks[n], array.chunks[n + 1]  # of one chunk
        head = tuple(i // c for i, c in zip(index, array.chunks[:n], strict=True))
        inner = tuple(i % c for i, c in zip(index, array.chunks[:n], strict=True))
        tail = (0,) * (len(array.chunks) - n - 2)
        methods = np.asarray(methods)
        for row_chunk in range(start // rows, (stop - 1) // rows + 1):
            offset = row_chunk * rows  # its first replicate
            first, last = max(start, offset), min(stop, offset + rows)
            for method_chunk in np.unique(methods // width):
                cols = np.flatnonzero(methods // width == method_chunk)
                coords = (*head, row_chunk, int(method_chunk), *tail)
                chunk = self.get(array, coords)
                view = chunk[inner]  # (replicates, methods, *output)
                view[first - offset : last - offset, methods[cols] % width] = values[
                    first - start : last - start
                ][:, cols]
                self.dirty[(array.name, coords)] = None

    def flush(self, keys: list[Key]) -> None:
        """Write the given dirty chunks, in order, and mark them clean."""
        for key in keys:
            if key in self.dirty:
                self.arrays[key[0]].write(key[1], self.chunks[key])
                del self.dirty[key]
        self._evict()
