"""The command line cannot surprise: the real `netboot-reconcile` run as a subprocess.

No option may be abbreviated (argparse's default took `--rep site` for `--repo site` and started a
daemon), an unknown option is answered with the usage of the command it was given to, the bare
command explains itself, and `results --node` of a node the store never saw is an error.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import pytest

from reconciler.adapters.store import RESULTS_FILE, ResultsStore
from reconciler.cli import build_parser
from reconciler.core.outcomes import Target
from tests import repo_builder
from tests.integration.daemon_support import WorkTree

ROOT = Path(__file__).resolve().parents[2]


def cli(*args: str | Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run([sys.executable, "-m", "reconciler", *map(str, args)], capture_output=True, text=True,
                              cwd=ROOT, timeout=timeout, check=False)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"netboot-reconcile {' '.join(map(str, args))} still running after {timeout} s "
                    f"(it took the arguments and started): {exc.stderr!r}")


def test_an_abbreviated_repo_option_is_refused_and_no_daemon_starts(tmp_path: Path) -> None:
    tree = WorkTree(tmp_path / "site")
    state = tmp_path / "state"
    proc = cli("--rep", tree.path, "--no-dhcp", "--no-tftp", "--http-listen", "127.0.0.1:0",
               "--state-dir", state, timeout=30)
    assert proc.returncode == 2, proc.stderr
    assert "usage: netboot-reconcile run" in proc.stderr
    assert "unrecognized arguments: --rep" in proc.stderr.splitlines()[-1]
    assert not state.exists()


@pytest.fixture
def site(tmp_path: Path) -> Path:
    return repo_builder.write(tmp_path / "site")


@pytest.mark.parametrize(("command", "args"), [
    ("validate", ["{site}", "--form", "json"]),
    ("validate", ["{site}", "--stric"]),
    ("render", ["{site}", "--ou", "{tmp}/out"]),
    ("diff", ["--rep", "{site}", "HEAD", "HEAD"]),
    ("results", ["--state-d", "{tmp}"]),
    ("status", ["--ur", "http://127.0.0.1:1"]),
    ("run", ["--repo", "{site}", "--no-dh", "--no-tftp", "--http-listen", "127.0.0.1:0", "--state-dir",
             "{tmp}/state"]),
])
def test_no_option_of_any_command_may_be_abbreviated(command: str, args: list[str], site: Path,
                                                     tmp_path: Path) -> None:
    proc = cli(command, *(a.format(site=site, tmp=tmp_path) for a in args), timeout=30)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stderr.startswith(f"usage: netboot-reconcile {command} "), proc.stderr
    assert f"netboot-reconcile {command}: error: unrecognized arguments: --" in proc.stderr
    assert not (tmp_path / "out").exists() and not (tmp_path / "state").exists()


def test_an_unknown_option_prints_that_commands_usage(site: Path) -> None:
    proc = cli("validate", site, "--bogus")
    assert proc.returncode == 2
    assert proc.stderr.startswith("usage: netboot-reconcile validate [-h] [--format {text,json,github}]"), proc.stderr
    assert proc.stderr.splitlines()[-1] == "netboot-reconcile validate: error: unrecognized arguments: --bogus"


def test_the_bare_command_prints_help_and_a_reason(tmp_path: Path) -> None:
    proc = cli()
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert "COMMAND" in proc.stderr and "validate" in proc.stderr  # the help, with the commands
    reason = proc.stderr.rstrip().splitlines()[-1]
    assert reason.startswith("netboot-reconcile: error: no command given"), proc.stderr
    assert "--repo" in reason


def test_results_for_an_unknown_node_exits_2(tmp_path: Path) -> None:
    store = ResultsStore(tmp_path / RESULTS_FILE)
    try:
        store.record_revision("a" * 40, time.time(), [Target("node-1", "52:54:00:aa:bb:01", "install")])
    finally:
        store.close()
    known = cli("results", "--state-dir", tmp_path, "--node", "node-1", "--format", "json")
    assert known.returncode == 0, known.stderr
    assert '"node": "node-1"' in known.stdout
    by_mac = cli("results", "--state-dir", tmp_path, "--node", "52:54:00:aa:bb:01")
    assert by_mac.returncode == 0, by_mac.stderr
    unknown = cli("results", "--state-dir", tmp_path, "--node", "node-9")
    assert unknown.returncode == 2
    assert unknown.stdout == ""
    assert "node 'node-9'" in unknown.stderr


def _commands(parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every command and subcommand path of the real parser (`assets sync`, ...)."""
    found = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found.append((*prefix, name))
                found += _commands(sub, (*prefix, name))
    return found


@pytest.mark.parametrize("command", _commands(build_parser()), ids=" ".join)
def test_every_command_refuses_an_abbreviated_help(command: tuple[str, ...]) -> None:
    """`--he` is what argparse's default turned into `--help`: every (sub)command, present and future."""
    proc = cli(*command, "--he")
    assert proc.returncode == 2, proc.stdout
    assert f"netboot-reconcile {' '.join(command)}: error: unrecognized arguments: --he" in proc.stderr, proc.stderr


@pytest.mark.parametrize("command", _commands(build_parser()), ids=" ".join)
def test_every_commands_help_says_what_it_does(command: tuple[str, ...]) -> None:
    """`netboot-reconcile run --help` said only the options; the line the command list gives it heads it now."""
    parent = build_parser()
    for name in command[:-1]:
        parent = next(a for a in parent._actions if isinstance(a, argparse._SubParsersAction)).choices[name]
    listing = next(a for a in parent._actions if isinstance(a, argparse._SubParsersAction))
    purpose = next(a.help for a in listing._choices_actions if a.dest == command[-1])
    assert purpose
    proc = cli(*command, "--help")
    assert proc.returncode == 0, proc.stderr
    assert " ".join(purpose.split()) in " ".join(proc.stdout.split()), proc.stdout


def test_the_readme_lists_every_command() -> None:
    """README's Commands table: a command added without a row there fails here."""
    readme = (ROOT / "README.md").read_text()
    missing = [c[0] for c in _commands(build_parser()) if len(c) == 1 and f"| `netboot-reconcile {c[0]} " not in readme]
    assert missing == []
