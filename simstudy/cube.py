"""The result cube's vocabulary: dimension names, status codes, fixed variables.

The cube (``open_results``) has dims ``(*factors, REPLICATE, METHOD,
*output dims)``; ``status`` holds PENDING / OK / FAILED per task; the
variables in ``FIXED_VARS`` exist in every store beside one variable per
output. Writers (the store), readers (summaries, reports) and workers (task
status) take these names from here.
"""

from __future__ import annotations

__all__ = ["FAILED", "FIXED_VARS", "METHOD", "OK", "PENDING", "REPLICATE"]

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
