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

Bodies (`parse_report_body`) are read only once the address or a header/query token admits the
report, or to find a `token` field when neither does; bounded in nesting and fields, and
anything unreadable is an `UnreadableReport` (400), never an exception out of the server.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

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
    stored: Collection[str] = ()  # revisions whose generations are on disk, loaded or not (tokens for them hold)


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

    Tried: every kept generation declaring the MAC, then, with the current node's name, every
    other generation on disk (not loaded since a restart: its tokens still hold) and the
    revision that last served the machine (its generation may be collected: a long install)."""
    if not secret or not facts.token or not facts.nodes:
        return None
    candidates = list(facts.nodes)
    known = {rev for rev, _ in facts.nodes}
    for revision in (*sorted(facts.stored), *([facts.serving] if facts.serving is not None else [])):
        if revision not in known:
            known.add(revision)
            candidates.append((revision, facts.nodes[0][1]))
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


# ---------------------------------------------------------------------------- report bodies

MAX_NESTING = 32  # JSON arrays/objects inside one another; real reports nest 2 or 3 deep
MAX_FORM_FIELDS = 1000


class UnreadableReport(ValueError):
    """A report body that cannot be read; the reason is said in the 400 answer."""


def json_nesting_ok(text: str, limit: int = MAX_NESTING) -> bool:
    """Whether the JSON `text` nests arrays and objects at most `limit` deep (one linear scan,
    strings skipped; run before `json.loads`, whose recursion a deep document would exhaust)."""
    depth = 0
    in_string = escaped = False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            if depth > limit:
                return False
        elif char in "]}":
            depth -= 1
    return True


def parse_report_body(body: bytes, content_type: str) -> dict[str, Any]:
    """A report body as a flat mapping: a JSON object, a form, or empty; UnreadableReport when
    it is none of these (not UTF-8, malformed, not an object, nested past MAX_NESTING, a number
    past Python's digit limit, more than MAX_FORM_FIELDS fields)."""
    try:
        text = body.decode("utf-8").strip()
    except UnicodeDecodeError as exc:
        raise UnreadableReport(f"the body is not UTF-8 (byte {exc.start})") from None
    if not text:
        return {}
    if "json" in content_type or text.startswith("{"):
        if not json_nesting_ok(text):
            raise UnreadableReport(f"the JSON body nests deeper than {MAX_NESTING}")
        try:
            doc = json.loads(text)
        except (ValueError, RecursionError) as exc:
            raise UnreadableReport(f"the body is not valid JSON: {str(exc)[:120]}") from None
        if not isinstance(doc, dict):
            raise UnreadableReport("the JSON body is not an object")
        return doc
    try:
        form = parse_qs(text, keep_blank_values=True, max_num_fields=MAX_FORM_FIELDS)
    except ValueError as exc:
        raise UnreadableReport(f"the form body is too long: {str(exc)[:120]}") from None
    if not form:
        raise UnreadableReport("the body is neither JSON nor a form")
    return {k: v[0] if len(v) == 1 else v for k, v in form.items()}
