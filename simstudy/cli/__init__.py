"""Command line: ``python -m simstudy COMMAND``; one-line errors, exit codes.

::

    cli/
    ├── __init__.py   main(): parse, run the command, map errors to exit codes
    ├── parser.py     argparse: every command and flag
    ├── commands.py   one function per command
    └── tables.py     summary records as text: table, CSV, LaTeX, Markdown

(The progress bar with rate and ETA is ``simstudy/progress.py``.)

Exit codes: 0 all tasks ok; 3 finished with failed tasks; 2 bad input
(nothing written); 4 disk full (resumable once there is space); 5 solve
found no solution; 6 an MCSE target missed under ``--strict``; 130
interrupted (store consistent, resumable).
"""

from __future__ import annotations

import os
import sys
import traceback
import warnings
from collections.abc import Sequence
from typing import TextIO

from simstudy.errors import EXIT_INTERRUPTED, SimstudyError
from simstudy.shell import FROM_CLI

__all__ = ["main"]


def _show_warning(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: TextIO | None = None,
    line: str | None = None,
) -> None:
    """Print a warning as the CLI's one ``warning:`` line."""
    print(f"warning: {message}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit code.

    Warnings print as one ``warning:`` line while the command runs; the
    process's own warning display is restored afterwards.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    with warnings.catch_warnings():
        warnings.showwarning = _show_warning
        return _main(argv, debug="--debug" in argv)


def _main(argv: list[str], *, debug: bool) -> int:
    from simstudy.cli.commands import COMMANDS
    from simstudy.cli.parser import build_parser

    token = FROM_CLI.set(True)  # hints name flags, not run()'s keywords
    try:
        args = build_parser().parse_args(argv)
        return COMMANDS[args.command](args)
    except SimstudyError as exc:
        if debug:
            traceback.print_exc()
        print(f"error: {exc.message}", file=sys.stderr)
        if exc.hint:
            print(f"hint: {exc.hint}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted.", file=sys.stderr)
        return EXIT_INTERRUPTED
    except SystemExit as exc:  # --help
        return int(exc.code or 0)
    except BrokenPipeError:
        # the reader went away (`simstudy status S | head`): stop quietly; point
        # stdout at devnull so the interpreter's final flush does not complain
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return 0
    except Exception as exc:
        if debug:
            raise
        print(f"error: internal error: {type(exc).__name__}: {exc}", file=sys.stderr)
        print(
            "hint: rerun with --debug for the traceback and report it", file=sys.stderr
        )
        return 1
    finally:
        FROM_CLI.reset(token)
