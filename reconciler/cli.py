"""The `netboot-reconcile` command line: parses arguments and dispatches to one command module.

`netboot-reconcile --repo URL ...` with no command name is the same as `netboot-reconcile run`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from reconciler import __version__
from reconciler.commands import diff, render, results, run, status, validate

COMMANDS = (run, validate, status, diff, render, results)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="netboot-reconcile",
        description="A git repository of nodes and profiles, served as DHCP, TFTP and HTTP netboot.",
    )
    parser.add_argument("--version", action="version", version=f"netboot-reconcile {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for command in COMMANDS:
        command.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    if args_list and args_list[0].startswith("--") and args_list[0] not in ("--help", "--version"):
        args_list.insert(0, "run")
    parser = build_parser()
    try:
        args = parser.parse_args(args_list)
    except SystemExit as exc:  # argparse exits 2 on usage errors, 0 on --help
        return int(exc.code or 0)
    if not hasattr(args, "func"):
        parser.print_help(sys.stderr)
        return 2
    return int(args.func(args))
