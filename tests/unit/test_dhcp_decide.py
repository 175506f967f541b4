"""protocol.dhcp_decide: what each client ends up with (address, boot file, next-server)."""

from __future__ import annotations

import struct
from collections.abc import Mapping
from ipaddress import IPv4Address, IPv4Network
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reconciler.core.model import BootFiles, Node, Subnet
from reconciler.protocol import dhcp as d
from reconciler.protocol.dhcp_decide import AnswerMemo, Decision, decide, plan_dhcp
from tests.dhcp_fixtures import (
    SERVER,
    MemoryLeases,
    client_message,
    make_state,
    node,
    pxe_options,
    vectors,
)

NOW = 1_000_000.0
BINARIES = {"undionly.kpxe", "ipxe.efi", "snp.efi"}
SCRIPT_URL = "http://10.99.0.1:8080/boot.ipxe"


def filename(decision: Decision) -> str | None:
    reply = decision.reply
    assert reply is not None
    name = reply.options.get(d.OPT_BOOTFILE) or reply.file
    return name.decode() if name else None


def run(message: d.DhcpMessage, state_kwargs: Mapping[str, Any] | None = None, leases: MemoryLeases | None = None,
        port: int = 67, nodes: tuple[Node, ...] | None = None) -> Decision:
    state = make_state(
        nodes if nodes is not None else (node("n1", "52:54:00:12:34:56", "10.99.0.157"),
                                          node("n2", "52:54:00:12:34:58", "10.99.0.159")),
        **(state_kwargs or {}),
    )
    return decide(message, plan_dhcp(state), leases or MemoryLeases(), NOW, port=port)


# --- the real firmware -----------------------------------------------------------------

EXPECTED = {
    # client: (filename, next-server set)
    "iPXE (BIOS ROM in QEMU, SeaBIOS)": (SCRIPT_URL, False),
    "busybox udhcpc in Linux initramfs": (None, False),
    "OVMF UEFI firmware PXE (EDK2)": ("ipxe.efi", True),
    "iPXE ipxe.efi (UEFI, chainloaded by OVMF)": (SCRIPT_URL, False),
}


@pytest.mark.parametrize("packet", vectors(), ids=[f"{p['client']}-{p['message']}" for p in vectors()])
def test_real_firmware_gets_the_contract_boot_answer(packet: dict[str, str]) -> None:
    message = d.decode(bytes.fromhex(packet["udp_payload_hex"]))
    assert isinstance(message, d.DhcpMessage)
    decision = run(message)
    assert decision.reply is not None, decision.reason
    reply = decision.reply
    want_file, want_next = EXPECTED[packet["client"]]
    assert reply.message_type == (d.OFFER if packet["message"] == "DISCOVER" else d.ACK)
    assert filename(decision) == want_file
    assert (reply.siaddr == SERVER) is want_next
    reserved = {"52:54:00:12:34:56": "10.99.0.157", "52:54:00:12:34:58": "10.99.0.159"}[packet["chaddr"]]
    assert reply.yiaddr == IPv4Address(reserved)  # the address the capture's server handed out
    if want_file == SCRIPT_URL:
        assert reply.ipxe_options == {d.IPXE_NO_PXEDHCP: b"\x01"}
    # what the client receives on the wire says the same
    wire = d.decode(d.encode(reply))
    assert isinstance(wire, d.DhcpMessage)
    assert wire.file == (want_file.encode() if want_file else b"")


# --- the decision table ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("arch", "expected"),
    [(0, "undionly.kpxe"), (7, "ipxe.efi"), (9, "ipxe.efi"), (10, "snp.efi"), (11, "snp.efi")],
)
def test_pxe_arch_gets_its_binary_and_next_server(arch: int, expected: str) -> None:
    decision = run(client_message(d.DISCOVER, "52:54:00:12:34:56", options=pxe_options(arch)))
    assert filename(decision) == expected
    assert decision.reply is not None and decision.reply.siaddr == SERVER
    assert decision.detail["arch"] == arch


