"""core.reports: who may report for a node, and which revision the report counts for (the decision table)."""

from __future__ import annotations

from ipaddress import IPv4Address

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reconciler.core import reports, template
from reconciler.core.model import Node

SECRET = b"k" * 32
MAC = "52:54:00:aa:bb:01"
R1, R2, OLD = "1" * 40, "2" * 40, "0" * 40
NODE = Node("node-1", MAC, "install", "node-1", IPv4Address("10.0.0.21"))
NO_IP = Node("node-1", MAC, "install", "node-1", None)


def facts(node: Node = NODE, **kw: object) -> reports.ReportFacts:
    base: dict[str, object] = {"mac": MAC, "client": "10.0.0.99", "nodes": [(R2, node), (R1, node)],
                               "current": R2, "kept": {R1, R2}}
    base.update(kw)
    return reports.ReportFacts(**base)  # type: ignore[arg-type]


def token(revision: str) -> str:
    return template.report_token(SECRET, "node-1", revision)


@pytest.mark.parametrize(
    ("f", "refused", "revision"),
    [
        # no node declares the MAC
        (facts(nodes=[]), "unknown-node", ""),
        (facts(nodes=[], client="10.0.0.21", token=token(R1)), "unknown-node", ""),
        # a matching token, from anywhere: counts for the token's revision, whatever the report names
        (facts(token=token(R1)), "", R1),
        (facts(token=token(R2), named_revision=R1), "", R2),
        # the token of a revision no longer kept, that last served the machine (a long install)
        (facts(token=token(OLD), serving=OLD), "", OLD),
        (facts(token=token(OLD)), "bad-token", ""),
        # a wrong token: refused, unless from the node's own address
        (facts(token="00000000"), "bad-token", ""),
        (facts(token="00000000", client="10.0.0.21"), "", R2),
        # no token: the node's reserved address, or the address our DHCP leased to its MAC
        (facts(), "wrong-address", ""),
        (facts(client="10.0.0.21"), "", R2),
        (facts(NO_IP, client="10.0.0.57", leased_to=MAC), "", R2),
        (facts(NO_IP, client="10.0.0.57", leased_to="52:54:00:00:00:77"), "wrong-address", ""),
        (facts(NO_IP, client="10.0.0.57"), "wrong-address", ""),
        (facts(client=""), "wrong-address", ""),
        # the revision of an accepted report without a token: named (if kept) > serving > current
        (facts(client="10.0.0.21", named_revision=R1, serving=R2), "", R1),
        (facts(client="10.0.0.21", named_revision=OLD, serving=R1), "", R1),
        (facts(client="10.0.0.21", serving=R1), "", R1),
        (facts(client="10.0.0.21", named_revision=OLD), "", R2),
        (facts(client="10.0.0.21", named_revision=OLD, current=None), "", OLD),
    ],
)
def test_decision_table(f: reports.ReportFacts, refused: str, revision: str) -> None:
    decision = reports.decide_report(f, SECRET)
    assert (decision.refused, decision.revision) == (refused, revision), decision
    assert decision.accepted is (refused == "")
    if refused:
        assert decision.message


def test_without_a_secret_no_token_matches() -> None:
    assert reports.decide_report(facts(token=token(R1)), None).refused == "bad-token"
    assert reports.decide_report(facts(token=token(R1), client="10.0.0.21"), None).revision == R2


def test_refusal_messages_say_why() -> None:
    assert "not the node's address" in reports.decide_report(facts(), SECRET).message
    assert "token does not match" in reports.decide_report(facts(token="x"), SECRET).message
    assert "no node has mac" in reports.decide_report(facts(nodes=[]), SECRET).message


# --- report bodies (parse_report_body) -----------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300), st.sampled_from(["application/json", "application/x-www-form-urlencoded", ""]))
def test_any_body_is_a_mapping_or_unreadable_never_another_exception(body: bytes, content_type: str) -> None:
    try:
        fields = reports.parse_report_body(body, content_type)
    except reports.UnreadableReport as exc:
        assert str(exc)
    else:
        assert isinstance(fields, dict)


def test_deep_json_is_refused_before_json_reads_it() -> None:
    # Brackets inside strings do not count.
    assert reports.json_nesting_ok('{"a": [1, {"b": "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[["}]}')
    assert reports.json_nesting_ok("[" * 32 + "]" * 32)
    assert not reports.json_nesting_ok("[" * 33 + "]" * 33)
    with pytest.raises(reports.UnreadableReport, match="nests deeper than 32"):
        reports.parse_report_body(b"[" * 100_000 + b"]" * 100_000, "application/json")
    assert reports.parse_report_body(b'{"status": "success", "n": {"a": [1, 2]}}', "application/json") == {
        "status": "success", "n": {"a": [1, 2]}}
    assert reports.parse_report_body(b"status=failure&message=no+disk", "") == {"status": "failure",
                                                                              "message": "no disk"}
    assert reports.parse_report_body(b"  ", "application/json") == {}
