"""The commands of docs/share.md: protocol, bundle, verify BUNDLE, run BUNDLE."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from simstudy import shell
from simstudy.errors import EXIT_FAILED, EXIT_OK, UsageError

__all__ = ["cmd_bundle", "cmd_protocol", "protocol_note", "run_bundle", "verify_bundle"]


def protocol_note(study: Any, path: str) -> None:
    """After ``run --protocol``: say whether the study deviates from it."""
    from simstudy.sharing.protocol import compare

    found = compare(study, path)
    if found:
        print(
            f"note: the study deviates from {path} in {len(found)} way(s) "
            f"({found[0]}{'; ...' if len(found) > 1 else ''}); the report lists them",
            file=sys.stderr,
        )
    else:
        print(f"note: the study is as {path} registered it", file=sys.stderr)


def cmd_protocol(args: argparse.Namespace) -> int:
    from simstudy.declare.loader import load_study
    from simstudy.sharing.protocol import build, compare, write

    study = load_study(args.study)
    if args.compare is not None:
        if args.output is not None:
            raise UsageError(
                "protocol --compare prints the deviations; -o writes a protocol.",
                hint="drop -o (or --compare)",
            )
        found = compare(study, args.compare)
        print(f"deviations of {args.study} from {args.compare}:")
        for line in found or ["none: the study is as the protocol registered it"]:
            print(f"  {line}")
        return EXIT_OK
    targets = {k: v for d in args.target_mcse or [] for k, v in d.items()}
    result = build(study, pilot=args.pilot, targets=targets or None)
    if args.output is None:
        print(result.markdown, end="")
        return EXIT_OK
    path = write(result, args.output)
    from simstudy.shell import command

    print(
        f"wrote {path}; register it with: "
        + command("run", args.study, "--protocol", path)
    )
    return EXIT_OK


def cmd_bundle(args: argparse.Namespace) -> int:
    from simstudy.sharing.bundle import pack

    if not Path(args.store).is_dir():
        raise UsageError(f"bundle {args.store}: no such store.", hint="check the path")
    path = pack(
        args.store,
        args.output,
        study=args.study,
        no_results=args.no_results,
        protocol=args.protocol,
    )
    what = "hashes only, no cube" if args.no_results else "with the cube"
    print(f"wrote {path} ({path.stat().st_size / 2**20:,.2f} MB, {what})")
    return EXIT_OK


def verify_bundle(args: argparse.Namespace) -> int:
    from simstudy.sharing.bundle import verify

    for flag in ("study", "to", "scheduler", "workers"):
        if getattr(args, flag, None) is not None:
            name = "--store" if flag == "to" else f"--{flag}"
            raise UsageError(
                f"verify {args.store}: a bundle holds its study and store; {name} "
                "does not apply.",
                hint=f"write {shell.command('verify', args.store)} [--sample N]",
            )
    print(
        f"note: verifying {args.store} runs the study code it holds",
        file=sys.stderr,
    )
    check = verify(args.store, sample=args.sample)
    for line in check.lines():
        print(line)
    return EXIT_OK if check.ok else EXIT_FAILED


def run_bundle(args: argparse.Namespace) -> int:
    from simstudy.sharing.bundle import add_method, is_bundle

    usage = "write python -m simstudy run BUNDLE.tar --add-method mine.py"
    if not is_bundle(args.study):
        raise UsageError(
            f"run {args.study} --add-method: {args.study} is not a bundle (.tar).",
            hint=usage,
        )
    if args.add_method is None:
        raise UsageError(
            f"run {args.study}: a bundle runs only with --add-method FILE.py.",
            hint=usage,
        )
    options: dict[str, Any] = {
        k: getattr(args, k)
        for k in ("scheduler", "workers", "batch_size", "max_errors")
        if getattr(args, k) is not None
    }
    result = add_method(args.study, args.add_method, folder=args.store, **options)
    names = ", ".join(repr(m) for m in result.added)
    print(f"unpacked into {result.folder}; store {result.store}")
    print(
        f"added {names}: {result.computed:,} task(s) computed, on the bundle's data "
        f"sets (common random numbers); {result.original_tasks:,} original task(s) "
        f"not run, their columns "
        + ("byte-identical" if result.unchanged else "CHANGED")
        + f"; {result.seconds:.1f} s"
    )
    print(f"wrote {result.report}")
    return result.exit_code if result.unchanged else EXIT_FAILED
