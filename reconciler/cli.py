"""The `netboot-reconcile` command line: parses arguments and dispatches to one command module.

`netboot-reconcile --repo URL ...` with no command name is the same as `netboot-reconcile run`.
Every parser, the subcommands' included, is a `Parser`: no option may be abbreviated (argparse
would take `--rep site` for `--repo site`), and an unknown option is reported by the parser of
the (sub)command it was given to, with that command's usage.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from types import ModuleType
from typing import Any, NoReturn

from reconciler import __version__

# The modules of reconciler.commands, in the order --help lists them. Imported when used: all of
# them cost about a second (the daemon's, the store's, psycopg), a one-command run needs one.
COMMAND_NAMES = ("run", "validate", "status", "diff", "render", "results", "assets", "secrets", "power", "rollout")


def command_modules(names: Sequence[str] = COMMAND_NAMES) -> list[ModuleType]:
    return [importlib.import_module(f"reconciler.commands.{name}") for name in names]


NO_COMMAND = "no command given: name one of the commands above, or run the daemon with --repo URL_OR_PATH"


class Parser(argparse.ArgumentParser):
    """An ArgumentParser that takes options only as spelled, and refuses what it does not know.

    Subparsers are made of the parser's own class, so every command (and a command's own
    subcommands) is one of these without each having to say so."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs["allow_abbrev"] = False
        super().__init__(*args, **kwargs)
        self._given: list[str] = []

    def parse_known_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        # A subcommand's parser is called through parse_known_args and its leftovers would be
        # reported by the top parser with the top usage; refuse them here, with this usage.
        self._given = list(sys.argv[1:] if args is None else args)
        parsed, extras = super().parse_known_args(args, namespace)
        if extras:
            self.error(f"unrecognized arguments: {' '.join(extras)}")
        return parsed, extras

    def error(self, message: str) -> NoReturn:
        # A misspelt option also leaves a required one missing (`--rep site`): name it first.
        given = self._given[: self._given.index("--")] if "--" in self._given else self._given
        unknown = [a.split("=", 1)[0] for a in given
                   if a.startswith("--") and a.split("=", 1)[0] not in self._option_string_actions]
        if unknown and message.startswith("the following arguments are required"):
            message = f"unrecognized arguments: {' '.join(unknown)} ({message})"
        super().error(message)


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The whole command line; with `only` (a command's name), the same parser knowing that command
    alone: what `main` uses when the first argument names one, as it parses those arguments alike."""
    parser = Parser(
        prog="netboot-reconcile",
        description="A git repository of nodes and profiles, served as DHCP, TFTP and HTTP netboot.",
        epilog="`netboot-reconcile --repo URL_OR_PATH [options]` is `netboot-reconcile run ...`. "
               "`netboot-reconcile COMMAND --help` lists a command's options.",
    )
    parser.add_argument("--version", action="version", version=f"netboot-reconcile {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for command in command_modules(COMMAND_NAMES if only is None else (only,)):
        command.add_parser(sub)
    _describe(parser)
    return parser


def _describe(parser: argparse.ArgumentParser) -> None:
    """A (sub)command's one-line help in its parent's list also heads its own --help."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for listed in action._choices_actions:
                command = action.choices[listed.dest]
                command.description = command.description or listed.help
                _describe(command)


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    if args_list and args_list[0].startswith("--") and args_list[0] not in ("--help", "--version"):
        args_list.insert(0, "run")
    # After a command's name every argument is that command's: only its module is needed.
    parser = build_parser(args_list[0] if args_list and args_list[0] in COMMAND_NAMES else None)
    try:
        args = parser.parse_args(args_list)
    except SystemExit as exc:  # argparse exits 2 on usage errors, 0 on --help
        return int(exc.code or 0)
    if not hasattr(args, "func"):
        parser.print_help(sys.stderr)
        print(f"\n{parser.prog}: error: {NO_COMMAND}", file=sys.stderr)
        return 2
    return int(args.func(args))