@pytest.mark.parametrize("arch", [0, 7, 11])
def test_ipxe_gets_the_script_url_whatever_its_arch(arch: int) -> None:
    decision = run(client_message(d.DISCOVER, "52:54:00:12:34:56", options=pxe_options(arch, ipxe=True)))
    assert filename(decision) == SCRIPT_URL


def test_ipxe_recognised_by_option_175_alone() -> None:
    options = {**pxe_options(7), d.OPT_IPXE_ENCAP: b"\x13\x01\x01"}
    decision = run(client_message(d.DISCOVER, "52:54:00:12:34:56", options=options))
    assert filename(decision) == SCRIPT_URL


def test_ipxe_rfc3004_user_class_form() -> None:
    options = {**pxe_options(0), d.OPT_USER_CLASS: b"\x04iPXE"}
    decision = run(client_message(d.DISCOVER, "52:54:00:12:34:56", options=options))
    assert filename(decision) == SCRIPT_URL


@pytest.mark.parametrize(("arch", "url"), [(16, "ipxe.efi"), (19, "snp.efi")])
def test_uefi_http_boot_gets_a_url_and_httpclient_echoed(arch: int, url: str) -> None:
    decision = run(client_message(d.DISCOVER, "52:54:00:12:34:56", options=pxe_options(arch, http=True)))
    assert filename(decision) == f"http://10.99.0.1:8080/assets/ipxe/{url}"
    assert decision.reply is not None
    assert decision.reply.options[d.OPT_VENDOR_CLASS] == b"HTTPClient"


@pytest.mark.parametrize("http", [False, True])
def test_32_bit_uefi_gets_no_x64_binary_unless_the_site_names_an_ia32_one(http: bool) -> None:
    # CONTRACT section 4: arch 6 (IA32 UEFI PXE) and 15 (IA32 UEFI HTTP) get the IA32 binary where
    # boot_files names one, none by default: the x64 ipxe.efi does not run on 32-bit firmware
    arch = 15 if http else 6
    message = client_message(d.DISCOVER, "52:54:00:12:34:56", options=pxe_options(arch, http=http))
    decision = run(message)
    assert decision.reply is not None and decision.reply.yiaddr == IPv4Address("10.99.0.157")
    assert filename(decision) is None
    named = run(message, {"boot_files": BootFiles(uefi_ia32="i386/ipxe.efi")})
    want = "http://10.99.0.1:8080/assets/ipxe/i386/ipxe.efi" if http else "i386/ipxe.efi"
    assert filename(named) == want
    assert named.reply is not None and (named.reply.siaddr == SERVER) is not http


@pytest.mark.parametrize("arch", [1, 2, 8, 12, 99])
def test_other_arches_get_an_address_but_no_boot_file(arch: int) -> None:
    decision = run(client_message(d.DISCOVER, "52:54:00:12:34:56", options=pxe_options(arch)))
    assert decision.reply is not None and decision.reply.yiaddr == IPv4Address("10.99.0.157")
    assert filename(decision) is None


def test_unknown_mac_gets_a_pool_address_but_no_netboot_when_ignored() -> None:
    decision = run(client_message(d.DISCOVER, "52:54:00:99:99:99", options=pxe_options(7)))
    assert decision.reply is not None
    assert decision.reply.yiaddr == IPv4Address("10.99.0.100")
    assert filename(decision) is None


def test_unknown_mac_netboots_when_unknown_clients_boot() -> None:
    decision = run(client_message(d.DISCOVER, "52:54:00:99:99:99", options=pxe_options(7)),
                   {"unknown": "boot"})
    assert filename(decision) == "ipxe.efi"


