"""kea-dhcp4.conf (ISC Kea, the maintained successor of isc-dhcp-server) with dhcpd.conf's meaning.

Called by `render_generation`; checked by the real `kea-dhcp4 -t` in the integration tests.
One `subnet4` per declared subnet with its pool, options and the reservations of the nodes
whose fixed address lies in it; nodes without an address are global reservations (MAC ->
hostname, address from the pool). The CONTRACT §4 boot decision is client classes, evaluated
in order and made exclusive with `not member(...)`; with `unknown_clients: ignore` each boot
class also requires `member('KNOWN')` (a reservation exists), which Kea evaluates after the
reservation lookup. Written with `json.dumps`, so every string is JSON-escaped.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from reconciler.core.model import Node, Site
from reconciler.core.render.dhcpboot import HTTP_CLIENT, IPXE_USER_CLASS, PXE_CLIENT, boot_answers


def _hex(text: str) -> str:
    return "0x" + text.encode().hex()


def client_classes(site: Site) -> list[dict[str, Any]]:
    answers = boot_answers(site)
    known = " and member('KNOWN')" if answers.known_only else ""
    ipxe_test = f"(option[77].hex == {_hex(IPXE_USER_CLASS)} or option[175].exists)"
    classes: list[dict[str, Any]] = [
        {
            "name": "NETBOOT_IPXE",
            "test": ipxe_test + known,
            "boot-file-name": answers.ipxe_url,
            # iPXE's no-pxedhcp (175.176 = 1) spares it the ProxyDHCP wait.
            "option-data": [
                {"name": "ipxe-encap-opts", "space": "dhcp4"},
                {"name": "no-pxedhcp", "space": "ipxe", "data": "1"},
            ],
        },
        {
            "name": "NETBOOT_HTTPCLIENT",
            "test": f"substring(option[60].hex,0,{len(HTTP_CLIENT)}) == {_hex(HTTP_CLIENT)}"
            f" and not member('NETBOOT_IPXE'){known}",
            "boot-file-name": answers.http_boot_url,
            "option-data": [{"name": "vendor-class-identifier", "data": HTTP_CLIENT}],
        },
    ]
    for arch in answers.pxe:
        codes = " or ".join(f"option[93].hex == 0x{c:04x}" for c in arch.codes)
        classes.append(
            {
                "name": f"NETBOOT_PXE_{arch.tag.upper()}",
                "test": f"substring(option[60].hex,0,{len(PXE_CLIENT)}) == {_hex(PXE_CLIENT)}"
                f" and ({codes}) and not member('NETBOOT_IPXE'){known}",
                "next-server": answers.next_server,
                "boot-file-name": arch.filename,
            }
        )
    return classes


def _reservation(node: Node) -> dict[str, Any]:
    out: dict[str, Any] = {"hw-address": node.mac, "hostname": node.hostname}
    if node.ip is not None:
        out["ip-address"] = str(node.ip)
    return out


def config(site: Site, nodes: Sequence[Node], revision: str) -> dict[str, Any]:
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
            "client-classes": client_classes(site),
            "subnet4": subnets,
            "user-context": {"generator": "netboot-reconcile", "revision": revision},
        }
    }


def render(site: Site, nodes: Sequence[Node], revision: str) -> bytes:
    return (json.dumps(config(site, nodes, revision), indent=2, sort_keys=False) + "\n").encode()
