"""kea-dhcp4.conf (ISC Kea, the maintained successor of isc-dhcp-server) with dhcpd.conf's meaning.

Called by `render_generation`; checked by the real `kea-dhcp4 -t` in the integration tests.
One `subnet4` per declared subnet with its pool, options and the reservations of the nodes
whose fixed address lies in it; nodes without an address are global reservations (MAC ->
hostname, address from the pool). The CONTRACT §4 boot decision is client classes, evaluated
in order and made exclusive with `not member(...)`; with `unknown_clients: ignore` each boot
class also requires `member('KNOWN')` (a reservation exists), which Kea evaluates after the
reservation lookup. The machines whose profile overrides the site's `secure_boot` (their MACs)
match a class of their own, `<row class>_OTHER_CHAIN` (`pkt4.mac`), just before the row's class,
which then excludes them. Written with `json.dumps`, so every string is JSON-escaped.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from reconciler.core.bootfiles import IPXE_USER_CLASS, boot_table
from reconciler.core.model import Node, Site


def _hex(text: str) -> str:
    return "0x" + text.encode().hex()


def client_classes(site: Site, other_chain: Sequence[str] = ()) -> list[dict[str, Any]]:
    table = boot_table(site)
    known = " and member('KNOWN')" if table.known_only else ""
    ipxe_test = f"(option[77].hex == {_hex(IPXE_USER_CLASS)} or option[175].exists)"
    classes: list[dict[str, Any]] = [
        {
            "name": "NETBOOT_IPXE",
            "test": ipxe_test + known,
            "boot-file-name": table.ipxe_url,
            # iPXE's no-pxedhcp (175.176 = 1) spares it the ProxyDHCP wait.
            "option-data": [
                {"name": "ipxe-encap-opts", "space": "dhcp4"},
                {"name": "no-pxedhcp", "space": "ipxe", "data": "1"},
            ],
        },
    ]
    for row in table.rows:
        codes = " or ".join(f"option[93].hex == 0x{c:04x}" for c in row.arches)
        name = f"NETBOOT_PXE_{row.tag.upper()}" if row.transport == "tftp" else f"NETBOOT_{row.tag.upper()}"
        test = (f"substring(option[60].hex,0,{len(row.vendor_class)}) == {_hex(row.vendor_class)}"
                f" and ({codes}) and not member('NETBOOT_IPXE'){known}")
        if row.other_chain and other_chain:
            macs = " or ".join(f"pkt4.mac == 0x{mac.replace(':', '')}" for mac in other_chain)
            other: dict[str, Any] = {"name": f"{name}_OTHER_CHAIN", "test": f"{test} and ({macs})"}
            if row.transport == "tftp":
                other["next-server"] = table.next_server
            other["boot-file-name"] = row.other_chain
            classes.append(other)
            test += f" and not member('{name}_OTHER_CHAIN')"
        entry: dict[str, Any] = {"name": name, "test": test}
        if row.transport == "tftp":
            entry["next-server"] = table.next_server
        entry["boot-file-name"] = row.filename
        if row.echo_vendor_class:
            # UEFI HTTP boot ignores an offer without option 60 HTTPClient, asked for or not.
            entry["option-data"] = [
                {"name": "vendor-class-identifier", "data": row.vendor_class, "always-send": True}
            ]
        classes.append(entry)
    return classes


def _reservation(node: Node) -> dict[str, Any]:
    out: dict[str, Any] = {"hw-address": node.mac, "hostname": node.hostname}
    if node.ip is not None:
        out["ip-address"] = str(node.ip)
    return out


def config(site: Site, nodes: Sequence[Node], revision: str, other_chain: Sequence[str] = ()) -> dict[str, Any]:
    nodes = sorted(nodes, key=lambda n: n.name)
    subnets: list[dict[str, Any]] = []
    for index, subnet in enumerate(site.subnets, start=1):
        options: list[dict[str, Any]] = []
        if subnet.routers:
            options.append({"name": "routers", "data": ", ".join(map(str, subnet.routers))})
        if subnet.dns_servers:
            options.append({"name": "domain-name-servers", "data": ", ".join(map(str, subnet.dns_servers))})
        if subnet.domain_name:
            options.append({"name": "domain-name", "data": subnet.domain_name})
        entry: dict[str, Any] = {
            "id": index,
            "subnet": str(subnet.network),
            "pools": [{"pool": f"{subnet.pool[0]} - {subnet.pool[1]}"}] if subnet.pool is not None else [],
            "option-data": options,
            "valid-lifetime": subnet.lease_time,
            "max-valid-lifetime": subnet.max_lease_time,
            "reservations": [
                _reservation(n) for n in nodes if n.ip is not None and n.ip in subnet.network
            ],
        }
        subnets.append(entry)
    return {
        "Dhcp4": {
            "interfaces-config": {"interfaces": [site.interface] if site.interface else ["*"]},
            "lease-database": {"type": "memfile", "persist": True, "lfc-interval": 3600},
            "authoritative": True,
            "reservations-global": True,
            "reservations-in-subnet": True,
            "reservations": [_reservation(n) for n in nodes if n.ip is None],
            "option-def": [
                {"name": "ipxe-encap-opts", "code": 175, "space": "dhcp4", "type": "empty", "encapsulate": "ipxe"},
                {"name": "no-pxedhcp", "code": 176, "space": "ipxe", "type": "uint8"},
            ],
            "client-classes": client_classes(site, other_chain),
            "subnet4": subnets,
            "user-context": {"generator": "netboot-reconcile", "revision": revision},
        }
    }


def render(site: Site, nodes: Sequence[Node], revision: str, other_chain: Sequence[str] = ()) -> bytes:
    """`other_chain`: the MACs that get `ArchBoot.other_chain` (`bootfiles.other_chain_macs`)."""
    return (json.dumps(config(site, nodes, revision, other_chain), indent=2, sort_keys=False) + "\n").encode()
