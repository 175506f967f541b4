"""Boot reports: whether a machine's report is accepted, and which revision it counts for.

Pure: the HTTP results app (`reconciler.servers.http_results.ReportApp`) gathers what it knows
about one `POST /report/...` (the nodes served generations declare for the MAC, the client's
address and what our DHCP server knows of it, the token, the revision the report names, the
revision that last served the machine an install step) into a `ReportFacts`, and
`decide_report` answers. The table (README "Who may report"):

| token                           | client address                      | decision                      |
|---------------------------------|-------------------------------------|-------------------------------|
| (no node declares the MAC)      | any                                 | refused `unknown-node` (404)  |
| matches a node's token at rev R | any                                 | accepted, counts for R        |
| present, matches none           | the node's reserved/leased address  | accepted                      |
| present, matches none           | any other                           | refused `bad-token` (403)     |
| absent                          | the node's reserved/leased address  | accepted                      |
| absent                          | any other                           | refused `wrong-address` (403) |

The revision of an accepted report without a matching token: the one it names when that
generation is kept, else the one that last served the machine an install step (script, kernel,
seed), else the current one, else the named one as it is.
"""

from __future__ import annotations

import hmac
from collections.abc import Collection, Sequence
from dataclasses import dataclass

from reconciler.core import template
from reconciler.core.model import Node


@dataclass(frozen=True)
class ReportFacts:
    """What the server knows about one report."""

    mac: str  # normalised
    client: str  # the client's address ("" when unknown)
    nodes: Sequence[tuple[str, Node]]  # (revision, node) of every kept generation declaring the MAC, current first
    token: str = ""  # from the X-Netboot-Token header, ?token= or a `token` field
    named_revision: str = ""  # the report's own `revision`, if any
    serving: str | None = None  # the revision that last served this machine an install step
    leased_to: str | None = None  # the MAC our DHCP server reserved or leased `client` to, if known
    current: str | None = None  # the revision served now
    kept: Collection[str] = ()  # revisions whose generations are kept (a named revision must be one)


@dataclass(frozen=True)
class ReportDecision:
    """Accepted (`refused == ""`) with the revision it counts for, or refused with a reason."""

    revision: str = ""
    refused: str = ""  # unknown-node | bad-token | wrong-address
    message: str = ""
    by_token: bool = False

    @property
    def accepted(self) -> bool:
        return not self.refused


def token_revision(facts: ReportFacts, secret: bytes | None) -> str | None:
    """The revision whose token for this node the report carries, or None.

    Tried: every kept generation declaring the MAC, then the revision that last served the
    machine (its generation may be collected: a long install), with the current node's name."""
    if not secret or not facts.token or not facts.nodes:
        return None
    candidates = list(facts.nodes)
    if facts.serving is not None and all(rev != facts.serving for rev, _ in facts.nodes):
        candidates.append((facts.serving, facts.nodes[0][1]))
    given = facts.token.encode()
    for revision, node in candidates:
        if hmac.compare_digest(template.report_token(secret, node.name, revision).encode(), given):
            return revision
    return None


def from_node(facts: ReportFacts) -> bool:
    """Whether the report comes from the node's reserved address, or one our DHCP server leased to its MAC."""
    if not facts.client:
        return False
    if any(node.ip is not None and str(node.ip) == facts.client for _, node in facts.nodes):
        return True
    return facts.leased_to is not None and facts.leased_to == facts.mac


def decide_report(facts: ReportFacts, secret: bytes | None) -> ReportDecision:
    """Accept or refuse one report, and the revision it counts for (the module's table)."""
    if not facts.nodes:
        return ReportDecision(refused="unknown-node", message=f"no node has mac {facts.mac}")
    by_token = token_revision(facts, secret)
    if by_token is not None:
        return ReportDecision(revision=by_token, by_token=True)
    if not from_node(facts):
        if facts.token:
            return ReportDecision(refused="bad-token", message="report refused: its token does not match")
        return ReportDecision(
            refused="wrong-address",
            message=f"report refused: it comes from {facts.client}, not the node's address, without a token",
        )
    return ReportDecision(revision=report_revision(facts))


def report_revision(facts: ReportFacts) -> str:
    """The revision a report without a matching token counts for."""
    named = facts.named_revision
    if named and named in facts.kept:
        return named
    if facts.serving is not None:
        return facts.serving
    return facts.current if facts.current is not None else named
