"""Which library versions produced which tasks: the store's version log.

When numpy, jax, jaxlib or (jax studies) the device kind or x64 setting
changed between two runs of a store, the run rechecks finished tasks
(``recompute.recheck_versions``) and, if it goes on, appends one entry to
``attrs["simstudy"]["version_log"]``: when, which versions changed (from,
to), how many tasks had finished before (they were computed with the old
versions; every task's ``started`` time says on which side it is), how many
were recomputed and how many differed, and whether the change was found
identical or accepted with ``--accept-version-change``. ``status`` and the
HTML report print ``notes`` of it, so a cube made by more than one set of
versions always says so.
"""

from __future__ import annotations

import json
import os
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from simstudy.store.files import read_meta

__all__ = ["entry", "notes", "read_notes"]


def entry(
    changes: dict[str, tuple[str, str]],
    *,
    finished: int,
    checked: int,
    differ: int,
) -> dict[str, Any]:
    """The log entry of a version change a run goes on with, made now."""
    now = time.time()
    return {
        "at": datetime.fromtimestamp(now, UTC).isoformat(timespec="seconds"),
        "epoch": now,
        "from": {k: a for k, (a, _) in changes.items()},
        "to": {k: b for k, (_, b) in changes.items()},
        "finished_before": finished,
        "checked": checked,
        "differ": differ,
        "decision": "accepted" if differ else "identical",
    }


def _versions(v: dict[str, Any]) -> str:
    return ", ".join(f"{k} {x}" for k, x in v.items())


def notes(meta: dict[str, Any]) -> list[str]:
    """One line per recorded version change (none: one set made every task)."""
    out = []
    for e in meta.get("version_log") or []:
        try:
            line = (
                f"{e['finished_before']:,} task(s) finished before {e['at']} were "
                f"computed with {_versions(e['from'])}, later ones with "
                f"{_versions(e['to'])} (a task's 'started' time says which); "
            )
            if e["decision"] == "accepted":
                line += (
                    f"{e['differ']} of {e['checked']} recomputed task(s) differed "
                    "and the change was accepted with --accept-version-change: "
                    "the cube mixes numbers from both versions"
                )
            else:
                line += (
                    f"{e['checked']} finished task(s) were recomputed bit for bit "
                    "identical before going on"
                )
        except (KeyError, TypeError, ValueError):
            line = f"a version change was recorded: {json.dumps(e)[:300]}"
        out.append(line)
    return out


def read_notes(path: str | os.PathLike[str]) -> list[str]:
    """``notes`` of the store at ``path`` (its root metadata only)."""
    meta = read_meta(Path(path))
    return notes(meta) if meta is not None else []
