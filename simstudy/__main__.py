"""``python -m simstudy`` -> :func:`simstudy.cli.main`.

The import sits under the guard: worker processes started with ``spawn``
re-import this module, and must not pay for the CLI's imports (zarr, ...).
"""

from __future__ import annotations

import sys

if __name__ == "__main__":
    from simstudy.cli import main

    sys.exit(main())
