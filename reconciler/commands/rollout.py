"""`netboot-reconcile rollout pause|resume|status [--url URL] [--secret-file FILE]`: a running daemon's rollout.

Called by `reconciler.cli`. Talks to the daemon over HTTP like `status --url` (/api/rollouts).
`status` prints the current rollout: its state and why, then each node's state and why; exit 0
while it runs or is done (or there is none), 1 when it is paused or finished with failures, 2
when the daemon cannot be reached. `pause [--reason TEXT]` and `resume` are operator actions:
the request body is signed with the daemon's webhook secret (`--secret-file`, the file given
to the daemon as --webhook-secret-file), as a push webhook is; exit 0 done, 1 refused (no
running rollout, no or a wrong secret), 2 unreachable or usage.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from reconciler.commands.status import DEFAULT_URL

EXIT_OK, EXIT_REFUSED, EXIT_ERROR = 0, 1, 2


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("rollout", help="show, pause or resume a running daemon's rollout")
    p.add_argument("action", choices=("status", "pause", "resume"))
    p.add_argument("--url", default=DEFAULT_URL, help=f"the daemon's HTTP address (default {DEFAULT_URL})")
    p.add_argument("--secret-file", type=Path, metavar="FILE",
                   help="the daemon's --webhook-secret-file, which signs pause and resume")
    p.add_argument("--reason", default="", help="why (pause): shown in /status and the rollout")
    p.add_argument("--format", choices=("text", "json"), default="text")
    p.set_defaults(func=run)


def _base(url: str) -> str:
    if not url.startswith(("http://", "https://")):
        raise ValueError(f"{url}: expected an http:// URL")
    return url.rstrip("/") + "/api/rollouts"


def _when(epoch: Any) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(epoch)) if isinstance(epoch, int | float) else "-"


def format_rollout(doc: dict[str, Any] | None) -> str:
    if doc is None:
        return "no rollout\n"
    counts = doc.get("counts") or {}
    lines = [f"rollout of {str(doc.get('revision'))[:12]}: {doc.get('state')}"
             + (f" ({doc['paused']})" if doc.get("paused") else "")]
    policy = doc.get("policy") or {}
    lines.append(f"policy:   max_in_flight {policy.get('max_in_flight')}, on_failure {policy.get('on_failure')}, "
                 f"power {'on' if policy.get('power') else 'off'}")
    lines.append("nodes:    " + ", ".join(f"{n} {k}" for k, n in counts.items() if n) + f" (updated "
                 f"{_when(doc.get('updated'))})")
    for node in doc.get("nodes") or []:
        lines.append(f"  {node['node']:<20} {node['state']:<20} {node.get('why', '')}: {node.get('reason', '')}")
    return "\n".join(lines) + "\n"


def run(args: argparse.Namespace) -> int:
    try:
        base = _base(args.url)
    except ValueError as exc:
        print(f"netboot-reconcile rollout: {exc}", file=sys.stderr)
        return EXIT_ERROR
    if args.action == "status":
        try:
            with urllib.request.urlopen(base, timeout=10) as resp:  # noqa: S310 (scheme checked)
                doc = json.loads(resp.read())
        except (OSError, ValueError) as exc:
            print(f"netboot-reconcile rollout: cannot reach {base}: {exc}", file=sys.stderr)
            return EXIT_ERROR
        current = doc.get("current")
        print(json.dumps(doc, indent=2) if args.format == "json" else format_rollout(current), end="" if
              args.format == "text" else "\n")
        return EXIT_REFUSED if current is not None and current.get("state") in ("paused", "failed") else EXIT_OK
    if args.secret_file is None:
        print("netboot-reconcile rollout: pause and resume need --secret-file (the daemon's --webhook-secret-file)",
              file=sys.stderr)
        return EXIT_ERROR
    try:
        secret = args.secret_file.read_bytes().strip()
    except OSError as exc:
        print(f"netboot-reconcile rollout: {args.secret_file}: {exc.strerror}", file=sys.stderr)
        return EXIT_ERROR
    # The action and the time are signed: the daemon takes a request once, for that action only,
    # within minutes of its clock (servers.http_rollouts).
    body = json.dumps({"action": args.action, "time": time.time(), "reason": args.reason}).encode()
    signature = "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()
    request = urllib.request.Request(f"{base}/{args.action}", data=body, method="POST",  # noqa: S310
                                     headers={"Content-Type": "application/json", "X-Signature": signature})
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:  # noqa: S310 (scheme checked)
            doc = json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        try:
            error = json.loads(exc.read()).get("error", exc.reason)
        except ValueError:
            error = exc.reason
        print(f"netboot-reconcile rollout {args.action}: refused ({exc.code}): {error}", file=sys.stderr)
        return EXIT_REFUSED
    except (OSError, ValueError) as exc:
        print(f"netboot-reconcile rollout: cannot reach {base}: {exc}", file=sys.stderr)
        return EXIT_ERROR
    print(json.dumps(doc, indent=2) if args.format == "json" else format_rollout(doc.get("current")), end="")
    return EXIT_OK
