"""Which links servers.dhcp answers on: the served generation's `dhcp.interface` (or the CLI's).

The lab's server namespace gets two bridges, br0 (10.99.0.1/24) and br1 (10.98.0.1/24), with a
client namespace on each. A first start (no generation yet) must not answer anywhere until a
generation names its interface, and then only there; a commit that moves the interface moves
the answers; one that switches to proxy mode opens the PXE port (4011) and back closes it.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from reconciler.adapters.leases import LeaseStore
from reconciler.core.events import CollectEvents
from reconciler.generation import Generation, GenerationHolder
from reconciler.protocol import dhcp as d
from reconciler.servers.dhcp import DhcpServer
from tests.dhcp_fixtures import client_message, make_state, pxe_options
from tests.dhcp_lab import Lab
from tests.support import require_root

MAC0 = "02:00:00:00:b0:01"  # the client on br0
MAC1 = "02:00:00:00:b1:01"  # the client on br1, with a static 10.98.0.2


@dataclass
class TwoLinks:
    lab: Lab
    ns0: str
    ns1: str


def _attach(lab: Lab, role: str, bridge: str, mac: str, cidr: str | None) -> str:
    ns = f"nrdhcp-{lab.suffix}-{role}"
    lab._add_ns(ns)
    port = f"p-{role}"[:15]
    lab.ip(lab.server, "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", ns)
    lab.ip(lab.server, "link", "set", port, "master", bridge, "up")
    lab.ip(ns, "link", "set", "lo", "up")
    lab.ip(ns, "link", "set", "eth0", "address", mac)
    if cidr:
        lab.ip(ns, "addr", "add", cidr, "dev", "eth0")
    lab.ip(ns, "link", "set", "eth0", "up")
    return ns


@pytest.fixture
def links() -> Iterator[TwoLinks]:
    require_root()
    lab = Lab()
    try:
        lab.ip(lab.server, "link", "add", "br1", "type", "bridge", "stp_state", "0", "forward_delay", "0")
        lab.ip(lab.server, "addr", "add", "10.98.0.1/24", "dev", "br1")
        lab.ip(lab.server, "link", "set", "br1", "up")
        yield TwoLinks(lab, _attach(lab, "a0", "br0", MAC0, None), _attach(lab, "a1", "br1", MAC1, "10.98.0.2/24"))
    finally:
        lab.close()


def _generation(revision: str, interface: str | None, mode: str = "full") -> Generation:
    state = make_state((), revision=revision, interface=interface, mode=mode, unknown="boot")  # type: ignore[arg-type]
    return Generation(revision, state, {})


def _collect(sock: socket.socket, seconds: float) -> list[d.DhcpMessage]:
    out: list[d.DhcpMessage] = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            data = sock.recv(4096)
        except OSError:
            break
        message = d.decode(data)
        if isinstance(message, d.DhcpMessage) and message.op == d.BOOTREPLY:
            out.append(message)
    return out


def discover(lab: Lab, ns: str, mac: str, tries: int = 3) -> list[d.DhcpMessage]:
    """Broadcast a DISCOVER on the namespace's eth0 up to `tries` times; the replies."""

    def client() -> list[d.DhcpMessage]:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, b"eth0")
            sock.bind(("0.0.0.0", 68))
            for attempt in range(tries):
                packet = d.encode(client_message(d.DISCOVER, mac, xid=0x4000 + attempt, flags=d.FLAG_BROADCAST))
                sock.sendto(packet, ("255.255.255.255", 67))
                replies = _collect(sock, 1.0)
                if replies:
                    return replies
            return []

    return lab.call_in(ns, client)


def pxe_request(lab: Lab, ns: str, mac: str, tries: int = 3) -> list[d.DhcpMessage]:
    """iPXE-style REQUEST unicast to the ProxyDHCP port 10.98.0.1:4011 from 10.98.0.2."""

    def client() -> list[d.DhcpMessage]:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.bind(("10.98.0.2", 0))
            for attempt in range(tries):
                message = client_message(d.REQUEST, mac, xid=0x5000 + attempt, options=pxe_options(7),
                                         ciaddr="10.98.0.2")
                sock.sendto(d.encode(message), ("10.98.0.1", 4011))
                replies = _collect(sock, 1.0)
                if replies:
                    return replies
            return []

    return lab.call_in(ns, client)


