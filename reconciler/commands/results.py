"""`netboot-reconcile results [--state-dir DIR | --store URL] [--site NAME] [--commit SHA] [--node NAME]
[--format text|json]`.

Called by `reconciler.cli`. Reads `results.sqlite3` in the state directory directly (the daemon
need not run), or the PostgreSQL store instances share (`--store`), and prints every commit the
daemon saw (newest first) with its state (applied, superseded, rejected with its findings,
failed: the words of /status), per node of an applied one how its boot went
(carried over from earlier commits serving it the same plan), then each node's drift (the plan
it last booted vs the one the serving commit gives it). `desired` means what /status means: the
newest commit seen, served or not. `--format json` adds every node's events (stage, time, client,
detail); it is what scripts and the e2e tests read. The newest rollouts follow (`rollouts`: each
node waiting, in flight, done, failed or needing a manual reboot, and why; core.rollout). A store
several sites share shows every site's nodes; `--site NAME` only that site's (its nodes, its
machines' events, the commits it applied), and an unknown site exits 2 naming those the store has.
Exit 0, or 2 when there is no store, the commit is unknown/ambiguous or the node unknown.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
import time
from pathlib import Path
from typing import Any

from reconciler.adapters.store import RESULTS_FILE, ResultsQueries, ResultsReader
from reconciler.commands.rollout import format_rollout
from reconciler.core import outcomes

EXIT_OK, EXIT_ERROR = 0, 2


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("results", help="which machines booted each commit, and how it went")
    p.add_argument("--state-dir", type=Path, default=Path(".netboot-state"), metavar="DIR",
                   help="the daemon's state directory (default ./.netboot-state)")
    p.add_argument("--store", metavar="URL", help="the daemons' postgresql:// store (instead of --state-dir)")
    p.add_argument("--site", metavar="NAME", help="only this site's nodes (a store several sites share)")
    p.add_argument("--commit", metavar="SHA", help="only this commit (a sha or a unique prefix)")
    p.add_argument("--node", help="only this node (name or MAC)")
    p.add_argument("--limit", type=int, default=10, metavar="N", help="newest commits shown (default 10)")
    p.add_argument("--boot-timeout", type=float, default=outcomes.DEFAULT_BOOT_TIMEOUT / 60, metavar="MINUTES",
                   help="a boot with no result after this long has timed out (default 60)")
    p.add_argument("--format", choices=("text", "json"), default="text")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        reader = ResultsReader(args.store or args.state_dir / RESULTS_FILE)
    except (OSError, RuntimeError, ValueError) as exc:
        print(f"netboot-reconcile results: {exc}", file=sys.stderr)
        return EXIT_ERROR
    try:
        known = reader.sites()
        if args.site is not None and args.site not in known:
            print(f"netboot-reconcile results: --site {args.site}: no instance of that site recorded here "
                  f"(sites: {', '.join(s or '(none)' for s in known) or 'none yet'})", file=sys.stderr)
            return EXIT_ERROR
        view = reader.for_site(args.site)
        doc = outcomes.commits_report(
            view,
            now=time.time(),
            timeout=max(args.boot_timeout, 0.0) * 60,
            limit=max(args.limit, 1),
            commit=args.commit,
            node=args.node,
            with_events=args.format == "json",
        )
        doc["site"] = args.site
        doc["rollouts"] = [r.as_dict() for r in view.rollouts(5)]  # newest first, of --site (core.rollout)
        if args.node is not None:
            for rollout in doc["rollouts"]:
                rollout["nodes"] = [n for n in rollout["nodes"] if args.node in (n["node"], n["mac"])]
        if args.node is not None and not _known_node(view, args.node, doc):
            print(f"netboot-reconcile results: node {args.node!r}: no applied commit declares it and no boot of it "
                  "was reported (a node's name, or its MAC in lowercase colon form)", file=sys.stderr)
            return EXIT_ERROR
    except outcomes.UnknownCommit as exc:
        print(f"netboot-reconcile results: {exc}", file=sys.stderr)
        return EXIT_ERROR
    finally:
        reader.close()
    if args.format == "json":
        print(json.dumps(doc, indent=2))
    else:
        print(format_text(doc), end="")
        if doc["rollouts"]:
            print("\n" + format_rollout(doc["rollouts"][0]), end="")
    return EXIT_OK


def _known_node(reader: ResultsQueries, node: str, doc: dict[str, Any]) -> bool:
    """Whether `node` (a name, or a MAC in lowercase colon form) is one the store has seen."""
    if doc["nodes"] or any(c["nodes"] for c in doc["commits"]):
        return True
    return bool(reader.node_revisions(node) or reader.events_of_node(node, node, limit=1))


def _when(t: float | None) -> str:
    if t is None:
        return "-"
    return datetime.datetime.fromtimestamp(t, datetime.UTC).strftime("%Y-%m-%d %H:%M")


def format_text(doc: dict[str, Any]) -> str:
    """Commits as blocks, nodes as rows: a table a person reads at a glance."""
    out: list[str] = []
    if not doc["commits"]:
        return "no commit recorded yet\n"
    site = f"site {doc['site']}  " if doc.get("site") else ""
    total = doc["total_commits"]
    seen = f"{total} commit{'' if total == 1 else 's'} seen"
    out.append(f"{site}desired {(doc['desired_revision'] or '-')[:12]}  "
               f"applied {(doc['last_applied_revision'] or '-')[:12]}  ({seen})")
    out.append("")
    for c in doc["commits"]:
        head = f"commit {c['revision'][:12]}  {c['state']}"
        if c["subject"]:
            head += f"  {c['subject']}"
        out.append(head)
        if c["state"] in ("rejected", "failed"):
            out.append(f"  {c['reason']}" if c["reason"] else "  (no reason recorded)")
            for f in c["findings"]:
                out.append(f"  {f.get('file')}:{f.get('line')}: {f.get('code')}: {f.get('message')}")
            out.append("")
            continue
        counts = [f"{c['targeted']} targeted", f"{c['booted']} booted"]
        counts += [f"{c[k]} {k.replace('_', ' ')}" for k in
                   ("succeeded", "failed", "timed_out", "in_progress", "local_disk", "pending") if c.get(k)]
        out.append(f"  applied {_when(c['applied'])}: {', '.join(counts)}")
        rows = [(n["node"] or "?", n["mac"] or "-", n["outcome"], _when(n["started"]), n["reason"]) for n in c["nodes"]]
        if rows:
            widths = [max(len(r[i]) for r in [*rows, ("NODE", "MAC", "OUTCOME", "STARTED", "")]) for i in range(4)]
            header = ("NODE", "MAC", "OUTCOME", "STARTED", "DETAIL")
            for r in (header, *rows):
                out.append(("  " + "  ".join(v.ljust(widths[i]) for i, v in enumerate(r[:4])) + "  " + r[4]).rstrip())
        out.append("")
    if doc["nodes"]:
        out.append("drift (the plan each node last booted vs the one the serving commit gives it):")
        width = max(len(n["node"]) for n in doc["nodes"])
        for n in doc["nodes"]:
            last = (n["last_booted_revision"] or "never")[:12]
            state = "DRIFT" if n["drift"] else "in sync"
            outcome = f"({n['last_outcome']})"
            out.append(f"  {n['node'].ljust(width)}  last booted {last.ljust(12)} {outcome.ljust(12)}  {state}")
        out.append("")
    return "\n".join(out)