ipxe_messages = st.builds(
    lambda arch, vendor, form, mtype, extra: client_message(
        mtype,
        "52:54:00:12:34:56",
        options={
            d.OPT_CLIENT_ARCH: arch.to_bytes(2, "big"),
            d.OPT_VENDOR_CLASS: vendor,
            **({d.OPT_USER_CLASS: form} if form else {d.OPT_IPXE_ENCAP: extra}),
        },
    ),
    st.integers(0, 40),
    st.sampled_from([b"PXEClient:Arch:00000:UNDI:002001", b"PXEClient", b"HTTPClient:Arch:00016", b""]),
    st.sampled_from([b"iPXE", b"\x04iPXE", b"\x03foo\x04iPXE", None]),
    st.sampled_from([d.DISCOVER, d.REQUEST]),
    st.binary(max_size=20),
)


@settings(max_examples=300, deadline=None)
@given(ipxe_messages, st.sampled_from(["full", "proxy"]), st.sampled_from(["ignore", "boot"]))
def test_ipxe_is_never_handed_ipxe_again(message: d.DhcpMessage, mode: str, unknown: str) -> None:
    options = dict(message.options)
    options[d.OPT_REQUESTED_IP] = IPv4Address("10.99.0.157").packed
    message = d.DhcpMessage(op=message.op, xid=1, chaddr=message.chaddr, options=options)
    for port in (67, 4011):
        decision = run(message, {"mode": mode, "unknown": unknown}, port=port)
        if decision.reply is not None:
            name = filename(decision)
            assert name in (None, SCRIPT_URL)
            assert not any(name and name.endswith(b) for b in BINARIES)


# --- addresses ---------------------------------------------------------------------------


def test_reservation_offer_carries_subnet_options_and_hostname() -> None:
    decision = run(client_message(d.DISCOVER, "52:54:00:12:34:56"))
    reply = decision.reply
    assert reply is not None
    assert reply.yiaddr == IPv4Address("10.99.0.157")
    assert reply.options[d.OPT_SERVER_ID] == SERVER.packed
    assert reply.options[d.OPT_SUBNET_MASK] == IPv4Address("255.255.255.0").packed
    assert reply.options[d.OPT_ROUTERS] == IPv4Address("10.99.0.254").packed
    assert reply.options[d.OPT_DNS] == IPv4Address("9.9.9.9").packed
    assert reply.options[d.OPT_DOMAIN_NAME] == b"lab.example"
    assert reply.options[d.OPT_HOSTNAME] == b"n1"
    assert struct.unpack("!I", reply.options[d.OPT_LEASE_TIME])[0] == 600
    assert decision.lease is None  # reservations need no lease
    assert decision.node == "n1" and decision.stage == "dhcp-offer"


def test_request_for_the_reserved_address_is_acked_any_other_nakked() -> None:
    mac = "52:54:00:12:34:56"
    ok = run(client_message(d.REQUEST, mac, options={d.OPT_REQUESTED_IP: IPv4Address("10.99.0.157").packed,
                                                      d.OPT_SERVER_ID: SERVER.packed}))
    assert ok.reply is not None and ok.reply.message_type == d.ACK and ok.reply.yiaddr == IPv4Address("10.99.0.157")
    wrong = run(client_message(d.REQUEST, mac, options={d.OPT_REQUESTED_IP: IPv4Address("10.99.0.30").packed}))
    assert wrong.reply is not None and wrong.reply.message_type == d.NAK and wrong.stage == "dhcp-nak"
    elsewhere = run(client_message(d.REQUEST, mac, options={d.OPT_REQUESTED_IP: IPv4Address("192.168.1.5").packed}))
    assert elsewhere.reply is not None and elsewhere.reply.message_type == d.NAK


def test_request_to_another_server_is_ignored() -> None:
    decision = run(client_message(d.REQUEST, "52:54:00:12:34:56", options={
        d.OPT_REQUESTED_IP: IPv4Address("10.99.0.157").packed, d.OPT_SERVER_ID: IPv4Address("10.99.0.2").packed}))
    assert decision.reply is None


