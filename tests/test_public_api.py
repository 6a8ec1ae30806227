"""The public API is exactly ``simstudy.__all__``."""

from __future__ import annotations

import simstudy


def test_all_is_sorted_and_complete():
    public = {
        name
        for name in dir(simstudy)
        if not name.startswith("_")
        and name not in {"annotations", "TYPE_CHECKING", "Any"}
        and not isinstance(getattr(simstudy, name, None), type(simstudy))
    }
    assert simstudy.__all__ == sorted(simstudy.__all__)
    lazy = {
        "run",
        "solve",
        "open_results",
        "summarize",
        "replay",
        "verify",
        "write_report",
    }
    lazy |= {"contrast", "failure_ledger"}
    assert set(simstudy.__all__) == public | lazy
