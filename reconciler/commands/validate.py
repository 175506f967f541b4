"""`netboot-reconcile validate [PATH] [--format text|json|github] [--strict]`.

Exit 0 valid (warnings allowed unless --strict), 1 invalid, 2 usage or I/O error.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from reconciler.adapters.dirsource import read_directory
from reconciler.core import findings
from reconciler.core.validate import Validation, validate

EXIT_VALID, EXIT_INVALID, EXIT_ERROR = 0, 1, 2


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("validate", help="validate a provisioning repository (a directory)")
    p.add_argument("path", nargs="?", default=".", type=Path, help="repository directory (default: .)")
    p.add_argument("--format", choices=("text", "json", "github"), default="text")
    p.add_argument("--strict", action="store_true", help="treat warnings as errors")
    p.set_defaults(func=run)


def validate_path(path: Path) -> Validation:
    return validate(read_directory(path))


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


def run(args: argparse.Namespace) -> int:
    try:
        result = validate_path(args.path)
    except OSError as exc:
        print(f"netboot-reconcile validate: {exc}", file=sys.stderr)
        return EXIT_ERROR
    return print_findings(result, args.format, args.strict, args.path)
