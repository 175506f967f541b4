"""Shared builders for the DHCP tests (unit, integration, bench): states, clients, packets.

No tests here; imported by tests/unit/test_dhcp_*.py and tests/integration/test_dhcp_*.py.
"""

from __future__ import annotations

import json
from collections.abc import Container, Iterable, Mapping
from ipaddress import IPv4Address, IPv4Network
from typing import Any

from reconciler.core.model import BootFiles, DesiredState, DhcpMode, Node, Site, Subnet, UnknownClients
from reconciler.protocol import dhcp as d
from reconciler.protocol.dhcp_decide import Lease, LeaseChange
from tests.support import VECTORS

SERVER = IPv4Address("10.99.0.1")


def vectors() -> list[dict[str, Any]]:
    """The captured DHCP packets (TFTP ones left out)."""
    packets: list[dict[str, Any]] = json.loads(VECTORS.read_text())["packets"]
    return [p for p in packets if p["message"] in ("DISCOVER", "REQUEST")]


def node(name: str, mac: str, ip: str | None, profile: str = "p") -> Node:
    return Node(name=name, mac=mac, profile=profile, hostname=name, ip=IPv4Address(ip) if ip else None)


def make_state(
    nodes: Iterable[Node] = (),
    *,
    revision: str = "rev1",
    server: str = str(SERVER),
    network: str = "10.99.0.0/24",
    pool: tuple[str, str] | None = ("10.99.0.100", "10.99.0.149"),
    mode: DhcpMode = "full",
    unknown: UnknownClients = "ignore",
    http_port: int = 8080,
    extra_subnets: tuple[Subnet, ...] = (),
    lease_time: int = 600,
    interface: str | None = None,
    boot_files: BootFiles | None = None,
) -> DesiredState:
    subnet = Subnet(
        network=IPv4Network(network),
        pool=(IPv4Address(pool[0]), IPv4Address(pool[1])) if pool else None,
        routers=(IPv4Network(network)[254],),
        dns_servers=(IPv4Address("9.9.9.9"),),
        domain_name="lab.example",
        lease_time=lease_time,
        max_lease_time=7200,
    )
    site = Site(
        server_address=IPv4Address(server),
        http_port=http_port,
        dhcp_mode=mode,
        unknown_clients=unknown,
        subnets=(subnet, *extra_subnets),
        boot_files=boot_files or BootFiles(),
        interface=interface,
    )
    return DesiredState(
        revision=revision,
        site=site,
        nodes=tuple(sorted(nodes, key=lambda n: n.name)),
        profiles={},
        groups=(),
        cloud_init={},
    )


def client_message(
    mtype: int,
    mac: str = "52:54:00:00:00:01",
    *,
    xid: int = 0x1234,
    options: Mapping[int, bytes] | None = None,
    ciaddr: str = "0.0.0.0",
    giaddr: str = "0.0.0.0",
    flags: int = 0,
) -> d.DhcpMessage:
    opts = {d.OPT_MESSAGE_TYPE: bytes((mtype,))}
    opts.update(options or {})
    return d.DhcpMessage(
        op=d.BOOTREQUEST,
        xid=xid,
        chaddr=bytes.fromhex(mac.replace(":", "")),
        options=opts,
        ciaddr=IPv4Address(ciaddr),
        giaddr=IPv4Address(giaddr),
        flags=flags,
    )


def pxe_options(arch: int, ipxe: bool = False, http: bool = False) -> dict[int, bytes]:
    vendor = b"HTTPClient" if http else b"PXEClient"
    opts = {
        d.OPT_VENDOR_CLASS: vendor + f":Arch:{arch:05d}:UNDI:003000".encode(),
        d.OPT_CLIENT_ARCH: arch.to_bytes(2, "big"),
    }
    if ipxe:
        opts[d.OPT_USER_CLASS] = b"iPXE"
    return opts


class MemoryLeases:
    """A LeaseView kept in dicts, applying LeaseChanges like the SQLite store does in memory
    (one lease per MAC and subnet)."""

    def __init__(self) -> None:
        self.by_mac: dict[str, list[Lease]] = {}
        self.by_ip: dict[IPv4Address, Lease] = {}

    def lease_of(self, mac: str, network: IPv4Network | None = None) -> Lease | None:
        held = self.by_mac.get(mac, [])
        if network is None:
            return held[-1] if held else None
        return next((lease for lease in held if lease.ip in network), None)

    def holder_of(self, ip: IPv4Address) -> Lease | None:
        return self.by_ip.get(ip)

    def find_free(
        self, first: IPv4Address, last: IPv4Address, now: float, avoid: Container[IPv4Address]
    ) -> IPv4Address | None:
        for value in range(int(first), int(last) + 1):
            ip = IPv4Address(value)
            lease = self.by_ip.get(ip)
            if (lease is None or lease.expires <= now) and ip not in avoid:
                return ip
        return None

    def _drop(self, ip: IPv4Address) -> None:
        old = self.by_ip.pop(ip, None)
        if old is not None and old.mac in self.by_mac:
            self.by_mac[old.mac] = [lease for lease in self.by_mac[old.mac] if lease is not old]

    def apply(self, change: LeaseChange) -> None:
        if change.kind == "release":
            self._drop(change.ip)
            return
        state = {"offer": "offered", "bind": "bound", "decline": "declined"}[change.kind]
        lease = Lease(change.ip, change.mac, change.expires, state)  # type: ignore[arg-type]
        if change.kind == "decline":
            self._drop(change.ip)
            self.by_ip[change.ip] = lease
            return
        for old in list(self.by_mac.get(change.mac, [])):
            if old.ip != change.ip and (change.network is None or old.ip in change.network):
                self._drop(old.ip)
        self._drop(change.ip)
        self.by_mac.setdefault(change.mac, []).append(lease)
        self.by_ip[change.ip] = lease