def test_pool_dora_then_renew_release_and_reuse() -> None:
    leases = MemoryLeases()
    mac = "02:00:00:00:00:01"
    offer = run(client_message(d.DISCOVER, mac), leases=leases)
    assert offer.reply is not None and offer.lease is not None and offer.lease.kind == "offer"
    ip = offer.reply.yiaddr
    assert ip == IPv4Address("10.99.0.100")
    leases.apply(offer.lease)
    # a second client does not get the offered address
    other = run(client_message(d.DISCOVER, "02:00:00:00:00:02"), leases=leases)
    assert other.reply is not None and other.reply.yiaddr == IPv4Address("10.99.0.101")
    ack = run(client_message(d.REQUEST, mac, options={d.OPT_REQUESTED_IP: ip.packed,
                                                       d.OPT_SERVER_ID: SERVER.packed}), leases=leases)
    assert ack.reply is not None and ack.reply.message_type == d.ACK and ack.reply.yiaddr == ip
    assert ack.lease is not None and ack.lease.kind == "bind" and ack.lease.expires == NOW + 600
    leases.apply(ack.lease)
    # the other client asking for it is refused
    steal = run(client_message(d.REQUEST, "02:00:00:00:00:02", options={d.OPT_REQUESTED_IP: ip.packed}),
                leases=leases)
    assert steal.reply is not None and steal.reply.message_type == d.NAK
    # renewal: unicast, ciaddr set
    renew = run(client_message(d.REQUEST, mac, ciaddr=str(ip)), leases=leases)
    assert renew.reply is not None and renew.reply.message_type == d.ACK
    assert renew.route is not None and renew.route.kind == "ciaddr"
    # the same client discovering again gets the same address
    again = run(client_message(d.DISCOVER, mac), leases=leases)
    assert again.reply is not None and again.reply.yiaddr == ip
    release = run(client_message(d.RELEASE, mac, ciaddr=str(ip), options={d.OPT_SERVER_ID: SERVER.packed}),
                  leases=leases)
    assert release.reply is None and release.lease is not None and release.lease.kind == "release"


def test_declined_address_is_not_offered_again() -> None:
    leases = MemoryLeases()
    mac = "02:00:00:00:00:01"
    offer = run(client_message(d.DISCOVER, mac), leases=leases)
    assert offer.lease is not None
    leases.apply(offer.lease)
    decline = run(client_message(d.DECLINE, mac, options={d.OPT_REQUESTED_IP: offer.lease.ip.packed,
                                                           d.OPT_SERVER_ID: SERVER.packed}), leases=leases)
    assert decline.lease is not None and decline.lease.kind == "decline"
    leases.apply(decline.lease)
    again = run(client_message(d.DISCOVER, mac), leases=leases)
    assert again.reply is not None and again.reply.yiaddr != offer.lease.ip


def test_exhausted_pool_stays_silent() -> None:
    leases = MemoryLeases()
    kwargs = {"pool": ("10.99.0.100", "10.99.0.100")}
    first = run(client_message(d.DISCOVER, "02:00:00:00:00:01"), kwargs, leases=leases)
    assert first.lease is not None
    leases.apply(first.lease)
    second = run(client_message(d.DISCOVER, "02:00:00:00:00:02"), kwargs, leases=leases)
    assert second.reply is None and second.reason == "pool exhausted"


def test_reserved_addresses_are_never_handed_from_the_pool() -> None:
    nodes = (node("n1", "52:54:00:12:34:56", "10.99.0.100"),)
    decision = run(client_message(d.DISCOVER, "02:00:00:00:00:01"), nodes=nodes)
    assert decision.reply is not None and decision.reply.yiaddr == IPv4Address("10.99.0.101")


