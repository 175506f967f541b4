"""`netboot-reconcile diff --repo PATH BASE HEAD [--format markdown|json] [--path SUBDIR]
[--state-dir DIR | --url URL] [--verify-commits FILE] [--age-identity FILE]`.

Reads both commits straight from git (no checkout), validates and renders each, and prints
what changes for the machines (`reconciler.core.plan`, printed by `core.plan_format`).
BASE and HEAD are anything `git rev-parse` accepts: branch names, `HEAD~1`, shas. With
`--state-dir`, the daemon's results store says which machines reported a successful install, and
the install-once verdicts are per machine (`core.plan.with_installs`); `--url` asks a running
daemon the same (its `/api/installs`), for a CI job or a laptop with no access to the state dir.
With `--verify-commits`, HEAD's signature is checked as the daemon checks it (`adapters.commitsig`):
an unsigned or wrongly signed HEAD is an invalid HEAD, its `commit-signature` finding first.
Secrets are rendered as placeholders, `<secret:NAME:changed>` where HEAD's value differs from
BASE's (compared decrypted with `--age-identity`, else by ciphertext): a value never reaches the output.

A repository with sites is compared site by site: the blast radius is grouped by site
(`plan_format.markdown_sites`, `as_json_sites`: the changes under `sites`).

Exit 0 no change, 1 changes (an invalid HEAD is a change: a broken one, with its findings
first), 2 error of the command itself (no such repository or revision, unreadable repository, a
state dir without a results store, a daemon that does not answer).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pygit2

from reconciler.adapters.agecrypt import AgeIdentity, load_identity
from reconciler.adapters.commitsig import Signers, load_signers, verify_commit
from reconciler.adapters.gitsource import SourceProblem, open_repository, read_tree
from reconciler.adapters.store import RESULTS_FILE, ResultsReader
from reconciler.commands.validate import validate_on_two_cpus
from reconciler.core import plan_format
from reconciler.core.errors import InvalidRevision
from reconciler.core.model import DesiredState, SecretsFile
from reconciler.core.plan import Side, compare, side, with_installs
from reconciler.core.secrets import changed_names
from reconciler.core.validate import Validation

EXIT_SAME, EXIT_CHANGES, EXIT_ERROR = 0, 1, 2


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("diff", help="what a commit range changes for the machines (for pull requests)")
    p.add_argument("--repo", required=True, type=Path, help="local git repository (work tree or bare)")
    p.add_argument("base", metavar="BASE", help="the revision before (branch, sha, HEAD~1, ...)")
    p.add_argument("head", metavar="HEAD", help="the revision after")
    p.add_argument("--format", choices=("markdown", "json"), default="markdown")
    p.add_argument("--path", default="", metavar="SUBDIR", help="the provisioning repository's directory in git")
    installs = p.add_mutually_exclusive_group()
    installs.add_argument("--state-dir", type=Path, metavar="DIR",
                          help="the daemon's state directory: verdicts from the installs its machines reported")
    installs.add_argument("--url", metavar="URL",
                          help="a running daemon's HTTP address: the same verdicts, from its /api/installs")
    installs.add_argument("--store", metavar="URL", help="the daemons' postgresql:// store: the same verdicts")
    p.add_argument("--verify-commits", type=Path, metavar="FILE",
                   help="HEAD must be signed by a key FILE lists (OpenSSH allowed_signers or OpenPGP keyring)")
    p.add_argument("--age-identity", type=Path, metavar="FILE",
                   help="age identity: HEAD's secrets must decrypt, and values are compared decrypted (never shown)")
    p.set_defaults(func=run)


def _open(path: Path) -> pygit2.Repository:
    found = pygit2.discover_repository(str(path))
    if found is None:
        raise SourceProblem(f"{path}: not a git repository")
    return open_repository(found)


def _validated(repo: pygit2.Repository, revision: str, subdir: str, origin: str, signers: Signers | None = None,
               decrypt: AgeIdentity | None = None) -> tuple[str, Validation]:
    snapshot = read_tree(repo, revision, subdir, origin=origin)
    result = validate_on_two_cpus(snapshot, decrypt)
    if signers is not None:
        try:
            verify_commit(repo, revision, signers)
        except InvalidRevision as exc:  # served by no daemon verifying commits: a broken HEAD
            return snapshot.revision, Validation(None, (*exc.findings, *result.issues))
    return snapshot.revision, result


def _sides(
    base: tuple[str, Validation], head: tuple[str, Validation], decrypt: AgeIdentity | None
) -> dict[str, tuple[Side, Side]]:
    """Both sides rendered with secret placeholders, HEAD's marked where a value changed: one
    pair for a repository without sites (key ""), else one pair per site (`_site_pairs`)."""
    (base_rev, before), (head_rev, after) = base, head
    changed = changed_names(_secrets(before), _secrets(after), decrypt)
    return {name: (side(base_rev, old, before.issues), side(head_rev, new, after.issues, changed))
            for name, (old, new) in _site_pairs(before, after).items()}


def _secrets(result: Validation) -> SecretsFile | None:
    state = next(iter(result.sites.values()), None)  # shared by every site
    return state.secrets if state is not None else None


def _site_pairs(before: Validation, after: Validation) -> dict[str, tuple[DesiredState | None, DesiredState | None]]:
    """(BASE's state, HEAD's state) by site. Without sites in HEAD (or with HEAD invalid): one pair,
    as before. A site only HEAD has is compared with that site serving nothing (every node new),
    one only BASE has with it serving nothing any more; when BASE had no sites yet, each HEAD
    site is compared with BASE's serving of that site's nodes."""
    if after.state is not None or not after.sites:
        return {"": (before.state, after.state)}
    pairs: dict[str, tuple[DesiredState | None, DesiredState | None]] = {}
    for name in sorted(set(after.sites) | set(before.sites) - {""}):
        old, new = before.sites.get(name), after.sites.get(name)
        if old is None and before.state is not None and new is not None:
            mine = {n.name for n in new.nodes}
            old = dataclasses.replace(before.state, nodes=tuple(n for n in before.state.nodes if n.name in mine))
        pairs[name] = (old if old is not None else _serving_nothing(new),
                       new if new is not None else _serving_nothing(old))
    return pairs


def _serving_nothing(state: DesiredState | None) -> DesiredState | None:
    return dataclasses.replace(state, nodes=(), groups=()) if state is not None else None


def _installed(store: Path | str) -> set[tuple[str, str, int]]:
    reader = ResultsReader(store)
    try:
        return {(node, mac, reinstall) for node, mac, reinstall, _, _ in reader.installs()}
    finally:
        reader.close()


def _installed_from(url: str, timeout: float = 10.0) -> set[tuple[str, str, int]]:
    """The reported installs, as a running daemon's `/api/installs` lists them."""
    if not url.startswith(("http://", "https://")):
        raise ValueError(f"--url {url}: expected an http:// or https:// URL")
    where = url.rstrip("/") + "/api/installs"
    try:
        with urllib.request.urlopen(where, timeout=timeout) as resp:  # noqa: S310 (scheme checked above)
            doc = json.loads(resp.read())
        return {(str(i["node"]), str(i["mac"]), int(i["reinstall"])) for i in doc["installs"]}
    except urllib.error.HTTPError as exc:
        raise ValueError(f"--url {url}: {where} answered {exc.code} {exc.reason} (not a netboot-reconcile "
                         "daemon, or one older than /api/installs)") from exc
    except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
        reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
        raise ValueError(f"--url {url}: no answer from the daemon ({reason})") from exc
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise ValueError(f"--url {url}: {where} is not a list of installs ({exc})") from exc


