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

import functools
import json
import secrets
from collections.abc import Sequence
from typing import Any

from reconciler.core.bootfiles import IPXE_USER_CLASS, boot_table
from reconciler.core.model import Node, Site
from reconciler.core.render import chunks

_string = json.encoder.encode_basestring_ascii  # what json.dumps writes for a str (ensure_ascii)


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
    """The whole configuration as a JSON value (what `render` writes, reservations spliced in)."""
    nodes = chunks.by_name(nodes)
    return _skeleton(site, revision, other_chain, [_reservation(n) for n in nodes if n.ip is None],
                     [[_reservation(n) for n in nodes if n.ip is not None and n.ip in subnet.network]
                      for subnet in site.subnets])


def _skeleton(site: Site, revision: str, other_chain: Sequence[str], global_reservations: Any,
              subnet_reservations: Sequence[Any]) -> dict[str, Any]:
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
            "reservations": subnet_reservations[index - 1],
        }
        subnets.append(entry)
    return {
        "Dhcp4": {
            "interfaces-config": {"interfaces": [site.interface] if site.interface else ["*"]},
            "lease-database": {"type": "memfile", "persist": True, "lfc-interval": 3600},
            "authoritative": True,
            "reservations-global": True,
            "reservations-in-subnet": True,
            "reservations": global_reservations,
            "option-def": [
                {"name": "ipxe-encap-opts", "code": 175, "space": "dhcp4", "type": "empty", "encapsulate": "ipxe"},
                {"name": "no-pxedhcp", "code": 176, "space": "ipxe", "type": "uint8"},
            ],
            "client-classes": client_classes(site, other_chain),
            "subnet4": subnets,
            "user-context": {"generator": "netboot-reconcile", "revision": revision},
        }
    }


def render(site: Site, nodes: Sequence[Node], revision: str, other_chain: Sequence[str] = (),
           cache: chunks.Chunks | None = None) -> bytes:
    """`other_chain`: the MACs that get `ArchBoot.other_chain` (`bootfiles.other_chain_macs`);
    `cache`: reservations rendered at earlier commits (`render.chunks`).

    The text is what `json.dumps(config(...), indent=2)` gives, byte for byte, without running
    the pure-Python indenting encoder over every reservation: the configuration is dumped with a
    marker string where each reservation list goes, and the lists are written in its place at the
    marker's indentation, one kept chunk per node."""
    nodes = chunks.by_name(nodes)
    marker = "netboot-reservations-" + secrets.token_hex(8)
    lists: dict[str, list[Node]] = {f"{marker}-g": [n for n in nodes if n.ip is None]}
    for index, subnet in enumerate(site.subnets):
        lists[f"{marker}-{index}"] = [n for n in nodes if n.ip is not None and n.ip in subnet.network]
    names = list(lists)
    text = json.dumps(_skeleton(site, revision, other_chain, names[0], names[1:]), indent=2, sort_keys=False)
    parts: list[str] = []
    at = 0
    for name, members in lists.items():
        quoted = f'"{name}"'
        where = text.index(quoted, at)
        indent = where - text.rindex("\n", 0, where) - 1 - len('"reservations": ')
        parts.append(text[at:where])
        if members:
            items = chunks.per_node(cache, ("kea", indent), members, functools.partial(_reservation_text, indent))
            parts += ["[\n", ",\n".join(items), "\n", " " * indent, "]"]
        else:
            parts.append("[]")
        at = where + len(quoted)
    parts.append(text[at:])
    return ("".join(parts) + "\n").encode()


def _reservation_text(indent: int, node: Node) -> str:
    """`_reservation(node)` as json.dumps(indent=2) writes it inside a list whose key is at `indent`."""
    outer, inner = " " * (indent + 2), " " * (indent + 4)
    fields = [f'{inner}"hw-address": {_string(node.mac)}', f'{inner}"hostname": {_string(node.hostname)}']
    if node.ip is not None:
        fields.append(f'{inner}"ip-address": {_string(str(node.ip))}')
    return f"{outer}{{\n" + ",\n".join(fields) + f"\n{outer}}}"
