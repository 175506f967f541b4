"""`netboot-reconcile COMMAND ...` builds a parser knowing COMMAND alone (cli.build_parser(only=)),
so `validate` does not import the daemon, the store and psycopg first. This pins that it answers
exactly as the whole command line does: same help, same errors, same parsed arguments."""

from __future__ import annotations

import argparse
import contextlib
import io
import subprocess
import sys
from pathlib import Path

import pytest

from reconciler.cli import COMMAND_NAMES, build_parser

ROOT = Path(__file__).resolve().parents[2]


def _paths(parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    found = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found.append((*prefix, name))
                found += _paths(sub, (*prefix, name))
    return found


def _answer(parser: argparse.ArgumentParser, args: list[str]) -> tuple[object, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            parsed: object = {k: v for k, v in vars(parser.parse_args(args)).items() if k != "func"}
        except SystemExit as exc:
            parsed = ("exit", exc.code)
    return parsed, out.getvalue(), err.getvalue()


def test_every_command_is_named() -> None:
    assert {path[0] for path in _paths(build_parser())} == set(COMMAND_NAMES)


@pytest.mark.parametrize("path", _paths(build_parser()), ids=" ".join)
def test_the_one_command_parser_answers_as_the_whole_one(path: tuple[str, ...]) -> None:
    for tail in (["--help"], ["--he"], ["--no-such-option", "x"], [], ["."], [".", "HEAD", "--format", "json"]):
        args = [*path, *tail]
        assert _answer(build_parser(path[0]), args) == _answer(build_parser(), args), args


def test_validate_does_not_import_the_daemon(tmp_path: Path) -> None:
    """What the one-command parser is for: the daemon's modules cost about a second to import."""
    code = ("import sys; from reconciler import cli; rc = cli.main(['validate', sys.argv[1]]); "
            "print(rc, sorted(m for m in sys.modules if m.startswith(('reconciler.daemon', 'psycopg'))))")
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path)], cwd=ROOT, capture_output=True, text=True,
                          check=False)
    assert proc.stdout.splitlines()[-1] == "1 []", proc.stdout + proc.stderr
