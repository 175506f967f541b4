"""`netboot-reconcile diff --repo PATH BASE HEAD [--format markdown|json] [--path SUBDIR] [--state-dir DIR]
[--verify-commits FILE]`.

Reads both commits straight from git (no checkout), validates and renders each, and prints
what changes for the machines (`reconciler.core.plan`, printed by `core.plan_format`).
BASE and HEAD are anything `git rev-parse` accepts: branch names, `HEAD~1`, shas. With
`--state-dir`, the daemon's results store says which machines reported a successful install, and
the install-once verdicts are per machine (`core.plan.with_installs`). With `--verify-commits`,
HEAD's signature is checked as the daemon checks it (`adapters.commitsig`): an unsigned or wrongly
signed HEAD is an invalid HEAD, its `commit-signature` finding first.

Exit 0 no change, 1 changes (an invalid HEAD is a change: a broken one, with its findings
first), 2 error of the command itself (no such repository or revision, unreadable repository).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pygit2

from reconciler.adapters.commitsig import Signers, load_signers, verify_commit
from reconciler.adapters.gitsource import SourceProblem, open_repository, read_tree
from reconciler.adapters.store import RESULTS_FILE, ResultsReader
from reconciler.core import plan_format
from reconciler.core.errors import InvalidRevision
from reconciler.core.plan import Side, compare, side, with_installs
from reconciler.core.validate import validate

EXIT_SAME, EXIT_CHANGES, EXIT_ERROR = 0, 1, 2


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("diff", help="what a commit range changes for the machines (for pull requests)")
    p.add_argument("--repo", required=True, type=Path, help="local git repository (work tree or bare)")
    p.add_argument("base", metavar="BASE", help="the revision before (branch, sha, HEAD~1, ...)")
    p.add_argument("head", metavar="HEAD", help="the revision after")
    p.add_argument("--format", choices=("markdown", "json"), default="markdown")
    p.add_argument("--path", default="", metavar="SUBDIR", help="the provisioning repository's directory in git")
    p.add_argument("--state-dir", type=Path, metavar="DIR",
                   help="the daemon's state directory: verdicts from the installs its machines reported")
    p.add_argument("--verify-commits", type=Path, metavar="FILE",
                   help="HEAD must be signed by a key FILE lists (OpenSSH allowed_signers or OpenPGP keyring)")
    p.set_defaults(func=run)


def _open(path: Path) -> pygit2.Repository:
    found = pygit2.discover_repository(str(path))
    if found is None:
        raise SourceProblem(f"{path}: not a git repository")
    return open_repository(found)


def _side(repo: pygit2.Repository, revision: str, subdir: str, origin: str, signers: Signers | None = None) -> Side:
    snapshot = read_tree(repo, revision, subdir, origin=origin)
    result = validate(snapshot)
    if signers is not None:
        try:
            verify_commit(repo, revision, signers)
        except InvalidRevision as exc:  # served by no daemon verifying commits: a broken HEAD
            return side(snapshot.revision, None, (*exc.findings, *result.issues))
    return side(snapshot.revision, result.state, result.issues)


def _installed(state_dir: Path) -> set[tuple[str, str, int]]:
    reader = ResultsReader(state_dir / RESULTS_FILE)
    try:
        return {(node, mac, reinstall) for node, mac, reinstall, _, _ in reader.installs()}
    finally:
        reader.close()


def run(args: argparse.Namespace) -> int:
    try:
        signers = load_signers(args.verify_commits) if args.verify_commits is not None else None
        repo = _open(args.repo)
        base = _side(repo, args.base, args.path, str(args.repo))
        head = _side(repo, args.head, args.path, str(args.repo), signers)
        installed = _installed(args.state_dir) if args.state_dir is not None else None
    except (SourceProblem, InvalidRevision, pygit2.GitError, OSError, RuntimeError, ValueError) as exc:
        print(f"netboot-reconcile diff: {exc}", file=sys.stderr)
        return EXIT_ERROR
    plan = compare(base, head)
    if installed is not None:
        plan = with_installs(plan, installed)
    text = plan_format.as_json(plan) if args.format == "json" else plan_format.markdown(plan)
    sys.stdout.write(text)
    return EXIT_CHANGES if plan.changed else EXIT_SAME