def test_inform_gets_options_without_an_address() -> None:
    decision = run(client_message(d.INFORM, "02:00:00:00:00:01", ciaddr="10.99.0.50"))
    assert decision.reply is not None and decision.reply.message_type == d.ACK
    assert decision.reply.yiaddr == IPv4Address(0)
    assert d.OPT_LEASE_TIME not in decision.reply.options
    assert decision.route is not None and decision.route.kind == "ciaddr"
    assert decision.stage is None  # options for a configured host: no boot step


def test_a_boot_is_a_boot_event_and_lease_upkeep_is_not() -> None:
    """Every machine renews every T1 for as long as it runs: those ACKs extend the lease but
    are not boot events, or a month of them would bury the boots (900k rows for 100 machines)."""
    leases = MemoryLeases()
    mac = "02:00:00:00:00:01"
    offer = run(client_message(d.DISCOVER, mac), leases=leases)
    assert offer.stage == "dhcp-offer" and offer.lease is not None
    leases.apply(offer.lease)
    ip = offer.lease.ip
    selecting = run(client_message(d.REQUEST, mac, options={d.OPT_REQUESTED_IP: ip.packed,
                                                             d.OPT_SERVER_ID: SERVER.packed}), leases=leases)
    assert selecting.stage == "dhcp-ack" and selecting.lease is not None
    leases.apply(selecting.lease)
    # INIT-REBOOT: a machine booting with the address it remembers (ciaddr 0) is a boot
    reboot = run(client_message(d.REQUEST, mac, options={d.OPT_REQUESTED_IP: ip.packed}), leases=leases)
    assert reboot.stage == "dhcp-ack"
    # RENEWING (unicast) and REBINDING (broadcast, no server id): ciaddr set, an ACK that binds
    # the lease for longer, and no boot event
    for flags in (0, d.FLAG_BROADCAST):
        renew = run(client_message(d.REQUEST, mac, ciaddr=str(ip), flags=flags), leases=leases)
        assert renew.reply is not None and renew.reply.message_type == d.ACK
        assert renew.lease is not None and renew.lease.kind == "bind"
        assert renew.stage is None
    # the same for a reserved node
    reserved = run(client_message(d.REQUEST, "52:54:00:12:34:56", ciaddr="10.99.0.157"))
    assert reserved.reply is not None and reserved.reply.message_type == d.ACK and reserved.stage is None
    # firmware asking with ciaddr set (PXE boot-server discovery, iPXE) is booting
    discovery = run(client_message(d.REQUEST, "52:54:00:12:34:56", ciaddr="10.99.0.157", options=pxe_options(7)))
    assert discovery.reply is not None and discovery.stage == "dhcp-ack"
    ipxe = run(client_message(d.REQUEST, "52:54:00:12:34:56", ciaddr="10.99.0.157", options=pxe_options(7, ipxe=True)))
    assert ipxe.reply is not None and ipxe.stage == "dhcp-ack"
    http = run(client_message(d.REQUEST, "52:54:00:12:34:56", ciaddr="10.99.0.157",
                              options={d.OPT_VENDOR_CLASS: b"HTTPClient:Arch:00016:UNDI:003001"}))
    assert http.reply is not None and http.stage == "dhcp-ack"
    udhcp = run(client_message(d.REQUEST, "52:54:00:12:34:56", ciaddr="10.99.0.157",
                               options={d.OPT_VENDOR_CLASS: b"udhcp 1.36.1"}))
    assert udhcp.reply is not None and udhcp.stage is None  # an OS renewing, whatever it calls itself
    # a renewal refused is worth seeing: the machine is about to lose its address
    refused = run(client_message(d.REQUEST, "52:54:00:12:34:56", ciaddr="10.99.0.158"))
    assert refused.reply is not None and refused.reply.message_type == d.NAK and refused.stage == "dhcp-nak"


# --- relays and routes -------------------------------------------------------------------


