"""`netboot-reconcile power NODE... on|off|cycle|status [--pxe-once] --repo PATH --bmc-credentials FILE`.

Reads the repository directory at PATH like `validate`, looks up each NODE's `bmc:` and its
credentials entry in FILE (`adapters.bmccreds`), and drives the BMCs (`adapters.bmc`), all nodes
at once. Prints one line per node: its name, the BMC, and the power state it was left in.
Everything that can be checked before touching a BMC is checked first (an invalid repository, an
unknown node, a node without `bmc:`, a credentials name FILE does not hold): exit 2, no power
action taken. Exit 1 when a BMC refused, failed or timed out (each named with its address), 0
when every node is done. Credentials are never printed.
"""

from __future__ import annotations

import argparse
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from reconciler.adapters import bmc as bmcs
from reconciler.adapters.bmccreds import Credential, CredentialsError, load
from reconciler.commands.validate import print_findings, validate_path
from reconciler.core.model import Bmc

EXIT_DONE, EXIT_BMC, EXIT_USAGE = 0, 1, 2


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("power", help="power nodes on, off or cycle through their BMCs, or show their power state")
    p.add_argument("nodes", nargs="+", metavar="NODE", help="node names (nodes/<name>.yaml)")
    p.add_argument("action", choices=bmcs.ACTIONS, help="what to do")
    p.add_argument("--pxe-once", action="store_true", help="boot from the network once at the next power-on")
    p.add_argument("--repo", required=True, type=Path, help="repository directory holding the nodes")
    p.add_argument("--bmc-credentials", required=True, type=Path, metavar="FILE",
                   help="NAME: {username, password} file (YAML or JSON, mode 600, outside git)")
    p.add_argument("--timeout", type=float, default=bmcs.TIMEOUT,
                   help=f"seconds a power change may take (default: {bmcs.TIMEOUT:.0f})")
    p.set_defaults(func=run)


def _fail(message: str) -> int:
    print(f"netboot-reconcile power: {message}", file=sys.stderr)
    return EXIT_USAGE


def run(args: argparse.Namespace) -> int:
    if args.pxe_once and args.action not in ("on", "cycle"):
        return _fail("--pxe-once applies to on and cycle only")
    try:
        result = validate_path(args.repo)
    except OSError as exc:
        return _fail(str(exc))
    if not result.sites or result.errors:
        print_findings(result, "text", strict=False, path=args.repo)
        return EXIT_USAGE
    try:
        credentials = load(args.bmc_credentials)
    except CredentialsError as exc:
        return _fail(str(exc))
    nodes = {node.name: node for state in result.sites.values() for node in state.nodes}  # every site's
    targets: list[tuple[str, Bmc, Credential]] = []
    problems: list[str] = []
    for name in dict.fromkeys(args.nodes):
        node = nodes.get(name)
        if node is None:
            problems.append(f"{name}: no such node in {args.repo}/nodes/")
        elif node.bmc is None:
            problems.append(f"{name}: {node.source.file} has no bmc:")
        elif node.bmc.credentials not in credentials:
            problems.append(f"{name}: bmc.credentials {node.bmc.credentials!r} ({node.source.file}) "
                            f"names no entry in {args.bmc_credentials}")
        else:
            targets.append((name, node.bmc, credentials[node.bmc.credentials]))
    if problems:
        return _fail("nothing done:\n  " + "\n  ".join(problems))

    def one(target: tuple[str, Bmc, Credential]) -> tuple[str, str | None, str | None]:
        name, bmc, credential = target
        try:
            state = bmcs.operate(bmc, credential, args.action, args.pxe_once, args.timeout, clear_kept=True)
            return name, state, None
        except bmcs.BmcError as exc:
            return name, None, str(exc)

    failed = False
    with ThreadPoolExecutor(max_workers=min(16, len(targets))) as pool:
        for name, state, error in pool.map(one, targets):
            if error is not None:
                failed = True
                print(f"{name}: {error}", file=sys.stderr)
            else:
                print(f"{name}: {state}")
    return EXIT_BMC if failed else EXIT_DONE
