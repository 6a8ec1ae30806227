"""--target-mcse rounds sized to what a point still needs; --strict; the
missed target said with formatted MCSEs; the report's rule and counts."""

from __future__ import annotations

import pytest

import simstudy
from simstudy.cli import main
from simstudy.errors import EXIT_TARGET_MISSED, UsageError
from tests.helpers import assert_store_consistent
from tests.test_target import write


def test_a_point_just_short_of_its_target_grows_by_a_tenth_not_a_round(tmp_path):
    # sigma 1: the MCSE of the bias after 100 replicates is about 0.1; a
    # target just under it needs a few more replicates, not a second 100
    store = tmp_path / "s.zarr"
    report = simstudy.run(
        write(tmp_path),
        store=store,
        scheduler="synchronous",
        target_mcse={"bias": 0.095},
        max_replicates=100_000,
    )
    assert report.exit_code == 0
    ds = assert_store_consistent(store)
    ds = simstudy.open_results(store)
    stops = ds["target_replicates"].values.tolist()
    assert stops[0] in (110, 120, 130)  # not 200
    assert all(n % 10 == 0 for n in stops)


def test_round_size_sets_the_least_a_round_adds(tmp_path):
    store = tmp_path / "s.zarr"
    simstudy.run(
        write(tmp_path),
        store=store,
        scheduler="synchronous",
        target_mcse={"bias": 0.095},
        round_size=50,
    )
    stops = simstudy.open_results(store)["target_replicates"].values.tolist()
    assert all(n % 50 == 0 for n in stops)
    assert stops[0] == 150


def test_strict_makes_a_missed_target_exit_6_with_formatted_mcse(tmp_path, capsys):
    store = tmp_path / "s.zarr"
    argv = ["run", str(write(tmp_path)), "--store", str(store), "--no-progress"]
    argv += ["--scheduler", "synchronous", "--target-mcse", "bias=0.01"]
    assert main([*argv, "--max-replicates", "200", "--strict"]) == EXIT_TARGET_MISSED
    err = capsys.readouterr().err
    assert "not met at 2 of 2 design point(s)" in err
    assert "(e.g. sigma=1.0: bias MCSE 0.0" in err
    assert "> 0.01)" in err
    # the report: the rule, each point's replicates, no phantom pending tasks
    out = tmp_path / "r.html"
    assert main(["report", str(store), "-o", str(out)]) == 0
    page = out.read_text()
    assert "target MCSE" in page
    assert "bias \u2264 0.01" in page
    assert "0 pending" in page
    assert "200 replicates, not met" in page


@pytest.mark.parametrize(
    "flags",
    [["--strict"], ["--round-size", "10"]],
    ids=["strict", "round-size"],
)
def test_target_flags_without_a_target_are_refused(tmp_path, flags):
    store = tmp_path / "s.zarr"
    argv = ["run", str(write(tmp_path)), "--store", str(store), "--no-progress"]
    assert main([*argv, *flags]) == 2
    assert not store.exists()
    with pytest.raises(UsageError, match="only applies to a --target-mcse run"):
        simstudy.run(write(tmp_path), store=store, strict=True)
