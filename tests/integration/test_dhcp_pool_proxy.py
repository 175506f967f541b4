"""servers.dhcp pool allocation under perfdhcp, and ProxyDHCP beside a real dnsmasq.

perfdhcp (kea-admin) always acts as a relay: it sends from port 67 with giaddr set, so these
exchanges also cover relay routing and subnet choice by giaddr. In proxy mode a PXE client
(the captured OVMF packet, sent from the client namespace) hears two offers: an address from
dnsmasq and boot information only from us; then its ProxyDHCP REQUEST to port 4011 gets an ACK.
"""

from __future__ import annotations

import re
import socket
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from dataclasses import replace
from ipaddress import IPv4Address
from pathlib import Path

import pytest

from reconciler.adapters.leases import LeaseStore
from reconciler.core.events import CollectEvents
from reconciler.generation import Generation, GenerationHolder
from reconciler.protocol import dhcp as d
from reconciler.servers.dhcp import DhcpServer
from tests.dhcp_fixtures import make_state, node, vectors
from tests.dhcp_lab import Lab
from tests.support import require_root, require_tool


@pytest.fixture
def lab() -> Iterator[Lab]:
    require_root()
    lab = Lab()
    try:
        yield lab
    finally:
        lab.close()


def test_perfdhcp_pool_allocation_is_unique_complete_and_durable(lab: Lab, tmp_path: Path) -> None:
    perfdhcp = require_tool("perfdhcp", "kea-admin")
    holder = GenerationHolder()
    state = make_state((), revision="r1", server="10.99.0.1", network="10.99.0.0/24",
                       pool=("10.99.0.30", "10.99.0.250"))
    holder.swap(Generation("r1", state, {}))
    leases = LeaseStore(tmp_path / "leases.sqlite3")
    server = DhcpServer(listen=("0.0.0.0", 67), holder=holder, events=CollectEvents(), leases=leases)
    lab.call_in(lab.server, server.start)
    try:
        ns = lab.add_host("perf", "02:00:00:00:00:fe", "10.99.0.2/24")
        result = lab.run(ns, perfdhcp, "-4", "-l", "eth0", "-R", "200", "-r", "400", "-n", "200",
                         "-W", "2000000", "10.99.0.1", timeout=60)
        out = result.stdout
        # perfdhcp may send one DISCOVER more than -n asks (its rate timer) and then stop at -n
        # REQUESTs; every REQUEST it sent must be ACKed and bound
        sent = [int(n) for n in re.findall(r"sent packets: (\d+)", out)]
        assert len(sent) == 2 and sent[0] >= 200 and sent[1] >= 200, out
        assert out.count("drops: 0") == 2, out  # DISCOVER-OFFER and REQUEST-ACK
        assert out.count("non unique addresses: 0") == 2, out
        assert leases.flush()
    finally:
        server.stop()
        leases.close()
    with sqlite3.connect(tmp_path / "leases.sqlite3") as db:
        rows = db.execute("SELECT ip, mac FROM dhcp_leases WHERE state = 'bound'").fetchall()
    assert len(rows) == sent[1]
    assert len({ip for ip, _ in rows}) == len(rows) and len({mac for _, mac in rows}) == len(rows)
    assert all(IPv4Address("10.99.0.30") <= IPv4Address(ip) <= IPv4Address("10.99.0.250") for ip, _ in rows)


def pxe_packet(kind: str, mac: str, mtype: int, **changes: object) -> bytes:
    """A captured firmware packet of `kind`, re-addressed to our client's MAC."""
    packet = next(p for p in vectors() if p["client"].startswith(kind) and p["message"] == "DISCOVER")
    message = d.decode(bytes.fromhex(packet["udp_payload_hex"]))
    assert isinstance(message, d.DhcpMessage)
    options = dict(message.options)
    options[d.OPT_MESSAGE_TYPE] = bytes((mtype,))
    options.pop(d.OPT_CLIENT_ID, None)
    fields = {"chaddr": bytes.fromhex(mac.replace(":", "")), "options": options, "flags": d.FLAG_BROADCAST,
              **changes}
    return d.encode(replace(message, **fields))  # type: ignore[arg-type]


