"""Store format migrations: one chain of steps, one fixture store per old
format, each migrated on a copy to this version's format."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

import simstudy
from simstudy.store.meta import FORMAT
from simstudy.store.migrations import STEPS, migrate, needs_migration, stored_format

DATA = Path(__file__).parent / "data"
OLD_FORMATS = list(range(1, FORMAT))


def test_the_steps_form_one_chain_to_the_current_format():
    assert [step.to for step in STEPS] == list(range(2, FORMAT + 1))


@pytest.mark.parametrize("old", OLD_FORMATS, ids=[f"format{k}" for k in OLD_FORMATS])
def test_an_old_fixture_store_migrates_to_the_current_format_and_reads_alike(
    tmp_path, old
):
    store = tmp_path / "old.zarr"
    shutil.copytree(DATA / f"format{old}" / "store.zarr", store)
    assert stored_format(store) == old
    assert needs_migration(store)
    before = simstudy.open_results(store, include_hidden=True)
    assert migrate(store)
    assert stored_format(store) == FORMAT
    assert not needs_migration(store)
    assert not migrate(store)  # a second migration has nothing to do
    after = simstudy.open_results(store, include_hidden=True)
    assert dict(after.sizes) == dict(before.sizes)
    for name in before.data_vars:
        np.testing.assert_array_equal(after[name].values, before[name].values)
