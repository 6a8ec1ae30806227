"""The zarr result store: the only code that writes a store.

::

    store/
    ├── store.py        Store: open a store for a run (lock, reconcile,
    │                   integrity), take batches, close
    ├── layout.py       the zarr group: coordinates, arrays, metadata I/O
    ├── meta.py         StoreMeta: attrs["simstudy"], typed; library versions
    ├── writer.py       the buffered writer: chunks by group, status last
    ├── chunks.py       one chunk file: bytes + zstd + crc32c, atomic rename
    ├── seals.py        each chunk's crc32c tied to its position (swaps)
    ├── records.py      failure and warning records (JSON beside the cube)
    ├── reconcile.py    fingerprint compare, grow, reset, hide, prune
    ├── integrity.py    codec check (no code from a store), damaged chunks
    ├── trust.py        whether a folder is ours; what in it is; sane sizes
    ├── files.py        store files opened safely: no links, regular, bounded
    ├── lock.py         one run per store
    └── reading.py      open_results, read_failures, read_warnings

A batch's outputs are written before its status: status is the commit mark.
Failure details live in ``<store>/.simstudy/failures/*.json``; the lock is
``<store>/.simstudy/lock``. See docs/store.md for the format.
"""

from __future__ import annotations

from simstudy.store.reading import open_results, read_failures, read_warnings
from simstudy.store.store import Store

__all__ = [
    "Store",
    "open_results",
    "read_failures",
    "read_warnings",
]
