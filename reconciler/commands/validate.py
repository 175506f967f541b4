"""`netboot-reconcile validate [PATH] [REV] [--format text|json|github] [--strict] [--verify-commits FILE]
[--age-identity FILE]`.

Validates the files of the directory PATH as they are on disk; with REV, or with
--verify-commits (REV defaulting to HEAD), the commit REV of the git repository at PATH instead,
read from git as the daemon reads it. --verify-commits FILE also checks that commit's signature
as the daemon's verify step does (`adapters.commitsig`): an unsigned or wrongly signed commit is
a `commit-signature` error, reported with the other findings. --age-identity FILE: every
secrets.yaml value must decrypt (`secret-undecryptable` at its line); without it a note says the
values were not checked.
Exit 0 valid (warnings allowed unless --strict), 1 invalid, 2 usage or I/O error.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import pygit2

from reconciler.adapters import renderfork
from reconciler.adapters.agecrypt import AgeIdentity, load_identity
from reconciler.adapters.commitsig import Signers, load_signers, verify_commit
from reconciler.adapters.dirsource import read_directory
from reconciler.adapters.gitsource import SourceProblem, open_repository, read_tree
from reconciler.core import findings
from reconciler.core.errors import InvalidRevision
from reconciler.core.render import fanout
from reconciler.core.secrets import NOT_CHECKED
from reconciler.core.snapshot import Snapshot
from reconciler.core.validate import Validation, validate

EXIT_VALID, EXIT_INVALID, EXIT_ERROR = 0, 1, 2


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("validate", help="validate a provisioning repository (a directory, or one of its commits)")
    p.add_argument("path", nargs="?", default=".", type=Path, help="repository directory (default: .)")
    p.add_argument("rev", nargs="?", metavar="REV",
                   help="validate this commit of the git repository at PATH (default with --verify-commits: HEAD)")
    p.add_argument("--format", choices=("text", "json", "github"), default="text")
    p.add_argument("--strict", action="store_true", help="treat warnings as errors")
    p.add_argument("--verify-commits", type=Path, metavar="FILE",
                   help="the commit must be signed by a key FILE lists (OpenSSH allowed_signers or OpenPGP keyring)")
    add_identity_option(p)
    p.set_defaults(func=run)


def add_identity_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--age-identity", type=Path, metavar="FILE",
                   help="age identity file (kept outside the repository): every secrets.yaml value must decrypt")


def identity_of(args: argparse.Namespace) -> AgeIdentity | None:
    """`--age-identity FILE` read (OSError, ValueError: a usage error, exit 2)."""
    return load_identity(args.age_identity) if args.age_identity is not None else None


def note_unchecked(result: Validation, decrypt: AgeIdentity | None) -> None:
    """Without an identity, say that secrets.yaml's values were not checked (stderr: JSON stays JSON)."""
    state = next(iter(result.sites.values()), None)  # secrets are shared by every site
    if decrypt is None and state is not None and state.secrets is not None and state.secrets.secrets:
        print(f"note: {NOT_CHECKED}", file=sys.stderr)


def validate_path(path: Path, decrypt: AgeIdentity | None = None) -> Validation:
    return validate_on_two_cpus(read_directory(path), decrypt)


def validate_on_two_cpus(snapshot: Snapshot, decrypt: AgeIdentity | None = None) -> Validation:
    """`validate`, a large repository's boot check shared with a forked child (`adapters.renderfork`;
    the same findings). For the commands (`validate`, `render`, `diff`): one thread, nothing a fork
    could copy mid-flight."""
    with fanout.using(renderfork.walk):
        return validate(snapshot, decrypt)


def print_findings(result: Validation, fmt: str, strict: bool, path: Path = Path(".")) -> int:
    """Print findings in `fmt` (for the repository at `path`); return the exit code the result deserves."""
    valid = not result.errors and not (strict and result.warnings)
    if fmt == "json":
        sys.stdout.write(findings.format_json(result.issues, valid))
    elif fmt == "github":
        sys.stdout.write(findings.format_github(result.issues, _workspace_prefix(path)))
    else:
        sys.stdout.write(findings.format_text(result.issues))
        stream = sys.stdout if valid else sys.stderr
        stream.write(("valid: " if valid else "invalid: ") + findings.summary(result.issues) + "\n")
    return EXIT_VALID if valid else EXIT_INVALID


def _workspace_prefix(path: Path) -> str:
    """`path` from the root of the GitHub Actions checkout (GITHUB_WORKSPACE, else the current
    directory), with a trailing '/'; "" when it is that root or lies outside it."""
    base = Path(os.environ.get("GITHUB_WORKSPACE") or os.getcwd()).resolve()
    try:
        relative = path.resolve().relative_to(base).as_posix()
    except ValueError:
        return ""
    return "" if relative == "." else relative + "/"


def validate_commit(
    path: Path, revision: str, signers: Signers | None, decrypt: AgeIdentity | None = None
) -> Validation:
    """Validate commit `revision` of the repository at `path` (read from git; `path` may be a
    subdirectory of the work tree: the site in a monorepo), and its signature when `signers`."""
    found = pygit2.discover_repository(str(path))
    if found is None:
        raise SourceProblem(f"{path}: not a git repository (a commit to validate needs one)")
    repo = open_repository(found)
    top = Path(repo.workdir or repo.path).resolve()
    subdir = path.resolve().relative_to(top).as_posix() if path.resolve().is_relative_to(top) else ""
    # a REV git does not know, or PATH not in that commit, is the caller's mistake (exit 2, as diff)
    result = validate_on_two_cpus(read_tree(repo, revision, "" if subdir == "." else subdir, origin=str(path)), decrypt)
    if signers is None:
        return result
    try:
        verify_commit(repo, revision, signers)
    except InvalidRevision as exc:
        return Validation(None, (*exc.findings, *result.issues))
    return result


def run(args: argparse.Namespace) -> int:
    try:
        decrypt = identity_of(args)
        if args.rev is None and args.verify_commits is None:
            result = validate_path(args.path, decrypt)
        else:
            signers = load_signers(args.verify_commits) if args.verify_commits is not None else None
            result = validate_commit(args.path, args.rev or "HEAD", signers, decrypt)
    except (OSError, ValueError, SourceProblem, InvalidRevision, pygit2.GitError) as exc:
        print(f"netboot-reconcile validate: {exc}", file=sys.stderr)
        return EXIT_ERROR
    note_unchecked(result, decrypt)
    return print_findings(result, args.format, args.strict, args.path)
