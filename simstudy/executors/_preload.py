"""What the forkserver imports once, so pool workers forked from it start warm.

The ``processes`` scheduler forks its workers from a forkserver
(``simstudy.executors.pool.start_forkserver``) that imports numpy, the
worker side of simstudy and the modules the study file imports (named in
``SIMSTUDY_PRELOAD``, comma-separated) before it forks anything. A module
that fails to import here is skipped: the worker imports it again when it
installs the study, and reports any error then, as without a preload.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import sys

import cloudpickle  # noqa: F401  (the study arrives cloudpickled)
import numpy  # noqa: F401

import simstudy.backends.numpy
import simstudy.backends.worker  # noqa: F401
from simstudy.executors.pool import MAIN, PRELOAD

if os.environ.get(MAIN):
    # a worker forked from here runs the driver's main script again (as
    # __mp_main__) unless __main__ already is that file: a plain script
    # calling simstudy.run without an `if __name__ == "__main__":` guard
    # would start a run in every worker. Workers get the study by value and
    # need nothing from the script.
    sys.modules["__main__"].__file__ = os.environ[MAIN]

for _name in filter(None, os.environ.get(PRELOAD, "").split(",")):
    # a failure is met again, and reported, when the worker installs the study
    with contextlib.suppress(Exception, SystemExit):
        importlib.import_module(_name)