def collect(sock: socket.socket, seconds: float) -> list[tuple[d.DhcpMessage, str]]:
    out: list[tuple[d.DhcpMessage, str]] = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            data, source = sock.recvfrom(4096)
        except OSError:
            break
        message = d.decode(data)
        if isinstance(message, d.DhcpMessage) and message.op == d.BOOTREPLY:
            out.append((message, source[0]))
    return out


def test_proxy_mode_beside_dnsmasq(lab: Lab, tmp_path: Path) -> None:
    dnsmasq = require_tool("dnsmasq", "dnsmasq-base")
    mac = "52:54:00:e0:00:07"
    holder = GenerationHolder()
    state = make_state((node("pxe", mac, None),), revision="p1", server="10.99.0.1", network="10.99.0.0/24",
                       pool=None, mode="proxy")
    holder.swap(Generation("p1", state, {}))
    leases = LeaseStore(tmp_path / "leases.sqlite3")
    events = CollectEvents()
    server = DhcpServer(listen=("0.0.0.0", 67), holder=holder, events=events, leases=leases)
    lab.call_in(lab.server, server.start)
    assert server.proxy_address is not None and server.proxy_address[1] == 4011
    dns_ns = lab.add_host("dns", "02:00:00:00:00:d5", "10.99.0.2/24")
    peer = lab.popen(dns_ns, dnsmasq, "--no-daemon", "--conf-file=/dev/null", "--port=0", "--interface=eth0",
                     "--bind-interfaces", "--no-ping", "--dhcp-authoritative",
                     "--dhcp-range=10.99.0.100,10.99.0.149,255.255.255.0,10m",
                     f"--dhcp-leasefile={tmp_path / 'dnsmasq.leases'}", f"--pid-file={tmp_path / 'dnsmasq.pid'}",
                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        client_ns = lab.add_host("pxe", mac)
        time.sleep(0.3)  # let dnsmasq bind (it reports nothing on stdout when ready)

        def uefi_firmware() -> tuple[list[tuple[d.DhcpMessage, str]], list[tuple[d.DhcpMessage, str]]]:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, b"eth0")
                sock.bind(("0.0.0.0", 68))
                offers: list[tuple[d.DhcpMessage, str]] = []
                for _ in range(3):
                    sock.sendto(pxe_packet("OVMF", mac, d.DISCOVER), ("255.255.255.255", 67))
                    offers = collect(sock, 1.0)
                    if len({source for _, source in offers}) >= 2:
                        break
                address = next((m.yiaddr for m, src in offers if m.yiaddr != d.ZERO_IP), None)
                assert address is not None, offers
                subprocess.run(["ip", "addr", "add", f"{address}/24", "dev", "eth0"], check=True)
                with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as pxe:
                    pxe.bind((str(address), 0))
                    pxe.sendto(pxe_packet("iPXE ipxe.efi", mac, d.REQUEST, ciaddr=address, flags=0),
                               ("10.99.0.1", 4011))
                    acks = collect(pxe, 2.0)
                return offers, acks

        offers, acks = lab.call_in(client_ns, uefi_firmware)
    finally:
        peer.terminate()
        peer.wait(10)
        server.stop()
        leases.close()
    by_source = {source: message for message, source in offers}
    assert set(by_source) >= {"10.99.0.1", "10.99.0.2"}
    dnsmasq_offer, proxy_offer = by_source["10.99.0.2"], by_source["10.99.0.1"]
    assert IPv4Address("10.99.0.100") <= dnsmasq_offer.yiaddr <= IPv4Address("10.99.0.149")
    assert proxy_offer.yiaddr == d.ZERO_IP
    assert proxy_offer.file == b"ipxe.efi" and proxy_offer.siaddr == IPv4Address("10.99.0.1")
    assert proxy_offer.options[d.OPT_VENDOR_CLASS] == b"PXEClient"
    assert d.OPT_LEASE_TIME not in proxy_offer.options
    # iPXE, now with dnsmasq's address, asks the ProxyDHCP server on 4011 and gets the script URL
    assert len(acks) == 1
    ack, source = acks[0]
    assert source == "10.99.0.1" and ack.message_type == d.ACK
    assert ack.file == b"http://10.99.0.1:8080/boot.ipxe"
    assert ack.yiaddr == d.ZERO_IP