def test_relayed_discover_uses_the_relay_subnet_and_echoes_option_82() -> None:
    from ipaddress import IPv4Network

    from reconciler.core.model import Subnet

    remote = Subnet(network=IPv4Network("172.16.0.0/16"),
                    pool=(IPv4Address("172.16.1.1"), IPv4Address("172.16.1.9")))
    relay = b"\x01\x06circ-1\x02\x04rem1"
    decision = run(client_message(d.DISCOVER, "02:00:00:00:00:07", giaddr="172.16.0.1",
                                  options={d.OPT_RELAY_AGENT: relay}),
                   {"extra_subnets": (remote,)})
    assert decision.reply is not None
    assert decision.reply.yiaddr == IPv4Address("172.16.1.1")
    assert decision.reply.giaddr == IPv4Address("172.16.0.1")
    assert decision.reply.options[d.OPT_RELAY_AGENT] == relay
    assert decision.route is not None and decision.route.kind == "relay"
    assert decision.reply.options[d.OPT_SUBNET_MASK] == IPv4Address("255.255.0.0").packed


def test_relayed_from_an_undeclared_subnet_is_ignored() -> None:
    decision = run(client_message(d.DISCOVER, "02:00:00:00:00:07", giaddr="192.0.2.1"))
    assert decision.reply is None


@pytest.mark.parametrize(
    ("flags", "ciaddr", "route"),
    [(d.FLAG_BROADCAST, "0.0.0.0", "broadcast"), (0, "0.0.0.0", "chaddr"), (0, "10.99.0.157", "ciaddr")],
)
def test_reply_route_follows_rfc2131(flags: int, ciaddr: str, route: str) -> None:
    message = client_message(d.REQUEST, "52:54:00:12:34:56", flags=flags, ciaddr=ciaddr,
                             options={} if ciaddr != "0.0.0.0" else
                             {d.OPT_REQUESTED_IP: IPv4Address("10.99.0.157").packed})
    decision = run(message)
    assert decision.route is not None and decision.route.kind == route


def test_nak_when_relayed_goes_to_the_relay_with_broadcast_bit() -> None:
    decision = run(client_message(d.REQUEST, "52:54:00:12:34:56", giaddr="10.99.0.254",
                                  options={d.OPT_REQUESTED_IP: IPv4Address("10.99.0.77").packed}))
    assert decision.reply is not None and decision.reply.message_type == d.NAK
    assert decision.reply.broadcast
    assert decision.route is not None and decision.route.kind == "relay"


# --- modes -------------------------------------------------------------------------------


def test_off_mode_answers_nothing() -> None:
    decision = run(client_message(d.DISCOVER, "52:54:00:12:34:56", options=pxe_options(7)), {"mode": "off"})
    assert decision.reply is None


def test_proxy_offer_has_boot_information_only() -> None:
    uuid = b"\x00" + bytes(range(16))
    options = {**pxe_options(7), d.OPT_CLIENT_UUID: uuid}
    decision = run(client_message(d.DISCOVER, "52:54:00:12:34:56", options=options, flags=d.FLAG_BROADCAST),
                   {"mode": "proxy"})
    reply = decision.reply
    assert reply is not None and reply.message_type == d.OFFER
    assert reply.yiaddr == IPv4Address(0)
    assert reply.siaddr == SERVER and reply.file == b"ipxe.efi"
    assert reply.options[d.OPT_VENDOR_CLASS] == b"PXEClient"
    assert reply.options[d.OPT_CLIENT_UUID] == uuid
    assert reply.options[d.OPT_VENDOR_SPECIFIC] == b"\x06\x01\x08\xff"
    assert d.OPT_LEASE_TIME not in reply.options and d.OPT_ROUTERS not in reply.options
    assert decision.route is not None and decision.route.kind == "broadcast"


