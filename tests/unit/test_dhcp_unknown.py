"""A netbooting machine no node declares, left unanswered by DHCP (protocol.dhcp_decide): silent on
the wire, but its DISCOVER is a `dhcp-ignored` event, so the dashboard can list it (issue 24: in
proxy mode, or in full mode without a pool, it was heard from nowhere and never listed)."""

from __future__ import annotations

from reconciler.core.events import Stage
from reconciler.core.model import DhcpMode, UnknownClients
from reconciler.generation import Generation
from reconciler.protocol import dhcp as d
from reconciler.protocol.dhcp_decide import Decision, decide
from tests.dhcp_fixtures import MemoryLeases, client_message, make_state, node, pxe_options

KNOWN, STRANGER = "52:54:00:00:00:01", "52:54:00:00:00:77"


def answer(mtype: int, mac: str, *, mode: DhcpMode = "full", pool: bool = True, unknown: UnknownClients = "ignore",
           options: dict[int, bytes] | None = None, port: int = 67) -> Decision:
    state = make_state((node("n1", KNOWN, "10.99.0.21"),), mode=mode,
                       pool=("10.99.0.100", "10.99.0.149") if pool else None, unknown=unknown)
    plan = Generation(revision="rev1", state=state, files={}).dhcp_plan
    message = client_message(mtype, mac, options=pxe_options(7) if options is None else options)
    return decide(message, plan, MemoryLeases(), 1000.0, port=port)


def test_an_unknown_pxe_client_in_proxy_mode_is_recorded_not_answered() -> None:
    got = answer(d.DISCOVER, STRANGER, mode="proxy")
    assert got.reply is None and got.stage == Stage.DHCP_IGNORED and got.node is None
    assert got.detail["vendor_class"] == "PXEClient:Arch:00007:UNDI:003000" and got.detail["arch"] == 7
    assert got.detail["reason"] == "unknown client (unknown_clients: ignore)"
    # a known machine is answered as before; an OS asking DHCP (no PXE vendor class) stays unrecorded
    assert answer(d.DISCOVER, KNOWN, mode="proxy").stage == Stage.DHCP_OFFER
    assert answer(d.DISCOVER, STRANGER, mode="proxy", options={}).stage is None
    # only the DISCOVER: the port-4011 REQUEST of the same boot attempt adds nothing
    assert answer(d.REQUEST, STRANGER, mode="proxy", port=4011).stage is None


def test_an_unknown_pxe_client_without_a_pool_is_recorded_not_answered() -> None:
    got = answer(d.DISCOVER, STRANGER, pool=False)
    assert (got.reply, got.stage, got.detail["reason"]) == (None, Stage.DHCP_IGNORED, "unknown client and no pool")
    ipxe = answer(d.DISCOVER, STRANGER, pool=False, unknown="boot", options={d.OPT_USER_CLASS: b"iPXE"})
    assert ipxe.stage == Stage.DHCP_IGNORED and ipxe.detail["user_class"] == "iPXE"
    # with a pool it gets an address (no boot file) and its OFFER is the event, as before
    offered = answer(d.DISCOVER, STRANGER)
    assert offered.reply is not None and offered.stage == Stage.DHCP_OFFER and offered.detail["filename"] is None