def run(args: argparse.Namespace) -> int:
    try:
        signers = load_signers(args.verify_commits) if args.verify_commits is not None else None
        decrypt = load_identity(args.age_identity) if args.age_identity is not None else None
        repo = _open(args.repo)
        sides = _sides(_validated(repo, args.base, args.path, str(args.repo)),
                       _validated(repo, args.head, args.path, str(args.repo), signers, decrypt), decrypt)
        where = args.store or (args.state_dir / RESULTS_FILE if args.state_dir is not None else None)
        installed = (_installed(where) if where is not None
                     else _installed_from(args.url) if args.url is not None else None)
    except (SourceProblem, InvalidRevision, pygit2.GitError, OSError, RuntimeError, ValueError) as exc:
        print(f"netboot-reconcile diff: {exc}", file=sys.stderr)
        return EXIT_ERROR
    plans = {name: compare(base, head) for name, (base, head) in sides.items()}
    if installed is not None:
        plans = {name: with_installs(plan, installed) for name, plan in plans.items()}
    if set(plans) == {""}:
        plan = plans[""]
        text = plan_format.as_json(plan) if args.format == "json" else plan_format.markdown(plan)
    else:
        text = plan_format.as_json_sites(plans) if args.format == "json" else plan_format.markdown_sites(plans)
    sys.stdout.write(text)
    return EXIT_CHANGES if any(plan.changed for plan in plans.values()) else EXIT_SAME