def test_proxy_pxe_port_request_gets_an_ack_back_to_its_source() -> None:
    message = client_message(d.REQUEST, "52:54:00:12:34:56", ciaddr="10.99.0.160",
                             options=pxe_options(7, ipxe=True))
    decision = run(message, {"mode": "proxy"}, port=4011)
    assert decision.reply is not None and decision.reply.message_type == d.ACK
    assert filename(decision) == SCRIPT_URL
    assert d.OPT_IPXE_ENCAP not in decision.reply.options  # iPXE must wait for the ProxyDHCP answer
    assert decision.route is not None and decision.route.kind == "source"
    assert decision.stage == "dhcp-ack"  # firmware asking its boot server (ciaddr set) is a boot step


def test_proxy_ignores_requests_for_the_dhcp_server_and_non_pxe_clients() -> None:
    request = client_message(d.REQUEST, "52:54:00:12:34:56", options=pxe_options(7))
    assert run(request, {"mode": "proxy"}).reply is None
    plain = client_message(d.DISCOVER, "52:54:00:12:34:56")
    assert run(plain, {"mode": "proxy"}).reply is None
    unknown = client_message(d.DISCOVER, "52:54:00:99:99:99", options=pxe_options(7))
    assert run(unknown, {"mode": "proxy"}).reply is None


def test_non_ethernet_and_replies_are_ignored() -> None:
    reply = d.DhcpMessage(op=d.BOOTREPLY, xid=1, chaddr=bytes(6), options={d.OPT_MESSAGE_TYPE: b"\x02"})
    assert run(reply).reply is None
    bootp = d.DhcpMessage(op=d.BOOTREQUEST, xid=1, chaddr=bytes(6))
    assert run(bootp).reply is None


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=500))
def test_decide_never_raises_on_anything_that_decodes(data: bytes) -> None:
    header = d.encode(client_message(d.DISCOVER, options=pxe_options(7)))[: d.HEADER_LEN + 4]
    message = d.decode(header + data)
    if isinstance(message, d.DhcpMessage):
        for mode in ("full", "proxy"):
            run(message, {"mode": mode})


# --- answers shared between clients (AnswerMemo) -------------------------------------

_KNOWN = ("52:54:00:12:34:56", "52:54:00:12:34:58")
_FIELDS = {
    "mtype": st.sampled_from([d.DISCOVER, d.REQUEST, d.INFORM]),
    "mac": st.sampled_from([*_KNOWN, "52:54:00:aa:bb:01", "52:54:00:aa:bb:02"]),
    "xid": st.integers(0, 2**32 - 1),
    "arch": st.sampled_from([None, 0, 7, 9, 11, 16]),
    "http": st.booleans(),
    "arch_option": st.sampled_from([None, b"", b"\x00\x07", b"\x00\x00\x00\x07"]),  # 93 unlike the vendor class
    "ipxe": st.booleans(),
    "encap": st.booleans(),
    "prl": st.sampled_from([None, bytes([1, 3, 6]), bytes([1, 3, 6, 66, 67])]),
    "lease": st.sampled_from([None, 30, 3600, 100_000]),
    "client_id": st.sampled_from([None, b"\x01\x52\x54\x00\x12\x34\x56", b"\xffid"]),
    "relay": st.sampled_from([None, b"\x01\x04port", b"\x02\x03abc"]),
    "giaddr": st.sampled_from(["0.0.0.0", "10.99.0.2"]),
    "requested": st.sampled_from([None, "10.99.0.157", "10.99.0.120", "10.99.0.200"]),
}


def _client(f: Mapping[str, Any]) -> d.DhcpMessage:
    options: dict[int, bytes] = {} if f["arch"] is None else pxe_options(f["arch"], ipxe=f["ipxe"], http=f["http"])
    if f["arch_option"] is not None:
        options[d.OPT_CLIENT_ARCH] = f["arch_option"]
    if f["encap"]:
        options[d.OPT_IPXE_ENCAP] = b"\x13\x01\x01"
    for code, value in ((d.OPT_PARAM_REQUEST, f["prl"]), (d.OPT_CLIENT_ID, f["client_id"]),
                        (d.OPT_RELAY_AGENT, f["relay"])):
        if value is not None:
            options[code] = value
    if f["lease"] is not None:
        options[d.OPT_LEASE_TIME] = struct.pack("!I", f["lease"])
    if f["requested"] is not None:
        options[d.OPT_REQUESTED_IP] = IPv4Address(f["requested"]).packed
    return client_message(f["mtype"], f["mac"], xid=f["xid"], giaddr=f["giaddr"], options=options)