def _port_67_is_free() -> None:
    """Bind 0.0.0.0:67 without SO_REUSEADDR, as an external DHCP server does (bounded retries:
    the server notices a new commit within its idle check)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            try:
                sock.bind(("0.0.0.0", 67))
                return
            except OSError:
                pass
        threading.Event().wait(0.1)
    raise AssertionError("port 67 still bound after a commit to dhcp.mode: off")


def _server(holder: GenerationHolder, tmp: Path, interface: str | None = None) -> DhcpServer:
    leases = LeaseStore(tmp / "leases.sqlite3")
    return DhcpServer(listen=("0.0.0.0", 67), holder=holder, events=CollectEvents(), leases=leases,
                      interface=interface)


def test_first_start_answers_only_on_the_interface_the_first_generation_names(
    links: TwoLinks, tmp_path: Path
) -> None:
    lab = links.lab
    holder = GenerationHolder()
    server = _server(holder, tmp_path)
    lab.call_in(lab.server, server.start)  # a fresh state dir: nothing served yet
    try:
        assert server.address is None, "listening before any generation named the interface"
        assert discover(lab, links.ns1, MAC1, tries=1) == []

        holder.swap(_generation("r1", "br0"))
        offers = discover(lab, links.ns0, MAC0)
        assert offers and offers[0].message_type == d.OFFER and offers[0].yiaddr != d.ZERO_IP
        assert discover(lab, links.ns1, MAC1) == [], "answered on br1 while netboot.yaml says br0"

        # A commit moves the interface: the answers move with it.
        holder.swap(_generation("r2", "br1"))
        offers = discover(lab, links.ns1, MAC1)
        assert offers and offers[0].message_type == d.OFFER
        assert discover(lab, links.ns0, MAC0) == [], "still answering on br0 after the commit moved it"

        # full -> proxy opens the PXE port (on br1 only), proxy -> full closes it.
        assert pxe_request(lab, links.ns1, MAC1, tries=1) == []
        holder.swap(_generation("r3", "br1", mode="proxy"))
        acks = pxe_request(lab, links.ns1, MAC1)
        assert acks and acks[0].message_type == d.ACK and acks[0].yiaddr == d.ZERO_IP
        holder.swap(_generation("r4", "br1"))
        assert discover(lab, links.ns1, MAC1)  # r4 is served (and bound) now
        assert pxe_request(lab, links.ns1, MAC1, tries=1) == []

        # A commit to `dhcp.mode: off` frees port 67 for the site's own DHCP server, and back.
        holder.swap(_generation("r5", "br1", mode="off"))
        assert discover(lab, links.ns1, MAC1, tries=1) == []
        lab.call_in(lab.server, _port_67_is_free)  # as dhcpd or dnsmasq would bind it
        holder.swap(_generation("r6", "br1"))
        offers = discover(lab, links.ns1, MAC1)
        assert offers and offers[0].message_type == d.OFFER and server.listening
    finally:
        server.stop()
        server.leases.close()


def test_the_cli_interface_wins_over_netboot_yaml(links: TwoLinks, tmp_path: Path) -> None:
    lab = links.lab
    holder = GenerationHolder()
    server = _server(holder, tmp_path, interface="br1")
    lab.call_in(lab.server, server.start)  # --dhcp-interface is known at once: bound before any generation
    try:
        assert server.address is not None and server.interface == "br1"
        holder.swap(_generation("r1", "br0"))
        offers = discover(lab, links.ns1, MAC1)
        assert offers and offers[0].message_type == d.OFFER
        assert discover(lab, links.ns0, MAC0) == []
    finally:
        server.stop()
        server.leases.close()
