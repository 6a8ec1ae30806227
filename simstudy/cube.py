"""The result cube's vocabulary: dimension names, status codes, fixed variables.

The cube (``open_results``) has dims ``(*factors, REPLICATE, METHOD,
*output dims)``; ``status`` holds PENDING / OK / FAILED per task; the
variables in ``FIXED_VARS`` exist in every store beside one variable per
output. Writers (the store), readers (summaries, reports) and workers (task
status) take these names from here.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

__all__ = [
    "FAILED",
    "FIXED_VARS",
    "MAX_LEVELS",
    "MAX_METHODS",
    "MAX_REPLICATES",
    "MAX_TASKS",
    "METHOD",
    "OK",
    "PENDING",
    "REPLICATE",
    "point_json",
]

REPLICATE = "replicate"
METHOD = "method_name"  # not "method": xarray's sel(method=...) keyword shadows it

PENDING, OK, FAILED = 0, 1, 2

# every store's per-task variables beside the outputs: name -> (dtype, fill)
FIXED_VARS: dict[str, tuple[str, float]] = {
    "status": ("int8", PENDING),
    "seconds": ("float32", float("nan")),
    "started": ("float64", float("nan")),
    "worker": ("int16", -1),
    "warnings": ("int16", 0),  # warnings the task emitted
}

# the largest cube simstudy makes or opens: a study may not declare more, and a
# store whose metadata says more is refused before anything is written (a
# crafted "10^11 replicates" would otherwise have a run write a coordinate of
# that length until the disk is full)
MAX_REPLICATES = 10**9
MAX_LEVELS = 10**6  # per factor
MAX_METHODS = 10**4
MAX_TASKS = 10**12  # design points x replicates x methods


def point_json(point: Mapping[str, Any]) -> str:
    """A design point as one string, JSON with sorted keys: how stored truths,
    targets, solve records and bundle hashes are keyed by point."""
    return json.dumps(dict(point), sort_keys=True)
