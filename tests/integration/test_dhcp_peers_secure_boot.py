"""The external DHCP servers, running, hand each machine its own boot chain.

A site with `secure_boot: true` whose profile `plain` says `secure_boot: false`: the rendered
dnsmasq.conf, dhcpd.conf and kea-dhcp4.conf are served by the real dnsmasq, isc-dhcp-server and
Kea on a bridge in a network namespace (tests/dhcp_lab.py), and two known machines send the
DISCOVER of OVMF's PXE (vendor class `PXEClient:Arch:00007`, option 93 = 7) from their own MACs:
`secure-1` must be offered the signed shim, `plain-1` (the overriding profile) iPXE; both with
the server as next-server. A `-t` check says a config parses; this says it means what the
embedded server does.
"""

from __future__ import annotations

import dataclasses
import json
import socket
import subprocess
import time
from collections.abc import Iterator
from ipaddress import IPv4Address
from pathlib import Path

import pytest

from reconciler.core.bootfiles import SHIM_NAME
from reconciler.core.model import Boot, DesiredState, Profile, UnknownClients
from reconciler.core.render import render_generation
from reconciler.protocol import dhcp as d
from tests.dhcp_fixtures import client_message, make_state, node
from tests.dhcp_lab import Lab
from tests.support import require_root, require_tool

SERVER = "10.99.0.1"
SECURE, PLAIN = "52:54:00:e5:b0:01", "52:54:00:e5:b0:02"
UEFI_PXE = {d.OPT_VENDOR_CLASS: b"PXEClient:Arch:00007:UNDI:003016", d.OPT_CLIENT_ARCH: (7).to_bytes(2, "big")}


def secure_state(unknown: UnknownClients) -> DesiredState:
    boot = Boot(kernel="/assets/vmlinuz", initrd=("/assets/initrd",), args=("console=ttyS0",))
    nodes = (node("secure-1", SECURE, "10.99.0.51", "signed"), node("plain-1", PLAIN, "10.99.0.52", "plain"))
    state = make_state(nodes, server=SERVER, http_port=80, interface="br0", unknown=unknown)
    profiles = {"signed": Profile("signed", "signed chain", boot),
                "plain": Profile("plain", "iPXE", boot, secure_boot=False)}
    return dataclasses.replace(state, site=dataclasses.replace(state.site, secure_boot=True), profiles=profiles)


@pytest.fixture
def lab() -> Iterator[Lab]:
    require_root()
    lab = Lab(f"{SERVER}/24")
    try:
        yield lab
    finally:
        lab.close()


def offer_for(lab: Lab, role: str, mac: str) -> d.DhcpMessage:
    """Send OVMF's PXE DISCOVER from `mac` (retrying while the server starts) and return the offer."""
    ns = lab.add_host(role, mac)

    def discover() -> d.DhcpMessage:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, b"eth0")
            sock.bind(("0.0.0.0", 68))
            packet = dataclasses.replace(client_message(d.DISCOVER, mac, options=UEFI_PXE), flags=d.FLAG_BROADCAST)
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                sock.sendto(d.encode(packet), ("255.255.255.255", 67))
                sock.settimeout(1.0)
                try:
                    while True:
                        data, _ = sock.recvfrom(4096)
                        message = d.decode(data)
                        if isinstance(message, d.DhcpMessage) and message.op == d.BOOTREPLY \
                                and message.message_type == d.OFFER:
                            return message
                except OSError:
                    continue
            raise AssertionError(f"no OFFER for {mac} in 30 s")

    return lab.call_in(ns, discover)


def start_dnsmasq(lab: Lab, conf: Path, work: Path) -> subprocess.Popen[str]:
    dnsmasq = require_tool("dnsmasq", "dnsmasq-base")
    return lab.popen(lab.server, dnsmasq, "--no-daemon", f"--conf-file={conf}", "--port=0", "--bind-interfaces",
                     f"--dhcp-leasefile={work / 'dnsmasq.leases'}", f"--pid-file={work / 'dnsmasq.pid'}",
                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def start_dhcpd(lab: Lab, conf: Path, work: Path) -> subprocess.Popen[str]:
    dhcpd = require_tool("dhcpd", "isc-dhcp-server")
    (work / "dhcpd.leases").write_text("")
    return lab.popen(lab.server, dhcpd, "-f", "-d", "-4", "-cf", str(conf), "-lf", str(work / "dhcpd.leases"),
                     "-pf", str(work / "dhcpd.pid"), "br0", stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def start_kea(lab: Lab, conf: Path, work: Path) -> subprocess.Popen[str]:
    kea = require_tool("kea-dhcp4", "kea-dhcp4-server")
    config = json.loads(conf.read_text())
    # where this test may write: its own lease file (the rendered config uses Kea's default path)
    config["Dhcp4"]["lease-database"] = {"type": "memfile", "persist": False}
    conf.write_text(json.dumps(config))
    return lab.popen(lab.server, kea, "-c", str(conf), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                     env={"KEA_PIDFILE_DIR": str(work), "KEA_LOCKFILE_DIR": str(work), "PATH": "/usr/sbin:/usr/bin"})


STARTERS = {"dnsmasq.conf": start_dnsmasq, "dhcpd.conf": start_dhcpd, "kea-dhcp4.conf": start_kea}


@pytest.mark.parametrize("unknown", ["ignore", "boot"])
@pytest.mark.parametrize("config", sorted(STARTERS))
def test_a_running_peer_offers_each_machine_its_own_chain(config: str, unknown: UnknownClients, lab: Lab,
                                                          tmp_path: Path) -> None:
    """With `unknown_clients: ignore` (boot answers in the hosts' scope) and `boot` (global)."""
    conf = tmp_path / config
    conf.write_bytes(render_generation(secure_state(unknown))[config])
    peer = STARTERS[config](lab, conf, tmp_path)
    try:
        secure = offer_for(lab, "sec", SECURE)
        plain = offer_for(lab, "pla", PLAIN)
    finally:
        peer.terminate()
        try:
            output = peer.communicate(timeout=10)[0]
        except subprocess.TimeoutExpired:
            peer.kill()
            output = peer.communicate()[0]
    got = {mac: (m.file.rstrip(b"\0").decode(), m.siaddr, m.yiaddr) for mac, m in ((SECURE, secure), (PLAIN, plain))}
    server = IPv4Address(SERVER)
    assert got == {SECURE: (SHIM_NAME, server, IPv4Address("10.99.0.51")),
                   PLAIN: ("ipxe.efi", server, IPv4Address("10.99.0.52"))}, f"{got}\n{config} said:\n{output[-3000:]}"
