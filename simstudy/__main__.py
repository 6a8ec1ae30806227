"""``python -m simstudy`` -> :func:`simstudy.cli.main`."""

from __future__ import annotations

import sys

from simstudy.cli import main

if __name__ == "__main__":
    sys.exit(main())
