"""`netboot-reconcile render [PATH] --out DIR [--site NAME] [--format text|json|github] [--age-identity FILE]`.

Validates the repository directory at PATH like `validate` and, when it is valid, writes the
generation the daemon would serve (`core.render.render_generation`) under DIR: the same tree as
`generations/<sha>/`, a matchbox data directory. An invalid repository is refused with its
findings printed as `validate` prints them (exit 1); usage or I/O errors exit 2. Rendered files
are replaced atomically. A render records what it wrote in DIR/.netboot-render.json, and the next
render removes what it wrote before and no longer holds (a deleted node's matchbox group must not
keep booting it); files it never wrote are left alone. Every file is written mode 0600 (mkstemp).
Secrets render as placeholders (`<secret:NAME>`) unless --age-identity FILE decrypts them.
A repository with `sites:` renders each site into DIR/<site>/, or with --site NAME that site into
DIR (what `run --site NAME` serves); a site it does not declare exits 2 naming those it does.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path

from reconciler.commands.validate import (
    EXIT_ERROR,
    EXIT_INVALID,
    EXIT_VALID,
    add_identity_option,
    identity_of,
    note_unchecked,
    print_findings,
    validate_path,
)
from reconciler.core.errors import InvalidRevision
from reconciler.core.render import failure_issue, render_generation, render_served
from reconciler.core.template import TemplateFailure
from reconciler.core.validate import Validation


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("render", help="render a provisioning repository (a directory) into DIR")
    p.add_argument("path", nargs="?", default=".", type=Path, help="repository directory (default: .)")
    p.add_argument("--out", required=True, type=Path, metavar="DIR", help="directory to write the rendered tree into")
    p.add_argument("--format", choices=("text", "json", "github"), default="text", help="format of findings")
    p.add_argument("--site", metavar="NAME",
                   help="render this site of a repository with sites: (default: each into DIR/<site>/)")
    add_identity_option(p)
    p.set_defaults(func=run)


MANIFEST = ".netboot-render.json"


def _previous(out: Path) -> list[str]:
    try:
        listed = json.loads((out / MANIFEST).read_text("utf-8")).get("files", [])
    except (OSError, ValueError, AttributeError):
        return []
    return [rel for rel in listed if isinstance(rel, str) and ".." not in Path(rel).parts and not rel.startswith("/")]


def write_tree(files: Mapping[str, bytes], out: Path) -> None:
    """Write `files` under `out`, each through a temporary file renamed into place; then remove
    what the previous render wrote that this one does not hold, and record what this one wrote."""
    stale = [rel for rel in _previous(out) if rel not in files]
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
    for rel in stale:
        (out / rel).unlink(missing_ok=True)
        parent = (out / rel).parent
        while parent != out and parent.is_dir() and not any(parent.iterdir()):
            parent.rmdir()
            parent = parent.parent
    (out / MANIFEST).write_text(json.dumps({"files": sorted(files)}, indent=1) + "\n", "utf-8")


def run(args: argparse.Namespace) -> int:
    try:
        decrypt = identity_of(args)
        result = validate_path(args.path, decrypt)
    except (OSError, ValueError) as exc:
        print(f"netboot-reconcile render: {exc}", file=sys.stderr)
        return EXIT_ERROR
    if result.errors:
        print_findings(result, args.format, strict=False, path=args.path)
        return EXIT_INVALID
    if args.site is not None or result.state is not None:
        try:
            trees = {args.out: result.for_site(args.site)}
        except InvalidRevision as exc:  # a site the repository does not declare: the caller's mistake
            print(f"netboot-reconcile render: {exc}", file=sys.stderr)
            return EXIT_ERROR
    else:
        trees = {args.out / name: state for name, state in result.sites.items()}
    if result.warnings:
        print_findings(result, args.format, strict=False, path=args.path)
    note_unchecked(result, decrypt)
    for out, state in trees.items():
        try:
            files = render_generation(state) if decrypt is None else render_served(state, None, decrypt)
        except TemplateFailure as exc:
            failed = Validation(None, (*result.issues, failure_issue(exc)))
            return print_findings(failed, args.format, strict=False, path=args.path)
        except InvalidRevision as exc:
            return print_findings(Validation(None, (*result.issues, *exc.findings)), args.format, strict=False,
                                  path=args.path)
        try:
            write_tree(files, out)
        except OSError as exc:
            print(f"netboot-reconcile render: {exc}", file=sys.stderr)
            return EXIT_ERROR
        at = f" (site {state.site.name})" if state.site.name else ""
        print(f"rendered {len(files)} files of revision {state.revision}{at} into {out}", file=sys.stderr)
    return EXIT_VALID
