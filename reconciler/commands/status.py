"""`netboot-reconcile status [--url URL] [--format text|json]`: a running daemon's /status, readably.

Called by `reconciler.cli`. Exit 0 when the daemon is Ready, 1 when it is Reconciling or
Stalled (the reason and the findings of the last failed commit are printed), 2 when the
daemon cannot be reached. Warnings (the served DHCP sends clients where we do not listen) are
printed but do not change the exit code.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import urllib.error
import urllib.request
from typing import Any

EXIT_READY, EXIT_NOT_READY, EXIT_ERROR = 0, 1, 2
DEFAULT_URL = "http://127.0.0.1:8080"


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("status", help="show a running daemon's status")
    p.add_argument("--url", default=DEFAULT_URL, help=f"the daemon's HTTP address (default {DEFAULT_URL})")
    p.add_argument("--format", choices=("text", "json"), default="text")
    p.set_defaults(func=run)


def fetch_status(url: str, timeout: float = 5.0) -> dict[str, Any]:
    base = url.rstrip("/")
    if not base.endswith("/status"):
        base += "/status"
    if not base.startswith(("http://", "https://")):
        raise ValueError(f"{url}: expected an http:// URL")
    with urllib.request.urlopen(base, timeout=timeout) as resp:  # noqa: S310 (scheme checked above)
        doc = json.loads(resp.read())
    if not isinstance(doc, dict):
        raise ValueError(f"{base}: not a status document")
    return doc


def _short(revision: Any) -> str:
    return str(revision)[:12] if revision else "-"


def _when(epoch: Any) -> str:
    if not isinstance(epoch, int | float):
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(epoch))


def format_status(doc: dict[str, Any]) -> str:
    lines = []
    condition = doc.get("condition", "?")
    reason = doc.get("reason") or ""
    lines.append(f"{condition}" + (f" ({reason})" if reason else "") + (f": {doc['message']}" if doc.get("message")
                                                                        else ""))
    lines.append(f"source:     {doc.get('source', '-')}")
    if doc.get("site"):
        lines.append(f"site:       {doc['site']}")
    lines.append(f"desired:    {doc.get('desired_revision') or '-'}")
    lines.append(f"attempted:  {doc.get('last_attempted_revision') or '-'}")
    lines.append(f"applied:    {doc.get('last_applied_revision') or '-'}")
    generation = doc.get("generation")
    if generation:
        lines.append(
            f"serving:    {_short(generation.get('revision'))} since {_when(generation.get('activated_at'))}, "
            f"{generation.get('nodes', '?')} nodes, {generation.get('files', '?')} files"
        )
    else:
        lines.append("serving:    nothing yet")
    servers = doc.get("servers") or {}
    for name, server in servers.items():
        detail = server.get("address") or ""
        if "active_transfers" in server:
            detail += f", {server['active_transfers']} active transfers"
        if server.get("error"):
            detail += f" ({server['error']})"
        lines.append(f"{name + ':':<11} {server.get('state', '?')} {detail}".rstrip())
    instances = doc.get("instances") or []
    if len(instances) > 1:  # a shared store (--store): what every instance serves, from the store
        lines.append("instances:")
        for i in instances:
            me = "  (this one)" if i.get("name") == doc.get("instance") else ""
            lines.append(f"  {i.get('name', '?'):<16} serving {_short(i.get('revision')):<12} "
                         f"since {_when(i.get('since'))}, last seen {_when(i.get('seen'))}{me}")
    for warning in doc.get("warnings") or []:
        lines.append(f"warning:    {warning}")
    findings = doc.get("findings") or []
    if findings:
        lines.append(f"findings of {_short(doc.get('last_attempted_revision'))} (not served):")
        for f in findings:
            lines.append(f"  {f['file']}:{f['line']}:{f['column']}: {f['severity']} {f['code']}: {f['message']}")
    reconciles = doc.get("reconciles") or []
    if reconciles:
        lines.append("recent reconciles:")
        for r in reconciles:
            extra = f"  {r['reason']}" if r.get("reason") and r.get("result") != "applied" else ""
            lines.append(
                f"  {_when(r.get('started'))}  {r.get('result', '?'):<8} {_short(r.get('revision')):<12} "
                f"{float(r.get('duration_seconds', 0)):7.3f}s  {r.get('trigger', '')}{extra}"
            )
    return "\n".join(lines) + "\n"


def run(args: argparse.Namespace) -> int:
    try:
        doc = fetch_status(args.url)
    except (OSError, ValueError, urllib.error.URLError) as exc:
        print(f"netboot-reconcile status: cannot read {args.url}: {exc}", file=sys.stderr)
        return EXIT_ERROR
    if args.format == "json":
        sys.stdout.write(json.dumps(doc, indent=2) + "\n")
    else:
        sys.stdout.write(format_status(doc))
    return EXIT_READY if doc.get("condition") == "Ready" else EXIT_NOT_READY
