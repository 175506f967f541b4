"""`netboot-reconcile render [PATH] --out DIR [--format text|json|github]`.

Validates the repository directory at PATH like `validate` and, when it is valid, writes the
generation the daemon would serve (`core.render.render_generation`) under DIR: the same tree as
`generations/<sha>/`, a matchbox data directory. An invalid repository is refused with its
findings printed as `validate` prints them (exit 1); usage or I/O errors exit 2. Files under
DIR that the generation does not hold are left alone; rendered files are replaced atomically.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

from reconciler.commands.validate import EXIT_ERROR, EXIT_INVALID, EXIT_VALID, print_findings, validate_path
from reconciler.core.render import render_generation


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("render", help="render a provisioning repository (a directory) into DIR")
    p.add_argument("path", nargs="?", default=".", type=Path, help="repository directory (default: .)")
    p.add_argument("--out", required=True, type=Path, help="directory to write the rendered tree into")
    p.add_argument("--format", choices=("text", "json", "github"), default="text", help="format of findings")
    p.set_defaults(func=run)


def write_tree(files: dict[str, bytes], out: Path) -> None:
    """Write `files` under `out`, each through a temporary file renamed into place."""
    for rel, data in files.items():
        target = out / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".render-")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


def run(args: argparse.Namespace) -> int:
    try:
        result = validate_path(args.path)
    except OSError as exc:
        print(f"netboot-reconcile render: {exc}", file=sys.stderr)
        return EXIT_ERROR
    if result.state is None or result.errors:
        print_findings(result, args.format, strict=False)
        return EXIT_INVALID
    if result.warnings:
        print_findings(result, args.format, strict=False)
    files = render_generation(result.state)
    try:
        write_tree(files, args.out)
    except OSError as exc:
        print(f"netboot-reconcile render: {exc}", file=sys.stderr)
        return EXIT_ERROR
    print(f"rendered {len(files)} files of revision {result.state.revision} into {args.out}", file=sys.stderr)
    return EXIT_VALID