@settings(max_examples=80, deadline=None)
@given(st.fixed_dictionaries(_FIELDS), st.fixed_dictionaries(_FIELDS), st.sampled_from(["ignore", "boot"]))
def test_a_plan_answering_many_clients_answers_each_as_a_fresh_plan_would(
    base: dict[str, Any], other: dict[str, Any], unknown: str
) -> None:
    # One plan answers a client and then clients that differ from it in one field each (its
    # shared answers filling up as it goes): every decision must equal what a plan that never
    # answered anyone gives that client.
    state = make_state((node("n1", _KNOWN[0], "10.99.0.157"), node("n2", _KNOWN[1], "10.99.0.159")),
                       unknown=unknown)  # type: ignore[arg-type]
    shared = plan_dhcp(state)
    memo = AnswerMemo(shared)
    for name in ("", *_FIELDS):
        message = _client({**base, name: other[name]} if name else base)
        decision = decide(message, shared, MemoryLeases(), NOW, memo=memo)
        assert decision == decide(message, plan_dhcp(state), MemoryLeases(), NOW)
        if decision.reply is not None:
            # The options the decider encoded ahead of time are the reply's: same bytes on the wire.
            assert d.encode(decision.reply, decision.block) == d.encode(decision.reply)


def test_a_known_node_without_a_fixed_address_gets_a_pool_address_and_its_boot_file() -> None:
    # No `ip:` in the node file: the pool gives the address, the node is still known to netboot.
    message = client_message(d.DISCOVER, "52:54:00:12:34:77", options=pxe_options(7))
    decision = run(message, nodes=(node("pooled", "52:54:00:12:34:77", None),))
    assert decision.reply is not None and decision.node == "pooled"
    assert IPv4Address("10.99.0.100") <= decision.reply.yiaddr <= IPv4Address("10.99.0.149")
    assert filename(decision) == "ipxe.efi"


# --- the link of an unrelayed request ------------------------------------------------------


def test_an_unrelayed_request_takes_the_subnet_of_the_interface_it_came_in_on() -> None:
    other = Subnet(network=IPv4Network("10.98.0.0/24"), pool=(IPv4Address("10.98.0.10"), IPv4Address("10.98.0.20")),
                   routers=(IPv4Address("10.98.0.254"),), dns_servers=(), domain_name=None, lease_time=600,
                   max_lease_time=7200)
    plan = plan_dhcp(make_state((), extra_subnets=(other,)))
    message = client_message(d.DISCOVER, "02:00:00:00:00:01")

    def offered(local: int, msg: d.DhcpMessage = message) -> IPv4Address | None:
        decision = decide(msg, plan, MemoryLeases(), NOW, local=local)
        return decision.reply.yiaddr if decision.reply is not None else None

    far = offered(int(IPv4Address("10.98.0.1")))
    assert far is not None and far in other.network
    near = offered(int(IPv4Address("10.99.0.1")))
    assert near is not None and near in IPv4Network("10.99.0.0/24")
    # A local address in no declared subnet (loopback, an unnumbered link), or none known:
    # server.address's subnet, as before.
    for local in (int(IPv4Address("127.0.0.1")), 0):
        found = offered(local)
        assert found is not None and found in IPv4Network("10.99.0.0/24")
    # A relayed request still goes by giaddr, whatever interface brought it.
    relayed = client_message(d.DISCOVER, "02:00:00:00:00:01", giaddr="10.99.0.2")
    found = offered(int(IPv4Address("10.98.0.1")), relayed)
    assert found is not None and found in IPv4Network("10.99.0.0/24")
